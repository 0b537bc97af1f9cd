"""TFX Transform module: `preprocessing_fn`, and `channel_stats` to read back what it computed.

Decodes any supported format to RGB and resizes to the storage size (the largest tuned input
size) under a resize policy, stored as uint8; the float work ((x - mean) / std) happens in the
model with constants this graph computes, so examples stay ~3 bytes/pixel instead of 12
(float32). The same graph runs inside the exported model on raw image bytes.

Decoding is `tf.io.decode_image(channels=3)`, the op ingest accepts images with, so whatever
ingest wrote decodes here: grayscale is replicated, palettes expanded, CMYK JPEG converted
(Adobe-inverted or not), 16-bit scaled to 8, the first frame of an animation taken, and alpha
dropped. Dropping alpha (not compositing on white) is one rule for every format: TF's GIF
decoder exposes no alpha at all and its WebP decoder only on request, failing on opaque files,
so compositing could not be applied the same way to the same picture in different containers;
it is also what PIL's `convert("RGB")` (torchvision's loader) does.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
from tlpipe.components import features
from tlpipe.components.config import TransformSettings
from tlpipe.components.trainer.backbones import BACKBONES, CONVENTIONS

# A dataset channel's std is floored at one grey level: a near-constant channel would
# otherwise blow its normalized values up.
MIN_STD = 1.0


def _stretch(image: tf.Tensor, size: int) -> tf.Tensor:
    """Whole image to size x size, aspect ratio not kept (the tutorials' resize)."""
    return tf.image.resize(image, [size, size], antialias=True)


def _crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """The centered square of side min(h, w), then resized: same geometry as resizing the
    shorter side to `size` and center cropping, with fewer pixels to resize."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    square = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2,
                                           side, side)
    return tf.image.resize(square, [size, size], antialias=True)


def _pad(image: tf.Tensor, size: int) -> tf.Tensor:
    """Longer side resized to `size`, aspect ratio kept, centered on zeros (black)."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_max(shape)
    new = tf.clip_by_value(tf.cast(tf.round(shape * scale), tf.int32), 1, size)
    resized = tf.image.resize(image, new, antialias=True)
    return tf.image.pad_to_bounding_box(resized, (size - new[0]) // 2, (size - new[1]) // 2,
                                        size, size)


RESIZERS = {"stretch": _stretch, "crop": _crop, "pad": _pad}
assert tuple(RESIZERS) == features.RESIZE_POLICIES


def _pixels(data: tf.Tensor, size: int, resizer) -> tf.Tensor:
    """One encoded image -> uint8 [size, size, 3], rounded as the model will see it."""
    image = resizer(tf.io.decode_image(data, channels=3, expand_animations=False), size)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _resizer(resize: str):
    if resize not in RESIZERS:
        raise ValueError(f"unknown resize policy {resize!r} (known: {', '.join(RESIZERS)})")
    return RESIZERS[resize]


def decode_and_resize(image_bytes: tf.Tensor, size: int, resize: str = features.RESIZE_POLICIES[0]
                      ) -> tf.Tensor:
    """Encoded image batch [B] or [B, 1] -> uint8 [B, size, size, 3]."""
    resizer = _resizer(resize)
    return tf.map_fn(lambda data: _pixels(data, size, resizer), tf.reshape(image_bytes, [-1]),
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))


def encode_and_measure(image_bytes: tf.Tensor, size: int, resize: str = features.RESIZE_POLICIES[0]
                       ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Encoded image batch -> (serialized uint8 pixels [B], per-image channel mean [B, 3] and
    mean of squares [B, 3]).

    One loop per batch does all per-image work, so no float copy of the whole batch exists
    (TFT batches up to 1,000 images: 600 MB as float32 at 224 px).
    """
    resizer = _resizer(resize)

    def one(data):
        pixels = _pixels(data, size, resizer)
        x = tf.cast(pixels, tf.float32)
        return (tf.io.serialize_tensor(pixels), tf.reduce_mean(x, axis=[0, 1]),
                tf.reduce_mean(tf.square(x), axis=[0, 1]))

    return tf.map_fn(one, tf.reshape(image_bytes, [-1]), fn_output_signature=(
        tf.string, tf.TensorSpec([3], tf.float32), tf.TensorSpec([3], tf.float32)))


def _dataset_stats(image_mean: tf.Tensor, image_mean_sq: tf.Tensor, std_scaling: bool,
                   conv_std) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-channel mean (and std) over every stored pixel of the analyzed split: a TFT full pass.

    Every image has size x size pixels, so the mean of per-image means is the pixel mean.
    """
    mean = tft.mean(image_mean, reduce_instance_dims=False)
    if not std_scaling:
        return mean, tf.constant(conv_std, tf.float32)
    mean_sq = tft.mean(image_mean_sq, reduce_instance_dims=False)
    return mean, tf.sqrt(tf.maximum(mean_sq - tf.square(mean), MIN_STD ** 2))


def preprocessing_fn(inputs, custom_config):
    """`custom_config["settings"]`: a TransformSettings (components/config.py) as plain data."""
    settings = TransformSettings.from_dict(custom_config["settings"])
    serialized, image_mean, image_mean_sq = encode_and_measure(
        inputs[features.IMAGE_KEY], settings.storage_size, settings.transform.resize)
    batch = tf.shape(serialized)[0]
    conv_mean, conv_std, _ = CONVENTIONS[BACKBONES[settings.base_name].preprocessing]
    if settings.transform.mean_source == "dataset":
        mean, std = _dataset_stats(image_mean, image_mean_sq, settings.transform.std_scaling,
                                   conv_std)
    else:
        mean, std = tf.constant(conv_mean, tf.float32), tf.constant(conv_std, tf.float32)
    # Class names become a transform asset; sorted, they are the id -> name table.
    tft.vocabulary(tf.reshape(inputs[features.LABEL_NAME_KEY], [-1]),
                   vocab_filename=features.LABEL_VOCABULARY)
    return {
        features.PIXELS_KEY: serialized,
        features.CHANNEL_MEAN_KEY: tf.broadcast_to(mean, [batch, 3]),
        features.CHANNEL_STD_KEY: tf.broadcast_to(std, [batch, 3]),
        features.LABEL_KEY: tf.reshape(inputs[features.LABEL_KEY], [-1]),
    }


def channel_stats(transform_graph_uri: str) -> dict[str, list[float]]:
    """{"mean": [r, g, b], "std": [r, g, b]} the transform graph at this URI normalizes with.

    After analysis the dataset's mean and std are constants inside the graph, so running it on
    one 1x1 image reads them back (RGB order, [0, 255] pixel scale, before any BGR flip).
    """
    output = tft.TFTransformOutput(transform_graph_uri)
    one_pixel = tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8))
    transformed = output.transform_features_layer()(
        {features.IMAGE_KEY: tf.reshape(one_pixel, [1, 1])})
    return {"mean": [round(float(v), 4) for v in transformed[features.CHANNEL_MEAN_KEY][0]],
            "std": [round(float(v), 4) for v in transformed[features.CHANNEL_STD_KEY][0]]}
