"""The loader: one version of one model, from SavedModel directory to a servable.

A TF2 SavedModel (one with an object graph) loads with `tf.saved_model.load`; a TF1 SavedModel
(SavedModelBuilder, no object graph) loads into a `tf.compat.v1.Session`, as TF Serving loads
every model: signatures then run as session calls, which feed any tensor the SignatureDef names
(TF Serving's half_plus_two feeds an intermediate `x`) and, like TF Serving, do not check the
request's shape against the signature's. SignatureDefs are kept as TF Serving reports them
(GetModelMetadata). Warmup replay is the caller's (serving.warmup), not the loader's.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from tlpipe.serving import layout
from tlpipe.serving.batching import BatchScheduler
from tlpipe.serving.config import BatchingOptions
from tlpipe.serving.servable import LoadedModel, Signature, TensorSpec

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
INIT_OP_SIGNATURE = "__saved_model_init_op"  # the loader runs it; not a servable signature


@dataclass(frozen=True)
class SessionOptions:
    """tensorflow_model_server's session flags that mean something here."""

    tags: tuple[str, ...] = (SERVE_TAG,)
    intra_op_threads: int = 0  # 0: TensorFlow picks
    inter_op_threads: int = 0


def read_meta_graph(path: str, tags: tuple[str, ...] = (SERVE_TAG,)):
    """The MetaGraph whose tags are exactly `tags`, straight from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
        saved = saved_model_pb2.SavedModel.FromString(fh.read())
    for meta_graph in saved.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    raise ValueError(f"{path}: no MetaGraph tagged {','.join(tags)}")


def read_signature_defs(path: str, tags: tuple[str, ...] = (SERVE_TAG,)):
    return read_meta_graph(path, tags).signature_def


def _spec(tensor_info) -> TensorSpec:
    shape = tensor_info.tensor_shape
    dims = None if shape.unknown_rank else tuple(d.size for d in shape.dim)
    return TensorSpec(tensor_info.dtype, dims)


def _function_call(function, output_keys: list[str]):
    import tensorflow as tf

    def tensor(array: np.ndarray):
        # an object array of bytes converts ~2x faster through a list
        return tf.constant(array.tolist()) if array.dtype == object else tf.constant(array)

    def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = function(**{k: tensor(v) for k, v in inputs.items()})
        return {k: result[k].numpy() for k in output_keys}

    return call


def _session_call(session, definition):
    """A signature as one session callable: feeds and fetches by tensor name.

    Built from CallableOptions (TF's C callable) rather than `Session.make_callable`, whose
    Python feed path refuses a value whose shape differs from the graph's static shape; TF
    Serving's C++ session hands it to the model, which decides.
    """
    from tensorflow.core.protobuf import config_pb2

    input_keys, output_keys = sorted(definition.inputs), sorted(definition.outputs)
    options = config_pb2.CallableOptions(
        feed=[definition.inputs[k].name for k in input_keys],
        fetch=[definition.outputs[k].name for k in output_keys])
    run = session._make_callable_from_options(options)  # noqa: SLF001 (see docstring)
    dtypes = [session.graph.get_tensor_by_name(definition.inputs[k].name).dtype.as_numpy_dtype
              for k in input_keys]

    def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = run(*[np.asarray(inputs[k], dtype=dtype) for k, dtype in zip(input_keys, dtypes)])
        return {k: np.asarray(v) for k, v in zip(output_keys, values)}

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
    for captured in getattr(function, "captured_inputs", ()):
        if captured.dtype == tf.string and captured.shape.rank == 1 \
                and captured.shape[0] == num_classes:
            return [v.decode("utf-8", "replace") for v in captured.numpy().tolist()]
    return None


def _open_session(path: str, options: SessionOptions):
    import tensorflow as tf

    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=options.intra_op_threads,
        inter_op_parallelism_threads=options.inter_op_threads)
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default():
            tf.compat.v1.saved_model.loader.load(session, list(options.tags), path)
    except Exception:
        session.close()
        raise
    return session


def load(name: str, version: int, path: str, batching: BatchingOptions | None = None,
         session: SessionOptions = SessionOptions()) -> LoadedModel:
    import tensorflow as tf

    started = time.monotonic()
    meta_graph = read_meta_graph(path, session.tags)
    signature_defs = meta_graph.signature_def
    if meta_graph.HasField("object_graph_def"):
        owner = tf.saved_model.load(path, tags=list(session.tags))
        functions = dict(owner.signatures)
    else:  # TF1: TF Serving's session semantics
        owner = _open_session(path, session)
        functions = {key: None for key in signature_defs if key != INIT_OP_SIGNATURE}
    signatures, class_names, schedulers = {}, None, []
    for key, function in functions.items():
        definition = signature_defs[key]
        outputs = {k: _spec(v) for k, v in definition.outputs.items()}
        call = (_function_call(function, sorted(outputs)) if function is not None
                else _session_call(owner, definition))
        if batching is not None:
            scheduler = BatchScheduler(call, batching, f"{name}-{version}-{key}")
            schedulers.append(scheduler)
            call = scheduler
        signatures[key] = Signature(key, definition.method_name,
                                    {k: _spec(v) for k, v in definition.inputs.items()},
                                    outputs, call)
        probabilities = outputs.get("probabilities")
        if class_names is None and function is not None and probabilities \
                and probabilities.shape and len(probabilities.shape) == 2:
            class_names = _class_names(path, function, probabilities.shape[1])
    model = LoadedModel(name, version, path, signature_defs, signatures, class_names, owner,
                        schedulers)
    log.info("model %s version %d loaded in %.1fs", name, version, time.monotonic() - started)
    return model
