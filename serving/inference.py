"""Request handling shared by gRPC, REST and warmup: Predict, Classify, MultiInference, metadata.

Everything here takes a resolved `LoadedModel` and a TF Serving request message and returns
the response message, raising `ServingError` with TF Serving's status codes. Input guards
(empty batch, oversized strings, images with too many pixels) run before the model does.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, inference_pb2, predict_pb2

from tlpipe.serving import tensors
from tlpipe.serving.loader import LoadedModel, Signature
from tlpipe.serving.status import ServingError, failed_precondition, from_exception, invalid_argument, unimplemented

CLASSIFY_METHOD = "tensorflow/serving/classify"
PREDICT_METHOD = "tensorflow/serving/predict"
EXAMPLE_INPUT_NAMES = ("examples", "inputs")
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")  # what tf.io.decode_image reads


@dataclass(frozen=True)
class InputLimits:
    """Guards against requests that would exhaust memory inside the model."""

    max_string_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000


DEFAULT_LIMITS = InputLimits()


def _check_strings(alias: str, values: np.ndarray, limits: InputLimits) -> None:
    for value in values.ravel().tolist():
        if len(value) > limits.max_string_bytes:
            raise invalid_argument(f"input '{alias}': an element of {len(value)} bytes exceeds "
                                   f"the limit of {limits.max_string_bytes}")
        _check_image_pixels(alias, value, limits)


def _check_image_pixels(alias: str, blob: bytes, limits: InputLimits) -> None:
    """Reads only the image header: a 20000x20000 PNG is small on the wire, huge decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob), formats=IMAGE_FORMATS) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise invalid_argument(f"input '{alias}': image exceeds {limits.max_image_pixels} "
                               "pixels") from None
    except Exception:  # not an image PIL knows: the model decides what to make of it
        return
    if width * height > limits.max_image_pixels:
        raise invalid_argument(f"input '{alias}': image of {width}x{height} pixels exceeds "
                               f"the limit of {limits.max_image_pixels}")


def run_signature(signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        return signature.call(inputs)
    except ServingError:
        raise
    except Exception as err:
        raise from_exception(err) from None


def predict(model: LoadedModel, request: predict_pb2.PredictRequest,
            limits: InputLimits = DEFAULT_LIMITS) -> predict_pb2.PredictResponse:
    signature = model.signature(request.model_spec.signature_name)
    inputs = read_inputs(signature, request.inputs, limits)
    wanted = list(request.output_filter) or list(signature.outputs)
    for alias in wanted:
        if alias not in signature.outputs:
            raise invalid_argument(f"output tensor alias not found in signature: {alias} "
                                   f"Outputs expected to be in the set {{{','.join(sorted(signature.outputs))}}}.")
    if len(set(wanted)) != len(wanted):
        raise invalid_argument("duplicate output tensor alias in output_filter")
    outputs = run_signature(signature, inputs)
    response = predict_pb2.PredictResponse()
    _echo_spec(response.model_spec, model, signature.name)
    for alias in wanted:
        response.outputs[alias].CopyFrom(tensors.to_tensor_proto(outputs[alias]))
    return response


def read_inputs(signature: Signature, protos, limits: InputLimits) -> dict[str, np.ndarray]:
    """Request tensors into arrays, checked against the signature's inputs."""
    sent, expected = set(protos.keys()), set(signature.inputs)
    if sent != expected:
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. Missing but required: "
            f"{{{','.join(sorted(expected - sent))}}}.")
    arrays = {}
    for alias, spec in signature.inputs.items():
        proto = protos[alias]
        array = tensors.to_ndarray(proto)
        tensors.check_against(alias, proto.dtype, array, spec)
        arrays[alias] = array
    return check_arrays(signature, arrays, limits)


def check_arrays(signature: Signature, arrays: dict[str, np.ndarray],
                 limits: InputLimits) -> dict[str, np.ndarray]:
    batch_sizes = {a.shape[0] for a in arrays.values() if a.ndim > 0}
    if 0 in batch_sizes:
        raise invalid_argument("empty batch: every input has 0 rows")
    if len(batch_sizes) > 1:
        raise invalid_argument(f"inputs disagree on the batch size: {sorted(batch_sizes)}")
    for alias, array in arrays.items():
        if signature.inputs[alias].dtype == types_pb2.DT_STRING:
            _check_strings(alias, array, limits)
    return arrays


def _echo_spec(spec, model: LoadedModel, signature_name: str) -> None:
    spec.name = model.name
    spec.version.value = model.version
    spec.signature_name = signature_name


