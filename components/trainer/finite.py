"""The trainer refuses to finish with a diverged model: a non-finite loss or weight fails the run.

A diverged model (a learning rate too high, poisoned warm-start weights) outputs NaN for every
image; argmax of NaNs is class 0, so an accuracy gate alone can bless it. Failing the trainer at
the first non-finite epoch also stops paying for epochs that cannot recover.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from tlpipe.components.errors import TlpipeError


class NonFiniteModelError(TlpipeError, RuntimeError):
    """Training diverged: the message names the phase, the epoch or the weights, and what to try."""


def non_finite_weights(model: keras.Model) -> list[str]:
    """Paths of the model's variables holding a NaN or an infinity."""
    return [v.path for v in model.weights if not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))]


class FailOnNonFinite(keras.callbacks.Callback):
    """Raises NonFiniteModelError when an epoch ends with a non-finite loss, or a phase (one
    `fit`) ends with a non-finite weight. One instance follows both phases of a training."""

    def __init__(self):
        super().__init__()
        self.phase, self._first_epoch = 0, None

    def on_train_begin(self, logs=None):
        self.phase, self._first_epoch = self.phase + 1, None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:  # phase 2 counts on from phase 1's epochs
            self._first_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            phase_epoch = epoch - (self._first_epoch or 0) + 1
            raise NonFiniteModelError(
                f"trainer phase {self.phase} epoch {phase_epoch} ended with loss={float(loss)}: training diverged;"
                f" lower the phase {self.phase} learning rate, or check the warm-start weights")

    def on_train_end(self, logs=None):
        bad = non_finite_weights(self.model)
        if bad:
            raise NonFiniteModelError(
                f"trainer phase {self.phase} ended with non-finite weights in {len(bad)} variable(s) "
                f"(e.g. {bad[0]}): not exporting this model")
