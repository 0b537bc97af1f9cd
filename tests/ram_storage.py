"""Test support: the whole DAG on a non-local scheme, TensorFlow's in-process `ram://`.

Why `ram://` and not an object-store emulator: TensorFlow 2.21 ships no S3 filesystem (it moved
to tensorflow-io) and its GCS one needs a real endpoint; no emulator both TensorFlow and Beam
reach installs from the registries here. `ram://` is served by TensorFlow itself (so by
tf.io.gfile and TFX fileio), and thin shims, only in this process, give the rest what a real
object store's client gives:

- Beam has no `ram` FileSystem: `RamFileSystem` below maps Beam's FileSystem API onto
  tf.io.gfile. LocalDagRunner and the in-memory DirectRunner keep every node, and every Beam
  stage, in this one process, so they all see the same memory.
- TFX copies a module wheel to a local temp dir before `pip install` only for `gs://`, `hdfs://`,
  `s3://` (tfx.utils.io_utils._REMOTE_FS_PREFIX): `ram://` joins that list.
- TensorFlow's RAM filesystem departs from real filesystems in three ways, each corrected for
  `ram://` paths: renaming a folder moves its entry without its files (TF's GCS filesystem
  renames every object under the prefix; tf.Transform renames its output folders), so such a
  rename copies the files and deletes the source; opening an existing file for writing appends
  (the trainer rewrites saved_model.pb), so it is deleted first; and listing a folder matches
  by string prefix (`assets` lists `.extra` from a sibling `assets.extra`), so names that are
  not there are dropped, and a folder is deleted by walking it (TensorFlow's own recursive
  delete trips over those names).

Run as a script (the memory lives as long as the process): `python tests/ram_storage.py
<tlpipe args>` runs the CLI, then prints one line `RAM_LISTING <json>` of every ram:// file
with its size, for the test to check.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import tensorflow as tf
from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata, FileSystem

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlpipe.components import storage  # noqa: E402

SCHEME = "ram"
gfile = tf.io.gfile


class _Writer:
    """A GFile writer that knows its position: Beam's sinks call tell(), which TensorFlow's RAM
    filesystem does not implement."""

    mode = "wb"

    def __init__(self, handle):
        self._handle, self._position, self.closed = handle, 0, False

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def write(self, data) -> int:
        self._handle.write(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RamFileSystem(FileSystem):
    """Beam's FileSystem over tf.io.gfile for `ram://` paths."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return storage.join(basepath, *paths)

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        gfile.makedirs(path)

    def has_dirs(self):
        return True

    def _list(self, dir_or_prefix):
        if not gfile.exists(dir_or_prefix):
            return
        for folder, _, files in gfile.walk(dir_or_prefix):
            for name in files:
                path = self.join(folder, name)
                # TensorFlow's RAM filesystem lists by string prefix: listing `x/rec` also
                # yields `2` for a sibling `x/rec2/...`, which is no file here.
                if gfile.exists(path):
                    yield self.metadata(path)

    def _opened(self, path, mode, compression_type):
        handle = gfile.GFile(path, mode) if mode == "rb" else _Writer(gfile.GFile(path, mode))
        compression = self._get_compression_type(path, compression_type)
        return handle if compression == CompressionTypes.UNCOMPRESSED else CompressedFile(
            handle, compression_type=compression)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        gfile.makedirs(self.split(path)[0])
        return self._opened(path, "wb", compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return self._opened(path, "rb", compression_type)

    def _each(self, operation, sources, destinations, what):
        errors = {}
        for source, destination in zip(sources, destinations):
            try:
                operation(source, destination)
            except Exception as err:  # noqa: BLE001 (Beam wants every failure, keyed by path)
                errors[(source, destination)] = err
        if errors:
            raise BeamIOError(f"{what} failed", errors)

    def copy(self, source_file_names, destination_file_names):
        self._each(lambda s, d: gfile.copy(s, d, overwrite=True), source_file_names,
                   destination_file_names, "copy")

    def rename(self, source_file_names, destination_file_names):
        self._each(lambda s, d: gfile.rename(s, d, overwrite=True), source_file_names,
                   destination_file_names, "rename")

    def exists(self, path):
        return gfile.exists(path)

    def size(self, path):
        return gfile.stat(path).length

    def last_updated(self, path):
        return gfile.stat(path).mtime_nsec / 1e9

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        stat = gfile.stat(path)
        return FileMetadata(path, stat.length, stat.mtime_nsec / 1e9)

    def delete(self, paths):
        self._each(lambda p, _: gfile.rmtree(p) if gfile.isdir(p) else gfile.remove(p), paths,
                   paths, "delete")


def _rename_folders_too(rename):
    def renamed(src, dst, overwrite=False):
        if not (str(src).startswith(f"{SCHEME}://") and gfile.isdir(src)):
            return rename(src, dst, overwrite)
        if gfile.exists(dst) and not overwrite:
            raise tf.errors.AlreadyExistsError(None, None, f"{dst} exists")
        for folder, _, files in gfile.walk(src):
            target = storage.join(dst, folder[len(src.rstrip("/")):])
            gfile.makedirs(target)
            for name in files:
                gfile.copy(storage.join(folder, name), storage.join(target, name), overwrite=True)
        gfile.rmtree(src)
    return renamed


def _truncating(init):
    def opened(self, name, mode, encoding="utf-8"):
        if "w" in mode and str(name).startswith(f"{SCHEME}://") and gfile.exists(name) \
                and not gfile.isdir(name):
            gfile.remove(name)
        init(self, name, mode, encoding)
    return opened


def _only_children(list_directory):
    def listed(path):
        names = list_directory(path)
        if not str(path).startswith(f"{SCHEME}://"):
            return names
        return [n for n in names if gfile.exists(storage.join(str(path), n))]
    return listed


def _rmtree_by_walking(rmtree):
    def removed(path):
        if not str(path).startswith(f"{SCHEME}://"):
            return rmtree(path)
        for folder, _, files in list(gfile.walk(path, topdown=False)):
            for name in files:
                gfile.remove(storage.join(folder, name))
            gfile.remove(folder)  # a RAM filesystem folder is one entry like a file
    return removed


def _replace_everywhere(original, replacement) -> None:
    """TensorFlow's API modules bind file_io's functions by name, some of them loaded lazily
    later: patch file_io itself (later imports bind the patched one) and every loaded binding."""
    for module in list(sys.modules.values()):
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if value is original:
                setattr(module, name, replacement)


def install() -> None:
    from tensorflow.python.lib.io import file_io
    from tfx.utils import io_utils

    if f"{SCHEME}://" not in io_utils._REMOTE_FS_PREFIX:
        io_utils._REMOTE_FS_PREFIX.append(f"{SCHEME}://")
    for name, wrap in (("rename_v2", _rename_folders_too), ("list_directory_v2", _only_children),
                       ("delete_recursively_v2", _rmtree_by_walking)):
        original = getattr(file_io, name)
        _replace_everywhere(original, wrap(original))
    file_io.FileIO.__init__ = _truncating(file_io.FileIO.__init__)


def listing(root: str) -> dict[str, int]:
    """Every file under `root` with its size."""
    return {m.path: m.size_in_bytes for m in RamFileSystem(None)._list(root)}


if __name__ == "__main__":
    install()
    from tlpipe.pipeline.cli import main

    code = main(sys.argv[1:])
    print("RAM_LISTING " + json.dumps(listing(f"{SCHEME}://")), flush=True)
    sys.exit(code)