def _example_signature(model: LoadedModel, requested: str) -> Signature:
    """The signature Classify runs: a classify one, or one taking serialized tf.Examples.

    The trainer's SavedModel (tf.saved_model.save) cannot carry method_name=classify, so a
    request for the default signature is served by the tf.Example signature (`serving_examples`).
    """
    signature = model.signature(requested)
    if signature.method_name == CLASSIFY_METHOD or _takes_examples(signature):
        return signature
    if not requested or requested == "serving_default":
        for candidate in model.signatures.values():
            if _takes_examples(candidate) and "probabilities" in candidate.outputs:
                return candidate
    raise failed_precondition(
        f"Expected classification signature method_name to be {CLASSIFY_METHOD}, or a single "
        f"tf.Example string input. Was: {signature.method_name}")


def _takes_examples(signature: Signature) -> bool:
    return (len(signature.inputs) == 1 and next(iter(signature.inputs)) in EXAMPLE_INPUT_NAMES
            and next(iter(signature.inputs.values())).dtype == types_pb2.DT_STRING)


def _serialized_examples(request_input) -> list[bytes]:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request_input.example_list.examples]
    if kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        serialized = []
        for example in listed.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(listed.context)
            merged.MergeFrom(example)
            serialized.append(merged.SerializeToString())
        return serialized
    raise invalid_argument("Input is empty: neither example_list nor example_list_with_context")


def classify(model: LoadedModel, request: classification_pb2.ClassificationRequest,
             limits: InputLimits = DEFAULT_LIMITS) -> classification_pb2.ClassificationResponse:
    signature = _example_signature(model, request.model_spec.signature_name)
    response = classification_pb2.ClassificationResponse()
    _echo_spec(response.model_spec, model, signature.name)
    _classify_into(model, signature, request.input, limits, response.result)
    return response


def _classify_into(model, signature, request_input, limits, result) -> None:
    serialized = _serialized_examples(request_input)
    if not serialized:
        raise invalid_argument("Input is empty: no examples")
    for blob in serialized:
        if len(blob) > limits.max_string_bytes:
            raise invalid_argument(f"an example of {len(blob)} bytes exceeds the limit of "
                                   f"{limits.max_string_bytes}")
    kind = request_input.WhichOneof("kind")
    listed = getattr(request_input, kind)
    examples = list(listed.examples) + ([listed.context] if kind != "example_list" else [])
    for example in examples:
        for key, feature in example.features.feature.items():
            for value in feature.bytes_list.value:
                _check_image_pixels(key, value, limits)
    alias = next(iter(signature.inputs))
    batch = np.empty(len(serialized), dtype=object)
    batch[:] = serialized
    outputs = run_signature(signature, {alias: batch})
    if signature.method_name == CLASSIFY_METHOD:
        scores = outputs.get("scores")
        labels = outputs.get("classes")
    else:
        scores = outputs["probabilities"]
        labels = None
        if model.class_names and scores.shape[1] == len(model.class_names):
            labels = np.tile(np.array([n.encode() for n in model.class_names], dtype=object),
                             (scores.shape[0], 1))
    rows = (scores if scores is not None else labels).shape[0]
    for i in range(rows):
        classifications = result.classifications.add()
        columns = (scores if scores is not None else labels).shape[1]
        for j in range(columns):
            entry = classifications.classes.add()
            if labels is not None:
                entry.label = labels[i, j].decode("utf-8", "replace")
            if scores is not None:
                entry.score = float(scores[i, j])


def multi_inference(model: LoadedModel, request: inference_pb2.MultiInferenceRequest,
                    limits: InputLimits = DEFAULT_LIMITS) -> inference_pb2.MultiInferenceResponse:
    """Classification tasks over one input; regression answers UNIMPLEMENTED."""
    if not request.tasks:
        raise invalid_argument("MultiInferenceRequest has no tasks")
    response = inference_pb2.MultiInferenceResponse()
    seen = set()
    for task in request.tasks:
        if task.model_spec.name != model.name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the "
                                   "same model name.")
        if task.model_spec.signature_name in seen:
            raise invalid_argument("Duplicate evaluation of signature: "
                                   f"{task.model_spec.signature_name}")
        seen.add(task.model_spec.signature_name)
        if task.method_name != CLASSIFY_METHOD:
            raise unimplemented(f"method {task.method_name or '(none)'} is not served here; "
                                "only classification")
        signature = _example_signature(model, task.model_spec.signature_name)
        result = response.results.add()
        _echo_spec(result.model_spec, model, signature.name)
        _classify_into(model, signature, request.input, limits,
                       result.classification_result)
    return response


def model_metadata(model: LoadedModel, request: get_model_metadata_pb2.GetModelMetadataRequest
                   ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    fields = list(request.metadata_field)
    if not fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one "
                               "metadata_field")
    for name in fields:
        if name != "signature_def":
            raise invalid_argument(f"Metadata field {name} is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model.name
    response.model_spec.version.value = model.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in model.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(definition)
    response.metadata["signature_def"].Pack(signature_map)
    return response
