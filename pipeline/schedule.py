"""`tlpipe schedule`: the embedded scheduler, for one machine without an orchestrator.

Each tick runs the real `tlpipe run --if-new-data` in a child process, so a tick without a new
span ends in seconds and unchanged work stays cached, and the scheduler itself stays small
enough to be trusted unattended:
- a lock file under the work dir (pid, host, start time) keeps two schedulers off one pipeline
  root; the lock is an flock, released by the kernel when its holder dies, so a lock left by a
  killed scheduler is taken over (and said so) instead of blocking forever (each tick's
  `tlpipe run` takes the work dir's run lock: pipeline/work_dir_lock.py);
- a failed run is recorded (`logs/schedule.log`, ML Metadata, an alert) and the next tick goes on;
- SIGINT / SIGTERM stop the scheduler after the current component: the child runs in its own
  session (a terminal's Ctrl-C does not reach it) and is interrupted only when a component has
  just finished and the pusher is not next, so a push is never cut short.
Production orchestration (Kubeflow, Airflow) uses the same DAG: pipeline/orchestrators.py.
"""
from __future__ import annotations

import codecs
import datetime as dt
import json
import os
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tlpipe.pipeline.events import EVENTS_FILE_ENV, RUN_SKIPPED, STARTED, Event, EventFollower
from tlpipe.pipeline.nodes import NODE_ORDER
from tlpipe.pipeline.work_dir_lock import LockHeld, WorkDirLock, describe

LOCK_FILE = "schedule.lock"
SCHEDULE_LOG = "schedule.log"
# Once the evaluator has ended the pusher runs next: the run is left to finish.
_PUSH_FOLLOWS = NODE_ORDER[NODE_ORDER.index("pusher") - 1]


def scheduler_lock(work_dir: str) -> WorkDirLock:
    """`<work-dir>/schedule.lock`: one scheduler per work dir (its runs take `run.lock`)."""
    return WorkDirLock(work_dir, "schedule", LOCK_FILE, refusal=(
        "another scheduler holds {path} ({holder}); stop it first, or give this one another --work-dir"))


