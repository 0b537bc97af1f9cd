"""`tlpipe compare` and `tlpipe label` on two trained versions: toy models trained, evaluated
(TFMA) and pushed by the product's own nodes (fast); and, marked e2e, what only a real DAG run
records in ML Metadata (training history, eval examples for the paired test)."""
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import TOY_BASE, TOY_SIZE
from tlpipe.pipeline import compare, compare_report
from tlpipe.pipeline.cli import main as tlpipe_main
from tlpipe.serving import config as server_config
from tlpipe.serving import layout

# The second version: one more epoch than the first, so the two pushed versions differ.
SECOND_VERSION = ["trainer.phase1_epochs=2"]


@dataclass
class TwoVersions:
    work: Path
    a: str  # the toy run's version 1
    b: str  # a second toy model, pushed after it


@pytest.fixture(scope="module")
def versions(toy_run_copy) -> TwoVersions:
    run = toy_run_copy("compare")
    second = run.train_and_push(*SECOND_VERSION)
    return TwoVersions(run.work_dir, "1", str(second))


def _rows(work: Path) -> dict[str, compare.VersionRow]:
    from tlpipe.components.config_loading import load_config

    return {row.key: row for row in compare.gather(load_config(work_dir=str(work)))}


def _tfma_own(evaluation_uri: str):
    """Overall candidate metrics and accuracy per true-label slice (= recall), read with
    tfma.load_metrics directly."""
    import tensorflow_model_analysis as tfma

    overall, recall = {}, {}
    for metrics in tfma.load_metrics(evaluation_uri):
        keys = metrics.slice_key.single_slice_keys
        for kv in metrics.metric_keys_and_values:
            if (kv.key.model_name == "baseline" or kv.key.is_diff or kv.key.HasField("sub_key")
                    or not kv.value.HasField("double_value")):
                continue
            if not keys:
                overall[kv.key.name] = kv.value.double_value.value
            elif kv.key.name == "accuracy":
                recall[keys[0].bytes_value.decode()] = kv.value.double_value.value
    return overall, recall


