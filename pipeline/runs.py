"""`tlpipe runs`: the run history, read back from ML Metadata; and the new-data check behind
`tlpipe run --if-new-data` (the latest span on disk against the span of the last good run).

ML Metadata already records every run, node, state and artifact, so the history needs no store
of its own: a run's status comes from its executions' states, its span from the Examples it
ingested, and whether its hyperparameters were tuned or reused from who produced the
HyperParameters artifact the trainer read.
"""
from __future__ import annotations

import fnmatch
import glob
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tlpipe.components.config import PipelineConfig
from tlpipe.pipeline.summary import RunSummary

# The line `tlpipe run --if-new-data` prints when it skips (the scheduler reads its event).
NO_NEW_DATA = "tlpipe: no new data:"


@dataclass
class RunRecord:
    run_id: str
    start: float  # seconds since the epoch
    duration: float
    status: str  # complete, partial (a --to run), failed, abandoned (its process died), incomplete (running)
    span: int | None = None
    abandoned_reason: str | None = None  # why its unfinished executions were marked abandoned
    hyperparameters_source: str | None = None  # tuned (by this run) or reused
    summary: RunSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        s = self.summary or RunSummary(self.run_id)
        return {"run_id": self.run_id,
                "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.start)),
                "duration_s": round(self.duration, 1), "status": self.status,
                "abandoned_reason": self.abandoned_reason, "span": self.span,
                "hyperparameters_source": self.hyperparameters_source,
                "hyperparameters": s.hyperparameters, "accuracy": s.accuracy,
                "blessed": s.blessed, "pushed_version": s.pushed_version if s.pushed else None,
                "newly_pushed": s.newly_pushed}


def _records(config: PipelineConfig, with_summary: bool) -> Iterator[RunRecord]:
    """Records newest first, read lazily (the new-data check stops at the first good run)."""
    from tlpipe.pipeline.events import COMPLETE, FAILED
    from tlpipe.pipeline.lineage import INPUT, OK_STATES, OUTPUT, Lineage, custom_property, execution_state
    from tlpipe.pipeline.nodes import RESOLVER_NODES
    from tlpipe.pipeline.summary import summarize_run

    lineage = Lineage.open(config)
    if lineage is None:
        return
    hp_type = next((t.id for t in lineage.store.get_artifact_types() if t.name == "HyperParameters"),
                   None)
    for run in reversed(lineage.runs()):
        executions = lineage.run_executions(run)
        if not executions:
            continue
        states = {node: execution_state(e) for node, e in executions
                  if node not in RESOLVER_NODES}
        abandoned = next((reason for _, e in executions if (reason := lineage.abandoned_reason(e))), None)
        if abandoned:
            status = "abandoned"
        elif FAILED in states.values():
            status = "failed"
        elif any(s not in OK_STATES for s in states.values()):
            status = "incomplete"
        else:
            status = "complete" if "pusher" in states else "partial"
        started = min(e.create_time_since_epoch for _, e in executions)  # milliseconds
        # an abandoned execution was last updated when it was found, long after its process died
        ended = max(e.create_time_since_epoch if lineage.abandoned_reason(e) else e.last_update_time_since_epoch
                    for _, e in executions)
        record = RunRecord(run.name, started / 1000, (ended - started) / 1000, status,
                           abandoned_reason=abandoned)
        own = {e.id for _, e in executions if execution_state(e) == COMPLETE}
        for node, execution in executions:
            if node == "ingest":
                for artifact in lineage.artifacts(execution.id, OUTPUT):
                    span = custom_property(artifact, "span")
                    if span is not None:
                        record.span = int(span)
            elif node == "trainer":
                for artifact in lineage.artifacts(execution.id, INPUT):
                    if artifact.type_id == hp_type:
                        tuned = lineage.producers(artifact.id) & own
                        record.hyperparameters_source = "tuned" if tuned else "reused"
        if with_summary:
            record.summary = summarize_run(lineage, run)
        yield record


def run_history(config: PipelineConfig, last: int | None = None) -> list[RunRecord]:
    """The last `last` runs (all when None), oldest first, with their summaries."""
    records = []
    for record in _records(config, with_summary=True):
        if last is not None and len(records) >= last:
            break
        records.append(record)
    return records[::-1]


def last_complete_run(config: PipelineConfig) -> RunRecord | None:
    return next((r for r in _records(config, with_summary=False) if r.status == "complete"),
                None)


def latest_span_on_disk(root: str, source: str) -> int | None:
    """The highest span under `root` for a `data.pattern` / `data.manifest` holding `{SPAN}`
    (None without one). Globs only the span level, so it stays quick on large trees."""
    from tlpipe.components.ingest.listing import SPAN_SPEC, join

    parts = source.split("/")
    index = next((i for i, p in enumerate(parts) if SPAN_SPEC.search(p)), None)
    if index is None:
        return None
    spec = SPAN_SPEC.search(parts[index])
    left, right = parts[index][:spec.start()], parts[index][spec.end():]
    width = int(spec.group(1)[1:]) if spec.group(1) else None
    prefix = join(root, *parts[:index], SPAN_SPEC.sub("*", parts[index]))
    if "://" in root:
        import tensorflow as tf  # gs:// and other remote filesystems

        paths = tf.io.gfile.glob(prefix)
    else:
        paths = glob.glob(prefix)
    spans = []
    for path in paths:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        for digits in re.finditer(r"\d+", name):
            if (width is None or len(digits.group()) == width) \
                    and fnmatch.fnmatchcase(name[:digits.start()], left) \
                    and fnmatch.fnmatchcase(name[digits.end():], right):
                spans.append(int(digits.group()))
    return max(spans, default=None)


def new_data_check(config: PipelineConfig, data_root: str) -> tuple[bool, str]:
    """(whether to run, why): run unless the last complete run already ingested the latest
    span on disk. Without `{SPAN}` there are no spans to compare: the run decides (an
    unchanged folder is cached)."""
    source = config.data.manifest or config.data.pattern
    latest = latest_span_on_disk(data_root, source)
    if latest is None:
        return True, f"no {{SPAN}} in '{source}': running (unchanged data is cached)"
    done = last_complete_run(config)
    if done is None or done.span is None:
        return True, f"span {latest} on disk, no complete run yet"
    if latest > done.span:
        return True, f"new span {latest} (the last complete run, {done.run_id}, had span {done.span})"
    return False, (f"latest span on disk is {latest}; the last complete run ({done.run_id}) "
                   f"already ingested span {done.span}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def history_lines(records: list[RunRecord]) -> list[str]:
    header = (f"{'start':<19}  {'duration':>8}  {'status':<10}  {'span':>4}  {'accuracy':>8}  "
              f"{'blessed':<7}  {'pushed':<14}  hyperparameters")
    lines = [header]
    for r in records:
        s = r.summary or RunSummary(r.run_id)
        pushed = "-"
        if s.pushed:
            pushed = f"v{s.pushed_version}" + ("" if s.newly_pushed else " (serving)")
        hp = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in sorted(s.hyperparameters.items()))
        lines.append(
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.start)):<19}  "
            f"{_duration(r.duration):>8}  {r.status:<10}  "
            f"{'-' if r.span is None else r.span:>4}  "
            f"{'-' if s.accuracy is None else format(s.accuracy, '.4f'):>8}  "
            f"{'-' if s.blessed is None else 'yes' if s.blessed else 'NO':<7}  {pushed:<14}  "
            f"{(r.hyperparameters_source + ': ' + hp) if r.hyperparameters_source else '-'}")
        if r.abandoned_reason:
            lines.append(f"{'':<19}  abandoned: {r.abandoned_reason}")
    return lines
