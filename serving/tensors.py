"""TensorProto <-> numpy, checked against a signature the way TF Serving's Predict checks.

Strings and the common numeric types are converted directly (numeric outputs go out as
`tensor_content`, as TF Serving sends them); anything rarer goes through `tf.make_ndarray`.
"""
from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from tlpipe.serving.loader import TensorSpec
from tlpipe.serving.status import invalid_argument

NUMPY_TYPES = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_INT8: np.int8, types_pb2.DT_INT16: np.int16, types_pb2.DT_BOOL: np.bool_,
}
_DTYPE_OF = {np.dtype(v): k for k, v in NUMPY_TYPES.items()}
_VAL_FIELD = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT8: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_BOOL: "bool_val",
}


def dtype_name(dtype: int) -> str:
    """'string', 'float', ...: the words TF's own error messages use."""
    return types_pb2.DataType.Name(dtype)[3:].lower()


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise invalid_argument(f"tensor shape {shape} has a negative dimension")
    count = int(np.prod(shape)) if shape else 1
    if proto.dtype == types_pb2.DT_STRING:
        values = list(proto.string_val)
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif proto.dtype in NUMPY_TYPES:
        np_type = NUMPY_TYPES[proto.dtype]
        if proto.tensor_content:
            array = np.frombuffer(proto.tensor_content, dtype=np_type)
        else:
            array = np.asarray(getattr(proto, _VAL_FIELD[proto.dtype]), dtype=np_type)
    else:
        import tensorflow as tf

        try:
            return tf.make_ndarray(proto)
        except Exception as err:
            raise invalid_argument(f"cannot read tensor: {err}") from None
    if array.size == 1 and count > 1:
        array = np.full(count, array[0], dtype=array.dtype)  # TF's "fill" encoding
    if array.size != count:
        raise invalid_argument(f"tensor has {array.size} values but shape {shape} needs {count}")
    return array.reshape(shape)


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape]))
    if array.dtype == object or array.dtype.kind in ("S", "U"):
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode()
                                for v in array.ravel().tolist())
    elif array.dtype in _DTYPE_OF:
        proto.dtype = _DTYPE_OF[array.dtype]
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    else:
        import tensorflow as tf

        return tf.make_tensor_proto(array)
    return proto


def check_against(alias: str, proto_dtype: int, array: np.ndarray, spec: TensorSpec) -> None:
    """INVALID_ARGUMENT unless dtype and shape fit the signature input."""
    if proto_dtype != spec.dtype:
        raise invalid_argument(f"Expects arg '{alias}' to be {dtype_name(spec.dtype)} but "
                               f"{dtype_name(proto_dtype)} is provided")
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape):
        raise invalid_argument(f"input '{alias}' has rank {array.ndim}, the signature expects "
                               f"shape {list(spec.shape)}")
    for got, want in zip(array.shape, spec.shape):
        if want >= 0 and got != want:
            raise invalid_argument(f"input '{alias}' has shape {list(array.shape)}, the "
                                   f"signature expects {list(spec.shape)}")
