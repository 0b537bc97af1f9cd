"""Shared test fixtures: tiny real images, and the team's offline Keras cache when present."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tlpipe.data.synthetic import make_image_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_KERAS_HOME = SHARED / "keras_home"
TEST_BASE = "mobilenet_v1_025"


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    """3 classes x 16 real JPEG/PNG images, distinct enough for a frozen base to separate."""
    root = tmp_path_factory.mktemp("tiny_images")
    make_image_folder(str(root), classes=3, per_class=16, size=48, seed=1)
    return root


@pytest.fixture(scope="session")
def keras_home(tmp_path_factory) -> Path | None:
    """A writable copy of the shared Keras cache (tests keep the shared folder read-only)."""
    from tlpipe.components.trainer.backbones import BACKBONES

    weights = SHARED_KERAS_HOME / "models" / BACKBONES[TEST_BASE].weights_file
    if not weights.is_file():
        return None
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    shutil.copy(weights, home / "models" / weights.name)
    return home


def tlpipe_env(keras_home: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if keras_home is not None:
        env["KERAS_HOME"] = str(keras_home)
    return env


def tlpipe(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    """Runs the real `tlpipe` command line in a child process."""
    return subprocess.run([sys.executable, "-m", "tlpipe.pipeline.cli", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=timeout)


# Small and quick, yet a real pretrained base when the shared Keras cache is there.
E2E_SETTINGS = [
    f"base.name={TEST_BASE}", "tuner.input_sizes=[64,96]", "tuner.max_trials=2",
    "tuner.epochs_per_trial=1", "tuner.learning_rate_min=0.001", "tuner.learning_rate_max=0.01",
    "trainer.phase1_epochs=4", "trainer.phase2_epochs=1", "trainer.batch_size=8",
    "evaluator.min_accuracy=0.6",
]


@dataclass
class PipelineRuns:
    work_dir: Path
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess

    @property
    def model_dir(self) -> Path:
        """The pushed model's TF Serving base path (`<work>/serving/flowers`)."""
        return self.work_dir / "serving" / "flowers"


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory, tiny_images, keras_home) -> PipelineRuns:
    """The real DAG run twice on tiny images: once to push, once to show caching.

    Session-scoped so every test needing a real pushed model (e2e, serving) shares one run.
    """
    work = tmp_path_factory.mktemp("work")
    weights = [] if keras_home else ["--set", "base.weights=none"]
    args = ["run", "--data", str(tiny_images), "--work-dir", str(work), *weights,
            *[a for s in E2E_SETTINGS for a in ("--set", s)]]
    env = tlpipe_env(keras_home)
    first = tlpipe(*args, env=env, timeout=900)
    second = tlpipe(*args, env=env, timeout=600)
    return PipelineRuns(work, first, second)


@pytest.fixture(scope="session")
def pushed_model_dir(pipeline_runs) -> Path:
    """A real model pushed by the pipeline: `<dir>/1/` is its SavedModel (labels class_a..c)."""
    assert pipeline_runs.first.returncode == 0, pipeline_runs.first.stdout + pipeline_runs.first.stderr
    return pipeline_runs.model_dir


# Model-level tests (trainer, tuner): settings for the test base at a small size, and arrays.
SIZE = 64


def model_settings(keras_home, monkeypatch, **trainer):
    """ModelSettings (as the Trainer and Tuner rebuild them) for TEST_BASE at SIZE px, with real
    ImageNet weights when the shared Keras cache is there."""
    from tlpipe.components.config import PipelineConfig

    if keras_home is not None:
        monkeypatch.setenv("KERAS_HOME", str(keras_home))
    config = PipelineConfig()
    config.base.name = TEST_BASE
    config.base.weights = "imagenet" if keras_home is not None else "none"
    config.tuner.input_sizes = [SIZE]
    config.trainer.batch_size = 8
    config.trainer.early_stopping_patience = 0
    config.trainer.augment = False
    for key, value in trainer.items():
        setattr(config.trainer, key, value)
    return config.model_settings()


def normalized_images(n=24, classes=3, seed=0, size=SIZE):
    """Images whose class shows in colour and layout, already normalized as the base expects."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.uniform(-1, 1, size=(n, size, size, 3)).astype("float32") * 0.3
    for i, label in enumerate(labels):
        images[i, :, :, label] += 0.7
        images[i, label * 20:(label + 1) * 20] -= 0.5
    return images, labels.astype("int64")


def image_batches(images, labels, batch=8):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)
