"""Thin local runner: LocalDagRunner + Beam DirectRunner + SQLite ML Metadata, with progress.

LocalDagRunner launches the nodes one after the other through TFX's Launcher; the runner
observes each launch (a Launcher subclass, for the run only) and emits a node event when it
starts and when it ends, with the state ML Metadata recorded for its execution (pipeline/events.py).
The console's progress lines are one listener of those events; the full log goes to a file
under the work dir.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tlpipe.components.beam_args import skip_tfx_packaging_in_process
from tlpipe.components.config import PipelineConfig
from tlpipe.pipeline.events import CACHED, EMPTY, FAILED, SKIPPED, STARTED, Event, EventWriter
from tlpipe.pipeline.work_dir_lock import lock_path

# Component code logs "progress: ..." for long work (epochs, trials); shown under its node.
_PROGRESS = "progress: "
_RESOLVER_TYPE = "tfx.dsl.components.common.resolver.Resolver"  # its node type name in the IR


class ComponentProgressHandler(logging.Handler):
    """Shows the components' own `progress: ...` messages under the running node."""

    def __init__(self, emit_line: Callable[[str], None]):
        super().__init__(level=logging.INFO)
        self._emit_line = emit_line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed third-party log record must not break the run
            return
        if message.startswith(_PROGRESS):
            self._emit_line(f"  {'':<22} {message[len(_PROGRESS):]}")


class RedactSecrets(logging.Filter):
    """Replaces secrets in every record a handler writes: TFX's LocalDagRunner logs the ML
    Metadata connection config, MySQL password included, at INFO."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            try:
                message = record.getMessage()
            except Exception:  # left as it is: a malformed record is the formatter's problem
                return True
            for secret in self._secrets:
                message = message.replace(secret, "********")
            record.msg, record.args = message, None
        return True


def progress_line(event: Event, log_path: str) -> str:
    """The console line of a node event."""
    if event.state == STARTED:
        return f"  {event.node:<22} running ..."
    note = {CACHED: "  (reused from an earlier run)", FAILED: f"  (see {log_path})",
            EMPTY: "  (nothing to resolve yet)", SKIPPED: "  (its inputs were not produced)"}
    return f"  {event.node:<22} {event.state:<9} {event.seconds:7.1f}s" + note.get(event.state, "")


def _observing(launcher_class, emit: Callable[[Event], None], lock: str):
    """TFX's Launcher, reporting each launch: started, then the state ML Metadata recorded. Before
    a run's first node starts it records this process as the run's owner (pipeline/abandoned.py);
    `lock` is the run lock it runs under."""
    owned_runs: set[str] = set()

    class ObservedLauncher(launcher_class):
        def __init__(self, pipeline_node, mlmd_connection, **kwargs):
            super().__init__(pipeline_node=pipeline_node, mlmd_connection=mlmd_connection,
                             **kwargs)
            self._observed_node, self._observed_mlmd = pipeline_node, mlmd_connection
            self._observed_runtime = kwargs["pipeline_runtime_spec"]

        def _record_owner(self) -> None:
            from tlpipe.pipeline.abandoned import record_run_owner, this_process

            runtime = self._observed_runtime
            run_id = runtime.pipeline_run_id.field_value.string_value
            if run_id in owned_runs:
                return
            owner = this_process(lock, runtime.pipeline_root.field_value.string_value)
            with self._observed_mlmd as m:
                record_run_owner(m, self._observed_node, run_id, owner)
            owned_runs.add(run_id)

        def launch(self):
            node = self._observed_node.node_info.id
            self._record_owner()
            emit(Event(STARTED, node))
            started = time.monotonic()
            try:
                info = super().launch()
            except BaseException as err:
                emit(Event(FAILED, node, time.monotonic() - started,
                           detail=f"{type(err).__name__}: {err}".splitlines()[0][:300]))
                raise
            emit(Event(self._recorded_state(info), node, time.monotonic() - started,
                       execution_id=info.execution_id if info else None))
            return info

        def _recorded_state(self, info) -> str:
            from tlpipe.pipeline.lineage import execution_state

            if info is None or info.execution_id is None:
                return SKIPPED
            with self._observed_mlmd as m:
                [execution] = m.store.get_executions_by_id([info.execution_id])
            state = execution_state(execution)
            if state == FAILED and self._observed_node.node_info.type.name == _RESOLVER_TYPE:
                return EMPTY
            return state

    return ObservedLauncher


@contextmanager
def observed_nodes(emit: Callable[[Event], None], lock: str) -> Iterator[None]:
    """Within the block, every node TFX's LocalDagRunner launches reports to `emit`, and each run
    records its owner (this process, under the run lock `lock`)."""
    from tfx.orchestration.portable import launcher

    original = launcher.Launcher
    launcher.Launcher = _observing(original, emit, lock)
    try:
        yield
    finally:
        launcher.Launcher = original


def run_pipeline(config: PipelineConfig, data_root: str, to_node: str | None = None,
                 out=sys.stdout, retune: bool = False) -> list[Event]:
    """Runs the DAG (up to `to_node`); returns the end event of each node it launched, in
    order. Raises on the first failing node after reporting which one failed. `out` receives
    the header lines; progress lines go to the process's real stdout."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging
    from tfx import v1 as tfx
    from tlpipe.pipeline.pipeline import plan_run

    log_dir = Path(config.logs_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / time.strftime("run-%Y%m%d-%H%M%S.log")
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    mysql = config.metadata.mysql
    redact = RedactSecrets([mysql.password()] if mysql else [])
    file_handler.addFilter(redact)
    # Libraries print to fd 1/2 directly (KerasTuner summaries, pip installing the module
    # wheel, TF's C++ logs): send both descriptors to the log file for the run, and keep a
    # duplicate of the real stdout for the progress lines.
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved_fds[0]), "w", buffering=1)
    def show(line: str) -> None:
        print(line, file=console, flush=True)

    progress = ComponentProgressHandler(show)
    progress.addFilter(redact)
    events = EventWriter.for_run(str(log_path), [lambda e: show(progress_line(e, str(log_path)))])
    absl_logging.set_verbosity(absl_logging.INFO)
    root = logging.getLogger()
    absl_handler = absl_logging.get_absl_handler()
    # The console gets progress lines and the file gets the rest (libraries may have added
    # their own stderr handlers via logging.basicConfig).
    removed = [h for h in root.handlers if h is absl_handler or (
        isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler))]
    for handler in removed:
        root.removeHandler(handler)
    for handler in (file_handler, progress):
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    pipeline, tuning = plan_run(config, data_root, to_node, retune)
    print(f"tlpipe: running {to_node and 'up to ' + to_node or 'the whole DAG'}; "
          f"full log: {log_path}; node events: {events.path}", file=out, flush=True)
    print(f"tlpipe: hyperparameters: {tuning.reason}", file=out, flush=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    skip_tfx_packaging_in_process()  # the Beam nodes run here, in this process
    try:
        with observed_nodes(events.emit, str(lock_path(config.local_dir))):
            tfx.orchestration.LocalDagRunner().run(pipeline)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        console.close()
        for handler in (file_handler, progress):
            root.removeHandler(handler)
        for handler in removed:
            root.addHandler(handler)
        absl_logging.set_verbosity(absl_logging.WARNING)
        file_handler.close()
    return [e for e in events.emitted if e.ended]
