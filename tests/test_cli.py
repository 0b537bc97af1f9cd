"""The `tlpipe` command's contract: bad input fails fast with one line, before any component."""
import time
from pathlib import Path

import pytest
from conftest import tlpipe


@pytest.mark.parametrize("extra, message", [
    (["--set", "base.name=alexnet"], "unknown base 'alexnet'"),
    (["--data", "/no/such/dir"], "data directory not found"),
    (["--to", "nowhere"], "unknown node 'nowhere'"),
])
def test_bad_configuration_fails_fast_with_one_line(tmp_path: Path, tiny_images: Path, extra,
                                                   message):
    args = ["run", "--work-dir", str(tmp_path / "w"), "--data", str(tiny_images), *extra]
    started = time.time()
    result = tlpipe(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("tlpipe: error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "w" / "pipeline").exists()  # nothing ran
    assert time.time() - started < 60


def test_one_class_data_dir_is_rejected(tmp_path: Path, tiny_images: Path):
    data = tmp_path / "one"
    (data / "cats").mkdir(parents=True)
    for image in sorted((tiny_images / "class_a").iterdir())[:3]:
        (data / "cats" / image.name).write_bytes(image.read_bytes())
    result = tlpipe("run", "--work-dir", str(tmp_path / "w"), "--data", str(data))
    assert result.returncode == 2
    assert "1 class (cats)" in result.stderr and "at least 2" in result.stderr


def test_help_lists_the_run_contract():
    result = tlpipe("run", "--help")
    assert result.returncode == 0
    for flag in ("--config", "--data", "--work-dir", "--to", "--set", "--mirror"):
        assert flag in result.stdout
