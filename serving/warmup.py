"""Warmup replay: `assets.extra/tf_serving_warmup_requests` run once before a version serves.

Above `inference` (it issues real requests) and beside `loader`, as in TF Serving, so loading
a SavedModel never imports request handling.
"""
from __future__ import annotations

import os

from tlpipe.serving import inference
from tlpipe.serving.servable import LoadedModel

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


def warmup_records(path: str) -> list:
    """The PredictionLog records of a version's warmup file ([] when it has none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    warmup_path = os.path.join(path, WARMUP_FILE)
    if not os.path.exists(warmup_path):
        return []
    records = []
    for raw in tf.data.TFRecordDataset(warmup_path).take(MAX_WARMUP_RECORDS + 1):
        records.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    if len(records) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{warmup_path}: more than {MAX_WARMUP_RECORDS} warmup records")
    return records


def replay_warmup(model: LoadedModel) -> int:
    """Runs each logged request once; any failure fails the load, as in TF Serving."""
    records = warmup_records(model.path)
    for record in records:
        kind = record.WhichOneof("log_type")
        if kind == "predict_log":
            inference.predict(model, record.predict_log.request)
        elif kind == "classify_log":
            inference.classify(model, record.classify_log.request)
        elif kind == "regress_log":
            inference.regress(model, record.regress_log.request)
        elif kind == "multi_inference_log":
            inference.multi_inference(model, record.multi_inference_log.request)
        else:
            raise ValueError(f"warmup record type '{kind}' is not supported")
    return len(records)
