"""TFX Transform module: `preprocessing_fn`.

Decodes any supported format to RGB and resizes to the storage size (the largest tuned input
size), stored as uint8; the float work ((x - mean) / std) happens in the model with constants
this graph computes, so examples stay ~3 bytes/pixel instead of 12 (float32). The same graph
runs inside the exported model on raw image bytes.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from components import features
from components.trainer.backbones import BACKBONES, CONVENTIONS


def decode_and_resize(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded image batch [B] or [B, 1] -> uint8 [B, size, size, 3] (stretch resize)."""
    image_bytes = tf.reshape(image_bytes, [-1])

    def one(data):
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        img = tf.image.resize(img, [size, size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)

    return tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))


def preprocessing_fn(inputs, custom_config):
    size = int(custom_config["storage_size"])
    backbone = BACKBONES[custom_config["base"]]
    pixels = decode_and_resize(inputs[features.IMAGE_KEY], size)
    batch = tf.shape(pixels)[0]
    conv_mean, conv_std, _ = CONVENTIONS[backbone.preprocessing]
    if custom_config["mean_source"] == "dataset":
        x = tf.cast(pixels, tf.float32)
        per_image_mean = tf.reduce_mean(x, axis=[1, 2])                  # [B, 3]
        per_image_sq = tf.reduce_mean(tf.square(x), axis=[1, 2])
        mean = tft.mean(per_image_mean, reduce_instance_dims=False)      # full pass, train split
        if custom_config.get("std_scaling"):
            std = tf.sqrt(tft.mean(per_image_sq, reduce_instance_dims=False) - tf.square(mean))
        else:
            std = tf.constant(conv_std, tf.float32)
    else:
        mean, std = tf.constant(conv_mean, tf.float32), tf.constant(conv_std, tf.float32)
    # Class names become a transform asset; sorted, they are the id -> name table.
    tft.vocabulary(tf.reshape(inputs[features.LABEL_NAME_KEY], [-1]),
                   vocab_filename=features.LABEL_VOCABULARY)
    return {
        features.PIXELS_KEY: tf.map_fn(tf.io.serialize_tensor, pixels,
                                       fn_output_signature=tf.string),
        features.CHANNEL_MEAN_KEY: tf.broadcast_to(mean, [batch, 3]),
        features.CHANNEL_STD_KEY: tf.broadcast_to(std, [batch, 3]),
        features.LABEL_KEY: tf.reshape(inputs[features.LABEL_KEY], [-1]),
    }
