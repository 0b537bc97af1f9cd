"""TFX Trainer module: `run_fn`, the two-phase transfer-learning recipe.

Phase 1 trains a new head on the frozen base; phase 2 unfreezes the base from the registry's
fine-tune layer (BatchNorm kept frozen and in inference mode) at a lower learning rate.
"""
from __future__ import annotations

import os
import time

import keras
import keras_tuner
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx

from components.trainer import model as model_lib
from components.trainer.backbones import BACKBONES


def _hyperparameters(fn_args: tfx.components.FnArgs, settings) -> keras_tuner.HyperParameters:
    hp = model_lib.search_space(settings)
    if fn_args.hyperparameters:  # from the Tuner (or a reused HyperParameters artifact)
        tuned = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters)
        for name, value in tuned.values.items():
            if name in hp.values:
                hp.values[name] = value
    return hp


class _EpochLog(keras.callbacks.Callback):
    """One log line per epoch, so a long training shows progress in the run's log."""

    def __init__(self, phase: str):
        super().__init__()
        self._phase, self._start = phase, time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        logging.info("progress: trainer %s epoch %d: %s (%.0fs)", self._phase, epoch + 1,
                     ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items())),
                     time.time() - self._start)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    settings = fn_args.custom_config["settings"]
    trainer = settings["trainer"]
    backbone = BACKBONES[settings["base"]["name"]]
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    names = model_lib.class_names(tf_transform_output)
    hp = _hyperparameters(fn_args, settings)
    logging.info("trainer: base=%s classes=%s hyperparameters=%s", backbone.name, names, hp.values)

    def dataset(files, shuffle):
        return model_lib.make_dataset(files, fn_args.data_accessor, tf_transform_output,
                                      settings, shuffle)

    train, evaluation = dataset(fn_args.train_files, True), dataset(fn_args.eval_files, False)
    model = model_lib.build_model(hp, settings, len(names))
    started = time.time()
    history = model.fit(train, validation_data=evaluation, epochs=trainer["phase1_epochs"],
                        callbacks=[_EpochLog("phase1")], verbose=0).history
    phase1_seconds = time.time() - started
    if trainer["phase2_epochs"] > 0:
        trainable = model_lib.unfreeze_top(model, backbone.fine_tune_at)
        model_lib.compile_model(model, trainer["phase2_learning_rate"] or hp.get(model_lib.HP_LEARNING_RATE) / 10)
        logging.info("trainer phase2: %d base layers trainable from %s", trainable,
                     backbone.fine_tune_at)
        phase2 = model.fit(train, validation_data=evaluation,
                           initial_epoch=trainer["phase1_epochs"],
                           epochs=trainer["phase1_epochs"] + trainer["phase2_epochs"],
                           callbacks=[_EpochLog("phase2")], verbose=0).history
        history = {k: history[k] + phase2.get(k, []) for k in history}
    model_info = {
        "base": backbone.name, "class_names": names, "hyperparameters": hp.values,
        "storage_size": model_lib.storage_size(settings),
        "phase1_epochs": trainer["phase1_epochs"], "phase2_epochs": trainer["phase2_epochs"],
        "phase2_learning_rate": trainer["phase2_learning_rate"],
        "phase1_seconds": round(phase1_seconds, 1),
        "training_seconds": round(time.time() - started, 1),
    }
    model_lib.export(model, tf_transform_output, names, settings, fn_args.serving_model_dir,
                     model_info)
    model_lib.write_json(os.path.join(fn_args.model_run_dir, "training_summary.json"), {
        **model_info, "history": {k: [float(x) for x in v] for k, v in history.items()}})
