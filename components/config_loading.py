"""From a YAML file and `--set` overrides to a validated PipelineConfig, before anything runs.

Single values are checked as the typed config is built (components/config.py); `validate` adds
the checks across settings, against the backbone registry and its shipped layer names, and
against the data tree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from tlpipe.components.config import ConfigError, PipelineConfig


def _read_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (expected YAML)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings, got a {type(raw).__name__}")
    return raw


def load_config(path: str | None = None, overrides: list[str] | None = None,
                **top_level: Any) -> PipelineConfig:
    """File, then `KEY=VALUE` overrides (dotted keys), then explicit top-level values
    (`work_dir=...`, `data__root=...` for data.root); None values are skipped."""
    raw = _read_file(path) if path else {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            node[parts[-1]] = value  # a glob such as */* or a URL: the text itself
    for key, value in top_level.items():
        if value is None:
            continue
        section, _, leaf = key.partition("__")
        if leaf:
            raw.setdefault(section, {})[leaf] = value
        else:
            raw[key] = value
    return PipelineConfig.from_dict(raw)


def validate(config: PipelineConfig, runs_here: bool = True) -> None:
    """Checks across settings and against the backbone registry: bad values fail here, before
    any component runs. Single values were checked on loading. `runs_here=False` (a compiled
    pipeline) skips what only a run on this machine needs."""
    from tlpipe.components.trainer.backbones import BACKBONES, min_input_size  # light: no TensorFlow
    from tlpipe.components.trainer.base_layers import CutLayerError, check_cut, layer_names

    if config.base.name not in BACKBONES:
        raise ConfigError(f"unknown base '{config.base.name}' (known: {', '.join(sorted(BACKBONES))})")
    backbone = BACKBONES[config.base.name]
    minimum = min_input_size(backbone, config.trainer.head)
    too_small = [s for s in config.tuner.input_sizes if s < minimum]
    if too_small:
        raise ConfigError(f"tuner.input_sizes {too_small} below the minimum {minimum} of base "
                          f"'{backbone.name}' with head '{config.trainer.head}'")
    names = layer_names(backbone.name)
    if names is not None:  # the trainer checks a base missing from the table once built
        try:
            check_cut(backbone.name, names, config.base.cut_at, config.trainer.fine_tune_from)
        except CutLayerError as err:
            raise ConfigError(str(err)) from None
    weights = config.base.weights
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise ConfigError(f"base.weights: no such weights file {weights!r} (or use 'imagenet' / 'none')")
    if config.data.train_ratio + config.data.test_ratio > 0.99:
        raise ConfigError(f"data.test_ratio must leave eval at least 0.01 (train_ratio "
                          f"{config.data.train_ratio} + test_ratio {config.data.test_ratio})")
    if config.tuner.learning_rate_min > config.tuner.learning_rate_max:
        raise ConfigError(f"tuner.learning_rate_min {config.tuner.learning_rate_min} is above "
                          f"tuner.learning_rate_max {config.tuner.learning_rate_max}")
    if runs_here:
        config.local_dir  # noqa: B018 (a URL work_dir needs storage.local_dir: refused here, not mid-run)
    if runs_here and config.metadata.mysql is not None:
        config.metadata.mysql.password()  # the named environment variable must be set


def check_data_tree(config: PipelineConfig, data_root: str) -> None:
    """The images are there as the data settings describe them (enough classes and images)."""
    from tlpipe.components.ingest.listing import DatasetError, check_input

    try:
        check_input(data_root, config.data.pattern, config.data.manifest, config.data.extensions,
                    config.data.min_images_per_class, config.data.num_spans)
    except DatasetError as err:
        raise ConfigError(str(err)) from None
