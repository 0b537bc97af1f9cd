"""Request handling shared by gRPC, REST and warmup: Predict, Classify, Regress, MultiInference,
metadata.

Everything here takes a resolved `LoadedModel` and a TF Serving request message and returns
the response message, raising `ServingError` with TF Serving's status codes. Classify and
Regress pick their signature's tensors by TF Serving's rules (one input `inputs`; outputs
`classes`/`scores`, or `outputs`), without checking the method name (TF Serving's default,
`--enable_signature_method_name_check=false`); a tlpipe model's `probabilities` signature is
classified with its class names. Input guards (sizes, rows, image pixels) run before the model.
"""
from __future__ import annotations

import io

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)
from tlpipe.serving import tensors
from tlpipe.serving.limits import DEFAULT_LIMITS, InputLimits
from tlpipe.serving.servable import DEFAULT_SIGNATURE, LoadedModel, Signature
from tlpipe.serving.status import ServingError, from_exception, invalid_argument

__all__ = ["DEFAULT_LIMITS", "InputLimits", "predict", "classify", "regress", "multi_inference",
           "model_metadata"]

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"
EXAMPLE_INPUT_NAMES = ("inputs", "examples")  # TF Serving's, then the tlpipe trainer's
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")  # what tf.io.decode_image reads


def _check_strings(alias: str, values: np.ndarray, limits: InputLimits) -> None:
    for value in values.ravel().tolist():
        if len(value) > limits.max_string_bytes:
            raise invalid_argument(f"input '{alias}': an element of {len(value)} bytes exceeds "
                                   f"the limit of {limits.max_string_bytes}")
        _check_image_pixels(alias, value, limits)


def _check_image_pixels(alias: str, blob: bytes, limits: InputLimits) -> None:
    """Reads only the image header: a 20000x20000 PNG is small on the wire, huge decoded."""
    from PIL import Image

    if len(blob) < 8:
        return
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
            limits: InputLimits = DEFAULT_LIMITS,
            tensor_content: bool = False) -> predict_pb2.PredictResponse:
    signature = model.signature(request.model_spec.signature_name)
    wanted = list(request.output_filter) or list(signature.outputs)
    for alias in wanted:
        if alias not in signature.outputs:
            raise invalid_argument(f"output tensor alias not found in signature: {alias} "
                                   f"Outputs expected to be in the set {{{','.join(sorted(signature.outputs))}}}.")
    if len(set(wanted)) != len(wanted):
        raise invalid_argument("duplicate output tensor alias in output_filter")
    inputs = read_inputs(signature, request.inputs, limits)
    outputs = run_signature(signature, inputs)
    response = predict_pb2.PredictResponse()
    _echo_spec(response.model_spec, model, signature.name)
    for alias in wanted:
        response.outputs[alias].CopyFrom(tensors.to_tensor_proto(outputs[alias], tensor_content))
    return response


def read_inputs(signature: Signature, protos, limits: InputLimits) -> dict[str, np.ndarray]:
    """Request tensors into arrays: dtype and declared size checked before any is expanded."""
    sent, expected = set(protos.keys()), set(signature.inputs)
    if sent != expected:
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. Missing but required: "
            f"{{{','.join(sorted(expected - sent))}}}.")
    for alias, spec in signature.inputs.items():
        tensors.check_dtype(alias, protos[alias].dtype, spec.dtype)
    total = sum(p.ByteSize() for p in protos.values())
    if total > limits.max_request_bytes:
        raise invalid_argument(f"request tensors of {total} bytes exceed the limit of "
                               f"{limits.max_request_bytes}")
    arrays, expanded = {}, 0
    for alias in signature.inputs:
        arrays[alias] = tensors.to_ndarray(protos[alias], limits)
        expanded += _nbytes(arrays[alias])
        if expanded > limits.max_request_bytes:
            raise invalid_argument(f"request tensors expand beyond the limit of "
                                   f"{limits.max_request_bytes} bytes")
    return check_arrays(signature, arrays, limits)


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == object:
        return sum(len(v) for v in array.ravel().tolist()) + 8 * array.size
    return array.nbytes


