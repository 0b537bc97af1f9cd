"""TFX Tuner module: `tuner_fn`, KerasTuner over input size x learning rate.

It searches the same space (`search_space.search_space`) with the same fit
(`fit.TransferHyperModel`) the Trainer's `run_fn` uses. With tuner.tune_phases=phase1 (the
default) each trial trains only the head on frozen-base features cached once per input size, so
two dozen trials cost less than one pass of the base per size; the first trials cover every input
size (`SizeCoverage`). Trials fit on the train split and are scored on the eval split; the test
split never reaches the tuner. Failures are loud: KerasTuner records
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
from tlpipe.components.features import HP_INPUT_SIZE
from tlpipe.components.trainer.export import class_names
from tlpipe.components.trainer.feature_cache import feature_cache
from tlpipe.components.trainer.fit import TransferHyperModel
from tlpipe.components.trainer.inputs import class_weights, label_counts, make_dataset
from tlpipe.components.trainer.search_space import input_sizes, search_space
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


class GatedTuner(GatedSearchMixin, keras_tuner.Tuner):
    """One tuner class for every oracle; Hyperband's oracle says how many epochs a trial runs
    (each trial trains from scratch: on cached features that is cheaper than a checkpoint)."""

    def _populate_initial_space(self):
        """KerasTuner builds the model once in its constructor to discover the space. Ours is
        declared whole up front (`search_space`), and a head-only build computes the first
        size's features: that belongs inside a trial, where a failure is counted and reported."""
        if not getattr(self.hypermodel, "head_only", False):
            super()._populate_initial_space()

    def run_trial(self, trial, *fit_args, **fit_kwargs):
        values = trial.hyperparameters.values
        if "tuner/epochs" in values:
            fit_kwargs["epochs"] = values["tuner/epochs"]
            fit_kwargs["initial_epoch"] = values["tuner/initial_epoch"]
        return super().run_trial(trial, *fit_args, **fit_kwargs)


class SizeCoverage:
    """Oracle mixin: while some input size has not been tried, a new trial takes the smallest
    such size (its other values as the algorithm proposed them), so the search covers every size
    before it concentrates; a Hyperband continuation keeps its trial's size."""

    def __init__(self, *args, sizes: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.sizes = sorted(sizes)

    def populate_space(self, trial_id):
        proposal = super().populate_space(trial_id)
        values = proposal.get("values")
        if proposal.get("status") != "RUNNING" or not values or "tuner/trial_id" in values:
            return proposal
        tried = {t.hyperparameters.values.get(HP_INPUT_SIZE) for t in self.trials.values()}
        untried = [size for size in self.sizes if size not in tried]
        if untried:
            values[HP_INPUT_SIZE] = untried[0]
        return proposal


class CoveringRandomOracle(SizeCoverage, keras_tuner.oracles.RandomSearchOracle):
    pass


class CoveringBayesianOracle(SizeCoverage, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class CoveringHyperbandOracle(SizeCoverage, keras_tuner.oracles.HyperbandOracle):
    pass


ORACLES = {"random": CoveringRandomOracle, "bayesian": CoveringBayesianOracle,
           "hyperband": CoveringHyperbandOracle}


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


def make_tuner(hypermodel: TransferHyperModel, settings: ModelSettings, directory: str,
               report_dir: str | None = None) -> GatedTuner:
    tuner = settings.tuner
    oracle_args = dict(objective=keras_tuner.Objective("val_accuracy", "max"), seed=tuner.seed,
                       hyperparameters=search_space(settings), sizes=input_sizes(settings),
                       max_consecutive_failed_trials=tuner.max_failed_trials + 1)
    if tuner.algorithm == "hyperband":
        # Hyperband needs at least two epochs to make brackets.
        oracle = CoveringHyperbandOracle(max_epochs=max(tuner.epochs_per_trial, 2), factor=3,
                                         **oracle_args)
        oracle.max_trials = tuner.max_trials
    else:
        oracle = ORACLES[tuner.algorithm](max_trials=tuner.max_trials, **oracle_args)
    return GatedTuner(oracle=oracle, hypermodel=hypermodel, directory=directory,
                      project_name="search", overwrite=True,
                      max_failed_trials=tuner.max_failed_trials, max_seconds=tuner.max_seconds,
                      report_dir=report_dir)


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    settings = ModelSettings.from_dict(fn_args.custom_config["settings"])
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    names = class_names(tf_transform_output)
    weights = None
    if settings.trainer.class_weights:
        weights = class_weights(label_counts(fn_args.train_files, fn_args.data_accessor,
                                             tf_transform_output, len(names)))
    head_only = settings.tuner.tune_phases == "phase1"
    # Head-only trials share one pass of the base per input size over train and eval.
    cache = feature_cache(fn_args, tf_transform_output, settings) if head_only else None
    hypermodel = TransferHyperModel(settings, len(names), settings.tuner.tune_phases,
                                    feature_cache=cache, class_weight=weights, head_only=head_only)
    report_dir = tuner_results_dir(fn_args.working_dir)
    if report_dir is None:
        logging.warning("tuner: no tuner_results folder found from %s; trials report only in "
                        "the log", fn_args.working_dir)
    tuner = make_tuner(hypermodel, settings, fn_args.working_dir, report_dir)

    def dataset(files, shuffle):
        return make_dataset(files, fn_args.data_accessor, tf_transform_output, settings, shuffle)

    fit_kwargs = {"epochs": settings.tuner.epochs_per_trial, "label": "tuner"}
    if head_only:  # trials read the cache; no image is decoded per trial
        fit_kwargs["x"] = None
    else:
        fit_kwargs.update(x=dataset(fn_args.train_files, True),
                          validation_data=dataset(fn_args.eval_files, False))
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs=fit_kwargs)
