"""`tlpipe schedule`: the embedded scheduler, for one machine without an orchestrator.

Each tick runs the real `tlpipe run --if-new-data` in a child process, so a tick without a new
span ends in seconds and unchanged work stays cached, and the scheduler itself stays small
enough to be trusted unattended:
- a lock file under the work dir (pid, host, start time) keeps two schedulers off one pipeline
  root; the lock is an flock, released by the kernel when its holder dies, so a lock left by a
  killed scheduler is taken over (and said so) instead of blocking forever;
- a failed run is recorded (`logs/schedule.log`, ML Metadata, an alert) and the next tick goes on;
- SIGINT / SIGTERM stop the scheduler after the current component: the child runs in its own
  session (a terminal's Ctrl-C does not reach it) and is interrupted only when a component has
  just finished and the pusher is not next, so a push is never cut short.
Production orchestration (Kubeflow, Airflow) uses the same DAG: pipeline/orchestrators.py.
"""
from __future__ import annotations

import argparse
import datetime as dt
import errno
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from components.config import ConfigError, PipelineConfig
from components.config_loading import load_config, validate
from pipeline.nodes import NODE_ORDER

LOCK_FILE = "schedule.lock"
SCHEDULE_LOG = "schedule.log"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The child's progress lines (pipeline/local_runner.py): a node starts, a node ends.
_STARTED = re.compile(r"^\s+(\S+)\s+running \.\.\.")
_ENDED = re.compile(r"^\s+(\S+)\s+(COMPLETE|CACHED|FAILED)\b")
# Once the evaluator has ended the pusher runs next: the run is left to finish.
_PUSH_FOLLOWS = NODE_ORDER[NODE_ORDER.index("pusher") - 1]


class ScheduleError(ValueError):
    """A bad interval or cron expression, or a lock held by another scheduler."""


def parse_every(text: str) -> float:
    """'90s', '30m', '6h', '1d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise ScheduleError(f"schedule interval must look like 30m, 6h or 1d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


class Cron:
    """A standard 5-field cron expression (minute hour day-of-month month day-of-week), local
    time: `*`, lists, ranges and steps; day-of-month and day-of-week OR-ed when both are set."""

    _RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]

    def __init__(self, expression: str):
        fields = (expression or "").split()
        if len(fields) != 5:
            raise ScheduleError(f"cron expression needs 5 fields (minute hour day month "
                                f"weekday), got {expression!r}")
        self.expression = expression
        sets = [self._field(f, lo, hi, expression) for f, (lo, hi) in zip(fields, self._RANGES)]
        self.minutes, self.hours, self.days, self.months, weekdays = sets
        self.weekdays = {d % 7 for d in weekdays}  # 0 and 7 are both Sunday
        # As in Vixie cron: a field starting with '*' does not restrict the day.
        self.any_day, self.any_weekday = fields[2].startswith("*"), fields[4].startswith("*")

    @staticmethod
    def _field(text: str, lo: int, hi: int, expression: str) -> set[int]:
        values: set[int] = set()
        for part in text.split(","):
            match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
            if not match:
                raise ScheduleError(f"bad cron field {part!r} in {expression!r}")
            start, end = (lo, hi) if match.group(1) == "*" else (
                int(match.group(2)), int(match.group(3) or match.group(2)))
            if match.group(4) and match.group(1) != "*" and not match.group(3):
                end = hi  # '5/15': from 5 to the top of the range
            step = int(match.group(4) or 1)
            if not lo <= start <= end <= hi or step < 1:
                raise ScheduleError(f"cron field {part!r} out of range {lo}-{hi} in {expression!r}")
            values.update(range(start, end + 1, step))
        return values

    def _day_matches(self, day: dt.date) -> bool:
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays  # cron: 0 = Sunday
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after `moment`."""
        t = moment.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = t + dt.timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months or not self._day_matches(t.date()):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
                continue
            return t
        raise ScheduleError(f"cron expression {self.expression!r} never matches")


