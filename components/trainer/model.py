"""Model code shared by the Trainer's `run_fn` and the Tuner's `tuner_fn`.

One search space (`search_space`), one model builder, one two-phase fit (`TransferHyperModel`),
one input path: the tuner tries exactly what the trainer then trains, and training and serving
normalize pixels with the same function.
"""
from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx_bsl.public import tfxio
from tlpipe.components import features
from tlpipe.components.config import ModelSettings
from tlpipe.components.errors import TlpipeError
from tlpipe.components.features import HP_DROPOUT, HP_INPUT_SIZE, HP_LEARNING_RATE, HP_PHASE2_LEARNING_RATE
from tlpipe.components.trainer import base_layers
from tlpipe.components.trainer.backbones import BACKBONES, CONVENTIONS, DENSE128_POOL, Backbone, build_base
from tlpipe.components.trainer.backbones import min_input_size as base_min_input_size
from tlpipe.components.trainer.base_layers import CutLayerError

CLASSIFIER = "classifier"  # the exported sub-model: everything but augmentation
HEAD = "head"              # the new layers on top of the base: what phase 1 trains


class InputSizeError(TlpipeError, ValueError):
    """An input size the base plus head cannot take, caught before anything is built."""


def backbone_of(settings: ModelSettings) -> Backbone:
    return BACKBONES[settings.base.name]


def min_input_size(settings: ModelSettings) -> int:
    """The smallest input the base (and the tutorials' pooled head, if chosen) can take."""
    return base_min_input_size(backbone_of(settings), settings.trainer.head)


def check_input_size(settings: ModelSettings, size: int) -> None:
    minimum = min_input_size(settings)
    if size < minimum:
        head = settings.trainer.head
        raise InputSizeError(
            f"input size {size}x{size} is too small for base '{backbone_of(settings).name}' "
            f"with head '{head}': the minimum is {minimum}x{minimum}")


def search_space(settings: ModelSettings) -> keras_tuner.HyperParameters:
    """Input size x phase-1 learning rate (plus, when configured, the fine-tune rate and the
    dropout); each default is what the trainer uses untuned."""
    backbone, tuner, trainer = backbone_of(settings), settings.tuner, settings.trainer
    minimum = min_input_size(settings)
    sizes = sorted(s for s in tuner.input_sizes if s >= minimum)
    if not sizes:
        check_input_size(settings, max(tuner.input_sizes))
    default_size = min(sizes, key=lambda s: (abs(s - backbone.default_size), s))
    lo, hi = tuner.learning_rate_min, tuner.learning_rate_max
    hp = keras_tuner.HyperParameters()
    hp.Choice(HP_INPUT_SIZE, sizes, default=default_size)
    hp.Float(HP_LEARNING_RATE, lo, hi, sampling="log",
             default=min(max(trainer.phase1_learning_rate, lo), hi))
    if tuner.tune_phase2_learning_rate:
        hp.Float(HP_PHASE2_LEARNING_RATE, lo / 100, hi / 10, sampling="log",
                 default=phase2_learning_rate(hp, settings, untuned=True))
    if tuner.tune_dropout:
        hp.Float(HP_DROPOUT, 0.0, 0.5, step=0.1, default=trainer.dropout)
    return hp


def phase2_learning_rate(hp: keras_tuner.HyperParameters, settings: ModelSettings,
                         untuned: bool = False) -> float:
    """Tuned, else configured, else the phase-1 (tuned) rate / 10, as the tutorials do."""
    if not untuned and HP_PHASE2_LEARNING_RATE in hp.values:
        return float(hp.get(HP_PHASE2_LEARNING_RATE))
    configured = settings.trainer.phase2_learning_rate
    return configured if configured is not None else float(hp.get(HP_LEARNING_RATE)) / 10