def check_arrays(signature: Signature, arrays: dict[str, np.ndarray],
                 limits: InputLimits) -> dict[str, np.ndarray]:
    """Rows and string elements within limits (gRPC and REST alike); shapes are the model's."""
    if arrays and all(a.ndim > 0 and a.shape[0] == 0 for a in arrays.values()):
        raise invalid_argument("empty batch: every input has 0 rows")
    for alias, array in arrays.items():
        if array.ndim > 0 and array.shape[0] > limits.max_batch_rows:
            raise invalid_argument(f"input '{alias}' has {array.shape[0]} rows, over the limit "
                                   f"of {limits.max_batch_rows} per request")
        if signature.inputs[alias].dtype == types_pb2.DT_STRING:
            _check_strings(alias, array, limits)
    return arrays


def _echo_spec(spec, model: LoadedModel, signature_name: str) -> None:
    spec.name = model.name
    spec.version.value = model.version
    spec.signature_name = signature_name


def _example_input(signature: Signature, kind: str) -> str:
    """The alias of the one serialized-tf.Example input (TF Serving: exactly one, `inputs`)."""
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    alias = next(iter(signature.inputs))
    if alias not in EXAMPLE_INPUT_NAMES:
        raise invalid_argument(f"No {kind} inputs found in SignatureDef: {signature.name}")
    return alias


def _takes_examples(signature: Signature) -> bool:
    return len(signature.inputs) == 1 and next(iter(signature.inputs)) in EXAMPLE_INPUT_NAMES


def _scores_probabilities(signature: Signature) -> bool:
    """A tlpipe signature: `probabilities` are the scores, labelled with the class names."""
    return "probabilities" in signature.outputs and "scores" not in signature.outputs


def _classify_signature(model: LoadedModel, requested: str) -> Signature:
    """The signature Classify runs: the one named, or, for a tlpipe model asked for its
    default (image) signature, the tf.Example signature with `probabilities`."""
    signature = model.signature(requested)
    if not _takes_examples(signature) and (requested or DEFAULT_SIGNATURE) == DEFAULT_SIGNATURE:
        for candidate in model.signatures.values():
            if _takes_examples(candidate) and _scores_probabilities(candidate):
                return candidate
    if "classes" in signature.outputs or "scores" in signature.outputs \
            or _scores_probabilities(signature):
        return signature
    raise invalid_argument('Expected classification signature outputs to contain at least one '
                           f'of "classes" or "scores". Signature was: {signature.name}')


