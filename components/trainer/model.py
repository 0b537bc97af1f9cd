"""Model code shared by the Trainer's `run_fn` and the Tuner's `tuner_fn`.

One search space (`search_space`), one model builder, one input path: the tuner tries exactly
what the trainer then trains, and training and serving normalize pixels with the same function.
"""
from __future__ import annotations

import json
import os
from typing import Any

import keras
import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from components import features
from components.trainer.backbones import BACKBONES, CONVENTIONS, Backbone, build_base

# Hyperparameter names: the tuner's output keys and the trainer's inputs.
HP_INPUT_SIZE = "input_size"
HP_LEARNING_RATE = "learning_rate"
CLASSIFIER = "classifier"  # the exported sub-model: everything but augmentation


def search_space(settings: dict[str, Any]) -> keras_tuner.HyperParameters:
    """Input size x phase-1 learning rate; defaults are what the trainer uses untuned."""
    backbone = BACKBONES[settings["base"]["name"]]
    sizes = sorted(s for s in settings["tuner"]["input_sizes"] if s >= backbone.min_size)
    default_size = min(sizes, key=lambda s: (abs(s - backbone.default_size), s))
    lo, hi = settings["tuner"]["learning_rate_min"], settings["tuner"]["learning_rate_max"]
    hp = keras_tuner.HyperParameters()
    hp.Choice(HP_INPUT_SIZE, sizes, default=default_size)
    hp.Float(HP_LEARNING_RATE, lo, hi, sampling="log",
             default=min(max(settings["trainer"]["phase1_learning_rate"], lo), hi))
    return hp


def storage_size(settings: dict[str, Any]) -> int:
    return max(settings["tuner"]["input_sizes"])


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


def make_dataset(file_pattern, data_accessor, tf_transform_output, settings: dict[str, Any],
                 shuffle: bool) -> tf.data.Dataset:
    """(normalized image, label) batches from transformed examples, one epoch."""
    backbone = BACKBONES[settings["base"]["name"]]
    size, bgr = storage_size(settings), is_bgr(backbone)
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=settings["trainer"]["batch_size"],
                                       label_key=features.LABEL_KEY, num_epochs=1,
                                       shuffle=shuffle, shuffle_seed=settings["trainer"]["seed"]),
        tf_transform_output.transformed_metadata.schema)
    return dataset.map(lambda f, y: (model_input(f, size, bgr), tf.reshape(y, [-1])),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def build_model(hp: keras_tuner.HyperParameters, settings: dict[str, Any], num_classes: int
                ) -> keras.Model:
    """Phase-1 model: augmentation, then the classifier (frozen base + new softmax head).

    The classifier is its own sub-model so the export leaves augmentation (training-only, with
    random-seed state a SavedModel cannot capture) behind.
    """
    backbone = BACKBONES[settings["base"]["name"]]
    trainer = settings["trainer"]
    size = hp.get(HP_INPUT_SIZE)
    keras.utils.set_random_seed(trainer["seed"])
    shape = (storage_size(settings),) * 2 + (3,)
    image = keras.Input(shape, name="image")
    x = image
    if size != storage_size(settings):
        x = keras.layers.Resizing(size, size, name="resize_to_input")(x)
    base = build_base(backbone, settings["base"]["weights"], size)
    base.trainable = False
    x = base(x, training=False)  # BatchNorm stays in inference mode, also in phase 2
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(trainer["dropout"], seed=trainer["seed"])(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    classifier = keras.Model(image, outputs, name=CLASSIFIER)
    inputs = keras.Input(shape, name="image")
    x = inputs
    if trainer["augment"]:
        x = keras.layers.RandomFlip("horizontal", seed=trainer["seed"])(x)
        x = keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=trainer["seed"])(x)
    model = keras.Model(inputs, classifier(x), name="training_model")
    compile_model(model, hp.get(HP_LEARNING_RATE))
    return model


def classifier_of(model: keras.Model) -> keras.Model:
    return model.get_layer(CLASSIFIER)


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def base_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in classifier_of(model).layers if isinstance(layer, keras.Model))


def unfreeze_top(model: keras.Model, fine_tune_at: str) -> int:
    """Phase 2: layers from `fine_tune_at` up train; BatchNorm stays frozen. Returns count."""
    base = base_of(model)
    names = [layer.name for layer in base.layers]
    if fine_tune_at not in names:
        raise ValueError(f"fine-tune layer '{fine_tune_at}' not in base '{base.name}'")
    start = names.index(fine_tune_at)
    base.trainable = True
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(1 for layer in base.layers if layer.trainable)


def class_names(tf_transform_output: tft.TFTransformOutput) -> list[str]:
    """Sorted class names: index i is class id i, as ingest assigned them."""
    vocab = tf_transform_output.vocabulary_by_name(features.LABEL_VOCABULARY)
    return sorted(v.decode() if isinstance(v, bytes) else v for v in vocab)


class ExportModule(tf.Module):
    """What TF Serving and TFMA load: the TFT graph and the Keras model behind two signatures."""

    def __init__(self, model, tf_transform_output, names: list[str], size: int, bgr: bool):
        super().__init__()
        self.model = model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._names = tf.constant(names)
        self._size, self._bgr = size, bgr
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
                features.CLASSES_KEY: tf.tile(self._names[None, :],
                                              [tf.shape(probabilities)[0], 1])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.SERVING_INPUT)])
    def serve_image_bytes(self, image_bytes):
        return self._predict({features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        parsed = tf.io.parse_example(examples, self._image_spec)
        return self._predict({features.IMAGE_KEY: tf.reshape(parsed[features.IMAGE_KEY], [-1, 1])})


def export(model, tf_transform_output, names, settings, serving_model_dir: str,
           model_info: dict[str, Any]) -> None:
    backbone = BACKBONES[settings["base"]["name"]]
    module = ExportModule(classifier_of(model), tf_transform_output, names, storage_size(settings),
                          is_bgr(backbone))
    tf.saved_model.save(module, serving_model_dir, signatures={
        features.SERVING_SIGNATURE: module.serve_image_bytes,
        features.EXAMPLES_SIGNATURE: module.serve_examples,
    })
    write_json(os.path.join(serving_model_dir, features.MODEL_INFO_FILE), model_info)


def write_json(path: str, payload: Any) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as fh:
        fh.write(json.dumps(payload, indent=2, sort_keys=True))
