"""Thin local runner: LocalDagRunner + Beam DirectRunner + SQLite ML Metadata, with progress.

TFX logs each node's start and end through absl; this runner turns those lines into one
progress line per node (state, elapsed seconds, cached or not) and keeps the full log in a
file under the work dir.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from components.config import PipelineConfig

_RUNNING = re.compile(r"Component (\S+) is running\.")
_FINISHED = re.compile(r"Component (\S+) is finished\.")
_CACHED = re.compile(r"A cached execution \d+ is used\.")
_SKIPPED_EXEC = re.compile(r"Skipping execution for")
# Component code logs "progress: ..." for long work (epochs, trials); shown under its node.
_PROGRESS = "progress: "


class ProgressHandler(logging.Handler):
    """Prints `node  STATE  12.3s` lines from TFX's own log records."""

    def __init__(self, emit_line: Callable[[str], None]):
        super().__init__(level=logging.INFO)
        self._emit_line = emit_line
        self.node: str | None = None
        self.cached = False
        self.started = 0.0
        self.results: list[tuple[str, str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed third-party log record must not break the run
            return
        if message.startswith(_PROGRESS):
            self._emit_line(f"  {'':<22} {message[len(_PROGRESS):]}")
        elif m := _RUNNING.search(message):
            self.node, self.cached, self.started = m.group(1), False, time.time()
            self._emit_line(f"  {self.node:<22} running ...")
        elif _CACHED.search(message) or _SKIPPED_EXEC.search(message):
            self.cached = True
        elif m := _FINISHED.search(message):
            elapsed = time.time() - self.started
            state = "CACHED" if self.cached else "COMPLETE"
            self.results.append((m.group(1), state, elapsed))
            self._emit_line(f"  {m.group(1):<22} {state:<9} {elapsed:7.1f}s"
                            + ("  (reused from an earlier run)" if self.cached else ""))
            self.node = None


def run_pipeline(config: PipelineConfig, data_root: str, to_node: str | None = None,
                 out=sys.stdout, retune: bool = False) -> list[str]:
    """Runs the DAG (up to `to_node`); returns the ids of the components it ran (not
    resolvers). Raises on the first failing node after reporting which one failed. `out`
    receives the header line; progress lines go to the process's real stdout."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging
    from tfx import v1 as tfx

    from pipeline.pipeline import plan_run

    log_dir = Path(config.work_dir).resolve() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / time.strftime("run-%Y%m%d-%H%M%S.log")
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    # Libraries print to fd 1/2 directly (KerasTuner summaries, pip installing the module
    # wheel, TF's C++ logs): send both descriptors to the log file for the run, and keep a
    # duplicate of the real stdout for the progress lines.
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved_fds[0]), "w", buffering=1)
    progress = ProgressHandler(lambda line: print(line, file=console, flush=True))
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
          f"full log: {log_path}", file=out, flush=True)
    print(f"tlpipe: hyperparameters: {tuning.reason}", file=out, flush=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except BaseException:
        if progress.node:
            print(f"  {progress.node:<22} FAILED    {time.time() - progress.started:7.1f}s"
                  f"  (see {log_path})", file=console, flush=True)
        raise
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
    # Resolvers run no executor, so ML Metadata records no execution for them.
    return [component.id for component in pipeline.components
            if not isinstance(component, tfx.dsl.Resolver)]