def _serialized_examples(request_input, limits: InputLimits) -> np.ndarray:
    """The request's tf.Examples, context merged in, serialized: an object array of bytes."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples, context = request_input.example_list.examples, None
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        examples, context = listed.examples, listed.context
    else:
        raise invalid_argument("Input is empty: neither example_list nor example_list_with_context")
    if not examples:
        raise invalid_argument("Input is empty: no examples")
    if len(examples) > limits.max_batch_rows:
        raise invalid_argument(f"{len(examples)} examples, over the limit of "
                               f"{limits.max_batch_rows} per request")
    serialized = []
    for example in examples:
        if context is not None:
            merged = example_pb2.Example()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            example = merged
        blob = example.SerializeToString()
        if len(blob) > limits.max_string_bytes:
            raise invalid_argument(f"an example of {len(blob)} bytes exceeds the limit of "
                                   f"{limits.max_string_bytes}")
        for key, feature in example.features.feature.items():
            for value in feature.bytes_list.value:
                _check_image_pixels(key, value, limits)
        serialized.append(blob)
    batch = np.empty(len(serialized), dtype=object)
    batch[:] = serialized
    return batch


def _run_examples(signature: Signature, request_input, limits: InputLimits, kind: str):
    alias = _example_input(signature, kind)
    batch = _serialized_examples(request_input, limits)
    return run_signature(signature, {alias: batch}), len(batch)


def _fill_classifications(model, signature, outputs, num_examples, result) -> None:
    if not _scores_probabilities(signature):
        labels, scores = outputs.get("classes"), outputs.get("scores")
    else:  # a tlpipe model: probabilities, labelled with its class names
        scores, labels = outputs["probabilities"], None
        if model.class_names and scores.ndim == 2 and scores.shape[1] == len(model.class_names):
            labels = np.tile(np.array([n.encode() for n in model.class_names], dtype=object),
                             (scores.shape[0], 1))
    for name, tensor in (("classes", labels), ("scores", scores)):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got "
                                   f"{list(tensor.shape)}")
        if tensor.shape[0] != num_examples:
            raise invalid_argument(f"Expected {name} output batch size of {num_examples}. "
                                   f"Got: {tensor.shape[0]}")
    if labels is not None and labels.dtype != object:
        raise invalid_argument("Expected classes Tensor of DT_STRING.")
    if scores is not None and scores.dtype != np.float32:
        raise invalid_argument(f"Expected scores Tensor of DT_FLOAT. Got: {scores.dtype}")
    if labels is not None and scores is not None and labels.shape[1] != scores.shape[1]:
        raise invalid_argument("Tensors class and score should match in dim_size(1). Got "
                               f"{labels.shape[1]} vs. {scores.shape[1]}")
    columns = (labels if labels is not None else scores).shape[1]
    for i in range(num_examples):
        classifications = result.classifications.add()
        for j in range(columns):
            entry = classifications.classes.add()
            if labels is not None:
                entry.label = labels[i, j].decode("utf-8", "replace")
            if scores is not None:
                entry.score = float(scores[i, j])


def classify(model: LoadedModel, request: classification_pb2.ClassificationRequest,
             limits: InputLimits = DEFAULT_LIMITS) -> classification_pb2.ClassificationResponse:
    signature = _classify_signature(model, request.model_spec.signature_name)
    response = classification_pb2.ClassificationResponse()
    _echo_spec(response.model_spec, model, signature.name)
    outputs, rows = _run_examples(signature, request.input, limits, "classification")
    _fill_classifications(model, signature, outputs, rows, response.result)
    return response


def _regression_signature(model: LoadedModel, requested: str) -> Signature:
    signature = model.signature(requested)
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "outputs" not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {signature.name}")
    return signature


def _fill_regressions(outputs, num_examples: int, result) -> None:
    values = outputs["outputs"]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument("Expected output Tensor shape to be either [batch_size] or "
                               f"[batch_size, 1] but got {list(values.shape)}")
    if values.shape[0] != num_examples:
        raise invalid_argument("Input batch size did not match output batch size: "
                               f"{num_examples} vs. {values.shape[0]}")
    if values.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {values.dtype}")
    for value in values.ravel().tolist():
        result.regressions.add().value = value


def regress(model: LoadedModel, request: regression_pb2.RegressionRequest,
            limits: InputLimits = DEFAULT_LIMITS) -> regression_pb2.RegressionResponse:
    signature = _regression_signature(model, request.model_spec.signature_name)
    response = regression_pb2.RegressionResponse()
    _echo_spec(response.model_spec, model, signature.name)
    outputs, rows = _run_examples(signature, request.input, limits, "regression")
    _fill_regressions(outputs, rows, response.result)
    return response


def multi_inference(model: LoadedModel, request: inference_pb2.MultiInferenceRequest,
                    limits: InputLimits = DEFAULT_LIMITS) -> inference_pb2.MultiInferenceResponse:
    """Classification and regression tasks over one input, as TF Serving's RunMultiInference."""
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
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
    for task in request.tasks:
        result = response.results.add()
        requested = task.model_spec.signature_name
        if task.method_name == CLASSIFY_METHOD:
            signature = _classify_signature(model, requested)
            outputs, rows = _run_examples(signature, request.input, limits, "classification")
            _fill_classifications(model, signature, outputs, rows, result.classification_result)
        else:
            signature = _regression_signature(model, requested)
            outputs, rows = _run_examples(signature, request.input, limits, "regression")
            _fill_regressions(outputs, rows, result.regression_result)
        _echo_spec(result.model_spec, model, signature.name)
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
