"""The real DAG on LocalDagRunner, on tiny real images: pushed, servable, cached on re-run."""
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tlpipe, tlpipe_env

pytestmark = pytest.mark.e2e


def test_first_run_trains_gates_and_pushes(pipeline_runs):
    work, first = pipeline_runs.work_dir, pipeline_runs.first
    assert first.returncode == 0, first.stdout + first.stderr
    for node in ("ingest", "transform", "tuner", "trainer", "evaluator", "pusher"):
        assert re.search(rf"^\s+{node}\s+COMPLETE", first.stdout, re.M), first.stdout
    assert "blessed       : yes" in first.stdout
    assert f"pushed: version 1 at {work}/serving/flowers/1" in first.stdout
    accuracy = float(re.search(r"eval accuracy : ([0-9.]+)", first.stdout).group(1))
    assert accuracy >= 0.6
    assert (work / "metadata.sqlite").is_file()


def test_second_run_is_cached_and_pushes_no_duplicate(pipeline_runs):
    work, second = pipeline_runs.work_dir, pipeline_runs.second
    assert second.returncode == 0, second.stdout + second.stderr
    for node in ("ingest", "statistics_gen", "transform", "tuner", "trainer"):
        assert re.search(rf"^\s+{node}\s+CACHED", second.stdout, re.M), second.stdout
    assert "already serving, not pushed again: version 1" in second.stdout
    assert sorted(os.listdir(work / "serving" / "flowers")) == ["1"]


def test_pushed_model_classifies_raw_jpeg_bytes(pushed_model_dir, tiny_images):
    import tensorflow as tf

    model = tf.saved_model.load(str(pushed_model_dir / "1"))
    serve = model.signatures["serving_default"]
    images, labels = [], []
    for label, name in enumerate(["class_a", "class_b", "class_c"]):
        for path in sorted((tiny_images / name).iterdir())[:4]:
            buffer = io.BytesIO()
            Image.open(path).convert("RGB").save(buffer, format="JPEG")
            images.append(buffer.getvalue())
            labels.append(label)
    out = serve(image_bytes=tf.constant(images))
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (len(images), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    names = [n.decode() for n in out["class_name"].numpy()]
    assert set(names) <= {"class_a", "class_b", "class_c"}
    assert np.mean(out["class_id"].numpy() == np.array(labels)) >= 0.6
    assert "serving_examples" in model.signatures


def test_partial_run_stops_at_the_named_node(tmp_path, tiny_images, keras_home):
    result = tlpipe("run", "--data", str(tiny_images), "--work-dir", str(tmp_path), "--to",
                    "ingest", env=tlpipe_env(keras_home), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\s+ingest\s+COMPLETE", result.stdout, re.M)
    assert "transform" not in result.stdout
    assert (tmp_path / "pipeline" / "ingest").is_dir()
    assert not (tmp_path / "pipeline" / "transform").exists()
