"""Locations that are either local paths or URLs (gs://, s3://, hdfs://, ram://...): one place
decides how to tell them apart, make them absolute and join them.

A URL is never resolved against the current directory (`Path("gs://b/w").resolve()` is
`/cwd/gs:/b/w`), and files under either kind are read and written through this module (over
`tf.io.gfile`; local reads without it, to spare TensorFlow's import) or TFX's `fileio`, never
`open()`/`glob`/`os.path` elsewhere (tests/test_storage_rules.py enforces it).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

URL_SEPARATOR = "://"


def is_url(location: str) -> bool:
    return URL_SEPARATOR in location


def absolute(location: str) -> str:
    """A URL as it is; a local path made absolute (symlinks resolved)."""
    return location.rstrip("/") if is_url(location) else str(Path(location).resolve())


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a URL (no `os.path.normpath`, which turns `gs://` into `gs:/`)."""
    if is_url(base):
        head = base if base.endswith(URL_SEPARATOR) else base.rstrip("/")  # `gs://` alone stays
        tail = "/".join(p.strip("/") for p in parts)
        return head if not tail else head + tail if head.endswith("/") else f"{head}/{tail}"
    return os.path.join(base, *parts)


def _gfile():
    import tensorflow as tf  # late: config and CLI code import this module without TensorFlow

    return tf.io.gfile


def exists(path: str) -> bool:
    # Local paths without TensorFlow: `tlpipe runs` reads run summaries, and importing TF for
    # them cost its start-up ~8 CPU s.
    return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def glob(pattern: str) -> list[str]:
    return sorted(_gfile().glob(pattern))


def remove_tree(path: str) -> None:
    """Deletes a file, or a folder with everything under it; nothing when it is absent."""
    gfile = _gfile()
    if gfile.isdir(path):
        gfile.rmtree(path)
    elif gfile.exists(path):
        gfile.remove(path)


def read_bytes(path: str) -> bytes:
    if not is_url(path):  # as exists(): no TensorFlow for a local read
        with open(path, "rb") as fh:
            return fh.read()
    with _gfile().GFile(path, "rb") as fh:
        return fh.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str) -> Any:
    return json.loads(read_text(path))


def write_bytes(path: str, payload: bytes) -> None:
    """Writes a file, creating its folder (a no-op on object stores, which have none)."""
    gfile = _gfile()
    gfile.makedirs(os.path.dirname(path))
    with gfile.GFile(path, "wb") as fh:
        fh.write(payload)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def publish_tree(staging: str, final: str, last: str) -> None:
    """Makes the complete folder `staging` appear at `final`, the file named `last` (in the top
    folder) appearing after every other file.

    A local folder is renamed (atomic). An object store (gs://, s3://) has no directory rename,
    so each file is copied to `final` (server side: no upload) with `last` copied at the end,
    then staging is deleted: a reader that waits for `last` (TF Serving waits for
    saved_model.pb) never loads a half-written folder.
    """
    gfile = _gfile()
    if not is_url(final):
        gfile.rename(staging, final)
        return
    files = []
    for folder, _, names in gfile.walk(staging):
        relative = folder[len(staging.rstrip("/")):].strip("/")
        files += [join(relative, n) if relative else n for n in names]
    files.sort(key=lambda name: name == last)  # stable: `last` moves to the end
    for name in files:
        gfile.makedirs(os.path.dirname(join(final, name)))
        gfile.copy(join(staging, name), join(final, name), overwrite=True)
    gfile.rmtree(staging)


@contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding `path`'s bytes, for libraries that only open local files (h5py)."""
    if not is_url(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="tlpipe-") as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        _gfile().copy(path, local)
        yield local


def save_through_local(path: str, save: Callable[[str], None]) -> None:
    """`save(local_path)` then the file copied to `path` (a URL), for local-only writers (h5py);
    the folder is created either way."""
    _gfile().makedirs(os.path.dirname(path))
    if not is_url(path):
        save(path)
        return
    with tempfile.TemporaryDirectory(prefix="tlpipe-") as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        save(local)
        _gfile().copy(local, path, overwrite=True)
