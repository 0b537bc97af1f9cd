"""Request count and latency by model, version, API and status, in Prometheus' text format.

Metric names follow TF Serving's (`:tensorflow:serving:request_count`,
`:tensorflow:serving:request_latency`, latency in microseconds) so dashboards carry over; the
`version` label is ours (TF Serving counts per model only).
"""
from __future__ import annotations

import bisect
import threading
from collections import defaultdict

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# microseconds: 100us .. ~100s, doubling
BUCKETS_US = tuple(100 * 2 ** i for i in range(21))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple, int] = defaultdict(int)
        self._latency: dict[tuple, list] = {}  # key -> [bucket counts..., sum, count]

    def observe(self, model: str, version: str, api: str, entrypoint: str, status: str,
                seconds: float) -> None:
        micros = seconds * 1e6
        key = (model, version, api, entrypoint, status)
        latency_key = (model, version, api, entrypoint)
        with self._lock:
            self._counts[key] += 1
            series = self._latency.get(latency_key)
            if series is None:
                series = self._latency[latency_key] = [0] * (len(BUCKETS_US) + 1) + [0.0, 0]
            series[bisect.bisect_left(BUCKETS_US, micros)] += 1
            series[-2] += micros
            series[-1] += 1

    def count(self, model: str, status: str) -> int:
        with self._lock:
            return sum(n for k, n in self._counts.items() if k[0] == model and k[4] == status)

    def render(self) -> str:
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted((k, list(v)) for k, v in self._latency.items())
        lines = [f"# HELP {REQUEST_COUNT} The number of requests, by model, version, API "
                 "and status.", f"# TYPE {REQUEST_COUNT} counter"]
        for (model, version, api, entrypoint, status), n in counts:
            labels = _labels(model_name=model, version=version, API=api,
                             entrypoint=entrypoint, status=status)
            lines.append(f"{REQUEST_COUNT}{{{labels}}} {n}")
        lines += [f"# HELP {REQUEST_LATENCY} Request latency in microseconds.",
                  f"# TYPE {REQUEST_LATENCY} histogram"]
        for (model, version, api, entrypoint), series in latency:
            labels = _labels(model_name=model, version=version, API=api, entrypoint=entrypoint)
            cumulative = 0
            for bound, n in zip(BUCKETS_US, series):
                cumulative += n
                lines.append(f'{REQUEST_LATENCY}_bucket{{{labels},le="{bound}"}} {cumulative}')
            lines.append(f'{REQUEST_LATENCY}_bucket{{{labels},le="+Inf"}} {series[-1]}')
            lines.append(f"{REQUEST_LATENCY}_sum{{{labels}}} {series[-2]:.1f}")
            lines.append(f"{REQUEST_LATENCY}_count{{{labels}}} {series[-1]}")
        return "\n".join(lines) + "\n"


def _labels(**values: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in values.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
