"""The loader: one version of one model, from SavedModel directory to a servable.

Loads with `tf.saved_model.load`, keeps the SignatureDefs as TF Serving reports them
(GetModelMetadata), and replays `assets.extra/tf_serving_warmup_requests` before the version
is marked available, so its first real request does not pay for graph tracing.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tlpipe.serving import layout
from tlpipe.serving.batching import BatchScheduler
from tlpipe.serving.config import BatchingOptions
from tlpipe.serving.status import failed_precondition

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
SERVE_TAG = "serve"


@dataclass(frozen=True)
class TensorSpec:
    dtype: int  # tensorflow.DataType enum value, as in TensorProto.dtype
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension


@dataclass
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    call: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class LoadedModel:
    """A servable: signatures ready to run, plus what GetModelMetadata reports."""

    def __init__(self, name: str, version: int, path: str, signature_defs, signatures,
                 class_names: list[str] | None, saved_model=None,
                 schedulers: list[BatchScheduler] | None = None):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs  # map<string, SignatureDef>
        self.signatures: dict[str, Signature] = signatures
        self.class_names = class_names
        self._in_flight = 0
        self._idle = threading.Condition()
        self._saved_model = saved_model  # keeps the variables alive as long as the servable
        self._schedulers = schedulers or []

    def signature(self, name: str) -> Signature:
        key = name or "serving_default"
        if key not in self.signatures:
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        return self.signatures[key]

    def acquire(self) -> None:
        with self._idle:
            self._in_flight += 1

    def release(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no request is using this version (bounded: unload never hangs)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def close(self) -> None:
        for scheduler in self._schedulers:
            scheduler.close()

    @property
    def batch_sizes(self) -> list[int]:
        return [size for s in self._schedulers for size in s.batch_sizes]


def read_signature_defs(path: str):
    """The SignatureDef map of the `serve` MetaGraph, straight from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
        saved = saved_model_pb2.SavedModel.FromString(fh.read())
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph.signature_def
    raise ValueError(f"{path}: no MetaGraph tagged '{SERVE_TAG}'")


def _spec(tensor_info) -> TensorSpec:
    shape = tensor_info.tensor_shape
    dims = None if shape.unknown_rank else tuple(d.size for d in shape.dim)
    return TensorSpec(tensor_info.dtype, dims)


def _make_call(function, output_keys: list[str]):
    import tensorflow as tf

    def tensor(array: np.ndarray):
        # an object array of bytes converts ~2x faster through a list
        return tf.constant(array.tolist()) if array.dtype == object else tf.constant(array)

    def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = function(**{k: tensor(v) for k, v in inputs.items()})
        return {k: result[k].numpy() for k in output_keys}

    return call


def _class_names(path: str, function, num_classes: int | None) -> list[str] | None:
    """Class id -> name, for Classify's labels: the pusher's `label_vocabulary` in metadata.json,
    else the constant [C] string tensor the signature gathers `class_name` from.

    `assets/label_names` is TFT's frequency-ordered vocabulary, not id order, so it is not used.
    """
    import tensorflow as tf

    if not num_classes or num_classes < 1:
        return None
    vocabulary = layout.read_metadata(path).get("label_vocabulary")
    if isinstance(vocabulary, list) and len(vocabulary) == num_classes:
        return [str(name) for name in vocabulary]
    for captured in function.captured_inputs:
        if captured.dtype == tf.string and captured.shape.rank == 1 \
                and captured.shape[0] == num_classes:
            return [v.decode("utf-8", "replace") for v in captured.numpy().tolist()]
    return None


def load(name: str, version: int, path: str,
         batching: BatchingOptions | None = None, warmup: bool = True) -> LoadedModel:
    import tensorflow as tf

    started = time.monotonic()
    signature_defs = read_signature_defs(path)
    loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
    signatures, class_names = {}, None
    schedulers = []
    for key, function in loaded.signatures.items():
        definition = signature_defs[key]
        outputs = {k: _spec(v) for k, v in definition.outputs.items()}
        call = _make_call(function, sorted(outputs))
        if batching is not None:
            scheduler = BatchScheduler(call, batching, f"{name}-{version}-{key}")
            schedulers.append(scheduler)
            call = scheduler
        signatures[key] = Signature(key, definition.method_name,
                                    {k: _spec(v) for k, v in definition.inputs.items()},
                                    outputs, call)
        probabilities = outputs.get("probabilities")
        if class_names is None and probabilities and probabilities.shape \
                and len(probabilities.shape) == 2:
            class_names = _class_names(path, function, probabilities.shape[1])
    model = LoadedModel(name, version, path, signature_defs, signatures, class_names, loaded,
                        schedulers)
    try:
        if warmup:
            replayed = replay_warmup(model)
            if replayed:
                log.info("model %s version %d: replayed %d warmup requests", name, version,
                         replayed)
    except Exception:
        model.close()
        raise
    log.info("model %s version %d loaded in %.1fs", name, version, time.monotonic() - started)
    return model


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
    from tlpipe.serving import inference

    records = warmup_records(model.path)
    for record in records:
        kind = record.WhichOneof("log_type")
        if kind == "predict_log":
            inference.predict(model, record.predict_log.request)
        elif kind == "classify_log":
            inference.classify(model, record.classify_log.request)
        else:
            raise ValueError(f"warmup record type '{kind}' is not supported")
    return len(records)
