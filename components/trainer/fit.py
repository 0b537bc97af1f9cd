"""The two-phase recipe as a KerasTuner HyperModel, used by tuner trials and the trainer.

Phase 1 trains the new head on the frozen base (live, or on cached base features); phase 2
unfreezes the base from the fine-tune boundary (BatchNorm frozen, in inference mode) at a lower
rate, live with augmentation — the route KerasTuner's maintainers point to for multi-step fits
(keras-team/keras-tuner#629).
"""
from __future__ import annotations

import math
import time
from typing import Any

import keras
import keras_tuner
import numpy as np
from absl import logging
from tlpipe.components import features
from tlpipe.components.config import ModelSettings
from tlpipe.components.features import HP_INPUT_SIZE, HP_LEARNING_RATE
from tlpipe.components.trainer.feature_cache import FeatureCache
from tlpipe.components.trainer.network import (
    build_cached_head,
    build_model,
    cached_part_of,
    classifier_of,
    compile_model,
    unfreeze_top,
)
from tlpipe.components.trainer.search_space import dropout_of, phase2_learning_rate


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch, so a long training shows progress in the run's log."""

    def __init__(self, label: str):
        super().__init__()
        self._label, self._start = label, time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        logging.info("progress: %s epoch %d: %s (%.0fs)", self._label, epoch + 1,
                     ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items())),
                     time.time() - self._start)


def phase_callbacks(settings: ModelSettings, label: str, extra=()) -> list:
    """Early stopping watches the eval split (selection), never the test split."""
    patience = settings.trainer.early_stopping_patience
    callbacks = [EpochLog(label), *extra]
    if patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                       restore_best_weights=True))
    return callbacks


