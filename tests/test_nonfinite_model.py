"""A diverged model is never blessed: the trainer fails on a non-finite loss or weight, and the
evaluator's gate refuses outputs that are not finite probabilities (argmax of NaNs is class 0,
which an accuracy gate of 0 passed). Forced at unit level, with settings validation accepts."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import image_batches, model_settings, normalized_images
from tlpipe.components.evaluator import metrics as custom_metrics
from tlpipe.components.trainer import feature_cache, fit, network, search_space
from tlpipe.components.trainer.finite import FailOnNonFinite, NonFiniteModelError, non_finite_weights

CLASSES = ["a", "b", "c"]


def _poison(model: keras.Model) -> None:
    """NaN in the head's kernel: what a warm start from a corrupted blessed model would load."""
    def dense_layers(layer):
        if isinstance(layer, keras.layers.Dense):
            return [layer]
        return [d for inner in getattr(layer, "layers", []) for d in dense_layers(inner)]

    dense = dense_layers(network.head_of(model))[-1]
    kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
    kernel[0, 0] = np.nan
    dense.kernel.assign(kernel)


SIZE = 32  # the toy base's smallest input: these tests are about the checks, not the model


def _settings():
    settings = model_settings()
    settings.tuner = settings.tuner.replace(input_sizes=[SIZE])
    return settings


def _hypermodel(phases, **kwargs):
    settings = _settings()
    hypermodel = fit.TransferHyperModel(settings, len(CLASSES), phases, **kwargs)
    hp = search_space.search_space(settings)
    return settings, hypermodel, hp, hypermodel.build(hp)


def test_poisoned_weights_fail_phase1_at_its_first_epoch():
    _, hypermodel, hp, model = _hypermodel("both")
    _poison(model)
    images, labels = normalized_images(size=SIZE)
    with pytest.raises(NonFiniteModelError, match=r"phase 1 epoch 1 ended with loss=nan"):
        hypermodel.fit(hp, model, image_batches(images, labels), epochs=3, callbacks=[FailOnNonFinite()])


def test_poisoned_weights_fail_phase1_on_cached_features(tmp_path):
    images, labels = normalized_images(size=SIZE)
    datasets = {"train": lambda: image_batches(images, labels), "eval": lambda: image_batches(images, labels)}
    cache = feature_cache.FeatureCache(str(tmp_path), {"data": "nan-test"}, datasets, _settings())
    _, hypermodel, hp, model = _hypermodel("phase1", feature_cache=cache)
    _poison(model)
    with pytest.raises(NonFiniteModelError, match="phase 1 epoch 1"):
        hypermodel.fit(hp, model, None, epochs=2, callbacks=[FailOnNonFinite()])


def test_a_phase2_that_diverges_fails_the_training():
    """Phase 1 trains fine; a finite but absurd phase-2 learning rate overflows the weights."""
    settings, hypermodel, hp, model = _hypermodel("both")
    settings.trainer.phase2_learning_rate = 1e38
    images, labels = normalized_images(size=SIZE)
    with pytest.raises(NonFiniteModelError, match="phase 2 epoch [12] "):
        hypermodel.fit(hp, model, image_batches(images, labels), epochs=1, phase2_epochs=2,
                       callbacks=[FailOnNonFinite()])
    assert hypermodel.record["phase1"]["epochs"] == 1  # phase 1 passed the check


class _WithSpareWeight(keras.layers.Layer):
    """A layer whose second weight the loss never sees: only the weight check can catch it."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        self.spare = self.add_weight(shape=(2,), initializer="zeros", name="spare")

    def call(self, x):
        return x * self.scale


def test_a_non_finite_weight_with_a_finite_loss_fails_at_the_end_of_the_phase():
    model = keras.Sequential([keras.Input((4,)), _WithSpareWeight(name="odd"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.get_layer("odd").spare.assign([0.0, np.inf])
    x, y = np.ones((8, 4), "float32"), np.zeros(8, "int64")
    with pytest.raises(NonFiniteModelError, match=r"phase 1 ended with non-finite weights .*odd/spare"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[FailOnNonFinite()])
    [path] = non_finite_weights(model)
    assert path.endswith("odd/spare"), path
    model.get_layer("odd").spare.assign([0.0, 0.0])
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[FailOnNonFinite()]).history
    assert len(history["loss"]) == 2  # a healthy model trains through


@pytest.mark.parametrize("values, ok", [
    ([0.2, 0.3, 0.5], True), ([1.0, 0.0, 0.0], True), ([np.nan] * 3, False), ([np.inf, 0, 0], False),
    ([0.5, 0.5, 0.5], False), ([1.5, -0.5, 0.0], False), ([], False)])
def test_what_counts_as_probabilities(values, ok):
    assert custom_metrics.is_probability_vector(np.array(values)) is ok


def _gate(tmp_path, probabilities, labels):
    """The pipeline's gate, accuracy floor 0 (what let the NaN model through), through real TFMA."""
    import pandas as pd
    import tensorflow_model_analysis as tfma
    from tlpipe.components.config import PipelineConfig
    from tlpipe.components.evaluator import verdict as verdict_lib
    from tlpipe.components.evaluator.eval_config import make_eval_config

    config = PipelineConfig()
    config.evaluator.min_accuracy = 0.0
    eval_config = make_eval_config(config.evaluator)
    for metric in eval_config.metrics_specs[0].metrics:  # no baseline: value gates only
        for per_slice in metric.per_slice_thresholds:
            per_slice.threshold.ClearField("change_threshold")
    frame = pd.DataFrame({"label": labels, "label_name": [CLASSES[i] for i in labels],
                          "probabilities": list(probabilities)})
    tfma.analyze_raw_data(frame, eval_config, output_path=str(tmp_path))
    validation = tfma.load_validation_result(str(tmp_path))
    verdict = verdict_lib.build_verdict(str(tmp_path), bool(validation.validation_ok), CLASSES)
    return validation, verdict, verdict_lib.verdict_lines(verdict)


def test_the_gate_refuses_nan_outputs_that_an_accuracy_floor_of_zero_passes(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2])
    nan = np.full((len(labels), 3), np.nan, "float32")
    validation, verdict, lines = _gate(tmp_path / "nan", nan, labels)
    assert not validation.validation_ok
    [check] = [c for c in verdict["checks"] if c["metric"] == custom_metrics.INVALID_OUTPUTS_METRIC]
    assert check["value"] == len(labels) and not check["passed"]
    assert any(c["metric"] == "accuracy" and c["passed"] for c in verdict["checks"])
    assert f"  FAIL: {custom_metrics.INVALID_OUTPUTS_METRIC} <= 0: {len(labels)} (eval examples whose " \
           "outputs are not finite probabilities summing to 1)" in lines, lines

    good = np.eye(3, dtype="float32")[labels] * 0.9 + 0.1 / 3
    validation, verdict, lines = _gate(tmp_path / "good", good, labels)
    assert validation.validation_ok, lines
    assert f"  pass: {custom_metrics.INVALID_OUTPUTS_METRIC} <= 0: 0" in lines
