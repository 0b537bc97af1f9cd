"""TF Serving's REST JSON: `instances` (row) and `inputs` (columnar) in, the same shape out.

Bytes travel as `{"b64": "..."}`; an output whose alias ends in `_bytes` goes back base64
encoded, any other string output as text (TF Serving's rule). tf.Examples for `:classify` are
objects of feature name -> value(s).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tlpipe.serving.servable import Signature
from tlpipe.serving.status import invalid_argument
from tlpipe.serving.tensors import NUMPY_TYPES, dtype_name

MAX_JSON_DEPTH = 64  # TF Serving's tensors are rarely deeper than 5; 100,000-deep JSON is 400


def parse_body(raw: bytes) -> dict:
    """A request body: a JSON object nested at most MAX_JSON_DEPTH deep, else INVALID_ARGUMENT."""
    if not raw.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    if _depth_exceeds(raw, MAX_JSON_DEPTH):
        raise invalid_argument(f"JSON Parse error: nesting deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise invalid_argument(f"JSON Parse error: Invalid value ({str(err)[:200]})") from None
    if not isinstance(body, dict):
        raise invalid_argument("JSON Value: the request body Is not object")
    return body


def _depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether brackets nest beyond `limit`, strings skipped (a linear scan in C-speed steps)."""
    import re

    depth = 0
    for token in re.finditer(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', raw):
        char = token.group()[:1]
        if char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
    return False


def signature_name(body: dict) -> str:
    name = body.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    return name


def _decode_value(value: Any, dtype: int) -> Any:
    if isinstance(value, list):
        return [_decode_value(v, dtype) for v in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid_argument('JSON object: expected {"b64": "<base64 string>"}')
        try:
            decoded = base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid_argument("Unable to base64 decode") from None
        if dtype != types_pb2.DT_STRING:
            raise invalid_argument(f"b64 value for a {dtype_name(dtype)} tensor")
        return decoded
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise invalid_argument(f"JSON Value: {json.dumps(value)[:100]} Type: "
                                   f"{type(value).__name__} is not of expected type: string")
        return value.encode("utf-8")
    if isinstance(value, str) or value is None:
        raise invalid_argument(f"JSON Value: {json.dumps(value)[:100]} Type: "
                               f"{type(value).__name__} is not of expected type: {dtype_name(dtype)}")
    return value


def _to_array(alias: str, values: Any, dtype: int) -> np.ndarray:
    decoded = _decode_value(values, dtype)
    try:
        if dtype == types_pb2.DT_STRING:
            shape = np.asarray(decoded, dtype=object).shape
            array = np.empty(shape, dtype=object)
            array[...] = decoded
            if any(not isinstance(v, bytes) for v in array.ravel().tolist()):
                raise ValueError("ragged")
            return array
        if dtype not in NUMPY_TYPES:
            raise invalid_argument(f"input '{alias}': dtype {dtype_name(dtype)} unsupported "
                                   "over REST")
        return np.asarray(decoded, dtype=NUMPY_TYPES[dtype])
    except (ValueError, TypeError):
        raise invalid_argument(f"input '{alias}': values are ragged or of the wrong type "
                               f"(expected {dtype_name(dtype)})") from None


def request_arrays(signature: Signature, body: dict) -> tuple[dict[str, np.ndarray], bool]:
    """The inputs of a :predict body, and whether it was row format (`instances`)."""
    if "instances" not in body and "inputs" not in body:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    if "instances" in body and "inputs" in body:
        raise invalid_argument("JSON Value: Not formatted correctly expecting only one of "
                               "'inputs' or 'instances' keys exclusively")
    aliases = list(signature.inputs)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid_argument("JSON Value: Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument("JSON Value: No values in 'instances' array")
        columns: dict[str, list] = {alias: [] for alias in aliases}
        for instance in instances:
            if isinstance(instance, dict) and "b64" not in instance:
                if set(instance) != set(aliases):
                    raise invalid_argument(f"instance keys {sorted(instance)} do not match "
                                           f"the signature inputs {sorted(aliases)}")
                for alias in aliases:
                    columns[alias].append(instance[alias])
            elif len(aliases) == 1:
                columns[aliases[0]].append(instance)
            else:
                raise invalid_argument("instances must be objects when the signature has "
                                       "several inputs")
        return {a: _to_array(a, columns[a], signature.inputs[a].dtype) for a in aliases}, True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and "b64" not in inputs:
        if set(inputs) != set(aliases):
            raise invalid_argument(f"input keys {sorted(inputs)} do not match the signature "
                                   f"inputs {sorted(aliases)}")
        return {a: _to_array(a, inputs[a], signature.inputs[a].dtype) for a in aliases}, False
    if len(aliases) != 1:
        raise invalid_argument("'inputs' must be an object when the signature has several "
                               "inputs")
    return {aliases[0]: _to_array(aliases[0], inputs, signature.inputs[aliases[0]].dtype)}, False


def _json_value(alias: str, array: np.ndarray) -> Any:
    if array.dtype == object:
        if alias.endswith("_bytes"):
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()},
                                otypes=[object])(array).tolist() if array.size else []
        return np.vectorize(lambda b: b.decode("utf-8", "replace"),
                            otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def response_body(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    if row_format:
        if len(outputs) == 1:
            alias, array = next(iter(outputs.items()))
            return {"predictions": _json_value(alias, array)}
        rows = next(iter(outputs.values())).shape[0]
        columns = {alias: _json_value(alias, array) for alias, array in outputs.items()}
        return {"predictions": [{alias: columns[alias][i] for alias in columns}
                                for i in range(rows)]}
    if len(outputs) == 1:
        alias, array = next(iter(outputs.items()))
        return {"outputs": _json_value(alias, array)}
    return {"outputs": {alias: _json_value(alias, array) for alias, array in outputs.items()}}


def example_from_json(features: Any) -> example_pb2.Example:
    if not isinstance(features, dict):
        raise invalid_argument("each example must be an object of feature name -> value")
    example = example_pb2.Example()
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        if all(isinstance(v, dict) or isinstance(v, str) for v in values):
            feature.bytes_list.value.extend(
                _decode_value(v, types_pb2.DT_STRING) for v in values)
        elif all(isinstance(v, bool) or isinstance(v, int) for v in values):
            feature.int64_list.value.extend(int(v) for v in values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(float(v) for v in values)
        else:
            raise invalid_argument(f"feature '{name}': mixed or unsupported value types")
    return example
