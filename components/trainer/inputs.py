"""The input path: transformed examples -> normalized image batches, and label counts.

Training and serving normalize pixels with the same function (`model_input`).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tfx_bsl.public import tfxio
from tlpipe.components import features
from tlpipe.components.config import ModelSettings
from tlpipe.components.trainer.backbones import CONVENTIONS, Backbone
from tlpipe.components.trainer.search_space import backbone_of


def model_input(transformed: dict[str, tf.Tensor], size: int, bgr: bool) -> tf.Tensor:
    """Transformed features -> normalized float image [B, size, size, 3]."""
    pixels = tf.map_fn(lambda s: tf.io.parse_tensor(s, tf.uint8),
                       tf.reshape(transformed[features.PIXELS_KEY], [-1]),
                       fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
    mean = tf.reshape(transformed[features.CHANNEL_MEAN_KEY], [-1, 1, 1, 3])
    std = tf.reshape(transformed[features.CHANNEL_STD_KEY], [-1, 1, 1, 3])
    x = (tf.cast(pixels, tf.float32) - mean) / std
    return x[..., ::-1] if bgr else x


def is_bgr(backbone: Backbone) -> bool:
    return CONVENTIONS[backbone.preprocessing][2]


def make_dataset(file_pattern, data_accessor, tf_transform_output, settings: ModelSettings,
                 shuffle: bool, batch_size: int | None = None) -> tf.data.Dataset:
    """(normalized image, label) batches from transformed examples, one epoch. `batch_size`:
    the global batch under a distribution strategy (default: trainer.batch_size)."""
    size, bgr = settings.tuner.storage_size, is_bgr(backbone_of(settings))
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size or settings.trainer.batch_size,
                                       label_key=features.LABEL_KEY, num_epochs=1,
                                       shuffle=shuffle, shuffle_seed=settings.trainer.seed),
        tf_transform_output.transformed_metadata.schema)
    return dataset.map(lambda f, y: (model_input(f, size, bgr), tf.reshape(y, [-1])),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def label_counts(file_pattern, data_accessor, tf_transform_output, num_classes: int) -> np.ndarray:
    """Examples per class id, reading only the labels (no pixel decoding)."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=256, label_key=features.LABEL_KEY,
                                       num_epochs=1, shuffle=False),
        tf_transform_output.transformed_metadata.schema)
    counts = np.zeros(num_classes, np.int64)
    for labels in dataset.map(lambda f, y: tf.reshape(y, [-1])).as_numpy_iterator():
        counts += np.bincount(labels, minlength=num_classes)[:num_classes]
    return counts


def class_weights(counts: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights with mean 1 over the examples (Keras's `class_weight`)."""
    total, present = counts.sum(), max(int((counts > 0).sum()), 1)
    return {i: float(total / (present * c)) if c else 0.0 for i, c in enumerate(counts)}
