"""TF Serving warmup requests (`assets.extra/tf_serving_warmup_requests`) from real images.

TF Serving (and our server) replay these PredictionLog records when a version loads, so the
first user request does not pay for graph tracing and lazy initialisation.
"""
from __future__ import annotations

import os
import tempfile

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
from tlpipe.components import features


def warmup_records(example_files: list[str], model_name: str, count: int) -> bytes:
    """A TFRecord file's bytes: one single-image Predict request per example, up to `count`."""
    images = []
    if example_files:
        dataset = tf.data.TFRecordDataset(example_files, compression_type="GZIP").take(count)
        for record in dataset:
            example = tf.train.Example.FromString(record.numpy())
            images.append(example.features.feature[features.IMAGE_KEY].bytes_list.value[0])
    if not images:
        raise ValueError("no eval images found to build warmup requests from")
    logs = []
    for image in images:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name,
                                           signature_name=features.SERVING_SIGNATURE))
        request.inputs[features.SERVING_INPUT].CopyFrom(tf.make_tensor_proto([image]))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return _tfrecord_bytes([log.SerializeToString() for log in logs])


def _tfrecord_bytes(records: list[bytes]) -> bytes:
    """TFRecord framing (length, CRCs) comes only from TF's writer, so write a temp file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "warmup")
        with tf.io.TFRecordWriter(path) as writer:
            for record in records:
                writer.write(record)
        with open(path, "rb") as fh:
            return fh.read()