class TransferHyperModel(keras_tuner.HyperModel):
    """`fit` runs phase 1 and, when `phases` is "both", phase 2.

    With `head_only` (tuner trials on cached features) `build` makes only the part of the head
    that trains on cached features: no base is built per trial. `train_examples` lets phase 2's
    cosine schedule know its length in steps.
    """

    def __init__(self, settings: ModelSettings, num_classes: int, phases: str,
                 feature_cache: FeatureCache | None = None,
                 class_weight: dict[int, float] | None = None, head_only: bool = False,
                 train_examples: int | None = None, batch_size: int | None = None):
        super().__init__(name="transfer")
        if head_only and (feature_cache is None or phases != "phase1"):
            raise ValueError("head-only trials need a feature cache and phase 1 only")
        self.settings, self.num_classes, self.phases = settings, num_classes, phases
        self.feature_cache, self.class_weight, self.head_only = feature_cache, class_weight, head_only
        self.train_examples = train_examples
        self.batch_size = batch_size or settings.trainer.batch_size
        self.record: dict[str, Any] = {}

    def build(self, hp):
        if not self.head_only:
            return build_model(hp, self.settings, self.num_classes)
        keras.utils.set_random_seed(self.settings.trainer.seed)
        train_x, _ = self.feature_cache.get(features.TRAIN_SPLIT, hp.get(HP_INPUT_SIZE))
        head = build_cached_head(train_x.shape[1:], self.num_classes, self.settings,
                                 dropout_of(hp, self.settings))
        compile_model(head, hp.get(HP_LEARNING_RATE), self.settings)
        return head

    def fit(self, hp, model, x, validation_data=None, epochs=1, callbacks=None,
            phase2_epochs: int | None = None, label: str = "trainer", **kwargs):
        callbacks = list(callbacks or [])
        kwargs.pop("verbose", None)
        started = time.time()
        if self.feature_cache is not None:
            history, images = self._fit_cached(hp, model, epochs, callbacks, label,
                                               kwargs.get("initial_epoch", 0))
        else:
            history = model.fit(x, validation_data=validation_data, epochs=epochs, verbose=0,
                                class_weight=self.class_weight, **kwargs,
                                callbacks=phase_callbacks(self.settings, f"{label} phase1",
                                                          callbacks)).history
            images = None
        self.record = {"phase1": _phase_record(history, time.time() - started, images),
                       "history": history}
        if self.phases != "both":
            return best_epoch(history)
        ran1 = len(history.get("loss", []))
        epochs2 = epochs if phase2_epochs is None else phase2_epochs
        boundary, trainable = unfreeze_top(model, self.settings)
        rate = phase2_learning_rate(hp, self.settings)
        compile_model(model, rate, self.settings, decay_steps=self._decay_steps(epochs2))
        logging.info("%s phase2: %d base layers trainable from %s, learning rate %.2g (%s)",
                     label, trainable, boundary, rate, self.settings.trainer.phase2_schedule)
        started = time.time()
        phase2 = model.fit(x, validation_data=validation_data, initial_epoch=ran1,
                           epochs=ran1 + epochs2, verbose=0, class_weight=self.class_weight,
                           callbacks=phase_callbacks(self.settings, f"{label} phase2",
                                                     callbacks)).history
        self.record["phase2"] = _phase_record(phase2, time.time() - started, None)
        self.record["phase2"].update(boundary=boundary, trainable_layers=trainable)
        self.record["history"] = {k: history.get(k, []) + phase2.get(k, []) for k in history}
        return best_epoch(phase2)

    def _decay_steps(self, epochs: int) -> int | None:
        if self.settings.trainer.phase2_schedule != "cosine" or not self.train_examples or not epochs:
            return None
        return epochs * math.ceil(self.train_examples / self.batch_size)

    def _fit_cached(self, hp, model, epochs, callbacks, label, initial_epoch=0):
        size = hp.get(HP_INPUT_SIZE)
        if self.head_only:
            trained, bound = model, callbacks
            train_x, train_y = self.feature_cache.get(features.TRAIN_SPLIT, size)
            eval_x, eval_y = self.feature_cache.get(features.EVAL_SPLIT, size)
        else:
            classifier = classifier_of(model)
            train_x, train_y = self.feature_cache.get(features.TRAIN_SPLIT, size, classifier)
            eval_x, eval_y = self.feature_cache.get(features.EVAL_SPLIT, size, classifier)
            trained = cached_part_of(model, self.settings)
            compile_model(trained, hp.get(HP_LEARNING_RATE), self.settings)
            # Callbacks (TensorBoard, the tuner's) see the whole model, not the part being fit.
            bound = [_BoundTo(callback, model) for callback in callbacks]
        history = trained.fit(train_x, train_y, validation_data=(eval_x, eval_y), epochs=epochs,
                              batch_size=self.batch_size, shuffle=True,
                              class_weight=self.class_weight, verbose=0,
                              initial_epoch=initial_epoch,
                              callbacks=phase_callbacks(self.settings, f"{label} phase1 (cached)",
                                                        bound)).history
        return history, len(train_y)


def best_epoch(history: dict[str, list[float]]) -> dict[str, float]:
    """The metrics of the epoch with the best val_accuracy (the one early stopping keeps): what
    a trial scores. KerasTuner would average a dict of per-epoch lists instead."""
    key = "val_accuracy" if history.get("val_accuracy") else "accuracy"
    best = int(np.argmax(history[key]))
    return {name: float(values[best]) for name, values in history.items() if values}


class _BoundTo(keras.callbacks.Callback):
    """Forwards epoch events to `callback` while it sees `model` (not the head being fit)."""

    def __init__(self, callback: keras.callbacks.Callback, model: keras.Model):
        super().__init__()
        self._callback = callback
        callback.set_model(model)

    def set_model(self, model):
        pass

    def on_train_begin(self, logs=None):
        self._callback.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._callback.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self._callback.on_train_end(logs)


def _phase_record(history: dict, seconds: float, images_per_epoch: int | None) -> dict:
    epochs = len(history.get("loss", []))
    record = {"epochs": epochs, "seconds": round(seconds, 1)}
    if history.get("val_accuracy"):
        record["best_val_accuracy"] = float(max(history["val_accuracy"]))
    if history.get("val_loss"):
        record["best_val_loss"] = float(min(history["val_loss"]))
    if images_per_epoch:
        record["images_per_second"] = round(images_per_epoch * epochs / max(seconds, 1e-9), 1)
    return record
