"""The export: the SavedModel TF Serving and TFMA load (TFT graph + classifier behind the
serving, examples and classify signatures) and the model_info.json beside it."""
from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
from tlpipe.components import features
from tlpipe.components.trainer.inputs import is_bgr, model_input
from tlpipe.components.trainer.network import classifier_of
from tlpipe.components.trainer.search_space import backbone_of


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
