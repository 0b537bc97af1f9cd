"""The test split never feeds tuning or early stopping: poison its labels and the tuner's trials
and the trainer's curves stay what they were, while the Evaluator's gate, which reads only the
test split, fails. Two tiny real DAG runs on the same images, told apart by a manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import E2E_SETTINGS, settings_args, tlpipe
from tlpipe.components import features
from tlpipe.components.config import DataConfig
from tlpipe.components.ingest.component import split_buckets
from tlpipe.components.ingest.splits import SplitRatios, assign_splits

pytestmark = pytest.mark.e2e
CLASSES = ["class_a", "class_b", "class_c"]


def _manifest(images: Path, poison: bool) -> Path:
    """A manifest over the tiny images (same relative paths, so the same splits); with `poison`,
    every test-split image gets the next class's label."""
    files = [(f"{c}/{p.name}", c) for c in CLASSES for p in sorted((images / c).iterdir())]
    data = DataConfig()
    splits = assign_splits(files, SplitRatios.from_buckets(split_buckets(data.train_ratio,
                                                                         data.test_ratio)))
    assert sum(s == features.TEST_SPLIT for s in splits.values()) >= 3
    rows = []
    for path, label in files:
        if poison and splits[path] == features.TEST_SPLIT:
            label = CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)]
        rows.append(f"{path},{label}")
    name = "poisoned.csv" if poison else "clean.csv"
    (images / name).write_text("path,label\n" + "\n".join(rows) + "\n")
    return images / name


def _run(images: Path, manifest: Path, work: Path):
    args = ["run", "--data", str(images), "--work-dir", str(work),
            "--set", f"data.manifest={manifest.name}", *settings_args(E2E_SETTINGS)]
    return tlpipe(*args, timeout=900)


def _only(pattern: str, work: Path) -> Path:
    found = sorted(work.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def test_poisoned_test_labels_change_nothing_but_the_gate(tmp_path, tiny_images):
    clean = _run(tiny_images, _manifest(tiny_images, False), tmp_path / "clean")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "blessed       : yes" in clean.stdout
    poisoned = _run(tiny_images, _manifest(tiny_images, True), tmp_path / "poisoned")
    assert "blessed       : NO" in poisoned.stdout, poisoned.stdout + poisoned.stderr

    trials = [json.loads(_only(f"pipeline/tuner/tuner_results/*/{features.TRIALS_JSON}",
                               tmp_path / run).read_text()) for run in ("clean", "poisoned")]
    assert [t["hyperparameters"] for t in trials[0]] == [t["hyperparameters"] for t in trials[1]]
    np.testing.assert_allclose([t["score"] for t in trials[0]], [t["score"] for t in trials[1]],
                               atol=1e-6)
    summaries = [json.loads(_only(f"pipeline/trainer/model_run/*/{features.TRAINING_SUMMARY_FILE}",
                                  tmp_path / run).read_text()) for run in ("clean", "poisoned")]
    assert summaries[0]["hyperparameters"] == summaries[1]["hyperparameters"]
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(summaries[0]["history"][key], summaries[1]["history"][key],
                                   atol=1e-4, err_msg=key)