def dropout_of(hp: keras_tuner.HyperParameters, settings: ModelSettings) -> float:
    return float(hp.get(HP_DROPOUT)) if HP_DROPOUT in hp.values else settings.trainer.dropout


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
                 shuffle: bool) -> tf.data.Dataset:
    """(normalized image, label) batches from transformed examples, one epoch."""
    size, bgr = settings.tuner.storage_size, is_bgr(backbone_of(settings))
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=settings.trainer.batch_size,
                                       label_key=features.LABEL_KEY, num_epochs=1,
                                       shuffle=shuffle, shuffle_seed=settings.trainer.seed),
        tf_transform_output.transformed_metadata.schema)
    return dataset.map(lambda f, y: (model_input(f, size, bgr), tf.reshape(y, [-1])),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def label_counts(file_pattern, data_accessor, tf_transform_output, settings, num_classes: int
                 ) -> np.ndarray:
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


def build_feature_base(settings: ModelSettings, size: int) -> keras.Model:
    """The pretrained base at `size`, cut at `base.cut_at` when configured."""
    check_input_size(settings, size)
    backbone = backbone_of(settings)
    base = build_base(backbone, settings.base.weights, size)
    cut_at = settings.base.cut_at
    if not cut_at:
        return base
    base_layers.check_cut(backbone.name, [layer.name for layer in base.layers], cut_at,
                          settings.trainer.fine_tune_from)
    return keras.Model(base.inputs, base.get_layer(cut_at).output, name=f"{base.name}_cut")


def fine_tune_boundary(base: keras.Model, settings: ModelSettings) -> str:
    """First layer phase 2 unfreezes: configured name or fraction, else the registry's."""
    return base_layers.fine_tune_boundary(settings.base.name, [layer.name for layer in base.layers],
                                          settings.trainer.fine_tune_from)


def build_head(feature_shape, num_classes: int, settings: ModelSettings, dropout: float
               ) -> keras.Model:
    """New layers on the base's features. A sub-model, so cached-feature training trains the
    very weights the exported classifier uses."""
    seed = settings.trainer.seed
    features_in = keras.Input(feature_shape, name="base_features")
    if settings.trainer.head == "dense128":
        x = keras.layers.AveragePooling2D(DENSE128_POOL)(features_in)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(128, activation="relu")(x)
        x = keras.layers.Dropout(0.5, seed=seed)(x)
    else:
        x = keras.layers.GlobalAveragePooling2D()(features_in)
        x = keras.layers.Dropout(dropout, seed=seed)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model(features_in, outputs, name=HEAD)


def build_classifier(settings: ModelSettings, size: int, num_classes: int, dropout: float
                     ) -> keras.Model:
    """Stored-size image -> resize to the tuned size -> frozen base -> head: what is exported."""
    shape = (settings.tuner.storage_size,) * 2 + (3,)
    image = keras.Input(shape, name="image")
    x = image
    if size != settings.tuner.storage_size:
        x = keras.layers.Resizing(size, size, name="resize_to_input")(x)
    base = build_feature_base(settings, size)
    base.trainable = False
    x = base(x, training=False)  # BatchNorm stays in inference mode, also in phase 2
    head = build_head(tuple(x.shape[1:]), num_classes, settings, dropout)
    return keras.Model(image, head(x), name=CLASSIFIER)


def build_augmentation(settings: ModelSettings) -> list[keras.layers.Layer]:
    """Training-only augmentation layers (inactive at inference, never exported)."""
    trainer = settings.trainer
    if not trainer.augment:
        return []
    # One seed per layer: layers sharing a seed draw the same sequence, so every flipped image
    # would also be rotated and zoomed the same way.
    seed = trainer.seed
    layers = [keras.layers.RandomFlip("horizontal", seed=seed)]
    if trainer.rotation:
        layers.append(keras.layers.RandomRotation(trainer.rotation, fill_mode="reflect",
                                                  seed=seed + 1))
    if trainer.zoom:
        layers.append(keras.layers.RandomZoom(trainer.zoom, fill_mode="reflect",
                                              seed=seed + 2))
    if trainer.translation:
        layers.append(keras.layers.RandomTranslation(trainer.translation,
                                                     trainer.translation,
                                                     fill_mode="reflect", seed=seed + 3))
    if trainer.contrast:
        # RandomContrast clips to [0, 255]; our pixels are already normalized, so scale around
        # each image's mean by hand instead.
        layers.append(_NormalizedContrast(trainer.contrast, seed=seed + 4))
    return layers


class _NormalizedContrast(keras.layers.Layer):
    """Random contrast for normalized (zero-centred) pixels: no clipping to [0, 255]."""

    def __init__(self, factor: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.factor, self.seed = factor, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        batch = keras.ops.shape(images)[0]
        scale = keras.random.uniform((batch, 1, 1, 1), 1 - self.factor, 1 + self.factor,
                                     seed=self.seed_generator)
        mean = keras.ops.mean(images, axis=(1, 2, 3), keepdims=True)
        return (images - mean) * scale + mean

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


def build_model(hp: keras_tuner.HyperParameters, settings: ModelSettings, num_classes: int
                ) -> keras.Model:
    """Phase-1 model: augmentation, then the classifier (frozen base + new head), compiled.

    The classifier is its own sub-model so the export leaves augmentation (training-only, with
    random-seed state a SavedModel cannot capture) behind.
    """
    keras.utils.set_random_seed(settings.trainer.seed)
    classifier = build_classifier(settings, hp.get(HP_INPUT_SIZE), num_classes,
                                  dropout_of(hp, settings))
    inputs = keras.Input(classifier.input_shape[1:], name="image")
    x = inputs
    for layer in build_augmentation(settings):
        x = layer(x)
    model = keras.Model(inputs, classifier(x), name="training_model")
    compile_model(model, hp.get(HP_LEARNING_RATE), settings)
    return model


def classifier_of(model: keras.Model) -> keras.Model:
    return model.get_layer(CLASSIFIER)


def head_of(model: keras.Model) -> keras.Model:
    return classifier_of(model).get_layer(HEAD)


def base_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in classifier_of(model).layers
                if isinstance(layer, keras.Model) and layer.name != HEAD)


def compile_model(model: keras.Model, learning_rate: float, settings: ModelSettings) -> None:
    if settings.trainer.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def unfreeze_top(model: keras.Model, settings: ModelSettings) -> tuple[str, int]:
    """Phase 2: layers from the boundary up train; BatchNorm stays frozen.

    Returns the boundary layer and how many base layers now train.
    """
    base = base_of(model)
    boundary = fine_tune_boundary(base, settings)
    names = [layer.name for layer in base.layers]
    if boundary not in names:
        raise CutLayerError(f"fine-tune layer '{boundary}' is not in base '{base.name}'")
    start = names.index(boundary)
    base.trainable = True
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
    return boundary, sum(1 for layer in base.layers if layer.trainable)


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch, so a long training shows progress in the run's log."""

    def __init__(self, label: str):
        super().__init__()
        self._label, self._start = label, time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        logging.info("progress: %s epoch %d: %s (%.0fs)", self._label, epoch + 1,
                     ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items())),
                     time.time() - self._start)


