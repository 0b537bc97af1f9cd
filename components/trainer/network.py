"""The network: pretrained base (cut when configured) + new head, augmentation, compiling, and
phase 2's unfreezing. Named sub-models let cached-feature training and export find their parts.
"""
from __future__ import annotations

import keras
import keras_tuner
from tlpipe.components.config import ModelSettings
from tlpipe.components.features import HP_INPUT_SIZE, HP_LEARNING_RATE
from tlpipe.components.trainer import base_layers
from tlpipe.components.trainer.backbones import DENSE128_POOL, build_base
from tlpipe.components.trainer.base_layers import CutLayerError
from tlpipe.components.trainer.search_space import backbone_of, check_input_size, dropout_of

CLASSIFIER = "classifier"    # the exported sub-model: everything but augmentation
HEAD = "head"                # the new layers on top of the base: what phase 1 trains
POOL = "pool"                # the gap head's pooling: cached features are taken after it
POOLED_HEAD = "pooled_head"  # the gap head after pooling: what trains on pooled features


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


def pools_before_cache(settings: ModelSettings) -> bool:
    """The gap head averages the feature map first, so the cache keeps 1 vector per image (1,280
    floats for Lite0) instead of the map (7x7x1,280)."""
    return settings.trainer.head == "gap"


def build_pooled_head(channels: int, num_classes: int, settings: ModelSettings, dropout: float
                      ) -> keras.Model:
    pooled = keras.Input((channels,), name="pooled_features")
    x = keras.layers.Dropout(dropout, seed=settings.trainer.seed)(pooled)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model(pooled, outputs, name=POOLED_HEAD)


def build_head(feature_shape, num_classes: int, settings: ModelSettings, dropout: float
               ) -> keras.Model:
    """New layers on the base's features. A sub-model, so cached-feature training trains the
    very weights the exported classifier uses."""
    features_in = keras.Input(feature_shape, name="base_features")
    if pools_before_cache(settings):
        x = keras.layers.GlobalAveragePooling2D(name=POOL)(features_in)
        top = build_pooled_head(feature_shape[-1], num_classes, settings, dropout)
        return keras.Model(features_in, top(x), name=HEAD)
    x = keras.layers.AveragePooling2D(DENSE128_POOL)(features_in)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dropout(0.5, seed=settings.trainer.seed)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model(features_in, outputs, name=HEAD)


def build_cached_head(cached_shape, num_classes: int, settings: ModelSettings, dropout: float
                      ) -> keras.Model:
    """The part of the head that trains on cached features of `cached_shape` (a tuner trial)."""
    if pools_before_cache(settings):
        return build_pooled_head(cached_shape[-1], num_classes, settings, dropout)
    return build_head(cached_shape, num_classes, settings, dropout)


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
        layers.append(keras.layers.RandomZoom(trainer.zoom, fill_mode="reflect", seed=seed + 2))
    if trainer.translation:
        layers.append(keras.layers.RandomTranslation(trainer.translation, trainer.translation,
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


def cached_part_of(model: keras.Model, settings: ModelSettings) -> keras.Model:
    """The layers of the training model that train on cached features (sharing its weights)."""
    head = head_of(model)
    return head.get_layer(POOLED_HEAD) if pools_before_cache(settings) else head


def base_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in classifier_of(model).layers
                if isinstance(layer, keras.Model) and layer.name != HEAD)


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy against label-smoothed targets from integer labels (Keras's sparse loss
    has no `label_smoothing`): target = (1 - s) * one_hot + s / classes."""

    def __init__(self, smoothing: float, name: str = "smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        target = keras.ops.one_hot(labels, classes) * (1 - self.smoothing) + self.smoothing / classes
        return keras.losses.categorical_crossentropy(target, y_pred)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def compile_model(model: keras.Model, learning_rate: float, settings: ModelSettings,
                  decay_steps: int | None = None) -> None:
    """Adam (or SGD with momentum 0.9); with `decay_steps`, the rate follows a cosine decay to 0
    over that many steps (phase 2 with trainer.phase2_schedule=cosine)."""
    trainer = settings.trainer
    rate = (keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
            if decay_steps else learning_rate)
    if trainer.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=0.9)
    else:
        optimizer = keras.optimizers.Adam(rate)
    loss = (SmoothedSparseCrossentropy(trainer.label_smoothing) if trainer.label_smoothing
            else keras.losses.SparseCategoricalCrossentropy())
    model.compile(optimizer=optimizer, loss=loss,
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
