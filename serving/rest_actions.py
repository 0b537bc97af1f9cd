"""What each REST route does with its decoded JSON body: TF Serving's request and response
JSON for :predict, :classify, :regress and /metadata, over `inference`."""
from __future__ import annotations

from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, regression_pb2
from tlpipe.serving import inference, json_codec
from tlpipe.serving.status import invalid_argument


def _predict(model, spec, body, limits):
    signature = model.signature(json_codec.signature_name(body))
    arrays, row_format = json_codec.request_arrays(signature, body)
    inference.check_arrays(signature, arrays, limits)
    outputs = inference.run_signature(signature, arrays)
    return json_codec.response_body(outputs, row_format)


def _example_input(body: dict, spec, request) -> None:
    """`examples` (+ optional `context`) of a :classify/:regress body into request.input."""
    request.model_spec.CopyFrom(spec)
    request.model_spec.signature_name = json_codec.signature_name(body)
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise invalid_argument("JSON Value: Expecting 'examples' to be an list/array")
    if not examples:
        raise invalid_argument("JSON Value: 'examples' value is an empty array")
    if "context" in body:
        listed = request.input.example_list_with_context
        listed.context.CopyFrom(json_codec.example_from_json(body["context"]))
    else:
        listed = request.input.example_list
    for features in examples:
        listed.examples.add().CopyFrom(json_codec.example_from_json(features))


def _classify(model, spec, body, limits):
    request = classification_pb2.ClassificationRequest()
    _example_input(body, spec, request)
    response = inference.classify(model, request, limits)
    return {"results": [[[c.label, c.score] for c in result.classes]
                        for result in response.result.classifications]}


def _regress(model, spec, body, limits):
    request = regression_pb2.RegressionRequest()
    _example_input(body, spec, request)
    response = inference.regress(model, request, limits)
    return {"results": [r.value for r in response.result.regressions]}


def _metadata(model, spec, body, limits):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.CopyFrom(spec)
    response = inference.model_metadata(model, request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return {"model_spec": {"name": model.name, "signature_name": "",
                           "version": str(model.version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_map, preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True)}}


ACTIONS = {":predict": _predict, ":classify": _classify, ":regress": _regress,
            "/metadata": _metadata}
