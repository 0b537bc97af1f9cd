"""What one request may cost: every allocation a request can trigger is bounded here.

Checked before anything is materialised (a 46-byte TensorProto may declare 300 million floats
in TF's "fill" encoding), so a hostile request is refused with INVALID_ARGUMENT, not paid for.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputLimits:
    max_string_bytes: int = 32 * 1024 * 1024  # one string element (one image)
    max_image_pixels: int = 40_000_000  # width x height, read from the image header
    max_request_bytes: int = 256 * 1024 * 1024  # all input tensors of a request, expanded
    max_batch_rows: int = 1024  # rows (examples, instances) per request
    # a REST body: parsed JSON takes ~8x its text in Python objects ("1.0," -> a float and a
    # list slot), so it is bounded below the tensor limit; base64 images expand only ~1x
    max_json_bytes: int = 64 * 1024 * 1024


DEFAULT_LIMITS = InputLimits()
