"""The tuner on the real two-phase hypermodel: algorithms, budget, trials report, flat memory."""
from __future__ import annotations

import json

import pytest
from conftest import image_batches, model_settings, normalized_images
from tlpipe.components import features
from tlpipe.components.trainer import model as model_lib
from tlpipe.components.tuner import tuner_module


def _search(settings, tmp_path, trials: int, **fit):
    images, labels = normalized_images(n=16, size=settings.tuner.storage_size)
    settings.tuner.max_trials = trials
    settings.tuner.epochs_per_trial = 1
    hypermodel = model_lib.TransferHyperModel(settings, 3, settings.tuner.tune_phases)
    tuner = tuner_module.make_tuner(hypermodel, settings, str(tmp_path / "search"),
                                    report_dir=str(tmp_path / "report"))
    batches = image_batches(images, labels)
    tuner.search(x=batches, validation_data=batches, epochs=1, **fit)
    return tuner


@pytest.mark.parametrize("algorithm", ["bayesian", "hyperband"])  # random: the memory test
def test_each_algorithm_searches_size_and_learning_rate(algorithm, tmp_path):
    settings = model_settings()
    settings.tuner = settings.tuner.replace(algorithm=algorithm, input_sizes=[32, 48], learning_rate_min=1e-3,
                             learning_rate_max=1e-2)
    tuner = _search(settings, tmp_path, trials=2)
    rows = tuner.trial_rows
    assert 1 <= len(rows) <= 2 and all(r["status"] == "COMPLETED" for r in rows)
    best = tuner.get_best_hyperparameters()[0].values
    assert best[model_lib.HP_INPUT_SIZE] in (32, 48)
    assert 1e-3 <= best[model_lib.HP_LEARNING_RATE] <= 1e-2
    report = json.loads((tmp_path / "report" / features.TRIALS_JSON).read_text())
    assert [r["trial"] for r in report] == [r["trial"] for r in rows]
    assert (tmp_path / "report" / features.TRIALS_PNG).read_bytes()[:4] == b"\x89PNG"


def test_both_phases_fine_tune_inside_each_trial(tmp_path):
    settings = model_settings()
    settings.tuner = settings.tuner.replace(tune_phases="both", tune_phase2_learning_rate=True,
                             tune_dropout=True)
    tuner = _search(settings, tmp_path, trials=1)
    record = tuner.hypermodel.record
    assert record["phase1"]["epochs"] == 1 and record["phase2"]["epochs"] == 1
    assert record["phase2"]["trainable_layers"] > 0
    values = tuner.trial_rows[0]["hyperparameters"]
    assert {model_lib.HP_PHASE2_LEARNING_RATE, model_lib.HP_DROPOUT} <= set(values)


def test_wall_clock_budget_stops_the_search(tmp_path):
    settings = model_settings()
    settings.tuner.max_seconds = 0.001
    tuner = _search(settings, tmp_path, trials=5)
    assert len(tuner.trial_rows) == 1


def test_memory_stays_flat_across_six_trials(tmp_path):
    """keras-team/keras-tuner#395/#873: memory growing trial after trial. KerasTuner clears the
    Keras session before each build; the feature cache keeps one input size in memory."""
    settings = model_settings()
    settings.tuner = settings.tuner.replace(input_sizes=[32, 48], learning_rate_min=1e-3,
                             learning_rate_max=1e-2)
    tuner = _search(settings, tmp_path, trials=6)
    rss = [r["rss_mb"] for r in tuner.trial_rows]
    print(f"RSS after each of 6 trials (MB): {rss}")
    assert len(rss) == 6
    assert rss[-1] <= rss[0] * 1.10, f"RSS grew from {rss[0]} to {rss[-1]} MB over 6 trials"
    assert {r["hyperparameters"][model_lib.HP_INPUT_SIZE] for r in tuner.trial_rows} == {32, 48}


def test_trials_table_lists_every_trial_with_its_error():
    rows = [
        {"trial": "0", "status": "COMPLETED", "score": 0.75, "seconds": 12.0, "rss_mb": 900.0,
         "hyperparameters": {"input_size": 160, "learning_rate": 0.001}},
        {"trial": "1", "status": "FAILED", "score": None, "seconds": 1.0, "rss_mb": 910.0,
         "hyperparameters": {"input_size": 224, "learning_rate": 0.01}, "error": "OOM"},
    ]
    from tlpipe.components.tuner.report import plot_trials, trial_lines

    lines = trial_lines(rows)
    assert lines[0].split()[:3] == ["trial", "size", "lr"]
    assert "0.75" in lines[1] and "160" in lines[1]
    assert lines[2].endswith("FAILED: OOM") and "224" in lines[2]
    assert plot_trials(rows)[:4] == b"\x89PNG"
