"""Typed messages for TF Serving's config files that `tensorflow-serving-api` does not ship.

The pip package carries ModelServerConfig but not BatchingParameters
(session_bundle_config.proto), MonitoringConfig or SSLConfig, yet the model server's flags point
at text-proto files of those types. Their schemas are declared here (same package, names, field
numbers and types), in a private descriptor pool, so the files parse with `text_format.Parse`
exactly as TF Serving parses them: an unknown field or a wrong type is a parse error.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_FIELD = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _FIELD.LABEL_OPTIONAL, _FIELD.LABEL_REPEATED
_SCALARS = {"bool": _FIELD.TYPE_BOOL, "string": _FIELD.TYPE_STRING, "int64": _FIELD.TYPE_INT64}

# message -> [(field, number, type, repeated)]; a type with a dot is a message type
_SCHEMAS = {
    "BatchingParameters": [
        ("max_batch_size", 1, ".google.protobuf.Int64Value", False),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value", False),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value", False),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value", False),
        ("thread_pool_name", 5, ".google.protobuf.StringValue", False),
        ("allowed_batch_sizes", 6, "int64", True),
        ("pad_variable_length_inputs", 7, "bool", False),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue", False),
        ("max_execution_batch_size", 9, ".google.protobuf.Int64Value", False),
    ],
    "PrometheusConfig": [("enable", 1, "bool", False), ("path", 2, "string", False)],
    "MonitoringConfig": [("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig", False)],
    "SSLConfig": [("server_key", 1, "string", False), ("server_cert", 2, "string", False),
                  ("custom_ca", 3, "string", False), ("client_verify", 4, "bool", False)],
}


def _build() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    schema = descriptor_pb2.FileDescriptorProto(
        name="tlpipe/serving/tf_serving_configs.proto", package="tensorflow.serving",
        syntax="proto3", dependency=[wrappers.name])
    for message_name, fields in _SCHEMAS.items():
        message = schema.message_type.add(name=message_name)
        for name, number, kind, repeated in fields:
            field = message.field.add(name=name, number=number,
                                      label=_REPEATED if repeated else _OPTIONAL)
            if kind.startswith("."):
                field.type, field.type_name = _FIELD.TYPE_MESSAGE, kind
            else:
                field.type = _SCALARS[kind]
    pool.Add(schema)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"tensorflow.serving.{name}")) for name in _SCHEMAS}


_CLASSES = _build()
BatchingParameters = _CLASSES["BatchingParameters"]
MonitoringConfig = _CLASSES["MonitoringConfig"]
SSLConfig = _CLASSES["SSLConfig"]