def test_mcnemar_exact_p_values():
    assert compare.mcnemar_exact(0, 0) == 1.0
    assert compare.mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert compare.mcnemar_exact(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert compare.mcnemar_exact(7, 7) == 1.0


def test_set_label_keeps_other_models_and_loads_the_labelled_version(tmp_path):
    model_dir = tmp_path / "serving" / "flowers"
    for number in (1, 2, 3):
        (model_dir / str(number)).mkdir(parents=True)
    (tmp_path / "serving" / layout.MODEL_SERVER_CONFIG_FILE).write_text(
        'model_config_list { config { name: "other" base_path: "/m/other" } '
        'config { name: "flowers" base_path: "/models/flowers" '
        'model_version_policy { specific { versions: 3 } } } }')
    path = layout.set_label(str(model_dir), "stable", 1)
    layout.set_label(str(model_dir), "canary", 2)
    models = {m.name: m for m in server_config.read_model_config_file(path)}
    assert models["flowers"].labels == {"stable": 1, "canary": 2}
    assert models["flowers"].base_path == "/models/flowers"  # kept: it may be a container path
    assert models["flowers"].policy.versions == (1, 2, 3)
    assert models["other"].labels == {}
    assert layout.read_labels(str(model_dir)) == {"stable": 1, "canary": 2}
    with pytest.raises(ValueError, match="no version 9"):
        layout.set_label(str(model_dir), "stable", 9)


def test_table_lists_both_versions_with_tfmas_own_metrics(versions):
    rows = _rows(versions.work)
    a, b = rows[versions.a], rows[versions.b]
    assert (a.phase1_epochs, b.phase1_epochs, b.phase2_epochs) == (1, 2, 0)
    for key, row in ((versions.a, a), (versions.b, b)):
        assert row.pushed and row.blessed and row.version == int(key)
        assert row.base == TOY_BASE and row.input_size == TOY_SIZE
        assert row.phase1_learning_rate > 0 and row.training_seconds > 0 and row.data_span == 0
        overall, recall = _tfma_own(row.evaluation_uri)
        for metric in ("accuracy", "macro_auc", "log_loss"):
            assert row.metrics[metric] == pytest.approx(overall[metric]), (key, metric)
        assert {c: s["recall"] for c, s in row.per_class.items()} == pytest.approx(recall)
    lines = compare_report.table_lines([a, b])
    assert lines[0].split()[:3] == ["version", "created", "span"]
    assert [line.split()[0] for line in lines[1:]] == [versions.a, versions.b]


def test_pushed_metadata_and_verdict_carry_every_metric(versions):
    version = versions.work / "serving" / "flowers" / versions.b
    metadata = json.loads((version / "metadata.json").read_text())
    assert {"macro_auc", "expected_calibration_error", "log_loss", "top_k_accuracy",
            "example_count"} <= set(metadata["metrics"])
    assert {"precision", "recall", "f1", "auc", "calibration"} <= set(metadata["per_class"]["class_a"])
    assert metadata["calibration"] and metadata["confusion_matrix"]
    page = (version / "verdict.html").read_text()
    assert "macro_auc" in page and "<h2>Calibration</h2>" in page


def test_json_head_to_head_gives_the_deltas_of_every_metric_and_class(versions, capsys):
    assert tlpipe_main(["compare", "--work-dir", str(versions.work), "--format", "json",
                        "--versions", versions.a, versions.b]) == 0
    out = json.loads(capsys.readouterr().out)
    one, two = out["versions"]
    assert (one["key"], two["key"]) == (versions.a, versions.b)
    h2h = out["head_to_head"]
    assert set(h2h["metrics"]) >= {"accuracy", "macro_auc", "log_loss"}
    for metric, values in h2h["metrics"].items():
        assert values["delta"] == pytest.approx(two["metrics"][metric] - one["metrics"][metric])
    assert h2h["per_class"]["class_a"]["recall"] == pytest.approx(
        two["per_class"]["class_a"]["recall"] - one["per_class"]["class_a"]["recall"])
    # The toy's runs left no ML Metadata: the paired test is the e2e test's.
    assert h2h["paired_test"] == {"skipped": "no examples in ML Metadata for either version"}


def test_html_report_opens_in_headless_chromium(versions, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "report"
    assert tlpipe_main(["compare", "--work-dir", str(versions.work), "--format", "html",
                        "--versions", versions.a, versions.b, "--no-paired-test",
                        "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'compare.html'}" in printed
    assert f"head to head: {versions.b} vs {versions.a}" in printed
    page = (out / "compare.html").read_text()
    assert page.count("src='data:image/png;base64,") == 4 and "http" not in page
    for name in ("metrics.png", "per_class.png", "confusion.png", "training.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1200,2000",
                    f"file://{out / 'compare.html'}"], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1200) and pixels.std() > 20


def test_label_is_written_where_both_servers_read_it(versions, capsys):
    from tlpipe.serving import source

    work, a, b = str(versions.work), versions.a, versions.b
    model_dir = versions.work / "serving" / "flowers"
    assert tlpipe_main(["label", "--work-dir", work, "--version", a, "--label", "stable"]) == 0
    assert tlpipe_main(["label", "--work-dir", work, "--version", b, "--label", "canary"]) == 0
    assert f"canary -> version {b} of flowers" in capsys.readouterr().out
    expected = {"stable": int(a), "canary": int(b)}
    assert layout.read_labels(str(model_dir)) == expected
    [model] = server_config.read_model_config_file(layout.model_server_config_path(str(model_dir)))
    assert (model.name, model.base_path, model.policy.kind) == ("flowers", str(model_dir), "all")
    assert source.version_labels(model) == expected
    rows = _rows(versions.work)
    assert (rows[a].labels, rows[b].labels) == (["stable"], ["canary"])
    assert tlpipe_main(["label", "--work-dir", work, "--version", "99", "--label", "stable"]) == 2
    with pytest.raises(SystemExit):
        tlpipe_main(["label", "--work-dir", work, "--version", a, "--label", "beta"])


@pytest.mark.e2e
def test_ml_metadata_rows_and_mcnemar_on_the_same_examples(forced_release, capsys):
    """What only ML Metadata has, on the real DAG's two versions (the blessed run's, then the
    force-released worse model): each model's training history and eval examples, and the
    paired test re-running both SavedModels on those examples."""
    work = forced_release.work_dir
    assert forced_release.promoted.returncode == 0, forced_release.promoted.stdout
    rows = _rows(work)
    a, b = rows["1"], rows["2"]
    assert a.blessed and not b.blessed and b.forced and not a.forced
    for row in (a, b):
        assert row.model_id is not None and row.pushed and row.examples_uri
        assert len(row.history["val_loss"]) == row.phase1_epochs + row.phase2_epochs
        overall, _ = _tfma_own(row.evaluation_uri)
        assert row.metrics["accuracy"] == pytest.approx(overall["accuracy"])
    assert tlpipe_main(["compare", "--work-dir", str(work), "--format", "json",
                        "--versions", "1", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    one, two = out["versions"]
    test = out["head_to_head"]["paired_test"]
    assert test["examples"] == two["metrics"]["example_count"]
    # The re-run predictions agree with TFMA's accuracy of each model on the same split.
    assert test["accuracy_a"] == pytest.approx(one["metrics"]["accuracy"], abs=1e-6)
    assert test["accuracy_b"] == pytest.approx(two["metrics"]["accuracy"], abs=1e-6)
    assert (test["both_right"] + test["both_wrong"] + test["only_a_right"]
            + test["only_b_right"]) == test["examples"]
    assert test["p_value"] == pytest.approx(
        compare.mcnemar_exact(test["only_a_right"], test["only_b_right"]))
