"""Run events: what the local runner reports while a run goes, as JSON lines.

One event per node start and end (its state as ML Metadata recorded it, seconds, execution id)
and one for a run `--if-new-data` skipped. The runner writes them to `logs/run-<time>.events.jsonl`
beside the run's log, or to the file `TLPIPE_EVENTS_FILE` names (the scheduler sets it for the
runs it starts and follows the file). Console progress, the run summary and the scheduler all
read these events; nobody parses printed or logged text for node state.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

EVENTS_FILE_ENV = "TLPIPE_EVENTS_FILE"

STARTED = "RUNNING"
COMPLETE, CACHED, FAILED = "COMPLETE", "CACHED", "FAILED"  # as ML Metadata names them
SKIPPED = "SKIPPED"  # TFX ran nothing: the node's inputs were not there
EMPTY = "EMPTY"  # a resolver that found nothing yet (ML Metadata records it FAILED; the run goes on)
RUN_SKIPPED = "RUN_SKIPPED"  # run-level: `--if-new-data` found no new span, nothing ran
_OK = (COMPLETE, CACHED, EMPTY)


@dataclass(frozen=True)
class Event:
    """A node's start or end (`node` set), or a run-level event (`node` None)."""
    state: str
    node: str | None = None
    seconds: float = 0.0
    execution_id: int | None = None
    detail: str = ""
    at: float = field(default_factory=time.time)  # seconds since the epoch

    @property
    def ended(self) -> bool:
        return self.node is not None and self.state != STARTED

    @property
    def ok(self) -> bool:
        return self.state in _OK

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Event:
        raw = json.loads(line)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


class EventWriter:
    """Appends each event to the file (flushed before anyone is told), then calls listeners."""

    def __init__(self, path: str, listeners: Iterable[Callable[[Event], None]] = ()):
        self.path = path
        self._listeners = list(listeners)
        self.emitted: list[Event] = []

    @classmethod
    def for_run(cls, log_path: str, listeners: Iterable[Callable[[Event], None]] = ()
                ) -> EventWriter:
        """The scheduler's file when it set one, else beside the run's log."""
        path = os.environ.get(EVENTS_FILE_ENV) or os.path.splitext(log_path)[0] + ".events.jsonl"
        return cls(path, listeners)

    def emit(self, event: Event) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(event.to_json() + "\n")
        self.emitted.append(event)
        for listener in self._listeners:
            listener(event)


def emit_to_env(event: Event) -> None:
    """A run-level event for the scheduler, when one started this process (else nothing)."""
    path = os.environ.get(EVENTS_FILE_ENV)
    if path:
        EventWriter(path).emit(event)


class EventFollower:
    """Reads the events appended to a file since the last call (the file may not exist yet)."""

    def __init__(self, path: str):
        self.path, self._offset, self._partial = path, 0, ""

    def poll(self) -> list[Event]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                fh.seek(self._offset)
                text = fh.read()
                self._offset = fh.tell()
        except FileNotFoundError:
            return []
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()  # a line still being written
        return [Event.from_json(line) for line in lines if line.strip()]
