"""TensorProto <-> numpy, bounded and in TF Serving's encodings.

Reading checks the declared size against `InputLimits` before allocating, then expands TF's
short encodings as TensorFlow's `Tensor::FromProto` does (no values: zeros; fewer values than
elements: the last one repeated). Writing fills the typed `*_val` fields, TF Serving's default;
`tensor_content` only when asked (`--enable_serialization_as_tensor_content`).
"""
from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tlpipe.serving.limits import DEFAULT_LIMITS, InputLimits
from tlpipe.serving.status import invalid_argument

NUMPY_TYPES = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_INT8: np.int8, types_pb2.DT_INT16: np.int16, types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_UINT16: np.uint16, types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64, types_pb2.DT_HALF: np.float16,
}
_DTYPE_OF = {np.dtype(v): k for k, v in NUMPY_TYPES.items()}
_VAL_FIELD = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT8: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
}


def dtype_name(dtype: int) -> str:
    """'string', 'float', ...: the words TF's own error messages use."""
    try:
        return types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"dtype {dtype}"


def _declared_count(proto: tensor_pb2.TensorProto, limits: InputLimits) -> tuple[list[int], int]:
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise invalid_argument(f"tensor shape {shape} has a negative dimension")
    count = 1
    for size in shape:
        count *= size
    if count > limits.max_request_bytes:  # even one byte per element is too many
        raise invalid_argument(f"tensor of shape {shape} exceeds the request limit of "
                               f"{limits.max_request_bytes} bytes")
    return shape, count


def _check_bytes(shape: list[int], nbytes: int, limits: InputLimits) -> None:
    if nbytes > limits.max_request_bytes:
        raise invalid_argument(f"tensor of shape {shape} would take {nbytes} bytes, over the "
                               f"request limit of {limits.max_request_bytes}")


def to_ndarray(proto: tensor_pb2.TensorProto, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The request tensor as an array; INVALID_ARGUMENT before any oversized allocation."""
    shape, count = _declared_count(proto, limits)
    if proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        if len(values) > count:
            raise invalid_argument(f"tensor has {len(values)} values but shape {shape} needs "
                                   f"{count}")
        longest = max((len(v) for v in values), default=0)
        _check_bytes(shape, count * max(longest, 1) if len(values) < count else
                     sum(len(v) for v in values), limits)
        array = np.empty(count, dtype=object)
        if values:
            array[:len(values)] = list(values)
            array[len(values):] = values[-1]
        else:
            array[:] = b""
        return array.reshape(shape)
    if proto.dtype not in NUMPY_TYPES:
        raise invalid_argument(f"tensor dtype {dtype_name(proto.dtype)} is not supported")
    np_type = np.dtype(NUMPY_TYPES[proto.dtype])
    _check_bytes(shape, count * np_type.itemsize, limits)
    if proto.tensor_content:
        if len(proto.tensor_content) != count * np_type.itemsize:
            raise invalid_argument(f"tensor_content has {len(proto.tensor_content)} bytes but "
                                   f"shape {shape} of {dtype_name(proto.dtype)} needs "
                                   f"{count * np_type.itemsize}")
        return np.frombuffer(proto.tensor_content, dtype=np_type).reshape(shape)
    if proto.dtype == types_pb2.DT_HALF:  # half_val carries the raw 16 bits
        values = np.asarray(proto.half_val, dtype=np.uint16).view(np.float16)
    else:
        values = np.asarray(getattr(proto, _VAL_FIELD[proto.dtype]), dtype=np_type)
    if values.size > count:
        raise invalid_argument(f"tensor has {values.size} values but shape {shape} needs {count}")
    if values.size == count:
        return values.reshape(shape)
    array = np.empty(count, dtype=np_type)
    array[:values.size] = values
    array[values.size:] = values[-1] if values.size else 0
    return array.reshape(shape)


def to_tensor_proto(array: np.ndarray, tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """An output tensor: typed `*_val` fields (TF Serving's default) or `tensor_content`."""
    proto = tensor_pb2.TensorProto(
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape]))
    if array.dtype == object or array.dtype.kind in ("S", "U"):
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode()
                                for v in array.ravel().tolist())
        return proto
    if array.dtype not in _DTYPE_OF:
        import tensorflow as tf

        return tf.make_tensor_proto(array)
    proto.dtype = _DTYPE_OF[array.dtype]
    if tensor_content:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    elif proto.dtype == types_pb2.DT_HALF:
        proto.half_val.extend(np.ascontiguousarray(array).ravel().view(np.uint16).tolist())
    else:
        getattr(proto, _VAL_FIELD[proto.dtype]).extend(array.ravel().tolist())
    return proto


def check_dtype(alias: str, proto_dtype: int, expected: int) -> None:
    """INVALID_ARGUMENT unless the dtype is the signature input's (TF's own message).

    Shapes are not checked here: TF Serving hands any shape to the model, which decides.
    """
    if proto_dtype != expected:
        raise invalid_argument(f"Expects arg '{alias}' to be {dtype_name(expected)} but "
                               f"{dtype_name(proto_dtype)} is provided")