def phase_callbacks(settings: ModelSettings, label: str, extra=()) -> list:
    patience = settings.trainer.early_stopping_patience
    callbacks = [EpochLog(label), *extra]
    if patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                       restore_best_weights=True))
    return callbacks


class FeatureCache:
    """Frozen-base features of the un-augmented train and eval images, computed once per
    (data, base, weights, cut layer, input size) and kept on disk beside the runs.

    While the base is frozen its output for an image never changes, so phase 1 (and every
    tuner trial at one input size) can train the head on stored features instead of running
    the base every epoch. Features are float32 so the head sees exactly what the live base
    gives it.
    """

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
        import hashlib

        base = self._settings.base
        weights = base.weights
        if weights not in ("imagenet", "none") and os.path.isfile(weights):
            weights = f"{weights}:{os.path.getsize(weights)}:{os.path.getmtime(weights)}"
        identity = {"data": self._identity, "base": base.name, "weights": weights,
                    "cut_at": base.cut_at, "size": size,
                    "storage": self._settings.tuner.storage_size, "format": 1}
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()
                              ).hexdigest()[:20]

    def path(self, size: int) -> str:
        return os.path.join(self._dir, self.key(size))

    def get(self, split: str, size: int, classifier: keras.Model) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of a split, from memory, disk, or one pass of the base."""
        if (size, split) in self._memory:
            self.stats["in_memory"] += 1
            return self._memory[(size, split)]
        folder = self.path(size)
        file = os.path.join(folder, f"{split}.npz")
        if tf.io.gfile.exists(file):
            with tf.io.gfile.GFile(file, "rb") as fh:
                stored = np.load(io.BytesIO(fh.read()))
                result = (stored["features"], stored["labels"])
            self.stats["reused"] += 1
            logging.info("feature cache: reused %s (%s, size %d)", file, split, size)
        else:
            result = self._compute(split, classifier)
            tf.io.gfile.makedirs(folder)
            temp = f"{file}.tmp-{os.getpid()}"
            buffer = io.BytesIO()  # np.savez seeks; GFile (gs:// too) streams
            np.savez(buffer, features=result[0], labels=result[1])
            with tf.io.gfile.GFile(temp, "wb") as fh:
                fh.write(buffer.getvalue())
            tf.io.gfile.rename(temp, file, overwrite=True)
            self.stats["built"] += 1
        self._memory = {k: v for k, v in self._memory.items() if k[0] == size}  # one size in RAM
        self._memory[(size, split)] = result
        return result

    def _compute(self, split: str, classifier: keras.Model) -> tuple[np.ndarray, np.ndarray]:
        started = time.time()
        extractor = feature_extractor(classifier)
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


def feature_extractor(classifier: keras.Model) -> keras.Model:
    """Stored-size image -> (resize) -> base features: the classifier's layers minus its head,
    sharing their weights."""
    image = keras.Input(classifier.input_shape[1:], name="image")
    x = image
    for layer in classifier.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name == HEAD:
            break
        x = layer(x, training=False) if isinstance(layer, keras.Model) else layer(x)
    return keras.Model(image, x, name="feature_extractor")


class TransferHyperModel(keras_tuner.HyperModel):
    """The two-phase recipe as a KerasTuner HyperModel, used by tuner trials and the trainer.

    `fit` runs phase 1 (frozen base; live, or on cached features) and, when `phases` is "both",
    phase 2 (fine-tune from the boundary, BatchNorm frozen) — the route KerasTuner's maintainers
    point to for multi-step fits (keras-team/keras-tuner#629).
    """

    def __init__(self, settings: ModelSettings, num_classes: int, phases: str,
                 feature_cache: FeatureCache | None = None,
                 class_weight: dict[int, float] | None = None):
        super().__init__(name="transfer")
        self.settings, self.num_classes, self.phases = settings, num_classes, phases
        self.feature_cache, self.class_weight = feature_cache, class_weight
        self.record: dict[str, Any] = {}

    def build(self, hp):
        return build_model(hp, self.settings, self.num_classes)

    def fit(self, hp, model, x, validation_data=None, epochs=1, callbacks=None,
            phase2_epochs: int | None = None, label: str = "trainer", **kwargs):
        callbacks = list(callbacks or [])
        kwargs.pop("verbose", None)
        started = time.time()
        if self.feature_cache is not None:
            history, images = self._fit_cached_head(hp, model, epochs, callbacks, label,
                                                    kwargs.get("initial_epoch", 0))
        else:
            history = model.fit(x, validation_data=validation_data, epochs=epochs, verbose=0,
                                class_weight=self.class_weight, **kwargs,
                                callbacks=phase_callbacks(self.settings, f"{label} phase1",
                                                          callbacks)).history
            images = None
        self.record = {"phase1": _phase_record(history, time.time() - started, images),
                       "history": history}
        if self.phases != "both":
            return best_epoch(history)
        ran1 = len(history.get("loss", []))
        boundary, trainable = unfreeze_top(model, self.settings)
        compile_model(model, phase2_learning_rate(hp, self.settings), self.settings)
        logging.info("%s phase2: %d base layers trainable from %s, learning rate %.2g", label,
                     trainable, boundary, phase2_learning_rate(hp, self.settings))
        started = time.time()
        phase2 = model.fit(x, validation_data=validation_data, initial_epoch=ran1,
                           epochs=ran1 + (epochs if phase2_epochs is None else phase2_epochs),
                           verbose=0, class_weight=self.class_weight,
                           callbacks=phase_callbacks(self.settings, f"{label} phase2",
                                                     callbacks)).history
        self.record["phase2"] = _phase_record(phase2, time.time() - started, None)
        self.record["phase2"].update(boundary=boundary, trainable_layers=trainable)
        self.record["history"] = {k: history.get(k, []) + phase2.get(k, []) for k in history}
        return best_epoch(phase2)

    def _fit_cached_head(self, hp, model, epochs, callbacks, label, initial_epoch=0):
        classifier = classifier_of(model)
        size = hp.get(HP_INPUT_SIZE)
        train_x, train_y = self.feature_cache.get(features.TRAIN_SPLIT, size, classifier)
        eval_x, eval_y = self.feature_cache.get(features.EVAL_SPLIT, size, classifier)
        head = head_of(model)
        compile_model(head, hp.get(HP_LEARNING_RATE), self.settings)
        # The tuner's callbacks checkpoint and report the whole model, not the head.
        bound = [_BoundTo(callback, model) for callback in callbacks]
        history = head.fit(train_x, train_y, validation_data=(eval_x, eval_y), epochs=epochs,
                           batch_size=self.settings.trainer.batch_size, shuffle=True,
                           class_weight=self.class_weight, verbose=0,
                           initial_epoch=initial_epoch,
                           callbacks=phase_callbacks(self.settings, f"{label} phase1 (cached)",
                                                     bound)).history
        return history, len(train_y)


def best_epoch(history: dict[str, list[float]]) -> dict[str, float]:
    """The metrics of the epoch with the best val_accuracy (the one early stopping keeps): what
    a trial scores. KerasTuner would average a dict of per-epoch lists instead."""
    key = "val_accuracy" if history.get("val_accuracy") else "accuracy"
    best = int(np.argmax(history[key]))
    return {name: float(values[best]) for name, values in history.items() if values}


class _BoundTo(keras.callbacks.Callback):
    """Forwards epoch events to `callback` while it sees `model` (not the head being fit)."""

    def __init__(self, callback: keras.callbacks.Callback, model: keras.Model):
        super().__init__()
        self._callback = callback
        callback.set_model(model)

    def set_model(self, model):
        pass

    def on_train_begin(self, logs=None):
        self._callback.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._callback.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self._callback.on_train_end(logs)


def _phase_record(history: dict, seconds: float, images_per_epoch: int | None) -> dict:
    epochs = len(history.get("loss", []))
    record = {"epochs": epochs, "seconds": round(seconds, 1)}
    if history.get("val_accuracy"):
        record["best_val_accuracy"] = float(max(history["val_accuracy"]))
    if history.get("val_loss"):
        record["best_val_loss"] = float(min(history["val_loss"]))
    if images_per_epoch:
        record["images_per_second"] = round(images_per_epoch * epochs / max(seconds, 1e-9), 1)
    return record


def class_names(tf_transform_output: tft.TFTransformOutput) -> list[str]:
    """Sorted class names: index i is class id i, as ingest assigned them."""
    vocab = tf_transform_output.vocabulary_by_name(features.LABEL_VOCABULARY)
    return sorted(v.decode() if isinstance(v, bytes) else v for v in vocab)


class ExportModule(tf.Module):
    """What TF Serving and TFMA load: the TFT graph and the Keras model behind the signatures."""

    def __init__(self, model, tf_transform_output, names: list[str], size: int, bgr: bool,
                 input_size: int):
        super().__init__()
        self.model = model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._names = tf.constant(names)
        self._size, self._bgr = size, bgr
        # Readable from the SavedModel (`loaded.input_size`): the size the network was tuned to.
        self.input_size = tf.Variable(input_size, dtype=tf.int32, trainable=False,
                                      name="input_size")
        raw_spec = tf_transform_output.raw_feature_spec()
        self._image_spec = {features.IMAGE_KEY: raw_spec[features.IMAGE_KEY]}

    def _predict(self, raw_features):
        transformed = self.tft_layer(raw_features)
        probabilities = self.model(model_input(transformed, self._size, self._bgr),
                                   training=False)
        class_id = tf.argmax(probabilities, axis=-1)
        return {features.PROBABILITIES_KEY: probabilities,
                features.CLASS_ID_KEY: class_id,
                features.CLASS_NAME_KEY: tf.gather(self._names, class_id),
                features.CLASSES_KEY: self._all_names(probabilities)}

    def _all_names(self, probabilities):
        return tf.tile(self._names[None, :], [tf.shape(probabilities)[0], 1])

    def _parse(self, examples):
        parsed = tf.io.parse_example(examples, self._image_spec)
        return {features.IMAGE_KEY: tf.reshape(parsed[features.IMAGE_KEY], [-1, 1])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.SERVING_INPUT)])
    def serve_image_bytes(self, image_bytes):
        return self._predict({features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        return self._predict(self._parse(examples))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                                name=features.CLASSIFY_INPUT)])
    def classify(self, inputs):
        """TF Serving's Classify API shape: tf.Examples in, every class name and score out."""
        probabilities = self._predict(self._parse(inputs))[features.PROBABILITIES_KEY]
        return {features.CLASSIFY_CLASSES: self._all_names(probabilities),
                features.CLASSIFY_SCORES: probabilities}


def export(model, tf_transform_output, names, settings, serving_model_dir: str,
           model_info: dict[str, Any]) -> None:
    module = ExportModule(classifier_of(model), tf_transform_output, names, settings.tuner.storage_size,
                          is_bgr(backbone_of(settings)), model_info["input_size"])
    tf.saved_model.save(module, serving_model_dir, signatures={
        features.SERVING_SIGNATURE: module.serve_image_bytes,
        features.EXAMPLES_SIGNATURE: module.serve_examples,
        features.CLASSIFY_SIGNATURE: module.classify,
    })
    mark_classify_signature(serving_model_dir)
    write_json(os.path.join(serving_model_dir, features.MODEL_INFO_FILE), model_info)


def mark_classify_signature(saved_model_dir: str) -> None:
    """Give the classification signature TF Serving's classify method name.

    `tf.saved_model.save` writes every signature as a predict signature, and TF Serving's
    Classify API refuses those; the name is plain proto metadata, so set it after saving.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(saved_model_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as fh:
        proto.ParseFromString(fh.read())
    for meta_graph in proto.meta_graphs:
        if features.CLASSIFY_SIGNATURE in meta_graph.signature_def:
            meta_graph.signature_def[features.CLASSIFY_SIGNATURE].method_name = \
                tf.saved_model.CLASSIFY_METHOD_NAME
    with tf.io.gfile.GFile(path, "wb") as fh:
        fh.write(proto.SerializeToString())


def write_json(path: str, payload: Any) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as fh:
        fh.write(json.dumps(payload, indent=2, sort_keys=True))
