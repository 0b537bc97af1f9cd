"""ensure_flowers end to end against a real local HTTP server, so the network path is tested without the internet."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SHARED_FLOWERS
from tlpipe.data.flowers import (
    FLOWERS_CLASSES,
    MARKER,
    MIRROR_ENV,
    FlowersUnavailable,
    ensure_flowers,
    main,
)
from tlpipe.data.synthetic import make_flowers_tarball, make_image_folder


class _Server:
    """Serves one folder and records request paths, so tests can prove the cache avoided the network."""

    def __init__(self, directory: Path):
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def www(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    return folder


@pytest.fixture
def tarball(www):
    path = www / "flower_photos.tgz"
    sha = make_flowers_tarball(None, str(path), per_class=2)
    return path, sha


@pytest.fixture
def server(www):
    srv = _Server(www)
    yield srv
    srv.close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/flower_photos.tgz"


def _assert_no_leftovers(cache: Path) -> None:
    """After a failure only the lock file may remain: no tree, no marker, no temp archive or extraction."""
    leftovers = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert leftovers in ([], [".flower_photos.lock"]), leftovers


def _assert_flowers_tree(path: Path, per_class: int) -> None:
    assert sorted(p.name for p in path.iterdir()) == sorted(FLOWERS_CLASSES)
    assert all(p.is_dir() for p in path.iterdir())
    for cls in FLOWERS_CLASSES:
        assert len(list((path / cls).glob("*.jpg"))) == per_class


def test_download_verifies_extracts_and_then_uses_cache(tmp_path, tarball, server):
    _, sha = tarball
    cache = tmp_path / "cache"
    url = server.url("flower_photos.tgz")
    messages: list[str] = []

    path = Path(ensure_flowers(str(cache), url=url, sha256=sha, progress=messages.append))

    assert path == cache / "flower_photos"
    _assert_flowers_tree(path, per_class=2)
    assert (cache / "flower_photos.LICENSE.txt").is_file()  # moved aside, not lost
    assert (cache / MARKER).is_file()
    assert not [p for p in cache.iterdir() if p.name.endswith((".part", ".extract"))]
    assert server.requests == ["/flower_photos.tgz"]
    assert any("100%" in m for m in messages)

    again = ensure_flowers(str(cache), url=url, sha256=sha, progress=messages.append)
    assert Path(again) == path
    assert server.requests == ["/flower_photos.tgz"]  # no second request


def test_cache_for_another_checksum_is_replaced(tmp_path, www, tarball, server):
    _, sha = tarball
    cache = tmp_path / "cache"
    ensure_flowers(str(cache), url=server.url("flower_photos.tgz"), sha256=sha, progress=lambda m: None)
    sha3 = make_flowers_tarball(None, str(www / "three.tgz"), per_class=3)

    path = ensure_flowers(str(cache), url=server.url("three.tgz"), sha256=sha3, progress=lambda m: None)

    _assert_flowers_tree(Path(path), per_class=3)
    assert server.requests == ["/flower_photos.tgz", "/three.tgz"]


def test_wrong_checksum_deletes_download_and_leaves_nothing(tmp_path, tarball, server):
    _, sha = tarball
    cache = tmp_path / "cache"
    wrong = "0" * 64

    with pytest.raises(FlowersUnavailable) as exc:
        ensure_flowers(str(cache), url=server.url("flower_photos.tgz"), sha256=wrong, progress=lambda m: None)

    assert wrong in str(exc.value) and sha in str(exc.value)
    _assert_no_leftovers(cache)


def test_unreachable_url_names_both_ways_out(tmp_path):
    url = _closed_port_url()

    with pytest.raises(FlowersUnavailable) as exc:
        ensure_flowers(str(tmp_path / "cache"), url=url, progress=lambda m: None)

    message = str(exc.value)
    assert "--mirror" in message and MIRROR_ENV in message and url in message
    _assert_no_leftovers(tmp_path / "cache")


def test_missing_file_on_server_is_unavailable(tmp_path, server):
    url = server.url("nope.tgz")
    with pytest.raises(FlowersUnavailable, match="404"):
        ensure_flowers(str(tmp_path / "cache"), url=url, progress=lambda m: None)
    _assert_no_leftovers(tmp_path / "cache")


def test_file_url_works(tmp_path, tarball):
    path, sha = tarball
    out = ensure_flowers(str(tmp_path / "cache"), url=path.as_uri(), sha256=sha, progress=lambda m: None)
    _assert_flowers_tree(Path(out), per_class=2)


def test_mirror_is_returned_as_is_without_network(tmp_path):
    mirror = tmp_path / "mirror"
    make_image_folder(str(mirror), classes=3, per_class=2, size=16)
    cache = tmp_path / "cache"

    assert ensure_flowers(str(cache), mirror=str(mirror), url=_closed_port_url()) == str(mirror)
    assert not cache.exists()


def test_mirror_from_env_and_parent_of_flower_photos(tmp_path, monkeypatch):
    parent = tmp_path / "mirror"
    make_image_folder(str(parent / "flower_photos"), classes=2, per_class=1, size=16)
    monkeypatch.setenv(MIRROR_ENV, str(parent))

    out = ensure_flowers(str(tmp_path / "cache"), url=_closed_port_url(), progress=lambda m: None)

    assert out == str(parent / "flower_photos")


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.mkdir(), "no class subfolders"),
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("x"), "not a directory"),
        (lambda p: (p / "daisy").mkdir(parents=True), "subfolder without images: daisy/"),
    ],
    ids=["empty", "missing", "file", "class-without-images"],
)
def test_invalid_mirror_says_what_is_wrong(tmp_path, make, expected):
    mirror = tmp_path / "mirror"
    make(mirror)
    with pytest.raises(FlowersUnavailable, match=expected) as exc:
        ensure_flowers(str(tmp_path / "cache"), mirror=str(mirror), progress=lambda m: None)
    assert str(mirror) in str(exc.value)


def test_invalid_env_mirror_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "missing"))
    with pytest.raises(FlowersUnavailable, match=r"\$" + MIRROR_ENV):
        ensure_flowers(str(tmp_path / "cache"), progress=lambda m: None)


def _evil_tarball(dest: Path, evil: tarfile.TarInfo) -> str:
    import hashlib

    payload = b"not really a jpeg"
    with tarfile.open(dest, "w:gz") as tar:
        for name in ("flower_photos/daisy/1.jpg", "flower_photos/roses/1.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        tar.addfile(evil, io.BytesIO(b"pwned") if evil.isfile() else None)
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def _member(name: str, linkname: str | None = None, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    if linkname is not None:
        info.linkname = linkname
    else:
        info.size = len(b"pwned")
    return info


@pytest.mark.parametrize(
    "evil",
    [
        _member("../evil"),
        _member("flower_photos/../../evil"),
        _member("/tmp/evil-absolute"),
        _member("flower_photos/daisy/link", "../../../evil", tarfile.SYMTYPE),
        _member("flower_photos/daisy/link", "/etc/passwd", tarfile.SYMTYPE),
        _member("flower_photos/daisy/hard", "../evil", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-dotdot", "symlink-absolute", "hardlink-dotdot"],
)
def test_unsafe_archive_is_rejected(tmp_path, evil):
    archive = tmp_path / "evil.tgz"
    sha = _evil_tarball(archive, evil)
    cache = tmp_path / "deep" / "cache"

    with pytest.raises(FlowersUnavailable, match="refusing to extract"):
        ensure_flowers(str(cache), url=archive.as_uri(), sha256=sha, progress=lambda m: None)

    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()
    _assert_no_leftovers(cache)


def test_cli_prints_only_the_path(tmp_path, tarball, capsys):
    path, sha = tarball
    cache = tmp_path / "cache"

    assert main(["--cache", str(cache), "--url", path.as_uri(), "--sha256", sha]) == 0

    out, err = capsys.readouterr()
    assert out.strip() == str(cache / "flower_photos")
    assert "downloading" in err


def test_cli_reports_failure(tmp_path, capsys):
    assert main(["--cache", str(tmp_path / "cache"), "--url", _closed_port_url()]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "--mirror" in err


@pytest.mark.skipif(not SHARED_FLOWERS.is_dir(), reason=f"no shared flowers copy at {SHARED_FLOWERS}")
def test_shared_flowers_copy_is_a_valid_mirror(tmp_path):
    out = ensure_flowers(str(tmp_path / "cache"), mirror=str(SHARED_FLOWERS), progress=lambda m: None)
    assert out == str(SHARED_FLOWERS)
    assert tuple(sorted(p.name for p in Path(out).iterdir() if p.is_dir())) == FLOWERS_CLASSES
