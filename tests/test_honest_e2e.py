"""The test split never feeds tuning or early stopping: poison its labels and the tuner's trials
and the trainer's curves stay what they were, while the Evaluator's gate, which reads only the
test split, fails. Two tiny real DAG runs on the same images, told apart by a manifest: the
session's shared first run (the clean manifest), and one with the test split's labels poisoned."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, E2E_SETTINGS, image_labels, settings_args, tlpipe, write_manifest
from tlpipe.components import features
from tlpipe.components.config import DataConfig
from tlpipe.components.ingest.component import split_buckets
from tlpipe.components.ingest.splits import SplitRatios, assign_splits

pytestmark = pytest.mark.e2e


def _poisoned_manifest(images: Path) -> Path:
    """The shared runs' manifest (same paths, same order, so the same splits), with every
    test-split image given the next class's label."""
    files = image_labels(images)
    data = DataConfig()
    splits = assign_splits(files, SplitRatios.from_buckets(split_buckets(data.train_ratio,
                                                                         data.test_ratio)))
    assert sum(s == features.TEST_SPLIT for s in splits.values()) >= 3
    rows = [(path, CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)]
             if splits[path] == features.TEST_SPLIT else label) for path, label in files]
    return write_manifest(images, "poisoned.csv", rows)


def _only(pattern: str, work: Path) -> Path:
    found = sorted(work.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def test_poisoned_test_labels_change_nothing_but_the_gate(pipeline_runs, tmp_path):
    clean = pipeline_runs.first
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "blessed       : yes" in clean.stdout
    images = pipeline_runs.images
    settings = [*E2E_SETTINGS, f"data.manifest={_poisoned_manifest(images).name}"]
    poisoned = tlpipe("run", "--data", str(images), "--work-dir", str(tmp_path / "poisoned"),
                      *settings_args(settings), timeout=900)
    assert "blessed       : NO" in poisoned.stdout, poisoned.stdout + poisoned.stderr

    runs = (pipeline_runs.work_dir, tmp_path / "poisoned")
    trials = [json.loads(_only(f"pipeline/tuner/tuner_results/*/{features.TRIALS_JSON}",
                               run).read_text()) for run in runs]
    assert [t["hyperparameters"] for t in trials[0]] == [t["hyperparameters"] for t in trials[1]]
    np.testing.assert_allclose([t["score"] for t in trials[0]], [t["score"] for t in trials[1]],
                               atol=1e-6)
    summaries = [json.loads(_only(f"pipeline/trainer/model_run/*/{features.TRAINING_SUMMARY_FILE}",
                                  run).read_text()) for run in runs]
    assert summaries[0]["hyperparameters"] == summaries[1]["hyperparameters"]
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(summaries[0]["history"][key], summaries[1]["history"][key],
                                   atol=1e-4, err_msg=key)
