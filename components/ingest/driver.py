"""TFX's FileBasedDriver, plus a rolling window of the last N spans.

TFX 1.21's driver resolves spans from a `{SPAN}` in the input pattern and fingerprints the
matched files (the cache key), but accepts only `RollingRange(num_spans=1)`. This driver lets
TFX resolve the latest span exactly as it always does, then, for `num_spans = N > 1`, adds the
N-1 spans before it that exist on disk: one input split per span (`span-<n>`, its resolved
pattern), and a fingerprint covering every span in the window, so a change in any of them
invalidates the cache. The configured RangeConfig stays in the execution properties, so the
window size is part of the cache key too.

TFX fingerprints by stat'ing every matched file, and one dangling symlink or symlink loop in
the data tree failed the whole run there, with an empty `NotFoundError: `. This driver's
fingerprint (the same string as TFX's otherwise, so caches stay valid) counts such an entry by
the link's own lstat; the executor then quarantines it with its reason (listing.py).
"""
from __future__ import annotations

import copy
import os
import re
from typing import Any

from tfx.components.example_gen import driver, input_processor, utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_component_specs
from tfx.utils import io_utils, proto_utils
from tlpipe.components.ingest.listing import SPAN_SPEC, join

INPUT_CONFIG = standard_component_specs.INPUT_CONFIG_KEY
RANGE_CONFIG = standard_component_specs.RANGE_CONFIG_KEY


def window_size(exec_properties: dict[str, Any]) -> int:
    raw = exec_properties.get(RANGE_CONFIG)
    if not raw:
        return 1
    range_config = range_config_pb2.RangeConfig()
    if isinstance(raw, str):
        proto_utils.json_to_proto(raw, range_config)
    else:
        range_config.CopyFrom(raw)
    if range_config.HasField("rolling_range"):
        return max(1, range_config.rolling_range.num_spans)
    return 1


def _glob_to_regex(glob_part: str) -> str:
    out = []
    for ch in glob_part:
        out.append("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch))
    return "".join(out)


def existing_spans(input_base: str, pattern: str) -> dict[int, str]:
    """Span number -> the span token as written on disk (zero padding kept), for every path
    component matching the part of `pattern` that holds `{SPAN}`."""
    import tensorflow as tf

    parts = pattern.split("/")
    index = next(i for i, p in enumerate(parts) if SPAN_SPEC.search(p))
    spec = SPAN_SPEC.search(parts[index])
    left, right = parts[index][:spec.start()], parts[index][spec.end():]
    digits = rf"\d{{{spec.group(1)[1:]}}}" if spec.group(1) else r"\d+"
    regex = re.compile("^" + _glob_to_regex(left) + f"(?P<span>{digits})"
                       + _glob_to_regex(right) + "$")
    found: dict[int, str] = {}
    prefix = "/".join(parts[:index] + [SPAN_SPEC.sub("*", parts[index])])
    for path in tf.io.gfile.glob(join(input_base, prefix)):
        match = regex.match(os.path.basename(path.rstrip("/")))
        if match:
            token = match.group("span")
            found.setdefault(int(token), token)
    return found


def _length_and_mtime_ns(path: str) -> tuple[int, int]:
    try:
        stat = fileio.stat(path)
        return stat.length, stat.mtime_nsec
    except Exception:  # tf.errors.NotFoundError (with no message) for a dangling link or a loop
        if "://" in path:
            raise
        stat = os.lstat(path)  # the link itself: a changed link still changes the fingerprint
        return stat.st_size, stat.st_mtime_ns


def split_fingerprint(split_name: str, file_pattern: str) -> str:
    """TFX's io_utils.generate_fingerprint, tolerant of entries whose target cannot be stat'ed."""
    files = fileio.glob(file_pattern)
    total_bytes = xor_checksum = sum_checksum = 0
    for path in files:
        length, mtime_ns = _length_and_mtime_ns(path)
        total_bytes += length
        mtime = int(mtime_ns / io_utils.NANO_PER_SEC)  # as TFX rounds it
        xor_checksum ^= mtime
        sum_checksum += mtime
    return (f"split:{split_name},num_files:{len(files)},total_bytes:{total_bytes},"
            f"xor_checksum:{xor_checksum},sum_checksum:{sum_checksum}")


class _InputProcessor(input_processor.FileBasedInputProcessor):
    """TFX's, with `split_fingerprint` (utils.calculate_splits_fingerprint_span_and_version
    calls io_utils.generate_fingerprint directly, so the loop is written out here)."""

    def resolve_span_and_version(self):
        fingerprints, select_span, select_version = [], 0, None
        for split in (copy.deepcopy(s) for s in self._splits):
            # Fills {SPAN}/{VERSION} in split.pattern with the latest match, as TFX does.
            span, version = utils._get_target_span_version(  # private in TFX 1.21 (pinned)
                self._input_base_uri, split, range_config=self._range_config)
            span = span or 0
            if select_span == 0 and select_version is None:
                select_span, select_version = span, version
            if select_span != span:
                raise ValueError("Latest span should be the same for each split")
            if select_version != version:
                raise ValueError("Latest version should be the same for each split")
            fingerprints.append(split_fingerprint(split.name, os.path.join(self._input_base_uri, split.pattern)))
        self._fingerprint = "\n".join(fingerprints)
        return select_span, select_version


class SpanWindowDriver(driver.FileBasedDriver):
    """FileBasedDriver for `RangeConfig.rolling_range.num_spans` >= 1."""

    def get_input_processor(self, splits, range_config=None, input_base_uri=None):
        return _InputProcessor(input_base_uri, splits, range_config)

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        window = window_size(exec_properties)
        if window <= 1:
            return super().resolve_exec_properties(exec_properties, pipeline_info,
                                                    component_info)
        configured_range = exec_properties[RANGE_CONFIG]
        template = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[INPUT_CONFIG], template)
        if len(template.splits) != 1:
            raise ValueError("a rolling window of spans needs exactly one input split")
        pattern = template.splits[0].pattern
        if "{VERSION" in pattern:
            raise ValueError("a rolling window of spans does not support {VERSION}")

        # TFX resolves the latest span and its fingerprint, as for a window of one.
        single = range_config_pb2.RangeConfig(
            rolling_range=range_config_pb2.RollingRange(num_spans=1))
        exec_properties[RANGE_CONFIG] = proto_utils.proto_to_json(single)
        exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info,
                                                          component_info)
        latest = int(exec_properties[utils.SPAN_PROPERTY_NAME])
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        tokens = existing_spans(input_base, pattern)
        spans = sorted(s for s in tokens if s <= latest)[-window:]
        if latest not in spans:  # the latest span always belongs to the window
            spans = spans[1:] + [latest] if len(spans) == window else spans + [latest]
            tokens.setdefault(latest, str(latest))
        input_config = example_gen_pb2.Input()
        fingerprints = []
        for span in spans:
            resolved = SPAN_SPEC.sub(tokens[span], pattern)
            input_config.splits.add(name=f"span-{span}", pattern=resolved)
            fingerprints.append(split_fingerprint(f"span-{span}", join(input_base, resolved)))
        exec_properties[INPUT_CONFIG] = proto_utils.proto_to_json(input_config)
        exec_properties[utils.FINGERPRINT_PROPERTY_NAME] = "\n".join(fingerprints)
        exec_properties[RANGE_CONFIG] = configured_range
        return exec_properties
