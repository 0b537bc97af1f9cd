"""One lock per work dir and purpose: `run.lock` (a run, a forced promote, a label change: what
writes the pipeline root, ML Metadata and the serving dir) and `schedule.lock` (one scheduler).

An exclusive flock on `<work-dir>/<name>`, plus who holds it (pid, host, start time, command)
written in the file. The kernel releases an flock when its holder dies, so the lock of a killed
process is taken over (and `took_over` says whose it was) instead of blocking forever. Two runs
on one work dir used to race through the whole DAG and push twice.
"""
from __future__ import annotations

import argparse
import datetime as dt
import errno
import fcntl
import json
import math
import os
import socket
import time
from pathlib import Path

from tlpipe.components.errors import UsageError

RUN_LOCK_FILE = "run.lock"
_RUN_REFUSAL = ("another tlpipe command holds {path} ({holder}); nothing was done: wait for it to end "
                "(tlpipe run --wait SECONDS waits), or use another --work-dir")


class LockHeld(UsageError):
    """The lock is held by a live process; the message names it (pid, host, start, command)."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def wait_seconds(text: str) -> float:
    """argparse type of --wait: seconds >= 0 (inf waits for ever)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def lock_path(work_dir: str, file_name: str = RUN_LOCK_FILE) -> Path:
    """Where a work dir's lock file is (runs record it: pipeline/abandoned.py)."""
    return Path(work_dir).resolve() / file_name


def describe(holder: dict) -> str:
    text = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}")
    return text + (f", tlpipe {holder['command']}" if holder.get("command") else "")


class WorkDirLock:
    """`with WorkDirLock(work_dir, "run"):` holds `<work_dir>/run.lock` or raises LockHeld.

    `refusal` is the message when it is held, with `{path}` and `{holder}` filled in. The holder
    record keeps only the subcommand (`command`), never the command line: it may carry secrets.
    """

    def __init__(self, work_dir: str, command: str, file_name: str = RUN_LOCK_FILE,
                 refusal: str = _RUN_REFUSAL, wait_seconds: float = 0.0):
        self.path = lock_path(work_dir, file_name)
        if not wait_seconds >= 0:
            raise ValueError(f"wait_seconds must be >= 0, got {wait_seconds!r}")
        self.command, self.refusal, self.wait_seconds = command, refusal, wait_seconds
        self._fd: int | None = None
        self.took_over: dict | None = None

    @staticmethod
    def _read(fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        try:
            holder = json.loads(raw) if raw.strip() else {}
        except ValueError:
            holder = None
        return holder if isinstance(holder, dict) else {"unreadable": raw[:200].decode(errors="replace")}

    def _try_acquire(self) -> int:
        """The locked fd of the file now at `path`, or LockHeld."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = self._read(fd)
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise LockHeld(self.refusal.format(path=self.path, holder=describe(holder)), holder) from None
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                return fd
            os.close(fd)  # the holder removed the file as we opened it: try again

    def acquire(self) -> WorkDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fd = self._try_acquire()
                break
            except LockHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        previous = self._read(fd)
        if previous:  # the flock was free, so whoever wrote this is gone
            self.took_over = previous
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": dt.datetime.now().isoformat(timespec="seconds"), "command": self.command}
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

    def __enter__(self) -> WorkDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
