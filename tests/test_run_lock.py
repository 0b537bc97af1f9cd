"""The work dir's run lock, with real processes: a second `tlpipe run` (or promote, or label) on a
work dir in use says who holds it and exits 2 having touched nothing; a dead holder's lock is
taken over; --wait waits for the holder to end."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, tlpipe
from tlpipe.pipeline.work_dir_lock import RUN_LOCK_FILE, LockHeld, WorkDirLock


def _holder(work: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the run lock for `seconds` (says 'held' once it has it)."""
    code = textwrap.dedent(f"""
        import time
        from tlpipe.pipeline.work_dir_lock import WorkDirLock
        with WorkDirLock({str(work)!r}, "run"):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _tree(work: Path) -> dict[str, int]:
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in sorted(work.rglob("*"))}


def test_a_second_run_promote_or_label_exits_2_naming_the_holder_and_touches_nothing(tmp_path, tiny_images):
    work = tmp_path / "work"
    holder = _holder(work, 600)
    try:
        record = json.loads((work / RUN_LOCK_FILE).read_text())
        assert record["pid"] == holder.pid and record["command"] == "run"
        before = _tree(work)
        commands = {
            "run": ["run", "--data", str(tiny_images), "--work-dir", str(work)],
            "promote": ["promote", "--reason", "test", "--work-dir", str(work)],
            "label": ["label", "--label", "stable", "--version", "1", "--work-dir", str(work)],
        }
        for name, args in commands.items():
            started = time.time()
            result = tlpipe(*args, timeout=300)
            assert result.returncode == 2, (name, result.stdout, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, (name, result.stderr)
            assert (f"another tlpipe command holds {work / RUN_LOCK_FILE} (pid {holder.pid} on host "
                    f"{socket.gethostname()}, started {record['started']}, tlpipe run)") in lines[0], lines[0]
            assert "data " not in result.stdout and "run failed" not in result.stderr  # nothing ran
            print(f"\n{name} refused in {time.time() - started:.1f}s (process start included)")
        assert _tree(work) == before  # no pipeline root, no metadata, no alert, no serving dir
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / RUN_LOCK_FILE).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01T03:00:00", "command": "run"}))
    with WorkDirLock(str(tmp_path), "promote") as lock:
        assert lock.took_over["pid"] == dead.pid
        assert json.loads((tmp_path / RUN_LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / RUN_LOCK_FILE).exists()  # released: the file goes with it


def test_a_killed_holder_releases_the_lock(tmp_path):
    holder = _holder(tmp_path, 600)
    with pytest.raises(LockHeld, match=f"pid {holder.pid} on host"):
        WorkDirLock(str(tmp_path), "run").acquire()
    holder.kill()  # kill -9: no clean-up ran, the kernel dropped the flock
    holder.wait()
    with WorkDirLock(str(tmp_path), "run") as lock:
        assert lock.took_over["pid"] == holder.pid


def test_wait_waits_for_the_holder_and_gives_up_at_its_deadline(tmp_path):
    holder = _holder(tmp_path, 2)
    started = time.monotonic()
    with pytest.raises(LockHeld):
        WorkDirLock(str(tmp_path), "run", wait_seconds=0.3).acquire()
    assert time.monotonic() - started >= 0.3
    with WorkDirLock(str(tmp_path), "run", wait_seconds=60) as lock:
        assert lock.took_over is None  # released cleanly by its holder, then ours
    assert holder.wait(timeout=60) == 0 and time.monotonic() - started >= 1.5
    with pytest.raises(ValueError):
        WorkDirLock(str(tmp_path), "run", wait_seconds=float("nan"))


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with WorkDirLock(str(tmp_path), "run"):
        with pytest.raises(LockHeld, match=f"pid {os.getpid()} on host"):
            WorkDirLock(str(tmp_path), "label").acquire()
    with WorkDirLock(str(tmp_path), "label"):  # released: free again
        pass


def test_the_holder_record_keeps_no_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tlpipe", "run", "--set", "schedule.webhook_url=https://u:secret@h/x"])
    with WorkDirLock(str(tmp_path), "run"):
        assert "secret" not in (tmp_path / RUN_LOCK_FILE).read_text()


@pytest.mark.e2e
def test_two_real_runs_on_one_work_dir_the_second_refuses(tmp_path, tiny_images):
    """Two `tlpipe run` (up to ingest, to stay quick): the second exits 2 while the first runs,
    and the first completes alone: one ingest execution in ML Metadata."""
    from tlpipe.components.config import PipelineConfig
    from tlpipe.pipeline.lineage import Lineage

    work = tmp_path / "work"
    args = [sys.executable, "-m", "tlpipe.pipeline.cli", "run", "--to", "ingest", "--data", str(tiny_images),
            "--work-dir", str(work)]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (work / RUN_LOCK_FILE).exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        second = tlpipe("run", "--to", "ingest", "--data", str(tiny_images), "--work-dir", str(work),
                        timeout=300)
        out = first.communicate(timeout=600)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"holds {work / RUN_LOCK_FILE} (pid {first.pid} on host {socket.gethostname()}" in second.stderr
    lineage = Lineage.open(PipelineConfig(work_dir=str(work)))
    assert len(lineage.node_executions("ingest")) == 1
    assert not (work / RUN_LOCK_FILE).exists()  # released when the first ended
