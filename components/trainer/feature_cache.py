"""Frozen-base features computed once per (data, base, weights, cut layer, input size) and kept
on disk beside the runs, so tuner trials and phase 1 train only the head.

While the base is frozen its output for an image never changes. With the gap head the cache
holds the pooled vector (1,280 floats per image for Lite0), not the feature map, so a trial
epoch over a thousand images takes a fraction of a second.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tlpipe.components import features
from tlpipe.components.config import ModelSettings
from tlpipe.components.trainer.inputs import make_dataset
from tlpipe.components.trainer.network import HEAD, POOL, build_feature_base, pools_before_cache

FORMAT = 2  # 2: pooled features for the gap head


class FeatureCache:
    """Features of the un-augmented splits, from memory (one input size), disk, or one pass of
    the base. Float32, so the head sees exactly what the live base gives it."""

    def __init__(self, cache_dir: str, data_identity: dict[str, Any],
                 datasets: dict[str, Callable[[], tf.data.Dataset]], settings: ModelSettings):
        """`data_identity` names the data (the transformed examples' files: a new Transform
        output means new files); `datasets` gives each split's un-shuffled (image, label)
        batches."""
        self._dir, self._identity, self._datasets = cache_dir, data_identity, datasets
        self._settings = settings
        self._memory: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self.stats = {"built": 0, "reused": 0, "in_memory": 0}

    def key(self, size: int) -> str:
        base = self._settings.base
        weights = base.weights
        if weights not in ("imagenet", "none") and os.path.isfile(weights):
            weights = f"{weights}:{os.path.getsize(weights)}:{os.path.getmtime(weights)}"
        identity = {"data": self._identity, "base": base.name, "weights": weights,
                    "cut_at": base.cut_at, "size": size, "pooled": pools_before_cache(self._settings),
                    "storage": self._settings.tuner.storage_size, "format": FORMAT}
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()
                              ).hexdigest()[:20]

    def path(self, size: int) -> str:
        return os.path.join(self._dir, self.key(size))

    def get(self, split: str, size: int, classifier: keras.Model | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of a split. Computed with `classifier`'s base when given (it must
        be the pretrained one the key names), else with a freshly built pretrained base."""
        if (size, split) in self._memory:
            self.stats["in_memory"] += 1
            return self._memory[(size, split)]
        self._memory = {k: v for k, v in self._memory.items() if k[0] == size}  # one size in RAM
        file = os.path.join(self.path(size), f"{split}.npz")
        if tf.io.gfile.exists(file):
            with tf.io.gfile.GFile(file, "rb") as fh:
                stored = np.load(io.BytesIO(fh.read()), allow_pickle=False)
                self._memory[(size, split)] = (stored["features"], stored["labels"])
            self.stats["reused"] += 1
            logging.info("feature cache: reused %s (%s, size %d)", file, split, size)
        elif classifier is not None:
            self._store(size, split, extractor_of(classifier, self._settings))
        else:  # a trial needs every split: one pretrained base per size computes them all
            extractor = pretrained_extractor(self._settings, size)
            for name in self._datasets:
                if (size, name) not in self._memory:
                    self._store(size, name, extractor)
        return self._memory[(size, split)]

    def _store(self, size: int, split: str, extractor: keras.Model) -> None:
        result = self._compute(split, extractor)
        folder = self.path(size)
        file = os.path.join(folder, f"{split}.npz")
        tf.io.gfile.makedirs(folder)
        temp = f"{file}.tmp-{os.getpid()}"
        buffer = io.BytesIO()  # np.savez seeks; GFile (gs:// too) streams
        np.savez(buffer, features=result[0], labels=result[1])
        with tf.io.gfile.GFile(temp, "wb") as fh:
            fh.write(buffer.getvalue())
        tf.io.gfile.rename(temp, file, overwrite=True)
        self.stats["built"] += 1
        self._memory[(size, split)] = result

    def _compute(self, split: str, extractor: keras.Model) -> tuple[np.ndarray, np.ndarray]:
        started = time.time()
        chunks, labels = [], []
        for images, y in self._datasets[split]():
            chunks.append(extractor(images, training=False).numpy())
            labels.append(y.numpy())
        result = np.concatenate(chunks), np.concatenate(labels)
        logging.info("progress: feature cache: %s split, %d images, features %s, %.0fs", split,
                     len(result[1]), result[0].shape[1:], time.time() - started)
        return result


def feature_cache(fn_args, tf_transform_output, settings: ModelSettings,
                  base_weights: str = "pretrained") -> FeatureCache:
    """The Trainer's and Tuner's cache over their train and eval files (same key for both).

    `base_weights` names base weights other than the configured pretrained ones (a warm start
    loads fine-tuned layers into the base): features of another base are other features."""
    files = {features.TRAIN_SPLIT: fn_args.train_files, features.EVAL_SPLIT: fn_args.eval_files}

    def split_dataset(split: str) -> Callable[[], tf.data.Dataset]:
        return lambda: make_dataset(files[split], fn_args.data_accessor, tf_transform_output,
                                    settings, shuffle=False)

    identity = {k: sorted(v) for k, v in files.items()}
    if base_weights != "pretrained":
        identity["base_weights"] = base_weights
    return FeatureCache(fn_args.custom_config["feature_cache_dir"], identity,
                        {split: split_dataset(split) for split in files}, settings)


def _pooled(x, settings: ModelSettings):
    return keras.layers.GlobalAveragePooling2D(name=POOL)(x) if pools_before_cache(settings) else x


def extractor_of(classifier: keras.Model, settings: ModelSettings) -> keras.Model:
    """Stored-size image -> (resize) -> base features (pooled for the gap head): the
    classifier's layers minus its head, sharing their weights."""
    image = keras.Input(classifier.input_shape[1:], name="image")
    x = image
    for layer in classifier.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name == HEAD:
            break
        x = layer(x, training=False) if isinstance(layer, keras.Model) else layer(x)
    return keras.Model(image, _pooled(x, settings), name="feature_extractor")


def pretrained_extractor(settings: ModelSettings, size: int) -> keras.Model:
    """The same extractor without a classifier: what a tuner trial's cache builds per size."""
    storage = settings.tuner.storage_size
    image = keras.Input((storage, storage, 3), name="image")
    x = keras.layers.Resizing(size, size, name="resize_to_input")(image) if size != storage else image
    base = build_feature_base(settings, size)
    base.trainable = False
    return keras.Model(image, _pooled(base(x, training=False), settings), name="feature_extractor")
