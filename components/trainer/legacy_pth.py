"""Read a PyTorch state dict saved in the legacy (non-zip) format, with pickle + numpy, no torch.

A legacy file is five pickles followed by raw storage bytes: magic number, protocol version,
system info, the state dict (tensors point at storages by persistent id), the storage keys.
A weights file is user input (`base.weights=...`), and unpickling runs whatever callable a
pickle names, so every record goes through `_RestrictedUnpickler` with its own whitelist: the
header and key records may hold plain ints, strings, lists, tuples and dicts only (no global at
all); the state dict only the few names a plain state dict needs. Anything else is refused
before it is resolved, naming the file, the record and the global.
"""
from __future__ import annotations

import collections
import math
import os
import pickle
import struct

import numpy as np
from tlpipe.components.errors import TlpipeError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class LegacyPthError(TlpipeError, ValueError):
    """A legacy .pth file that is unreadable, not a plain state dict, or hostile; names the file."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _Storage:
    def __init__(self, dtype, numel: int):
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    def __init__(self, base: _Storage, offset: int, numel: int):
        self.base, self.offset, self.numel = base, offset, numel

    @property
    def data(self):
        if self.base.data is None:
            return None
        return self.base.data[self.offset:self.offset + self.numel]


class _Tensor:
    """A tensor waiting for its storage's bytes (they come after the pickled records)."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage | _StorageView):
            raise TypeError(f"a tensor's storage is a {type(storage).__name__}")
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if len(self.size) != len(self.stride):
            raise ValueError(f"tensor size {self.size} and stride {self.stride} differ in rank")

    def to_numpy(self, name: str) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError(f"tensor {name!r} references a storage with no data")
        if self.size and min(self.size) == 0:
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        # A tensor never holds more elements than its storage: a stride-0 "expanded" view of
        # huge size would otherwise make one float allocate terabytes.
        if (self.offset < 0 or last >= data.size or min(self.stride, default=0) < 0
                or min(self.size, default=1) < 0 or math.prod(self.size) > data.size):
            raise ValueError(
                f"tensor {name!r} (size {self.size}, stride {self.stride}, offset "
                f"{self.offset}) does not fit its storage of {data.size} elements: corrupt file?")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size,
            strides=[s * data.itemsize for s in self.stride], writeable=False)
        return np.array(view, dtype=data.dtype.newbyteorder("="), order="C")  # keeps 0-d shapes


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


# The globals a plain state dict pickles (torch.save of model.state_dict()), and nothing else.
_STATE_DICT_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of `allowed`; persistent ids only when `storages` is given."""

    def __init__(self, file, path: str, record: str, allowed: dict, storages: dict | None = None):
        super().__init__(file)
        self._path, self._record, self._allowed, self._storages = path, record, allowed, storages

    def find_class(self, module, name):
        found = self._allowed.get((module, name))
        if found is None:
            raise LegacyPthError(
                f"{self._path}: refused to load global {module}.{name} from its {self._record} "
                "record: not a plain PyTorch state dict (a hostile or foreign pickle)")
        return found

    def persistent_load(self, pid):
        if self._storages is None:
            raise LegacyPthError(f"{self._path}: unexpected persistent id in its {self._record} record")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise LegacyPthError(f"{self._path}: unexpected persistent id {pid!r:.80}")
        _, stype, key, _location, numel, view = pid
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(_STORAGE_DTYPES[stype.name], int(numel))
        if view is not None:  # (view_key, offset, view_size): a slice of the storage
            _view_key, offset, view_size = view
            return _StorageView(storage, int(offset), int(view_size))
        return storage


def _load_record(f, path: str, record: str, allowed: dict | None = None, storages: dict | None = None):
    return _RestrictedUnpickler(f, path, record, allowed or {}, storages).load()


def _read_records(f, path: str, storages: dict):
    """The five pickled records; checks each header before the next record is unpickled."""
    magic = _load_record(f, path, "magic number")
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise LegacyPthError(f"{path} is not a legacy PyTorch file (bad magic number {magic!r:.40})")
    protocol = _load_record(f, path, "protocol version")
    if type(protocol) is not int or protocol != _LEGACY_PROTOCOL:
        raise LegacyPthError(f"{path}: unsupported PyTorch protocol version {protocol!r:.40}")
    sys_info = _load_record(f, path, "system info")
    if not isinstance(sys_info, dict):
        raise LegacyPthError(f"{path}: its system info record is a {type(sys_info).__name__}, not a dict")
    if not sys_info.get("little_endian", True):
        raise LegacyPthError(f"{path} was saved on a big-endian machine")
    state_dict = _load_record(f, path, "state dict", _STATE_DICT_GLOBALS, storages)
    keys = _load_record(f, path, "storage keys")
    return state_dict, keys


def _read_storages(f, path: str, keys: list, storages: dict) -> None:
    remaining = os.fstat(f.fileno()).st_size - f.tell()
    for key in keys:
        storage = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise LegacyPthError(f"{path} is truncated (storage {key})")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise LegacyPthError(f"{path}: storage {key} holds {numel} elements, expected {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        remaining -= 8
        if not 0 <= nbytes <= remaining:  # checked before reading: f.read(n) allocates n bytes
            raise LegacyPthError(f"{path} is truncated (storage {key})")
        storage.data = np.frombuffer(f.read(nbytes), dtype=storage.dtype)
        remaining -= nbytes


def read_legacy_state_dict(path) -> collections.OrderedDict[str, np.ndarray]:
    """{name: np.ndarray} in the file's order, from a legacy (non-zip) PyTorch state dict.

    Raises LegacyPthError for a zip-format file (torch >= 1.6's default), a file that is not a
    plain state dict (any other global is refused, never called), or a corrupt one.
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise LegacyPthError(f"cannot open PyTorch weights {path}: {e}") from e
    with f:
        if f.read(4) == b"PK\x03\x04":
            raise LegacyPthError(
                f"{path} is a zip-format PyTorch file (torch >= 1.6's default); this reader only "
                "handles the legacy format. Re-save it with torch.save(state_dict, path, "
                "_use_new_zipfile_serialization=False).")
        f.seek(0)
        storages: dict = {}
        try:
            state_dict, keys = _read_records(f, path, storages)
            if not isinstance(state_dict, dict) or not state_dict or not all(
                    isinstance(k, str) and isinstance(v, _Tensor) for k, v in state_dict.items()):
                raise LegacyPthError(f"{path} does not hold a state dict (a dict of tensor names to tensors)")
            if not isinstance(keys, list) or set(keys) != set(storages):
                raise LegacyPthError(f"{path}: storage table does not match the tensors")
            _read_storages(f, path, keys, storages)
            return collections.OrderedDict((k, v.to_numpy(k)) for k, v in state_dict.items())
        except LegacyPthError:
            raise
        except Exception as e:  # truncated or garbage pickles, malformed tensors
            raise LegacyPthError(f"{path} is not a readable legacy PyTorch file ({type(e).__name__}: {e})") from e
