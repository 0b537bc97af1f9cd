"""The Keras graph of an EfficientNet-Lite variant and the conversion of its PyTorch state dict.

EfficientNet-B0's blocks scaled by the variant's width and depth multipliers (channels rounded
to multiples of 8, the first and last stages' repeats not scaled), without squeeze-excite, with
ReLU6, stem (32) and head (1280) fixed. Inputs are RGB scaled as (x - 127) / 128 (the original
TF Lite models' convention, backbones.CONVENTIONS["lite"]); the model does no preprocessing.

Padding: the weights were converted from Google's TensorFlow checkpoints and the reference
PyTorch code for these names (ml-illustrated/EfficientNet-Lite-PyTorch, from lukemelas') pads
every convolution TF-"SAME" style: `Conv2dStaticSamePadding` pads (total // 2, total - total // 2),
i.e. the extra row/column of a stride-2 convolution goes at the bottom/right. That is exactly
Keras' padding="same", so the graph uses it (it follows any input size); `PADDING` documents the
choice and the converter test checks it on real photos.
"""
from __future__ import annotations

import math

import numpy as np
from tlpipe.components.trainer.backbones import BACKBONES
from tlpipe.components.trainer.efficientnet_lite import LITE0, EfficientNetLiteError, Variant

# Total stride is 32: at 32 px the last feature map is 1x1. With "same" padding the graph would
# still build below that (every stage rounds up), but the features would be mostly padding, so
# like keras.applications' EfficientNet we refuse smaller inputs with a clear message.
MIN_SIZE = BACKBONES[LITE0.name].min_size
BN_EPSILON = 1e-3
# PyTorch momentum 0.01 (1 - 0.99 in the reference code) is Keras momentum 0.99.
BN_MOMENTUM = 0.99
PADDING = "same"  # TF-SAME, see the module docstring.

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
