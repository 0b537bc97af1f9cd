"""The embedded scheduler: timing, the lock, failures, stopping; and the real three-span
simulation (scheduler -> `tlpipe run --if-new-data` -> push / no push -> `tlpipe runs`)."""
from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import E2E_SETTINGS, REPO, settings_args, tlpipe
from tlpipe.pipeline.schedule import LOCK_FILE, SCHEDULE_LOG, Scheduler
from tlpipe.pipeline.timing import Cron, ScheduleError, next_tick, parse_every


def test_interval_parsing():
    assert parse_every("90s") == 90 and parse_every("30m") == 1800
    assert parse_every("6h") == 6 * 3600 and parse_every("1d") == 86400
    for bad in ("", "6", "h", "-1h", "0m", "6 hours"):
        with pytest.raises(ScheduleError):
            parse_every(bad)


def test_interval_keeps_its_grid_and_skips_slots_a_long_run_covered():
    after = next_tick("1h", None)
    assert after(1000.0, 1500.0) == 1000.0 + 3600
    assert after(1000.0, 1000.0 + 3 * 3600 + 5) == 1000.0 + 4 * 3600


UTC = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")


def _at(text: str, zone: ZoneInfo) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=zone).timestamp()


def _wall(seconds: float, zone: ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(seconds, zone).strftime("%Y-%m-%d %H:%M %Z")


@pytest.mark.parametrize("expression, now, expected", [
    ("0 3 * * *", "2026-11-22 02:59", "2026-11-22 03:00"),
    ("0 3 * * *", "2026-11-22 03:00", "2026-11-23 03:00"),
    ("*/15 * * * *", "2026-11-22 10:07", "2026-11-22 10:15"),
    ("30 2 1 * *", "2026-11-22 10:00", "2026-12-01 02:30"),
    ("0 9 * * 1-5", "2026-11-21 12:00", "2026-11-23 09:00"),  # Saturday -> Monday
    ("0 0 13 * 5", "2026-11-22 00:00", "2026-11-27 00:00"),  # day 13 OR a Friday
    ("0 0 */2 * 1", "2026-11-23 00:00", "2026-12-07 00:00"),  # '*/2' does not OR: odd AND Monday
    ("0 12 29 2 *", "2026-03-01 00:00", "2028-02-29 12:00"),
    ("0 0 * * 7", "2026-11-22 00:00", "2026-11-29 00:00"),  # 7 is Sunday too
])
def test_cron_next_time(expression, now, expected):
    got = Cron(expression, UTC).next_time(_at(now, UTC))
    assert _wall(got, UTC) == expected + " UTC"


def test_cron_reads_the_wall_clock_of_its_time_zone_across_daylight_saving():
    daily = Cron("0 3 * * *", PARIS)
    assert _wall(daily.next_time(_at("2026-07-01 12:00", UTC)), UTC) == "2026-07-02 01:00 UTC"
    # The night clocks go back (25 October 2026): 03:00 is still 03:00, now UTC+1.
    assert _wall(daily.next_time(_at("2026-10-24 12:00", PARIS)), PARIS) == "2026-10-25 03:00 CET"
    # 02:30 is repeated that night: it runs once, not again on the second pass.
    repeated = Cron("30 2 * * *", PARIS)
    first = repeated.next_time(_at("2026-10-24 12:00", PARIS))
    assert _wall(first, PARIS) == "2026-10-25 02:30 CEST"
    assert _wall(repeated.next_time(first + 3000), PARIS) == "2026-10-26 02:30 CET"  # from 02:20 CET
    # 02:30 does not exist on 29 March 2026: it runs when the clock has jumped, at 03:30.
    assert _wall(repeated.next_time(_at("2026-03-28 12:00", PARIS)), PARIS) == "2026-03-29 03:30 CEST"


def test_cron_defaults_to_the_machine_zone_which_tz_sets(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    daily = Cron("0 3 * * *")
    assert daily.zone == ZoneInfo("America/New_York")
    assert _wall(daily.next_time(_at("2026-07-01 12:00", UTC)), UTC) == "2026-07-02 07:00 UTC"


@pytest.mark.parametrize("bad", ["0 3 * *", "0 3 * * * *", "61 * * * *", "* 24 * * *",
                                 "a * * * *", "0 0 31 2 *"])
def test_bad_cron_expressions_are_refused(bad):
    with pytest.raises(ScheduleError):
        Cron(bad, UTC).next_time(_at("2026-01-01 00:00", UTC))


def _scheduler_process(work: Path, child: str, max_runs: int = 1) -> subprocess.Popen:
    """A scheduler (the real class and lock) whose tick runs `child`, a stand-in Python
    script for `tlpipe run`, in its own process so signals reach only it."""
    code = textwrap.dedent(f"""
        import sys
        from tlpipe.pipeline.schedule import Scheduler
        from tlpipe.pipeline.timing import next_tick
        sys.exit(Scheduler({str(work)!r}, [sys.executable, "-c", {child!r}],
                           next_tick("1s", None), max_runs={max_runs}).serve())
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(proc: subprocess.Popen, start: str, timeout: float = 60) -> list[str]:
    """Reads the process's output up to a line starting with `start`."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(start):
            return lines
    raise AssertionError(f"{start!r} not seen in:\n{''.join(lines)}")


def test_a_second_scheduler_on_the_same_root_refuses_naming_the_holder(tmp_path):
    first = _scheduler_process(tmp_path, "import time; time.sleep(120)")
    try:
        _wait_for(first, "tlpipe schedule: tick 1")
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        second = tlpipe("schedule", "--work-dir", str(tmp_path), "--every", "1h", timeout=120)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"another scheduler holds {tmp_path / LOCK_FILE}" in second.stderr
        assert f"pid {first.pid} on host {socket.gethostname()}, started " \
               f"{holder['started']}" in second.stderr
        assert "tick" not in second.stdout  # it ran nothing
    finally:
        first.send_signal(signal.SIGTERM)
        rest = first.communicate(timeout=60)[0]
    assert first.returncode == 0, rest
    assert "stopped after 1 tick(s) (SIGTERM)" in rest
    assert not (tmp_path / LOCK_FILE).exists()  # released on the way out


def test_a_stale_lock_from_a_dead_scheduler_is_taken_over(tmp_path, capfd):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01T03:00:00"}))
    code = Scheduler(str(tmp_path), [sys.executable, "-c", "print('fake run')"],
                     next_tick("1s", None), max_runs=1).serve()
    out = capfd.readouterr().out
    assert code == 0, out
    assert (f"took over the stale lock {tmp_path / LOCK_FILE} of a scheduler that is no longer "
            f"running (pid {dead.pid} on host {socket.gethostname()}, started "
            f"2026-01-01T03:00:00)") in out
    assert "fake run" in out and not (tmp_path / LOCK_FILE).exists()


def test_a_failed_run_is_recorded_and_the_next_tick_goes_on(tmp_path, capfd):
    counter = tmp_path / "count"
    child = (f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); "
             f"n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); "
             f"print('tlpipe: error: run failed: boom' if n == 0 else 'fine'); sys.exit(n == 0)")
    killed = []
    code = Scheduler(str(tmp_path), [sys.executable, "-c", child], next_tick("1s", None),
                     max_runs=2, on_killed=killed.append).serve()
    out = capfd.readouterr().out
    assert code == 0, out
    log = [json.loads(line) for line in (tmp_path / "logs" / SCHEDULE_LOG).read_text().splitlines()]
    assert [(e["tick"], e["exit_status"], e["outcome"]) for e in log] == [
        (1, 1, "failed"), (2, 0, "ran")]
    assert "tick 1 failed (exit status 1" in out and "tick 2 ran (exit status 0" in out
    assert killed == []  # `tlpipe run` alerts on its own failures; only a kill is alerted here


# Stand-ins for `tlpipe run`: node events as pipeline/local_runner.py emits them (the file the
# scheduler names, then the progress line).
_EMIT = textwrap.dedent("""
    import os, sys, time
    from tlpipe.pipeline.events import COMPLETE, EVENTS_FILE_ENV, STARTED, Event, EventWriter
    from tlpipe.pipeline.local_runner import progress_line
    events = EventWriter(os.environ[EVENTS_FILE_ENV], [lambda e: print(progress_line(e, "log"), flush=True)])
    def node(name, seconds):
        events.emit(Event(STARTED, name))
        time.sleep(seconds)
        events.emit(Event(COMPLETE, name, seconds))
""")
_COMPONENTS_CHILD = _EMIT + textwrap.dedent("""
    try:
        node("transform", 2)
        node("tuner", 60)
    except KeyboardInterrupt:
        print("child: interrupted in the tuner", flush=True)
        sys.exit(130)
""")
_PUSH_CHILD = _EMIT + textwrap.dedent("""
    node("evaluator", 0.1)
    node("pusher", 2)
    print("child: run completed", flush=True)
""")


def _fed(scheduler: Scheduler, *events) -> list:
    """Feeds node events to the scheduler's handler; returns the interrupts it asked for."""
    asked = []
    scheduler._interrupt = lambda: asked.append(scheduler._node)
    for event in events:
        scheduler._on_event(event)
    return asked


def test_the_scheduler_follows_node_events():
    from tlpipe.pipeline.events import CACHED, COMPLETE, RUN_SKIPPED, STARTED, Event

    s = Scheduler("w", [], next_tick("1s", None))
    s._node, s._push_next, s._outcome = None, False, "ran"
    assert _fed(s, Event(STARTED, "transform")) == [] and s._node == "transform"
    s.stop_signal = "SIGTERM"  # stop after the current component: the end interrupts
    assert _fed(s, Event(COMPLETE, "transform", 4.0)) == [None] and s._node is None
    s._node, s.stop_signal = None, None
    _fed(s, Event(STARTED, "evaluator"), Event(CACHED, "evaluator", 0.1))
    assert s._push_next  # the evaluator ended: the push follows, never interrupted
    s.stop_signal = "SIGINT"
    assert _fed(s, Event(STARTED, "pusher"), Event(COMPLETE, "pusher", 4.0)) == []
    _fed(s, Event(RUN_SKIPPED, detail="latest span on disk is 4"))
    assert s._outcome == "no new data"


def test_sigterm_stops_after_the_current_component(tmp_path):
    scheduler = _scheduler_process(tmp_path, _COMPONENTS_CHILD, max_runs=5)
    _wait_for(scheduler, "  transform              running")
    started = time.time()
    scheduler.send_signal(signal.SIGTERM)
    out = scheduler.communicate(timeout=60)[0]
    assert scheduler.returncode == 0, out
    assert out.index("stopping after the current component (transform)") \
        < out.index("transform              COMPLETE") < out.index("child: interrupted")
    assert "tick 1 interrupted (exit status 130" in out
    assert "stopped after 1 tick(s) (SIGTERM)" in out
    assert time.time() - started < 40  # not the child's 60 s in the tuner


def test_ctrl_c_never_interrupts_a_push(tmp_path):
    scheduler = _scheduler_process(tmp_path, _PUSH_CHILD, max_runs=5)
    _wait_for(scheduler, "  pusher                 running")
    scheduler.send_signal(signal.SIGINT)
    out = scheduler.communicate(timeout=60)[0]
    assert scheduler.returncode == 0, out
    assert "SIGINT: the run is pushing; stopping when it ends" in out
    assert "child: run completed" in out and "tick 1 ran (exit status 0" in out


def test_a_webhook_that_is_down_never_fails_the_run(tmp_path, capfd):
    from tlpipe.components.config_loading import load_config
    from tlpipe.pipeline.notify import FAILED, notify

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = load_config(None, [f"schedule.webhook_url=http://127.0.0.1:{port}/hook"],
                         work_dir=str(tmp_path))
    body = notify(config, FAILED, "run failed: ValueError: boom")
    err = capfd.readouterr().err
    assert "tlpipe: ALERT failed: flowers: run failed: ValueError: boom; serving nothing" in err
    assert f"alert NOT posted to http://127.0.0.1:{port}/hook" in err
    assert body["event"] == "failed" and body["served_version"] is None
    assert "ALERT failed" in (tmp_path / "logs" / "alerts.log").read_text()


# --- the simulation: three spans through the real scheduler ----------------------------------

SIMULATION_SETTINGS = [
    "data.pattern=span-{SPAN}/*/*", "tuner.input_sizes=[64]", "tuner.max_trials=1",
    "tuner.learning_rate_min=0.005", "tuner.retune_every=3", "trainer.phase1_epochs=3",
    "trainer.phase2_epochs=0", "pusher.warmup_requests=1", "evaluator.max_accuracy_drop=0.1",
]


def _settings() -> list[str]:
    """The shared cheap e2e settings, made cheaper (one trial, one size, retune every 3)."""
    ours = {s.split("=", 1)[0]: s for s in SIMULATION_SETTINGS}
    shared = [s for s in E2E_SETTINGS if s.split("=", 1)[0] not in ours]
    return shared + SIMULATION_SETTINGS


def _make_spans(root: Path) -> dict[int, Path]:
    """span 1: 3 classes x 16; span 2: the same plus 16 more each; span 3: span 2 with the
    labels shuffled (every class keeps its size), which no model can learn."""
    from tlpipe.data.synthetic import make_image_folder

    make_image_folder(str(root / "span-1"), classes=3, per_class=16, size=40, seed=1)
    make_image_folder(str(root / "span-2"), classes=3, per_class=32, size=40, seed=1)
    files = sorted((root / "span-2").glob("*/*"))
    labels = [f.parent.name for f in files]
    random.Random(3).shuffle(labels)
    for path, label in zip(files, labels):
        target = root / "span-3" / label / f"{path.parent.name}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return {n: root / f"span-{n}" for n in (1, 2, 3)}


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.e2e
def test_three_spans_through_the_scheduler(tmp_path):
    spans = _make_spans(tmp_path / "spans")
    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    shutil.copytree(spans[1], data / "span-1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Webhook.received = []
    # A test share large enough that span 3's shuffled labels cannot reach the gate by chance
    # (13 test images at the default 15% did: 8/13 right once).
    settings = [*_settings(), "data.train_ratio=0.5", "data.test_ratio=0.35",
                f"schedule.webhook_url=http://127.0.0.1:{server.server_address[1]}/hook"]
    command = [sys.executable, "-m", "tlpipe.pipeline.cli", "schedule", "--every", "2s",
               "--data", str(data), "--work-dir", str(work),
               *settings_args(settings)]
    scheduler = subprocess.Popen(command, cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, ran, deadline = [], 0, time.time() + 900
    try:
        while time.time() < deadline:
            line = scheduler.stdout.readline()
            if not line:
                break
            out.append(line)
            if " ran (exit status" in line or " failed (exit status" in line:
                assert " ran (exit status 0" in line, "".join(out)
                ran += 1
                if ran < 3:  # the next span lands before a later tick
                    shutil.copytree(spans[ran + 1], data / f"span-{ran + 1}")
            elif ran == 3 and " no new data (exit status 0" in line:
                scheduler.send_signal(signal.SIGINT)  # Ctrl-C while waiting: stop cleanly
        scheduler.wait(timeout=120)
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
        server.shutdown()
    text = "".join(out)
    assert scheduler.returncode == 0, text
    assert "SIGINT: stopping" in text and "stopped after" in text

    assert sorted(os.listdir(work / "serving" / "flowers")) == ["1", "2"], text  # v2 served
    assert not (work / LOCK_FILE).exists()
    log = [json.loads(line) for line in (work / "logs" / SCHEDULE_LOG).read_text().splitlines()]
    assert [e["outcome"] for e in log if e["outcome"] != "no new data"] == ["ran"] * 3

    result = tlpipe("runs", "--work-dir", str(work), "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [(r["status"], r["span"], r["blessed"], r["pushed_version"]) for r in runs] == [
        ("complete", 1, True, 1), ("complete", 2, True, 2), ("complete", 3, False, None)], text
    assert [r["hyperparameters_source"] for r in runs] == ["tuned", "reused", "reused"], text
    assert all(r["hyperparameters"]["input_size"] == 64 for r in runs)
    assert runs[2]["accuracy"] < 0.6 <= runs[1]["accuracy"]
    table = tlpipe("runs", "--work-dir", str(work)).stdout
    assert len(table.splitlines()) == 4 and "complete       3" in table, table

    alerts = _Webhook.received
    assert [a["event"] for a in alerts] == ["not_blessed"], alerts
    assert alerts[0]["served_version"] == 2 and alerts[0]["run_id"] == runs[2]["run_id"]
    assert "ALERT not_blessed" in (work / "logs" / "alerts.log").read_text()