def next_tick(every: str | None, cron: str | None) -> Callable[[float, float], float]:
    """A function (previous tick's planned time, now) -> the next tick's time (epoch seconds).

    An interval keeps its grid from the first tick: a run that overruns skips the slots it
    covered rather than starting runs back to back.
    """
    if cron:
        schedule = Cron(cron)
        schedule.next_after(dt.datetime.now())  # one that never matches fails here
        return lambda _previous, now: schedule.next_after(
            dt.datetime.fromtimestamp(now)).timestamp()
    seconds = parse_every(every)

    def after(previous: float, now: float) -> float:
        missed = max(0, int((now - previous) // seconds))
        return previous + (missed + 1) * seconds
    return after


def airflow_schedule_interval(config: PipelineConfig):
    """`schedule.cron`, else `schedule.every` as a timedelta: what Airflow's DAG takes."""
    if config.schedule.cron:
        Cron(config.schedule.cron)  # validated here, not at the DAG's first run
        return config.schedule.cron
    return dt.timedelta(seconds=parse_every(config.schedule.every))


class Lock:
    """`<work-dir>/schedule.lock`: an exclusive flock, plus who holds it (pid, host, start)."""

    def __init__(self, work_dir: str):
        self.path = Path(work_dir).resolve() / LOCK_FILE
        self._fd: int | None = None
        self.took_over: dict | None = None

    @staticmethod
    def _read(fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {"unreadable": raw[:200].decode(errors="replace")}

    @staticmethod
    def describe(holder: dict) -> str:
        return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
                f"started {holder.get('started', '?')}")

    def acquire(self) -> Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = self._read(fd)
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise ScheduleError(
                    f"another scheduler holds {self.path} ({self.describe(holder)}); stop it "
                    f"first, or give this one another --work-dir") from None
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # the holder removed the file as we opened it: try again
        previous = self._read(fd)
        if previous:  # the flock was free, so whoever wrote this is gone
            self.took_over = previous
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": dt.datetime.now().isoformat(timespec="seconds"),
              "command": sys.argv}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.unlink(self.path)  # while still locked: the next acquirer checks the inode
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


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

    def _run_once(self) -> tuple[int, str]:
        """Runs the command, relaying its output; returns (exit status, outcome)."""
        from pipeline.runs import NO_NEW_DATA

        self._node, self._push_next, outcome = None, False, "ran"
        self._child = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, bufsize=1,
                                       start_new_session=True)
        try:
            for line in self._child.stdout:
                # The state first, then the line: a signal after the line sees the state.
                if line.startswith(NO_NEW_DATA):
                    outcome = "no new data"
                if m := _STARTED.match(line):
                    self._node = m.group(1)
                elif m := _ENDED.match(line):
                    self._node = None
                    self._push_next = self._push_next or m.group(1) == _PUSH_FOLLOWS
                    if self.stop_signal and not self._push_next:
                        self._interrupt()
                print(line, end="", flush=True)
            code = self._child.wait()
        finally:
            self._child.stdout.close()
            self._child = None
        if code != 0:
            outcome = "interrupted" if self.stop_signal and code in (130, -2) else "failed"
        return code, outcome

    def _record(self, tick: int, started: float, code: int, outcome: str) -> None:
        log = Path(self.work_dir) / "logs" / SCHEDULE_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        entry = {"tick": tick, "start": dt.datetime.fromtimestamp(started).isoformat(
            timespec="seconds"), "duration_s": round(time.time() - started, 1),
                 "exit_status": code, "outcome": outcome}
        with open(log, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def _sleep_until(self, when: float) -> None:
        while not self.stop_signal and time.time() < when:
            time.sleep(min(1.0, max(0.0, when - time.time())))

    def serve(self) -> int:
        """The loop; returns 0 when stopped by a signal or after `max_runs` ticks."""
        lock = Lock(self.work_dir)
        try:
            lock.acquire()
        except ScheduleError as err:
            print(f"tlpipe: error: {err}", file=sys.stderr, flush=True)
            return 1
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if lock.took_over:
                self.say(f"took over the stale lock {lock.path} of a scheduler that is no "
                         f"longer running ({Lock.describe(lock.took_over)})")
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
                self.say(f"tick {tick}: {shlex.join(self.command)}")
                code, outcome = self._run_once()
                self._record(tick, started, code, outcome)
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


def _run_command(args: argparse.Namespace) -> list[str]:
    """The child's command line: the real `tlpipe run`, with this scheduler's options."""
    command = [sys.executable, "-m", "pipeline.cli", "run"]
    if not args.always:
        command.append("--if-new-data")
    for flag in ("config", "data", "work_dir", "mirror"):
        value = getattr(args, flag)
        if value:
            command += [f"--{flag.replace('_', '-')}", value]
    for item in args.set:
        command += ["--set", item]
    return command


def cmd_schedule(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.set, work_dir=args.work_dir,
                             data__root=args.data)
        validate(config)
        cron = args.cron or (None if args.every else config.schedule.cron)
        timing = next_tick(args.every or config.schedule.every, cron)
    except (ConfigError, ScheduleError) as err:
        print(f"tlpipe: error: {err}", file=sys.stderr)
        return 2
    def killed(message: str) -> None:  # `tlpipe run` alerts on its own failures, not on a kill
        from pipeline.notify import FAILED, notify

        notify(config, FAILED, message)
    scheduler = Scheduler(config.work_dir, _run_command(args), timing, first_now=not cron,
                          max_runs=args.max_runs, on_killed=killed)
    when = f"cron '{cron}'" if cron else f"every {args.every or config.schedule.every}"
    scheduler.say(f"{when}; work dir {Path(config.work_dir).resolve()}")
    return scheduler.serve()


def register(sub) -> None:
    parser = sub.add_parser(
        "schedule", help="run the pipeline on a schedule (embedded scheduler)",
        description="Run `tlpipe run --if-new-data` now and then at each tick (schedule.every "
                    "or schedule.cron), until Ctrl-C / SIGTERM, which stop after the current "
                    "component and never mid-push. One scheduler per work dir (a lock file).")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--every", help="interval: 30m, 6h, 1d (default: schedule.every)")
    when.add_argument("--cron", help="5-field cron expression, local time, e.g. '0 3 * * *'")
    parser.add_argument("--always", action="store_true",
                        help="run at every tick, not only when a new span arrived")
    parser.add_argument("--max-runs", type=int, metavar="N",
                        help="stop after N ticks (default: run until stopped)")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--data", help="image root (as for tlpipe run)")
    parser.add_argument("--work-dir", help="work dir (default ./tlpipe-work)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--mirror", help="offline mirror of the flowers demo")
    parser.set_defaults(func=cmd_schedule)