class Scheduler:
    """Runs `command` (the real `tlpipe run ...`) at each tick until stopped or `max_runs`."""

    def __init__(self, work_dir: str, command: list[str],
                 next_time: Callable[[float, float], float], first_now: bool = True,
                 max_runs: int | None = None,
                 on_killed: Callable[[str], None] | None = None):
        self.work_dir = str(Path(work_dir).resolve())
        self.command, self.next_time = command, next_time
        self.first_now, self.max_runs, self.on_killed = first_now, max_runs, on_killed
        self.stop_signal: str | None = None
        self._child: subprocess.Popen | None = None
        self._node: str | None = None  # the child's running node
        self._push_next = False

    @staticmethod
    def say(message: str, from_signal_handler: bool = False) -> None:
        text = f"tlpipe schedule: {message}\n"
        if from_signal_handler:  # print() may be mid-write in the interrupted frame
            os.write(sys.stdout.fileno(), text.encode())
        else:
            print(text, end="", flush=True)

    def _on_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal:
            self.say(f"{name} again: already stopping", True)
            return
        self.stop_signal = name
        if self._child is None:
            self.say(f"{name}: stopping", True)
        elif self._push_next or self._node == "pusher":
            self.say(f"{name}: the run is pushing; stopping when it ends", True)
        else:
            self.say(f"{name}: stopping after the current component"
                     f"{' (' + self._node + ')' if self._node else ''}; a push is never "
                     f"interrupted", True)
            if self._node is None:
                self._interrupt()

    def _interrupt(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signal.SIGINT)  # `tlpipe run` stops with exit status 130

    def _on_event(self, event: Event) -> None:
        """The child's run events: which node runs, whether the push is next, a skipped run."""
        if event.state == RUN_SKIPPED:
            self._outcome = "no new data"
        elif event.state == STARTED:
            self._node = event.node
        elif event.ended:
            self._node = None
            self._push_next = self._push_next or event.node == _PUSH_FOLLOWS
            if self.stop_signal and not self._push_next:
                self._interrupt()

    def _run_once(self, events_path: str) -> tuple[int, str]:
        """Runs the command, relaying its output and following its events file; returns
        (exit status, outcome)."""
        self._node, self._push_next, self._outcome = None, False, "ran"
        follower = EventFollower(events_path)
        self._child = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, EVENTS_FILE_ENV: events_path})
        fd = self._child.stdout.fileno()
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(fd, selectors.EVENT_READ)
                while True:
                    ready = selector.select(timeout=0.2)
                    # The events first, then the output: the child writes an event before its
                    # progress line, so a signal after a line sees the state.
                    for event in follower.poll():
                        self._on_event(event)
                    if ready:
                        chunk = os.read(fd, 65536)
                        if not chunk:
                            break
                        print(decode(chunk), end="", flush=True)
            code = self._child.wait()
            for event in follower.poll():
                self._on_event(event)
        finally:
            self._child.stdout.close()
            self._child = None
        outcome = self._outcome
        if code != 0:
            outcome = "interrupted" if self.stop_signal and code in (130, -2) else "failed"
        return code, outcome

    def _record(self, tick: int, started: float, code: int, outcome: str, events: Path) -> None:
        log = Path(self.work_dir) / "logs" / SCHEDULE_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        entry = {"tick": tick, "start": dt.datetime.fromtimestamp(started).isoformat(
            timespec="seconds"), "duration_s": round(time.time() - started, 1),
                 "exit_status": code, "outcome": outcome,
                 "events": str(events) if events.exists() else None}
        with open(log, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def _sleep_until(self, when: float) -> None:
        while not self.stop_signal and time.time() < when:
            time.sleep(min(1.0, max(0.0, when - time.time())))

    def serve(self) -> int:
        """The loop; returns 0 when stopped by a signal or after `max_runs` ticks."""
        lock = scheduler_lock(self.work_dir)
        try:
            lock.acquire()
        except LockHeld as err:
            print(f"tlpipe: error: {err}", file=sys.stderr, flush=True)
            return 1
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if lock.took_over:
                self.say(f"took over the stale lock {lock.path} of a scheduler that is no "
                         f"longer running ({describe(lock.took_over)})")
            self.say(f"lock {lock.path} held by pid {os.getpid()}")
            planned = time.time()
            if not self.first_now:
                planned = self.next_time(planned, planned)
            tick = 0
            while True:
                if planned > time.time():
                    self.say("next run at " + dt.datetime.fromtimestamp(planned).isoformat(
                        timespec="seconds"))
                self._sleep_until(planned)
                if self.stop_signal:
                    break
                tick += 1
                started = time.time()
                self.say(f"tick {tick}: {shown_command(self.command)}")
                events = Path(self.work_dir) / "logs" / time.strftime(
                    f"tick-%Y%m%d-%H%M%S-{tick}.events.jsonl")
                events.parent.mkdir(parents=True, exist_ok=True)
                code, outcome = self._run_once(str(events))
                if outcome == "no new data":
                    events.unlink(missing_ok=True)  # nothing ran: no file per idle tick
                self._record(tick, started, code, outcome, events)
                self.say(f"tick {tick} {outcome} (exit status {code}, "
                         f"{time.time() - started:.0f}s)")
                if outcome == "failed" and code < 0 and self.on_killed:
                    self.on_killed(f"tick {tick}: the run was killed by signal {-code}")
                if self.stop_signal or (self.max_runs and tick >= self.max_runs):
                    break
                planned = self.next_time(planned, time.time())
            self.say(f"stopped after {tick} tick(s)"
                     + (f" ({self.stop_signal})" if self.stop_signal else ""))
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            lock.release()


def shown_command(command: list[str]) -> str:
    """The command as logged: a URL in a `--set key=URL` (a webhook: a secret) redacted."""
    from tlpipe.pipeline.notify import redact_url

    return shlex.join(f"{arg.split('=', 1)[0]}={redact_url(arg.split('=', 1)[1])}"
                      if "=" in arg and "://" in arg else arg for arg in command)
