"""Odd files in the data tree: dangling symlinks, symlink loops, FIFOs, sockets and devices are
quarantined with their reason, never opened (a FIFO blocked ingest forever) and never reach TFX's
fingerprinting (one dangling link failed the run with an empty NotFoundError); palette BMPs,
which TensorFlow decodes as grey levels, are quarantined."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tlpipe.components.config import PipelineConfig
from tlpipe.components.ingest import images
from tlpipe.components.ingest.driver import split_fingerprint
from tlpipe.components.ingest.listing import (
    DANGLING_SYMLINK,
    NOT_A_REGULAR_FILE,
    SYMLINK_LOOP,
    Candidate,
    Rejected,
    classify_entry,
    odd_file_problem,
    parse_manifest_row,
)

EXTS = frozenset({"jpg", "png", "bmp"})


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def _palette_bmp(grey: bool = False) -> bytes:
    indices = (np.arange(64).reshape(8, 8) % 4).astype(np.uint8)
    if grey:  # Pillow stores "L" as a grey-ramp palette, which TensorFlow reads correctly
        img = Image.fromarray(indices * 60, "L")
    else:
        img = Image.fromarray(indices, "P")
        img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0] + [0] * (252 * 3))
    out = io.BytesIO()
    img.save(out, "BMP")
    return out.getvalue()


def _make_odd_files(folder: Path) -> dict[str, str]:
    """Odd entries in `folder`, named like images; returns name -> expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dangling.jpg").symlink_to("nowhere.jpg")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "device.jpg").symlink_to("/dev/zero")  # would stream zeros forever
    cwd = os.getcwd()
    os.chdir(folder)  # a relative name keeps the socket path under the AF_UNIX length limit
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind("socket.jpg")
    finally:
        os.chdir(cwd)
    return {"dangling.jpg": DANGLING_SYMLINK, "loop.jpg": SYMLINK_LOOP, "fifo.jpg": NOT_A_REGULAR_FILE,
            "device.jpg": NOT_A_REGULAR_FILE, "socket.jpg": NOT_A_REGULAR_FILE}


def test_each_odd_entry_is_rejected_with_its_reason_without_being_opened(tmp_path):
    expected = _make_odd_files(tmp_path / "cats")
    (tmp_path / "cats" / "fine.jpg").write_bytes(_jpeg(0))
    for name, reason in expected.items():
        outcome = classify_entry(name, False, str(tmp_path / "cats"), str(tmp_path), EXTS)
        assert isinstance(outcome, Rejected) and outcome.reason == reason, (name, outcome)
        assert outcome.detail and outcome.label_name == "cats" and outcome.relative_path == f"cats/{name}"
    assert "FIFO" in odd_file_problem(str(tmp_path / "cats" / "fifo.jpg"))[1]
    assert "'nowhere.jpg'" in odd_file_problem(str(tmp_path / "cats" / "dangling.jpg"))[1]
    assert isinstance(classify_entry("fine.jpg", False, str(tmp_path / "cats"), str(tmp_path), EXTS), Candidate)
    assert odd_file_problem(str(tmp_path / "cats" / "absent.jpg")) is None  # missing: the reader says so
    # A manifest naming them gets the same answers.
    for name, reason in expected.items():
        row = parse_manifest_row(f"cats/{name},cats", str(tmp_path / "manifest.csv"), str(tmp_path), EXTS, ["train"])
        assert isinstance(row, Rejected) and row.reason == reason, (name, row)


