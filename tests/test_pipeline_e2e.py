"""The real DAG on LocalDagRunner, on tiny real images: pushed, servable, cached on re-run."""
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_RUN_SETTINGS, settings_args, tlpipe
from PIL import Image

pytestmark = pytest.mark.e2e


def test_first_run_trains_gates_and_pushes(pipeline_runs):
    work, first = pipeline_runs.work_dir, pipeline_runs.first
    assert first.returncode == 0, first.stdout + first.stderr
    for node in ("ingest", "transform", "tuner", "trainer", "evaluator", "pusher"):
        assert re.search(rf"^\s+{node}\s+COMPLETE", first.stdout, re.M), first.stdout
    assert "blessed       : yes" in first.stdout
    assert f"pushed: version 1 at {work}/serving/flowers/1" in first.stdout
    accuracy = float(re.search(r"test accuracy : ([0-9.]+)", first.stdout).group(1))
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
    assert out["classes"].numpy().tolist() == [[b"class_a", b"class_b", b"class_c"]] * len(images)
    assert np.mean(out["class_id"].numpy() == np.array(labels)) >= 0.6
    assert "serving_examples" in model.signatures


def test_partial_run_runs_the_upstream_closure_of_the_named_node(tmp_path, tiny_images):
    result = tlpipe("run", "--data", str(tiny_images), "--work-dir", str(tmp_path), "--to",
                    "schema_gen", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for node in ("ingest", "statistics_gen", "schema_gen"):
        assert re.search(rf"^\s+{node}\s+COMPLETE", result.stdout, re.M), result.stdout
    for node in ("example_validator", "transform", "trainer"):
        assert node not in result.stdout
    assert "ingest: 48 inputs -> 48 examples" in result.stdout
    assert (tmp_path / "pipeline" / "schema_gen").is_dir()
    assert not (tmp_path / "pipeline" / "transform").exists()


def test_pushed_version_carries_warmup_metadata_and_verdict(pushed_model_dir):
    import json

    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    version = pushed_model_dir / "1"
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    records = list(tf.data.TFRecordDataset(str(version / "assets.extra" / "tf_serving_warmup_requests")))
    assert len(records) == 4
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "flowers"
        assert request.model_spec.signature_name == "serving_default"
        out = serve(**{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        assert out["probabilities"].shape == (1, 3)
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["label_vocabulary"] == ["class_a", "class_b", "class_c"]
    assert metadata["version"] == 1 and metadata["base"] == "efficientnet_lite0"
    assert metadata["verdict"]["blessed"] is True and metadata["verdict"]["first_run"] is True
    assert metadata["metrics"]["accuracy"] >= 0.6
    assert set(metadata["hyperparameters"]) == {"input_size", "learning_rate"}
    assert "<h1>BLESSED</h1>" in (version / "verdict.html").read_text()


def test_worse_model_is_not_blessed_and_not_pushed(forced_release):
    """After the blessed run (on a copy of its work dir): a random-init base, one epoch at a
    tiny learning rate. Then the rare forced release of that model."""
    import json

    result, work = forced_release.worse, forced_release.work_dir
    assert result.returncode == 0, result.stdout + result.stderr
    assert "blessed       : NO" in result.stdout
    assert "FAIL: accuracy not below the last blessed model" in result.stdout
    assert "pushed        : no (model not blessed)" in result.stdout
    assert forced_release.versions_after_worse == ["1"]
    promoted = forced_release.promoted
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "FORCED release" in promoted.stdout
    assert sorted(os.listdir(work / "serving" / "flowers")) == ["1", "2"]
    metadata = json.loads((work / "serving" / "flowers" / "2" / "metadata.json").read_text())
    assert metadata["forced"] == {"promoted_by": "oncall", "reason": "hotfix for a demo"}


def test_promote_wants_a_reason_and_never_pushes_twice(forced_release):
    work = str(forced_release.work_dir)
    missing_reason = tlpipe("promote", "--work-dir", work)
    assert missing_reason.returncode == 2 and "--reason" in missing_reason.stderr
    again = tlpipe("promote", "--work-dir", work, "--reason", "twice", timeout=300)
    assert again.returncode == 2 and "already serving" in again.stderr


def test_tuner_tried_both_sizes_and_the_trainer_exports_the_winner(pipeline_runs,
                                                                   pushed_model_dir):
    import glob
    import json

    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    root = pipeline_runs.work_dir / "pipeline"

    def first_run(pattern):  # later tests add executions; the first run's has the lowest id
        return min(glob.glob(str(root / pattern)),
                   key=lambda p: int(Path(p).relative_to(root).parts[2]))

    trials_file = first_run("tuner/tuner_results/*/trials.json")
    trials = json.loads(Path(trials_file).read_text())
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    assert {t["hyperparameters"]["input_size"] for t in trials} == {48, 64}
    assert Path(trials_file).with_name("trials.png").read_bytes()[:4] == b"\x89PNG"
    best_file = first_run("tuner/best_hyperparameters/*/*.txt")
    winner = json.loads(Path(best_file).read_text())["values"]["input_size"]
    loaded = tf.saved_model.load(str(pushed_model_dir / "1"))
    assert int(loaded.input_size.numpy()) == winner
    proto = saved_model_pb2.SavedModel.FromString(
        (pushed_model_dir / "1" / "saved_model.pb").read_bytes())
    classify = proto.meta_graphs[0].signature_def["classification"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert set(classify.inputs) == {"inputs"} and set(classify.outputs) == {"classes", "scores"}
    run_dir = first_run("trainer/model_run/*")
    summary = json.loads(Path(run_dir, "training_summary.json").read_text())
    assert summary["input_size"] == winner and summary["phases"]["phase2"]["epochs"] == 1
    assert summary["phases"]["phase1"]["images_per_second"] > 0
    assert Path(run_dir, "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert glob.glob(str(Path(run_dir) / "logs" / "train" / "*tfevents*"))
    out = pipeline_runs.first.stdout
    assert "tuner trials:" in out and "hyperparameters:" in out and "(tuned)" in out
    assert re.search(r"trainer phase1: \d epochs in \d+s, \d+ images/s", out), out
    assert "transform channel mean (RGB): 127.00, 127.00, 127.00" in out  # EfficientNet-Lite's


def test_tuner_with_no_successful_trial_fails_the_run_and_says_why(pipeline_runs, tmp_path):
    """Every trial fails in fit (phase 1 on cached features, and the feature cache cannot be
    written: a file sits where its folder should be): the tuner node fails, with the first
    trial's error in the run's output. Ingest comes from the shared run's cache (a copy of its
    ML Metadata)."""
    import shutil

    shutil.copy(pipeline_runs.work_dir / "metadata.sqlite", tmp_path / "metadata.sqlite")
    (tmp_path / "cache").write_text("not a folder")
    settings = [*SHARED_RUN_SETTINGS, "trainer.phase1_features=cached"]
    result = tlpipe("run", "--data", str(pipeline_runs.images), "--work-dir", str(tmp_path), "--to",
                    "tuner", *settings_args(settings), timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^\s+ingest\s+CACHED", result.stdout, re.M), result.stdout
    assert re.search(r"^\s+tuner\s+FAILED", result.stdout, re.M), result.stdout
    assert "no successful trial out of 1" in result.stderr, result.stderr
    assert "first error:" in result.stderr and "cache" in result.stderr, result.stderr


def test_retune_every_reuses_tuned_values_of_the_same_settings(pipeline_runs):
    """Read-only on the shared runs' ML Metadata: which tuning a later run would reuse."""
    from tlpipe.components.config_loading import load_config
    from tlpipe.pipeline.pipeline import create_pipeline, model_custom_config
    from tlpipe.pipeline.retune import decide

    def config(*extra):
        return load_config(None, [*SHARED_RUN_SETTINGS, *extra],
                           work_dir=str(pipeline_runs.work_dir))

    rarely = config("tuner.retune_every=10")
    decision = decide(rarely, model_custom_config(rarely))
    assert not decision.tune and "reusing" in decision.reason, decision
    assert "/tuner/best_hyperparameters/" in decision.hyperparameters_uri
    nodes = [n.id for n in create_pipeline(rarely, str(pipeline_runs.images), None,
                                           decision.hyperparameters_uri).components]
    assert "tuner" not in nodes and "latest_hyperparameters" in nodes
    assert decide(rarely, model_custom_config(rarely), force=True).tune
    assert decide(config(), model_custom_config(config())).tune  # retune_every: 1
    other = config("tuner.retune_every=10", "tuner.max_trials=5")
    assert "no earlier tuning" in decide(other, model_custom_config(other)).reason
