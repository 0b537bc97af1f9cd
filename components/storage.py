"""Locations that are either local paths or URLs (gs://, s3://, hdfs://, ram://...): one place
decides how to tell them apart, make them absolute and join them.

A URL is never resolved against the current directory (`Path("gs://b/w").resolve()` is
`/cwd/gs:/b/w`), and files under either kind are read and written through `tf.io.gfile` or TFX's
`fileio`, never `open()`/`glob`/`os.path` (tests/test_storage_rules.py enforces it).
"""
from __future__ import annotations

import json
import os
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
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def read_text(path: str) -> str:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "r") as fh:
        return fh.read()


def read_json(path: str) -> Any:
    return json.loads(read_text(path))


def exists(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(path)
