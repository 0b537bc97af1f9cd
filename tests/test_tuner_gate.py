"""The tuner fails loudly: no successful trial (or too many failed) fails the component."""
import keras
import keras_tuner
import numpy as np
import pytest
from tlpipe.components.tuner.tuner_module import CoveringRandomOracle, GatedTuner


def _data():
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def _tuner(tmp_path, build, max_failed_trials=0, max_trials=2):
    oracle = CoveringRandomOracle(objective="val_accuracy", max_trials=max_trials, seed=1, sizes=[])
    return GatedTuner(oracle=oracle, hypermodel=build, max_failed_trials=max_failed_trials,
                      directory=str(tmp_path), project_name="t", overwrite=True)


def _good(hp):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        hp.Int("units", 2, 4), activation="relu"), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class FailingFit(keras_tuner.HyperModel):
    """Builds fine, fails in fit after `good_fits` successful ones (as a missing callback
    dependency would)."""

    def __init__(self, good_fits=0, message="tensorboard is missing (simulated)"):
        super().__init__()
        self.good_fits, self.message = good_fits, message

    def build(self, hp):
        return _good(hp)

    def fit(self, hp, model, *args, **kwargs):
        if self.good_fits <= 0:
            raise ValueError(self.message)
        self.good_fits -= 1
        return model.fit(*args, **kwargs)


def test_search_with_no_successful_trial_raises_with_first_error(tmp_path):
    x, y = _data()
    with pytest.raises(RuntimeError, match="no successful trial.*tensorboard is missing"):
        _tuner(tmp_path, FailingFit()).search(x, y, validation_data=(x, y), epochs=1, verbose=0)


def test_failed_trials_beyond_tolerance_fail_the_search(tmp_path):
    x, y = _data()
    with pytest.raises(RuntimeError, match="1 of 2 trials failed.*second trial breaks"):
        _tuner(tmp_path / "a", FailingFit(1, "second trial breaks")).search(
            x, y, validation_data=(x, y), epochs=1, verbose=0)
    tolerant = _tuner(tmp_path / "b", FailingFit(1, "second trial breaks"), max_failed_trials=1)
    tolerant.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert tolerant.get_best_hyperparameters()[0].get("units") in (2, 3, 4)
