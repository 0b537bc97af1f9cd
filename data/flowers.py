"""The embedded demo dataset: TensorFlow's flower photos (5 classes, ~3,700 JPEGs, ~230 MB).

The pipeline needs a real image tree without asking the user for one, but it must also work offline and
in locked-down CI. So the tree comes from, in order: a local mirror (used in place, never copied), a
previously verified extraction in the cache, or a checksummed download. Every failure surfaces as one
`FlowersUnavailable` whose message says how to get unstuck, instead of a raw socket or tar traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath

from tlpipe.components.errors import UsageError

FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
FLOWERS_SHA256 = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"
FLOWERS_CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
MIRROR_ENV = "TLPIPE_FLOWERS_MIRROR"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
DIRNAME = "flower_photos"
MARKER = DIRNAME + ".complete"
TIMEOUT_S = 60.0

_CHUNK = 1 << 20
_UNKNOWN_SIZE_REPORT = 16 << 20
# Everything urllib can throw for an unreachable, refusing, slow or malformed source.
_NET_ERRORS = (OSError, http.client.HTTPException, ValueError)

__all__ = [
    "FLOWERS_CLASSES",
    "FLOWERS_SHA256",
    "FLOWERS_URL",
    "MIRROR_ENV",
    "FlowersUnavailable",
    "ensure_flowers",
    "image_tree_problem",
    "main",
]


class FlowersUnavailable(UsageError, RuntimeError):
    """One actionable error for every way the dataset can be missing, so callers need a single except."""


def _ways_out(url: str) -> str:
    return (
        f"pass --mirror DIR (or set {MIRROR_ENV}) to a folder of flower_photos/<class>/*.jpg, "
        f"or allow access to {url}"
    )


def _has_image(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file() for e in it)
    except OSError:
        return False


def image_tree_problem(path: str) -> str | None:
    """Explain why `path` cannot serve as `<dir>/<class>/<images>` (None if it can), so errors name the fix.

    Only subfolders count as classes (the layout every image-folder reader assumes); loose files such as
    a LICENSE are tolerated here, hidden entries are ignored.
    """
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isdir(path):
        return "is not a directory (to use a .tgz archive, pass it as --url file://...)"
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    classes = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not _has_image(entry.path):
            return (
                f"has a subfolder without images: {entry.name}/ "
                f"(every subfolder must be a class holding {'/'.join(IMAGE_EXTENSIONS)} files)"
            )
        classes.append(entry.name)
    if not classes:
        return "has no class subfolders (expected <dir>/<class>/*.jpg)"
    if len(classes) < 2:
        return f"has only one class subfolder ({classes[0]}/); a classifier needs at least two"
    return None


def _resolve_mirror(mirror: str, source: str, progress: Callable[[str], None]) -> str:
    path = os.path.abspath(os.path.expanduser(mirror))
    nested = os.path.join(path, DIRNAME)
    # Accept both the class folder itself and its parent, since the hint says "flower_photos/<class>".
    if os.path.isdir(nested) and image_tree_problem(nested) is None:
        path = nested
    else:
        problem = image_tree_problem(path)
        if problem:
            raise FlowersUnavailable(
                f"flowers mirror {path} (from {source}) {problem}; "
                f"it must be a folder of <class>/*.jpg subfolders, like flower_photos/"
            )
    progress(f"using flowers mirror {path}")
    return path


def _cached(cache_dir: str, sha256: str) -> str | None:
    dest = os.path.join(cache_dir, DIRNAME)
    try:
        with open(os.path.join(cache_dir, MARKER), encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("sha256") != sha256:
        return None
    if image_tree_problem(dest) is not None:
        return None
    return dest


@contextmanager
def _locked(cache_dir: str) -> Iterator[None]:
    """Serialise concurrent installs into one cache so one process never deletes another's fresh tree."""
    try:
        import fcntl
    except ImportError:  # non-POSIX: unique temp names still keep runs apart, only the final swap can race
        yield
        return
    with open(os.path.join(cache_dir, f".{DIRNAME}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _unavailable(url: str, reason: str) -> FlowersUnavailable:
    return FlowersUnavailable(f"cannot download the flowers dataset from {url} ({reason}). Fix: {_ways_out(url)}.")


def _download(url: str, out, progress: Callable[[str], None]) -> None:
    """Stream to `out` so the 230 MB archive never sits in memory; only network errors become FlowersUnavailable."""
    progress(f"downloading {url}")
    try:
        resp = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except _NET_ERRORS as e:
        raise _unavailable(url, _reason(e)) from e
    with resp:
        try:
            total = int(resp.headers.get("Content-Length") or 0) or None
        except ValueError:
            total = None
        done = 0
        next_mark = 0.1 if total else _UNKNOWN_SIZE_REPORT
        while True:
            try:
                chunk = resp.read(_CHUNK)
            except _NET_ERRORS as e:
                raise _unavailable(url, _reason(e)) from e
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if total:
                if done / total >= next_mark:
                    progress(f"  {100 * done // total:3d}%  {done / 2**20:.1f} / {total / 2**20:.1f} MB")
                    while next_mark <= done / total:
                        next_mark += 0.1
            elif done >= next_mark:
                progress(f"  {done / 2**20:.1f} MB")
                next_mark += _UNKNOWN_SIZE_REPORT
    if total and done < total:
        raise _unavailable(url, f"connection closed after {done} of {total} bytes")


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _escapes(name: str) -> bool:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return ".." in PurePosixPath(norm).parts


def _safe_extract(archive: str, dest: str, url: str) -> None:
    """Vet every member before writing anything, since a checksum only proves who made the archive.

    Links may only point downwards (no absolute or '..' targets), which keeps chains of links inside too.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                problem = None
                if _escapes(m.name):
                    problem = f"member {m.name!r} would be written outside the extraction folder"
                elif m.issym() or m.islnk():
                    if not m.linkname or _escapes(m.linkname):
                        problem = f"link {m.name!r} -> {m.linkname!r} points outside the extraction folder"
                elif not (m.isfile() or m.isdir()):
                    problem = f"member {m.name!r} is a device or fifo"
                if problem:
                    raise FlowersUnavailable(f"refusing to extract the archive from {url}: {problem}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4: the checks above are the whole defence
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise FlowersUnavailable(f"the archive from {url} is corrupt or unsafe: {e}") from e


def _archive_root(work: str) -> str:
    names = [n for n in os.listdir(work) if not n.startswith(".")]
    dirs = [n for n in names if os.path.isdir(os.path.join(work, n))]
    if DIRNAME in dirs:
        return os.path.join(work, DIRNAME)
    if len(dirs) == 1:  # some other single wrapper folder
        return os.path.join(work, dirs[0])
    return work


def _replace(src: str, dst: str) -> None:
    if os.path.isdir(dst) and not os.path.islink(dst):
        shutil.rmtree(dst)
    os.replace(src, dst)


def _set_aside_non_classes(root: str, cache_dir: str, progress: Callable[[str], None]) -> None:
    """Move LICENSE.txt and friends next to the tree, because readers treat every entry as a class."""
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not name.startswith("."):
            continue
        target = os.path.join(cache_dir, f"{DIRNAME}.{name.lstrip('.')}")
        _replace(path, target)
        progress(f"moved {name} aside to {target}")


def _install(cache_dir: str, url: str, sha256: str, progress: Callable[[str], None]) -> str:
    dest = os.path.join(cache_dir, DIRNAME)
    marker = os.path.join(cache_dir, MARKER)
    # The tree is about to change: never leave a marker vouching for a half-replaced one.
    if os.path.lexists(marker):
        os.remove(marker)
    fd, archive = tempfile.mkstemp(prefix=f".{DIRNAME}-", suffix=".tgz.part", dir=cache_dir)
    work = None
    try:
        with os.fdopen(fd, "wb") as out:
            _download(url, out, progress)
        progress("verifying sha256")
        actual = _sha256_file(archive)
        if actual != sha256:
            raise FlowersUnavailable(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; "
                f"the download was deleted. Fix: {_ways_out(url)} (serving the genuine archive)."
            )
        work = tempfile.mkdtemp(prefix=f".{DIRNAME}-", suffix=".extract", dir=cache_dir)
        progress(f"extracting into {cache_dir}")
        _safe_extract(archive, work, url)
        root = _archive_root(work)
        _set_aside_non_classes(root, cache_dir, progress)
        problem = image_tree_problem(root)
        if problem:
            raise FlowersUnavailable(f"the archive from {url} is not a flowers tree: its top folder {problem}")
        _replace(root, dest)  # same filesystem as the cache, so a rename, not a copy
        tmp_marker = marker + ".tmp"
        with open(tmp_marker, "w", encoding="utf-8") as fh:
            json.dump({"sha256": sha256, "url": url, "classes": sorted(os.listdir(dest))}, fh)
        os.replace(tmp_marker, marker)
        progress(f"flowers ready at {dest}")
        return dest
    except OSError as e:  # network errors were already converted, so this is the local disk
        raise FlowersUnavailable(f"cannot write the flowers dataset into {cache_dir}: {e}") from e
    finally:
        try:
            os.remove(archive)
        except FileNotFoundError:
            pass
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def ensure_flowers(
    cache_dir: str,
    mirror: str | None = None,
    url: str = FLOWERS_URL,
    sha256: str = FLOWERS_SHA256,
    progress: Callable[[str], None] = print,
) -> str:
    """Return a `<dir>/<class>/*.jpg` folder, touching the network only when no mirror or cache can serve.

    Resolution: `mirror` (else $TLPIPE_FLOWERS_MIRROR) used in place; then a verified extraction in
    `cache_dir`; then download `url` (http(s) or file), check `sha256`, extract safely, commit with a marker.
    """
    if mirror:
        return _resolve_mirror(mirror, "mirror argument", progress)
    env_mirror = os.environ.get(MIRROR_ENV, "").strip()
    if env_mirror:
        return _resolve_mirror(env_mirror, f"${MIRROR_ENV}", progress)

    sha256 = sha256.strip().lower()
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    found = _cached(cache_dir, sha256)
    if found:
        progress(f"using cached flowers at {found}")
        return found
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with _locked(cache_dir):
            found = _cached(cache_dir, sha256)  # another process may have finished while we waited
            if found:
                progress(f"using cached flowers at {found}")
                return found
            return _install(cache_dir, url, sha256, progress)
    except OSError as e:
        raise FlowersUnavailable(f"cannot use cache dir {cache_dir}: {e}") from e


def main(argv: list[str] | None = None) -> int:
    """Fetch ahead of a pipeline run (e.g. while online); stdout is only the path, so it can be captured."""
    parser = argparse.ArgumentParser(prog="python -m data.flowers", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, metavar="DIR", help="cache folder for the download")
    parser.add_argument("--mirror", metavar="DIR", help=f"local flower_photos folder to use instead (or ${MIRROR_ENV})")
    parser.add_argument("--url", default=FLOWERS_URL, help="archive URL, http(s):// or file:// (default: %(default)s)")
    parser.add_argument("--sha256", default=FLOWERS_SHA256, help="expected archive checksum (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        path = ensure_flowers(
            args.cache,
            mirror=args.mirror,
            url=args.url,
            sha256=args.sha256,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    except FlowersUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
