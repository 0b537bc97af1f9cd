"""The gRPC servicers: tensorflow.serving.PredictionService and ModelService.

Thin: resolve the ModelSpec through the manager, hand the request to `inference`, turn a
`ServingError` into the RPC status, count the request. Registered with the official
`tensorflow-serving-api` stubs, so any TF Serving client works unchanged.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tlpipe.serving import config as server_config
from tlpipe.serving import inference
from tlpipe.serving.limits import InputLimits
from tlpipe.serving.manager import ModelManager, spec_choice
from tlpipe.serving.metrics import Metrics
from tlpipe.serving.status import ServingError, code_number, from_exception, invalid_argument

ENTRYPOINT = "GRPC"


def _abort(context: grpc.ServicerContext, error: ServingError):
    context.abort(error.code, error.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, metrics: Metrics, limits: InputLimits,
                 tensor_content: bool = False):
        self._manager = manager
        self._metrics = metrics
        self._limits = limits
        self._tensor_content = tensor_content  # --enable_serialization_as_tensor_content

    def _serve(self, context, api: str, model_spec, handler: Callable):
        started = time.perf_counter()
        version, status = "", "OK"
        try:
            with self._manager.serving(model_spec) as model:
                version = str(model.version)
                return handler(model)
        except Exception as err:
            error = from_exception(err)
            status = error.code.name
            _abort(context, error)
        finally:
            self._metrics.observe(model_spec.name, version, api, ENTRYPOINT, status,
                                  time.perf_counter() - started)

    def Predict(self, request, context):
        return self._serve(context, "predict", request.model_spec,
                           lambda model: inference.predict(model, request, self._limits,
                                                           self._tensor_content))

    def Classify(self, request, context):
        return self._serve(context, "classify", request.model_spec,
                           lambda model: inference.classify(model, request, self._limits))

    def Regress(self, request, context):
        return self._serve(context, "regress", request.model_spec,
                           lambda model: inference.regress(model, request, self._limits))

    def MultiInference(self, request, context):
        if not request.tasks:
            _abort(context, invalid_argument("MultiInferenceRequest has no tasks"))
        return self._serve(context, "multi_inference", request.tasks[0].model_spec,
                           lambda model: inference.multi_inference(model, request, self._limits))

    def GetModelMetadata(self, request, context):
        return self._serve(context, "get_model_metadata", request.model_spec,
                           lambda model: inference.model_metadata(model, request))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager, allow_reload_config: bool = True):
        self._manager = manager
        self._allow_reload_config = allow_reload_config  # unauthenticated: a switch to turn off

    def GetModelStatus(self, request, context):
        try:
            statuses = self._manager.version_status(*spec_choice(request.model_spec))
        except ServingError as err:
            _abort(context, err)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = status.state
            entry.status.error_code = code_number(status.error_code)
            entry.status.error_message = status.error_message
        return response

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        if not self._allow_reload_config:
            _abort(context, ServingError(grpc.StatusCode.PERMISSION_DENIED,
                                         "ReloadConfig is turned off (--allow_reload_config=false)"))
        try:
            models = server_config.from_model_server_config(request.config)
        except server_config.ConfigError as err:
            _abort(context, invalid_argument(str(err)))
        self._manager.reload_config(models)
        failures = [f"{m.name} version {s.version}: {s.error_message}"
                    for m in models for s in _safe_status(self._manager, m.name)
                    if s.error_message]
        if failures:
            response.status.error_code = code_number(grpc.StatusCode.UNKNOWN)
            response.status.error_message = "; ".join(failures)
        return response


def _safe_status(manager: ModelManager, name: str):
    try:
        return manager.version_status(name)
    except ServingError:
        return []