def test_fingerprint_matches_tfx_and_survives_what_tfx_chokes_on(tmp_path):
    from tfx.utils import io_utils

    for i in range(3):
        (tmp_path / "cats").mkdir(exist_ok=True)
        (tmp_path / "cats" / f"{i}.jpg").write_bytes(_jpeg(i))
    pattern = str(tmp_path / "*" / "*")
    assert split_fingerprint("train", pattern) == io_utils.generate_fingerprint("train", pattern)  # caches kept
    (tmp_path / "cats" / "dangling.jpg").symlink_to("nowhere.jpg")
    with pytest.raises(Exception):  # noqa: B017 (TFX: NotFoundError with an empty message)
        io_utils.generate_fingerprint("train", pattern)
    before = split_fingerprint("train", pattern)
    assert "num_files:4" in before
    (tmp_path / "cats" / "loop.jpg").symlink_to("loop.jpg")
    assert "num_files:5" in split_fingerprint("train", pattern)


def test_palette_bmp_is_quarantined_and_grey_bmp_kept():
    problem = images.inspect_image(_palette_bmp(), max_pixels=10_000)
    assert isinstance(problem, images.Problem) and problem.reason == images.UNSUPPORTED
    assert "palette" in problem.detail and "grey" in problem.detail
    kept = images.inspect_image(_palette_bmp(grey=True), max_pixels=10_000)
    assert isinstance(kept, images.ImageInfo) and kept.format == "bmp"


def _on_alarm(signum, frame):
    raise TimeoutError("ingest hung on an odd file")


def test_run_ingest_quarantines_odd_files_and_completes_with_default_settings(tmp_path):
    from tlpipe.components.ingest.local import run_ingest

    root = tmp_path / "data"
    for n, label in enumerate(("cats", "dogs")):  # distinct seeds: no byte-identical images
        (root / label).mkdir(parents=True)
        for i in range(60):
            (root / label / f"{i}.jpg").write_bytes(_jpeg(1000 * n + i))
    odd = {f"cats/{name}": reason for name, reason in _make_odd_files(root / "cats").items()}
    (root / "dogs" / "palette.bmp").write_bytes(_palette_bmp())
    (root / "looping_class").symlink_to("looping_class")  # class folders that are not folders
    (root / "gone_class").symlink_to("nowhere")
    odd["dogs/palette.bmp"] = images.UNSUPPORTED
    config = PipelineConfig()
    assert len(odd) / (120 + len(odd)) < config.data.max_rejected_share  # defaults: the run must pass

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(300)
    try:
        run = run_ingest(config, str(root), str(tmp_path / "out"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    import csv

    with open(run.quarantine_path, newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    assert {path: row["reason"] for path, row in rows.items()} == odd
    assert all(row["detail"] for row in rows.values())
    summary = json.loads(Path(run.summary_path).read_text())
    assert summary["written"] == 120 and summary["quarantined"] == len(odd)


@pytest.mark.e2e
def test_a_dag_run_over_odd_files_completes(tmp_path):
    """Through TFX's LocalDagRunner: its driver (our fingerprint) and the executor."""
    from tfx import v1 as tfx
    from tlpipe.components.ingest.report import quarantine_summary
    from tlpipe.pipeline.lineage import Lineage
    from tlpipe.pipeline.pipeline import create_pipeline

    root = tmp_path / "data"
    for n, label in enumerate(("ant", "bee")):  # distinct seeds: no byte-identical images
        (root / label).mkdir(parents=True)
        for i in range(5):
            (root / label / f"{i}.jpg").write_bytes(_jpeg(1000 * n + i))
    (root / "bee" / "dangling.jpg").symlink_to("nowhere.jpg")
    os.mkfifo(root / "bee" / "fifo.jpg")
    config = PipelineConfig(work_dir=str(tmp_path / "work"))
    config.data.max_rejected_share = 0.5
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(300)
    try:
        tfx.orchestration.LocalDagRunner().run(create_pipeline(config, str(root), to_node="ingest"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    [report] = Lineage.open(config).store.get_artifacts_by_type("tlpipe.QuarantineReport")
    summary = quarantine_summary(report.uri)
    assert summary["written"] == 10
    assert summary["by_reason"] == {DANGLING_SYMLINK: 1, NOT_A_REGULAR_FILE: 1}
