"""The one typed configuration object: every default of tlpipe lives here.

Loaded from an optional YAML file, then `--set section.key=value` overrides, then validated
before any component runs, so a bad setting fails in a second with one line instead of an hour
into a run.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.features import RESIZE_POLICIES  # plain constants, no TensorFlow

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp")


class ConfigError(ValueError):
    """A configuration problem, reported as one line before anything runs."""


@dataclass
class DataConfig:
    # Folder-per-class image root; None means the flowers demo (downloaded or mirrored).
    root: str | None = None
    # Offline mirror of the flowers demo (also TLPIPE_FLOWERS_MIRROR).
    flowers_mirror: str | None = None
    # Glob under root, relative; '{SPAN}' selects spans. Default: root/<class>/<file>.
    pattern: str = "*/*"
    extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    # CSV manifest `path,label[,split]` under root (or absolute) instead of class folders;
    # paths in it are relative to the CSV. May hold '{SPAN}'. None: the folder tree (pattern).
    manifest: str | None = None
    # Deterministic split by hash of the relative path, stratified per class.
    train_ratio: float = 0.8
    # Optional held-out test split (0: none); eval gets 1 - train_ratio - test_ratio.
    test_ratio: float = 0.0
    min_images_per_class: int = 2
    # With '{SPAN}': ingest the last N spans on disk (1: the latest only).
    num_spans: int = 1
    # Images with more pixels (width x height, read from the header) are quarantined.
    max_pixels: int = 50_000_000
    # Ingest fails when more of the image files than this are quarantined
    # (not counted: non-image file names, folders, duplicates kept once).
    max_rejected_share: float = 0.05
    # A class added or dropped by new data, against the label domain pinned by the first run
    # (components/schema/): fail (stop before Transform), warn (report, go on, keep the domain),
    # accept (report, go on, pin this data's classes).
    on_class_change: str = "fail"


@dataclass
class TransformConfig:
    # imagenet: the base's own input convention; dataset: per-channel mean from a TFT full pass.
    mean_source: str = "imagenet"
    # With mean_source=dataset: divide by the dataset's per-channel std instead of the base's scale.
    std_scaling: bool = False
    # stretch (the tutorials'), crop (keep aspect, center crop) or pad (keep aspect, pad black).
    resize: str = RESIZE_POLICIES[0]


@dataclass
class BaseModelConfig:
    # Key in components/trainer/backbones.py.
    name: str = "efficientnet_lite0"
    # "imagenet" (Keras cache / download), a path to a weights file, or "none" (random init).
    weights: str = "imagenet"
    # Cut the base at this layer (its output becomes the features); None: the whole base.
    cut_at: str | None = None


@dataclass
class TunerConfig:
    input_sizes: list[int] = field(default_factory=lambda: [160, 192, 224])
    learning_rate_min: float = 1e-4
    learning_rate_max: float = 1e-2
    max_trials: int = 3
    epochs_per_trial: int = 2
    # Failed trials tolerated before the tuner fails the run (none succeeding always fails it).
    max_failed_trials: int = 0
    seed: int = 42
    # random, bayesian or hyperband.
    algorithm: str = "random"
    # phase1 (frozen base only, cheap) or both (frozen then fine-tune inside each trial).
    tune_phases: str = "phase1"
    # Also search the fine-tune learning rate / the head's dropout.
    tune_phase2_learning_rate: bool = False
    tune_dropout: bool = False
    # Wall-clock budget of the whole search in seconds (None: no budget).
    max_seconds: float | None = None
    # Re-tune every N runs and reuse the latest tuned hyperparameters in between (1: every run).
    retune_every: int = 1


@dataclass
class TrainerConfig:
    batch_size: int = 32
    phase1_epochs: int = 6
    phase2_epochs: int = 4
    phase1_learning_rate: float = 1e-3
    # None: the phase-1 (tuned) rate / 10.
    phase2_learning_rate: float | None = None
    # live: phase 1 runs the frozen base every epoch (augmentation on); cached: base features
    # computed once per (base, input size, cut layer) and the head trained on them.
    phase1_features: str = "live"
    # gap (GlobalAveragePooling) or dense128 (the tutorials' AveragePooling2D(4) + Dense(128)).
    head: str = "gap"
    dropout: float = 0.2
    # adam, or sgd (with momentum 0.9, as the fine-tuning tutorials recommend).
    optimizer: str = "adam"
    # Phase 2 unfreezes from this layer name or fraction of the base's layers ("0.7": the top
    # 30%); None: the registry's boundary.
    fine_tune_from: str | None = None
    # Stop a phase after this many epochs without val_loss improving (0: off); best weights kept.
    early_stopping_patience: int = 3
    # Weight classes by inverse frequency in the train split.
    class_weights: bool = False
    # Start from the last blessed model's weights when its base and classes match.
    warm_start: bool = False
    augment: bool = True
    # Augmentation strengths (with augment): rotation as a fraction of a full turn, zoom and
    # translation as fractions of the size, contrast factor. Horizontal flip is always on.
    rotation: float = 0.05
    zoom: float = 0.1
    translation: float = 0.1
    contrast: float = 0.1
    seed: int = 42


@dataclass
class EvaluatorConfig:
    # Gate: overall accuracy at least this (value threshold)...
    min_accuracy: float = 0.7
    # ...and not more than this below the last blessed model (change threshold).
    max_accuracy_drop: float = 0.0
    # Optional gate: every class's recall (accuracy on its true-label slice) at least this.
    min_class_recall: float = 0.0
    # k of the reported top-k accuracy.
    top_k: int = 2


@dataclass
class PusherConfig:
    # Keep the newest N versions (0 keeps all); a version a label points at is never deleted.
    keep_versions: int = 5
    # Eval images replayed as TF Serving warmup requests before a version takes traffic.
    warmup_requests: int = 4


@dataclass
class ScheduleConfig:
    # Interval between scheduled runs ("30m", "6h", "1d") unless `cron` is given.
    every: str = "24h"
    # A 5-field cron expression instead of `every`.
    cron: str | None = None
    # POST a JSON summary here when a run fails or is not blessed (None: log only).
    webhook_url: str | None = None


@dataclass
class BeamConfig:
    direct_running_mode: str = "in_memory"
    direct_num_workers: int = 1
    # Extra Beam pipeline args, e.g. ["--runner=DataflowRunner", "--project=..."].
    extra_args: list[str] = field(default_factory=list)


@dataclass
class PipelineConfig:
    model_name: str = "flowers"
    pipeline_name: str = "tlpipe"
    work_dir: str = "tlpipe-work"
    data: DataConfig = field(default_factory=DataConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    tuner: TunerConfig = field(default_factory=TunerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    pusher: PusherConfig = field(default_factory=PusherConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)

    # Derived locations: one place decides the work-dir layout.
    @property
    def pipeline_root(self) -> str:
        return str(Path(self.work_dir).resolve() / "pipeline")

    @property
    def metadata_path(self) -> str:
        return str(Path(self.work_dir).resolve() / "metadata.sqlite")

    @property
    def serving_base(self) -> str:
        return str(Path(self.work_dir).resolve() / "serving")

    @property
    def serving_model_dir(self) -> str:
        return str(Path(self.serving_base) / self.model_name)

    @property
    def storage_size(self) -> int:
        """Transform stores images at the largest tuned size so every candidate can be served."""
        return max(self.tuner.input_sizes)

    def beam_pipeline_args(self) -> list[str]:
        return [
            f"--direct_running_mode={self.beam.direct_running_mode}",
            f"--direct_num_workers={self.beam.direct_num_workers}",
            *self.beam.extra_args,
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PipelineConfig:
        return _build(cls, raw, "")

    @classmethod
    def from_json(cls, text: str) -> PipelineConfig:
        return cls.from_dict(json.loads(text))


def _build(cls, raw: dict[str, Any], prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown setting '{prefix}{unknown[0]}' (valid: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), name)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.strip("[]").split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{name}' must be a list, got {value!r}")
        return [_coerce(v, args[0], name) for v in value]
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return hint(value)
    except (TypeError, ValueError):
        raise ConfigError(f"'{name}' must be {hint.__name__}, got {value!r}") from None


def load_config(path: str | None = None, overrides: list[str] | None = None,
                **top_level: Any) -> PipelineConfig:
    """File, then `KEY=VALUE` overrides (dotted keys), then explicit top-level values."""
    raw: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from None
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
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    for key, value in top_level.items():
        if value is None:
            continue
        section, _, leaf = key.partition("__")
        if leaf:
            raw.setdefault(section, {})[leaf] = value
        else:
            raw[key] = value
    return PipelineConfig.from_dict(raw)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def validate(config: PipelineConfig, data_root: str | None = None) -> None:
    """Checks that need no TFX: bad values fail here, before any component runs."""
    from components.trainer.backbones import BACKBONES  # light: no TensorFlow import

    if config.base.name not in BACKBONES:
        raise ConfigError(f"unknown base '{config.base.name}' (known: {', '.join(sorted(BACKBONES))})")
    backbone = BACKBONES[config.base.name]
    too_small = [s for s in config.tuner.input_sizes if s < backbone.min_size]
    if too_small:
        raise ConfigError(f"tuner.input_sizes {too_small} below the minimum {backbone.min_size} "
                          f"of base '{backbone.name}'")
    if not config.tuner.input_sizes:
        raise ConfigError("tuner.input_sizes is empty")
    weights = config.base.weights
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise ConfigError(f"base.weights: no such weights file {weights!r} (or use 'imagenet' / 'none')")
    if config.transform.mean_source not in ("imagenet", "dataset"):
        raise ConfigError("transform.mean_source must be 'imagenet' or 'dataset', "
                          f"got {config.transform.mean_source!r}")
    if not 0.0 < config.data.train_ratio < 1.0:
        raise ConfigError(f"data.train_ratio must be between 0 and 1, got {config.data.train_ratio}")
    if not 0.0 <= config.data.test_ratio < 1.0 or config.data.train_ratio + config.data.test_ratio > 0.99:
        raise ConfigError(f"data.test_ratio must be >= 0 and leave eval at least 0.01 "
                          f"(train_ratio {config.data.train_ratio} + test_ratio {config.data.test_ratio})")
    if config.data.num_spans < 1:
        raise ConfigError(f"data.num_spans must be >= 1, got {config.data.num_spans}")
    if config.data.max_pixels < 1:
        raise ConfigError(f"data.max_pixels must be >= 1, got {config.data.max_pixels}")
    if not 0.0 <= config.data.max_rejected_share <= 1.0:
        raise ConfigError(f"data.max_rejected_share must be in [0, 1], got {config.data.max_rejected_share}")
    if not 0.0 <= config.evaluator.min_accuracy <= 1.0:
        raise ConfigError(f"evaluator.min_accuracy must be in [0, 1], got {config.evaluator.min_accuracy}")
    if not 0.0 <= config.evaluator.min_class_recall <= 1.0:
        raise ConfigError("evaluator.min_class_recall must be in [0, 1]")
    if config.evaluator.top_k < 1:
        raise ConfigError("evaluator.top_k must be >= 1")
    if config.evaluator.max_accuracy_drop < 0:
        raise ConfigError("evaluator.max_accuracy_drop must be >= 0")
    if config.pusher.keep_versions < 0 or config.pusher.warmup_requests < 0:
        raise ConfigError("pusher.keep_versions and pusher.warmup_requests must be >= 0")
    if config.trainer.phase1_epochs < 1:
        raise ConfigError("trainer.phase1_epochs must be >= 1")
    if config.tuner.max_failed_trials < 0:
        raise ConfigError("tuner.max_failed_trials must be >= 0")
    if config.tuner.max_trials < 1 or config.tuner.epochs_per_trial < 1:
        raise ConfigError("tuner.max_trials and tuner.epochs_per_trial must be >= 1")
    if not 0 < config.tuner.learning_rate_min <= config.tuner.learning_rate_max:
        raise ConfigError("tuner.learning_rate_min must be > 0 and <= tuner.learning_rate_max")
    _one_of("data.on_class_change", config.data.on_class_change, ("fail", "warn", "accept"))
    _one_of("transform.resize", config.transform.resize, RESIZE_POLICIES)
    _one_of("tuner.algorithm", config.tuner.algorithm, ("random", "bayesian", "hyperband"))
    _one_of("tuner.tune_phases", config.tuner.tune_phases, ("phase1", "both"))
    _one_of("trainer.phase1_features", config.trainer.phase1_features, ("live", "cached"))
    _one_of("trainer.head", config.trainer.head, ("gap", "dense128"))
    _one_of("trainer.optimizer", config.trainer.optimizer, ("adam", "sgd"))
    if config.tuner.retune_every < 1:
        raise ConfigError("tuner.retune_every must be >= 1")
    if config.tuner.max_seconds is not None and config.tuner.max_seconds <= 0:
        raise ConfigError("tuner.max_seconds must be > 0 (or null for no budget)")
    if config.trainer.phase2_learning_rate is not None and config.trainer.phase2_learning_rate <= 0:
        raise ConfigError("trainer.phase2_learning_rate must be > 0 (or null: phase-1 rate / 10)")
    if config.trainer.early_stopping_patience < 0:
        raise ConfigError("trainer.early_stopping_patience must be >= 0")
    for name in ("rotation", "zoom", "translation", "contrast"):
        if not 0.0 <= getattr(config.trainer, name) < 1.0:
            raise ConfigError(f"trainer.{name} must be in [0, 1)")
    if config.beam.direct_running_mode not in ("in_memory", "multi_threading", "multi_processing"):
        raise ConfigError("beam.direct_running_mode must be in_memory, multi_threading or multi_processing")
    if data_root is not None:
        from components.ingest.listing import DatasetError, check_input
        try:
            check_input(data_root, config.data.pattern, config.data.manifest,
                        config.data.extensions, config.data.min_images_per_class,
                        config.data.num_spans)
        except DatasetError as err:
            raise ConfigError(str(err)) from None
