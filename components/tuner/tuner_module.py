"""TFX Tuner module: `tuner_fn`, KerasTuner over input size x phase-1 learning rate.

It searches the same space (`model.search_space`) and trains the same phase-1 model that the
Trainer's `run_fn` uses, on the frozen base. Failures are loud: KerasTuner records a crashed
trial and moves on, and TFX would then hand on whatever hyperparameters are left; here a search
with no successful trial (or more failures than `tuner.max_failed_trials`) fails the component
with the first trial's error.
"""
from __future__ import annotations

import time

import keras_tuner
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx

from components.trainer import model as model_lib


class GatedRandomSearch(keras_tuner.RandomSearch):
    """RandomSearch that logs each trial and refuses to end on failed trials."""

    def __init__(self, *args, max_failed_trials: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_failed_trials = max_failed_trials
        self._trial_started = 0.0

    def on_trial_begin(self, trial):
        self._trial_started = time.time()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        score = trial.score if trial.score is not None else float("nan")
        logging.info("progress: tuner trial %s %s %s val_accuracy=%.4f (%.0fs)", trial.trial_id,
                     trial.status, trial.hyperparameters.values, score,
                     time.time() - self._trial_started)

    def search(self, *fit_args, **fit_kwargs):
        super().search(*fit_args, **fit_kwargs)
        trials = list(self.oracle.trials.values())
        failed = [t for t in trials if t.status == "FAILED"]
        completed = [t for t in trials if t.status == "COMPLETED"]
        first_error = (failed[0].message or "no message").strip().splitlines()[-1] if failed else ""
        if not completed:
            raise RuntimeError(f"tuner: no successful trial out of {len(trials)}; "
                               f"first error: {first_error}")
        if len(failed) > self._max_failed_trials:
            raise RuntimeError(f"tuner: {len(failed)} of {len(trials)} trials failed (tolerated: "
                               f"{self._max_failed_trials}); first error: {first_error}")


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    settings = fn_args.custom_config["settings"]
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    num_classes = len(model_lib.class_names(tf_transform_output))
    tuner = GatedRandomSearch(
        lambda hp: model_lib.build_model(hp, settings, num_classes),
        hyperparameters=model_lib.search_space(settings),
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=settings["tuner"]["max_trials"],
        max_failed_trials=settings["tuner"]["max_failed_trials"],
        seed=settings["tuner"]["seed"],
        directory=fn_args.working_dir, project_name="search", overwrite=True)

    def dataset(files, shuffle):
        return model_lib.make_dataset(files, fn_args.data_accessor, tf_transform_output,
                                      settings, shuffle)

    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={
        "x": dataset(fn_args.train_files, True),
        "validation_data": dataset(fn_args.eval_files, False),
        "epochs": settings["tuner"]["epochs_per_trial"],
        "verbose": 0,
    })
