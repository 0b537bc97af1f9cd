"""TFX Trainer module: `run_fn`, the two-phase transfer-learning recipe (components/trainer/fit.py).

It fits on the train split and selects (early stopping) on the eval split; the test split is
never given to it. Writes the SavedModel, the Keras weights (for warm starts), TensorBoard logs,
training curves (PNG) and a JSON summary that names the devices that trained.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import keras
import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tlpipe.components import features, storage
from tlpipe.components.config import ModelSettings
from tlpipe.components.features import HP_INPUT_SIZE, HP_LEARNING_RATE
from tlpipe.components.trainer import distribution
from tlpipe.components.trainer.curves import plot_training_curves
from tlpipe.components.trainer.export import class_names, export, write_json
from tlpipe.components.trainer.feature_cache import feature_cache
from tlpipe.components.trainer.finite import FailOnNonFinite
from tlpipe.components.trainer.fit import TransferHyperModel
from tlpipe.components.trainer.inputs import class_weights, label_counts, make_dataset
from tlpipe.components.trainer.network import classifier_of
from tlpipe.components.trainer.search_space import backbone_of, check_input_size, phase2_learning_rate, search_space

KERAS_WEIGHTS = os.path.join("Format-Keras", "classifier.weights.h5")  # beside Format-Serving
# What must match for a warm start from the last blessed model's weights.
WARM_START_KEYS = ("base", "class_names", "input_size", "head", "cut_at", "storage_size")


def _hyperparameters(fn_args: tfx.components.FnArgs, settings: ModelSettings) -> keras_tuner.HyperParameters:
    hp = search_space(settings)
    if fn_args.hyperparameters:  # from the Tuner (or a reused HyperParameters artifact)
        tuned = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters)
        for name, value in tuned.values.items():
            if name in hp.values:
                hp.values[name] = value
    return hp


def keras_weights_path(serving_model_dir: str) -> str:
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), KERAS_WEIGHTS)


def _warm_start(model: keras.Model, base_model_dir: str | None, info: dict[str, Any]) -> str:
    """Loads the last blessed model's weights when it is the same architecture; says why not."""
    if not base_model_dir:
        return "no blessed model yet"
    try:
        with tf.io.gfile.GFile(os.path.join(base_model_dir, features.MODEL_INFO_FILE)) as fh:
            previous = json.load(fh)
    except (tf.errors.NotFoundError, ValueError):
        return f"no model_info.json in {base_model_dir}"
    different = [k for k in WARM_START_KEYS if previous.get(k) != info.get(k)]
    if different:
        return f"last blessed model differs in {', '.join(different)}"
    weights = keras_weights_path(base_model_dir)
    if not tf.io.gfile.exists(weights):
        return f"no Keras weights at {weights}"
    with storage.local_copy(weights) as local:  # h5py opens local files only
        classifier_of(model).load_weights(local)
    return f"from {weights}"


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    settings = ModelSettings.from_dict(fn_args.custom_config["settings"])
    trainer = settings.trainer
    backbone = backbone_of(settings)
    hp = _hyperparameters(fn_args, settings)
    size = hp.get(HP_INPUT_SIZE)
    check_input_size(settings, size)  # before anything is built or read
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    names = class_names(tf_transform_output)
    counts = label_counts(fn_args.train_files, fn_args.data_accessor, tf_transform_output, len(names))
    weights = class_weights(counts) if trainer.class_weights else None
    cached = trainer.phase1_features == "cached"
    strategy = distribution.strategy_for(settings)
    batch_size = distribution.global_batch_size(settings, strategy)
    devices = distribution.devices_of(strategy)
    logging.info("trainer: base=%s classes=%s train examples per class=%s hyperparameters=%s "
                 "phase1 features=%s devices=%s global batch=%d", backbone.name, names,
                 counts.tolist(), hp.values, "cached (no augmentation in phase 1)" if cached
                 else "live", devices, batch_size)

    def dataset(files, shuffle):
        return make_dataset(files, fn_args.data_accessor, tf_transform_output, settings, shuffle,
                            batch_size)

    with strategy.scope():  # build, compile (both phases) and fit under the strategy
        hypermodel = TransferHyperModel(
            settings, len(names), "both" if trainer.phase2_epochs > 0 else "phase1",
            class_weight=weights, train_examples=int(counts.sum()), batch_size=batch_size)
        model = hypermodel.build(hp)
        info = {
            "base": backbone.name, "class_names": names, "hyperparameters": hp.values,
            "input_size": size, "storage_size": settings.tuner.storage_size,
            "head": trainer.head, "cut_at": settings.base.cut_at,
            "preprocessing": backbone.preprocessing,
        }
        warm_start = _warm_start(model, fn_args.base_model, info) if trainer.warm_start else "off"
        logging.info("trainer: warm start: %s", warm_start)
        cache = None
        if cached:  # after the warm start: it may change the base, and with it the features
            cache = feature_cache(fn_args, tf_transform_output, settings,
                                  warm_start if warm_start.startswith("from ") else "pretrained")
            hypermodel.feature_cache = cache
        tensorboard = keras.callbacks.TensorBoard(os.path.join(fn_args.model_run_dir, "logs"),
                                                  write_graph=False)
        started = time.time()
        hypermodel.fit(hp, model, dataset(fn_args.train_files, True),
                       validation_data=dataset(fn_args.eval_files, False),
                       epochs=trainer.phase1_epochs, phase2_epochs=trainer.phase2_epochs,
                       callbacks=[tensorboard, FailOnNonFinite()])  # a diverged model fails the run
    record = _with_images_per_second(hypermodel.record, int(counts.sum()))
    history = record.pop("history")
    model_info = {
        **info,
        "phase1_epochs": record["phase1"]["epochs"],
        "phase2_epochs": record.get("phase2", {}).get("epochs", 0),
        "phase1_features": trainer.phase1_features,
        "phase1_learning_rate": hp.get(HP_LEARNING_RATE),
        "phase2_learning_rate": phase2_learning_rate(hp, settings),
        "phase2_schedule": trainer.phase2_schedule, "label_smoothing": trainer.label_smoothing,
        "devices": devices, "global_batch_size": batch_size,
        "optimizer": trainer.optimizer, "class_weights": weights,
        "warm_start": warm_start,
        "phase1_seconds": record["phase1"]["seconds"],
        "training_seconds": round(time.time() - started, 1),
    }
    export(model, tf_transform_output, names, settings, fn_args.serving_model_dir, model_info)
    weights_path = keras_weights_path(fn_args.serving_model_dir)
    storage.save_through_local(weights_path, classifier_of(model).save_weights)
    summary = {**model_info, "phases": record, "train_examples": int(counts.sum()),
               "feature_cache": cache.stats if cache else None,
               "history": {k: [float(x) for x in v] for k, v in history.items()}}
    write_json(os.path.join(fn_args.model_run_dir, features.TRAINING_SUMMARY_FILE),
               summary)
    png = plot_training_curves(summary["history"], record["phase1"]["epochs"],
                               title=f"{backbone.name} at {size} px")
    curves = os.path.join(fn_args.model_run_dir, features.TRAINING_CURVES_FILE)
    with tf.io.gfile.GFile(curves, "wb") as fh:
        fh.write(png)


def _with_images_per_second(record: dict, train_images: int) -> dict:
    for phase in ("phase1", "phase2"):
        entry = record.get(phase)
        if entry and "images_per_second" not in entry and entry["seconds"] > 0:
            entry["images_per_second"] = round(train_images * entry["epochs"] / entry["seconds"], 1)
    return record
