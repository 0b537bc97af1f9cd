"""`tlpipe` as users run it (a real subprocess): bad settings are one line, exit 2, in under 2 s,
before anything runs or is written."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_config import BAD_COMBINATIONS, BAD_SETTINGS


def tlpipe(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tlpipe.pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - started


def assert_one_line_usage_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("tlpipe: error: "), proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS + BAD_COMBINATIONS)
def test_run_refuses_each_bad_setting_before_anything_runs(tmp_path, tiny_images, overrides, message):
    work = tmp_path / "work"
    sets = [a for s in overrides for a in ("--set", s)]
    proc, seconds = tlpipe("run", "--data", str(tiny_images), "--work-dir", str(work), *sets, cwd=tmp_path)
    assert_one_line_usage_error(proc, message)
    assert seconds < 2.0, f"{seconds:.1f}s"
    assert not work.exists() and proc.stdout == ""


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
def test_every_subcommand_shares_the_config_flags_and_their_errors(tmp_path, command):
    proc, seconds = tlpipe(command, *SUBCOMMANDS[command], "--work-dir", str(tmp_path / "work"),
                           "--set", "trainer.batch_size=0", cwd=tmp_path)
    assert_one_line_usage_error(proc, "'trainer.batch_size' must be greater than or equal to 1, got 0")
    assert seconds < 2.0 and not (tmp_path / "work").exists()


def test_listings_take_format_json_and_the_json_alias(tmp_path):
    table, _ = tlpipe("runs", "--work-dir", str(tmp_path), cwd=tmp_path)
    assert table.returncode == 0 and "no runs recorded" in table.stdout
    for flags in (["--format", "json"], ["--json"]):
        proc, _ = tlpipe("runs", "--work-dir", str(tmp_path), *flags, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_a_failed_action_is_one_line_and_exit_1(tmp_path):
    proc, _ = tlpipe("compare", "--work-dir", str(tmp_path), cwd=tmp_path)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("tlpipe")]  # not TF's start-up
    assert proc.returncode == 1 and len(ours) == 1, proc.stderr
    assert ours[0].startswith("tlpipe: error: no trained version")
