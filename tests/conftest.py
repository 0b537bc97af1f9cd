"""Shared test fixtures: tiny real images, and the team's offline Keras cache when present."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from data.synthetic import make_image_folder

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
    from components.trainer.backbones import BACKBONES

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
