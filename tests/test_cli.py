"""`tlpipe` as users run it (a real subprocess): bad settings are one line, exit 2, in under 2 s,
before anything runs or is written.

"Under 2 s" is checked as what makes it true whatever the machine's load: the child never imports
TensorFlow, TFX, Beam or Keras (each costs seconds), and its own CPU time stays under 2 s (wall
time on a loaded CI machine measured the neighbours, not the CLI)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO
from test_config import BAD_COMBINATIONS, BAD_SETTINGS

HEAVY_MODULES = ("tensorflow", "tfx", "apache_beam", "keras")
# `python -m tlpipe.pipeline.cli ...`, reporting at exit which heavy modules it imported.
LAUNCHER = f"""
import atexit, os, runpy, sys
def report():
    with open(os.environ["TLPIPE_TEST_IMPORT_REPORT"], "w") as fh:
        fh.write(" ".join(m for m in {HEAVY_MODULES!r} if m in sys.modules))
atexit.register(report)
runpy.run_module("tlpipe.pipeline.cli", run_name="__main__", alter_sys=True)
"""


@dataclass
class Cost:
    cpu_seconds: float
    heavy_imports: list[str]

    def assert_quick(self) -> None:
        assert not self.heavy_imports, f"imported {self.heavy_imports} before refusing"
        assert self.cpu_seconds < 2.0, f"{self.cpu_seconds:.1f}s of CPU"


def tlpipe(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, Cost]:
    report = cwd / ".heavy_imports"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
           "TLPIPE_TEST_IMPORT_REPORT": str(report)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    heavy = report.read_text().split() if report.exists() else ["(no report: the child died)"]
    report.unlink(missing_ok=True)
    return proc, Cost(cpu, heavy)


def assert_one_line_usage_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("tlpipe: error: "), proc.stderr
    assert message in proc.stderr


# The refusal cases, each run as `python -m tlpipe.pipeline.cli ...` again (runpy) inside one
# child, in its own folder: its exit status, what it printed, its CPU time and the heavy modules
# loaded by its end (cumulative, so the first case that imports one is the first to fail). One
# interpreter start for all of them instead of ~36 (~0.3 CPU s each).
BATCH = f"""
import contextlib, io, json, os, resource, runpy, sys
results = []
for argv, cwd in json.loads(sys.stdin.read()):
    os.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    before = resource.getrusage(resource.RUSAGE_SELF)
    sys.argv = ["tlpipe", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("tlpipe.pipeline.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:
            code = 0 if exit.code is None else exit.code if isinstance(exit.code, int) else 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    results.append({{"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                    "cpu": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
                    "heavy": [m for m in {HEAVY_MODULES!r} if m in sys.modules]}})
print(json.dumps(results))
"""


@dataclass
class Refused:
    proc: subprocess.CompletedProcess
    cost: Cost
    work: Path  # the --work-dir it was given


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, tiny_images) -> dict[tuple[str, ...], Refused]:
    """Every bad setting given to `tlpipe run`, and one to each subcommand, keyed by
    ("run", *overrides) and (subcommand,)."""
    cases = {("run", *overrides): ["run", "--data", str(tiny_images),
                                   *[a for s in overrides for a in ("--set", s)]]
             for overrides, _ in BAD_SETTINGS + BAD_COMBINATIONS}
    cases.update({(command,): [command, *SUBCOMMANDS[command], "--set", "trainer.batch_size=0"]
                  for command in SUBCOMMANDS})
    folders = {key: tmp_path_factory.mktemp("refusal") for key in cases}
    runs = [[[*argv, "--work-dir", str(folders[key] / "work")], str(folders[key])]
            for key, argv in cases.items()]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.run([sys.executable, "-c", BATCH], input=json.dumps(runs), env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    results = json.loads(child.stdout.strip().splitlines()[-1])
    return {key: Refused(subprocess.CompletedProcess(argv, r["code"], r["stdout"], r["stderr"]),
                         Cost(r["cpu"], r["heavy"]), folders[key] / "work")
            for (key, argv), r in zip(cases.items(), results)}


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS + BAD_COMBINATIONS)
def test_run_refuses_each_bad_setting_before_anything_runs(refusals, overrides, message):
    refused = refusals[("run", *overrides)]
    assert_one_line_usage_error(refused.proc, message)
    refused.cost.assert_quick()
    assert not refused.work.exists() and refused.proc.stdout == ""


def test_run_refuses_a_config_file_that_is_a_list(tmp_path, tiny_images):
    config = tmp_path / "c.yaml"
    config.write_text("- a\n- b\n")
    proc, _ = tlpipe("run", "--config", str(config), "--data", str(tiny_images), cwd=tmp_path)
    assert_one_line_usage_error(proc, "must be a mapping of settings, got a list")


SUBCOMMANDS = {  # each subcommand that reads the config, with its own required arguments
    "run": [],
    "runs": [],
    "compare": [],
    "promote": ["--reason", "test"],
    "label": ["--version", "1", "--label", "stable"],
    "schedule": ["--max-runs", "1"],
    "compile": ["--kubeflow", "spec.json", "--image", "registry.example/tlpipe:1", "--data", "gs://bucket/images"],
    "config": [],
}


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_shares_the_config_flags_and_their_errors(refusals, command):
    refused = refusals[(command,)]
    assert_one_line_usage_error(refused.proc, "'trainer.batch_size' must be greater than or equal to 1, got 0")
    refused.cost.assert_quick()
    assert not refused.work.exists()


def test_listings_take_format_json_and_the_json_alias(tmp_path):
    table, _ = tlpipe("runs", "--work-dir", str(tmp_path), cwd=tmp_path)
    assert table.returncode == 0 and "no runs recorded" in table.stdout
    for flags in (["--format", "json"], ["--json"]):
        proc, _ = tlpipe("runs", "--work-dir", str(tmp_path), *flags, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_listing_recorded_runs_imports_no_tensorflow(tmp_path):
    """`tlpipe runs` reads the summaries beside each run's artifacts: local files, read without
    TensorFlow (it used to import TF and TFMA for them: ~10 s of CPU before the table)."""
    from test_runs import WHOLE, _history

    _history(tmp_path / "work", [("run-1", 1, WHOLE), ("run-2", 2, WHOLE)])
    proc, cost = tlpipe("runs", "--work-dir", str(tmp_path / "work"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("complete") == 2, proc.stdout
    cost.assert_quick()


def test_a_failed_action_is_one_line_and_exit_1(tmp_path, tlpipe_in_process):
    """In this process (a child would spend ~15 s of CPU importing TFX before failing; the same
    main() turns the error into one line either way)."""
    failed = tlpipe_in_process("compare", "--work-dir", str(tmp_path))
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith(
        "tlpipe: error: no trained version"), failed.stderr
