"""What a loaded version is, independent of how it was loaded or what is asked of it.

The bottom of serving's layering (TF Serving's servable): `loader` builds these, `inference`
runs them, `manager` hands them to requests. Imports nothing else from serving but `status`
and `batching`.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tlpipe.serving.batching import BatchScheduler
from tlpipe.serving.status import failed_precondition

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorSpec:
    dtype: int  # tensorflow.DataType enum value, as in TensorProto.dtype
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension


@dataclass
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    call: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class LoadedModel:
    """A servable: signatures ready to run, plus what GetModelMetadata reports."""

    def __init__(self, name: str, version: int, path: str, signature_defs, signatures,
                 class_names: list[str] | None, saved_model=None,
                 schedulers: list[BatchScheduler] | None = None):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs  # map<string, SignatureDef>
        self.signatures: dict[str, Signature] = signatures
        self.class_names = class_names
        self._in_flight = 0
        self._idle = threading.Condition()
        self._saved_model = saved_model  # keeps the variables (or the TF1 session) alive
        self._schedulers = schedulers or []

    def signature(self, name: str) -> Signature:
        key = name or DEFAULT_SIGNATURE
        if key not in self.signatures:
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        return self.signatures[key]

    def acquire(self) -> None:
        with self._idle:
            self._in_flight += 1

    def release(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no request is using this version (bounded: unload never hangs)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def close(self) -> None:
        for scheduler in self._schedulers:
            scheduler.close()
        close = getattr(self._saved_model, "close", None)  # a TF1 session
        if callable(close):
            close()

    @property
    def batch_sizes(self) -> list[int]:
        return [size for s in self._schedulers for size in s.batch_sizes]
