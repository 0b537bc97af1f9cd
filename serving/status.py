"""One error type carrying a gRPC status code, so gRPC and REST fail the way TF Serving does.

The REST side maps codes to HTTP exactly as TF Serving's `ToHTTPStatusCode` does (for example
FAILED_PRECONDITION is 400, not 412), because clients branch on those numbers.
"""
from __future__ import annotations

import grpc

OK = grpc.StatusCode.OK


class ServingError(Exception):
    """A request-level failure with the status code TF Serving would answer."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unimplemented(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNIMPLEMENTED, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


_HTTP = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def http_status(code: grpc.StatusCode) -> int:
    return _HTTP[code.name]


def code_number(code: grpc.StatusCode) -> int:
    """The numeric code, as `tensorflow.error.Code` in StatusProto uses it."""
    return code.value[0]


def from_exception(err: BaseException) -> ServingError:
    """Maps TensorFlow's runtime errors (a bad image, a wrong shape) onto a status code."""
    if isinstance(err, ServingError):
        return err
    import tensorflow as tf

    if isinstance(err, tf.errors.OpError):
        code = _TF_CODES.get(err.error_code, grpc.StatusCode.UNKNOWN)
        return ServingError(code, _first_line(err.message))
    if isinstance(err, (ValueError, TypeError, RecursionError)):
        return invalid_argument(_first_line(str(err)))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {_first_line(str(err))}")


def _first_line(text: str) -> str:
    """TF's messages carry graph stack traces; the last meaningful line says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("[[", "Detected at node", "<stack",
                                                             "Graph execution error"))]
    return (useful or lines or [text])[0]


_TF_CODES = {code.value[0]: code for code in grpc.StatusCode}
