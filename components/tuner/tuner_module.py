"""TFX Tuner module: `tuner_fn`, KerasTuner over input size x learning rate.

It searches the same space (`model.search_space`) with the same two-phase fit
(`model.TransferHyperModel`) the Trainer's `run_fn` uses. Failures are loud: KerasTuner records
a crashed trial and moves on, and TFX would then hand on whatever hyperparameters are left;
here a search with no successful trial (or more failures than `tuner.max_failed_trials`) fails
the component with the first trial's error. Every trial is written to a trials report (JSON and
PNG) inside the Tuner's `tuner_results` artifact.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tlpipe.components import features
from tlpipe.components.config import ModelSettings
from tlpipe.components.trainer import model as model_lib
from tlpipe.components.tuner.report import plot_trials, trial_lines


def current_rss_mb() -> float:
    """Resident memory now (not the peak): what must stay flat across trials."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class GatedSearchMixin:
    """Logs each trial, keeps a wall-clock budget, and refuses to end on failed trials."""

    def __init__(self, *args, max_failed_trials: int = 0, max_seconds: float | None = None,
                 report_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_failed_trials, self._max_seconds = max_failed_trials, max_seconds
        self._report_dir = report_dir
        self._search_started = self._trial_started = 0.0
        self.trial_rows: list[dict[str, Any]] = []

    def on_trial_begin(self, trial):
        self._trial_started = time.time()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        row = {"trial": trial.trial_id, "status": trial.status,
               "score": trial.score, "seconds": round(time.time() - self._trial_started, 1),
               "rss_mb": round(current_rss_mb(), 1),
               "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()
                                   if not k.startswith("tuner/")}}
        if trial.status == "FAILED":
            row["error"] = _last_line(trial.message)
        self.trial_rows.append(row)
        logging.info("progress: tuner trial %s %s %s val_accuracy=%s (%.0fs, rss %.0f MB)",
                     trial.trial_id, trial.status, row["hyperparameters"],
                     "n/a" if trial.score is None else f"{trial.score:.4f}", row["seconds"],
                     row["rss_mb"])
        if self._max_seconds and time.time() - self._search_started > self._max_seconds:
            self.oracle.max_trials = len(self.oracle.trials)  # the next create_trial stops
            logging.info("tuner: wall-clock budget of %.0fs spent after %d trials",
                         self._max_seconds, len(self.oracle.trials))

    def search(self, *fit_args, **fit_kwargs):
        self._search_started = time.time()
        try:
            super().search(*fit_args, **fit_kwargs)
        except RuntimeError as err:  # KerasTuner's own "too many consecutive failures"
            logging.warning("tuner: KerasTuner stopped the search: %s", _last_line(str(err)))
        finally:
            self.write_report()
        trials = list(self.oracle.trials.values())
        failed = [t for t in trials if t.status == "FAILED"]
        completed = [t for t in trials if t.status == "COMPLETED"]
        first_error = _last_line(failed[0].message) if failed else ""
        if not completed:
            raise RuntimeError(f"tuner: no successful trial out of {len(trials)}; "
                               f"first error: {first_error}")
        if len(failed) > self._max_failed_trials:
            raise RuntimeError(f"tuner: {len(failed)} of {len(trials)} trials failed (tolerated: "
                               f"{self._max_failed_trials}); first error: {first_error}")

    def write_report(self) -> None:
        if not self._report_dir or not self.trial_rows:
            return
        tf.io.gfile.makedirs(self._report_dir)
        with tf.io.gfile.GFile(os.path.join(self._report_dir, features.TRIALS_JSON), "w") as fh:
            json.dump(self.trial_rows, fh, indent=2)
        with tf.io.gfile.GFile(os.path.join(self._report_dir, features.TRIALS_PNG), "wb") as fh:
            fh.write(plot_trials(self.trial_rows))
        for line in trial_lines(self.trial_rows):
            logging.info("tuner: %s", line)


def _last_line(message: str | None) -> str:
    lines = (message or "no message").strip().splitlines()
    return lines[-1] if lines else "no message"


class GatedRandomSearch(GatedSearchMixin, keras_tuner.RandomSearch):
    pass


class GatedBayesianOptimization(GatedSearchMixin, keras_tuner.BayesianOptimization):
    pass


class GatedHyperband(GatedSearchMixin, keras_tuner.Hyperband):
    pass


ALGORITHMS = {"random": GatedRandomSearch, "bayesian": GatedBayesianOptimization,
              "hyperband": GatedHyperband}


def tuner_results_dir(working_dir: str) -> str | None:
    """The `tuner_results` artifact folder of this execution, found from the executor's temp dir
    (`<node root>/.system/executor_execution/<execution id>/...`): TFX gives `tuner_fn` no
    output paths, and the trials report belongs with the tuner's other results."""
    parts = working_dir.rstrip("/").split("/")  # not os.path.normpath: it turns gs:// into gs:/
    if ".system" not in parts or "executor_execution" not in parts:
        return None
    node_root = "/".join(parts[:parts.index(".system")])
    execution_id = parts[parts.index("executor_execution") + 1]
    folder = os.path.join(node_root, "tuner_results", execution_id)
    return folder if tf.io.gfile.isdir(folder) else None


def make_tuner(hypermodel: model_lib.TransferHyperModel, settings: ModelSettings,
               directory: str, report_dir: str | None = None):
    tuner = settings.tuner
    common = dict(hypermodel=hypermodel, hyperparameters=model_lib.search_space(settings),
                  objective=keras_tuner.Objective("val_accuracy", "max"), seed=tuner.seed,
                  directory=directory, project_name="search", overwrite=True,
                  max_failed_trials=tuner.max_failed_trials, max_seconds=tuner.max_seconds,
                  report_dir=report_dir,
                  max_consecutive_failed_trials=tuner.max_failed_trials + 1)
    if tuner.algorithm == "hyperband":
        # Hyperband needs at least two epochs to make brackets.
        search = GatedHyperband(max_epochs=max(tuner.epochs_per_trial, 2), factor=3, **common)
        search.oracle.max_trials = tuner.max_trials
        return search
    return ALGORITHMS[tuner.algorithm](max_trials=tuner.max_trials, **common)


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    settings = ModelSettings.from_dict(fn_args.custom_config["settings"])
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    names = model_lib.class_names(tf_transform_output)
    weights = None
    if settings.trainer.class_weights:
        weights = model_lib.class_weights(model_lib.label_counts(
            fn_args.train_files, fn_args.data_accessor, tf_transform_output, settings,
            len(names)))
    cache = None
    if settings.trainer.phase1_features == "cached":
        # Trials at one input size share one pass of the base over the data.
        cache = model_lib.feature_cache(fn_args, tf_transform_output, settings)
    hypermodel = model_lib.TransferHyperModel(settings, len(names),
                                              settings.tuner.tune_phases,
                                              feature_cache=cache, class_weight=weights)
    report_dir = tuner_results_dir(fn_args.working_dir)
    if report_dir is None:
        logging.warning("tuner: no tuner_results folder found from %s; trials report only in "
                        "the log", fn_args.working_dir)
    tuner = make_tuner(hypermodel, settings, fn_args.working_dir, report_dir)

    def dataset(files, shuffle):
        return model_lib.make_dataset(files, fn_args.data_accessor, tf_transform_output,
                                      settings, shuffle)

    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={
        "x": dataset(fn_args.train_files, True),
        "validation_data": dataset(fn_args.eval_files, False),
        "epochs": settings.tuner.epochs_per_trial,
        "label": "tuner",
    })
