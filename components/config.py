"""The one typed configuration object: every default of tlpipe lives here, once.

Loaded from an optional YAML file, then `--set section.key=value` overrides, then validated
before any component runs, so a bad setting fails in a second with one line instead of an hour
into a run. Module code (run_fn, tuner_fn, preprocessing_fn) rebuilds its typed section from
TFX's custom_config with `from_dict` and reads attributes: no second default anywhere.

Types are strict (pydantic strict mode): no bool from 5, no int from true. The docstring under
each setting is its documentation (`tlpipe config --markdown` prints the reference).
"""
from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from components import storage
from components.config_types import (  # noqa: F401 (ConfigError: imported from here too)
    ConfigError,
    Float,
    InputSize,
    OptionalText,
    PlainName,
    PositiveFloat,
    Section,
    Share,
    Strength,
    Text,
    _list_from_text,
    _none_from_text,
)
from components.features import RESIZE_POLICIES  # plain constants, no TensorFlow

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp")


class DataConfig(Section):
    root: OptionalText = None
    """Folder-per-class image root; none means the flowers demo (downloaded or mirrored)."""
    flowers_mirror: OptionalText = None
    """Offline mirror of the flowers demo (also TLPIPE_FLOWERS_MIRROR)."""
    pattern: Text = "*/*"
    """Glob under root, relative; '{SPAN}' selects spans. Default: root/<class>/<file>."""
    extensions: Annotated[list[Text], BeforeValidator(_list_from_text)] = list(IMAGE_EXTENSIONS)
    """File extensions taken as images."""
    manifest: OptionalText = None
    """CSV manifest `path,label[,split]` under root (or absolute) instead of class folders; paths in
    it are relative to the CSV. May hold '{SPAN}'. None: the folder tree (pattern)."""
    train_ratio: Annotated[Float, Field(gt=0, lt=1)] = 0.8
    """Deterministic split by hash of the relative path, stratified per class."""
    test_ratio: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    """Optional held-out test split (0: none); eval gets 1 - train_ratio - test_ratio."""
    min_images_per_class: Annotated[int, Field(ge=1)] = 2
    """A class with fewer images fails the run."""
    num_spans: Annotated[int, Field(ge=1)] = 1
    """With '{SPAN}': ingest the last N spans on disk (1: the latest only)."""
    max_pixels: Annotated[int, Field(ge=1)] = 50_000_000
    """Images with more pixels (width x height, read from the header) are quarantined."""
    max_rejected_share: Share = 0.05
    """Ingest fails when more of the image files than this are quarantined (not counted: non-image
    file names, folders, duplicates kept once)."""
    on_class_change: Literal["fail", "warn", "accept"] = "fail"
    """A class added or dropped by new data, against the label domain pinned by the first run: fail
    (stop before Transform), warn (report, go on, keep the domain), accept (pin this data's classes)."""


class TransformConfig(Section):
    mean_source: Literal["imagenet", "dataset"] = "imagenet"
    """imagenet: the base's own input convention; dataset: per-channel mean from a TFT full pass."""
    std_scaling: bool = False
    """With mean_source=dataset: divide by the dataset's per-channel std instead of the base's scale."""
    resize: Literal[RESIZE_POLICIES] = RESIZE_POLICIES[0]
    """stretch (the tutorials'), crop (keep aspect, center crop) or pad (keep aspect, pad black)."""


class BaseModelConfig(Section):
    name: Text = "efficientnet_lite0"
    """Key in components/trainer/backbones.py."""
    weights: Text = "imagenet"
    """"imagenet" (Keras cache / download), a path to a weights file, or "none" (random init)."""
    cut_at: OptionalText = None
    """Cut the base at this layer (its output becomes the features); none: the whole base."""


class TunerConfig(Section):
    input_sizes: Annotated[list[InputSize], BeforeValidator(_list_from_text), Field(min_length=1)] = [
        160, 192, 224]
    """Input sizes (pixels, square) the tuner tries; Transform stores images at the largest."""
    learning_rate_min: PositiveFloat = 1e-4
    """Lower end of the searched phase-1 learning rate (log scale)."""
    learning_rate_max: PositiveFloat = 1e-2
    """Upper end of the searched phase-1 learning rate."""
    max_trials: Annotated[int, Field(ge=1)] = 3
    """Trials of the search."""
    epochs_per_trial: Annotated[int, Field(ge=1)] = 2
    """Epochs each trial trains."""
    max_failed_trials: Annotated[int, Field(ge=0)] = 0
    """Failed trials tolerated before the tuner fails the run (none succeeding always fails it)."""
    seed: int = 42
    """Seed of the search."""
    algorithm: Literal["random", "bayesian", "hyperband"] = "random"
    """random, bayesian or hyperband."""
    tune_phases: Literal["phase1", "both"] = "phase1"
    """phase1 (frozen base only, cheap) or both (frozen then fine-tune inside each trial)."""
    tune_phase2_learning_rate: bool = False
    """Also search the fine-tune learning rate."""
    tune_dropout: bool = False
    """Also search the head's dropout."""
    max_seconds: Annotated[PositiveFloat | None, BeforeValidator(_none_from_text)] = None
    """Wall-clock budget of the whole search in seconds (none: no budget)."""
    retune_every: Annotated[int, Field(ge=1)] = 1
    """Re-tune every N runs and reuse the latest tuned hyperparameters in between (1: every run)."""

    @property
    def storage_size(self) -> int:
        """Transform stores images at the largest tuned size so every candidate can be served."""
        return max(self.input_sizes)


class TrainerConfig(Section):
    batch_size: Annotated[int, Field(ge=1)] = 32
    """Examples per training step."""
    phase1_epochs: Annotated[int, Field(ge=1)] = 6
    """Epochs of phase 1 (new head on the frozen base)."""
    phase2_epochs: Annotated[int, Field(ge=0)] = 4
    """Epochs of phase 2 (fine-tuning the top of the base); 0: no phase 2."""
    phase1_learning_rate: PositiveFloat = 1e-3
    """Phase-1 learning rate when not tuned (the tuner's default)."""
    phase2_learning_rate: Annotated[PositiveFloat | None, BeforeValidator(_none_from_text)] = None
    """None: the phase-1 (tuned) rate / 10."""
    phase1_features: Literal["live", "cached"] = "live"
    """live: phase 1 runs the frozen base every epoch (augmentation on); cached: base features
    computed once per (base, input size, cut layer) and the head trained on them."""
    head: Literal["gap", "dense128"] = "gap"
    """gap (GlobalAveragePooling) or dense128 (the tutorials' AveragePooling2D(4) + Dense(128))."""
    dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.2
    """Dropout before the classes layer of the gap head."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """adam, or sgd (with momentum 0.9, as the fine-tuning tutorials recommend)."""
    fine_tune_from: OptionalText = None
    """Phase 2 unfreezes from this layer name or fraction of the base's layers ("0.7": the top
    30%); none: the registry's boundary."""
    early_stopping_patience: Annotated[int, Field(ge=0)] = 3
    """Stop a phase after this many epochs without val_loss improving (0: off); best weights kept."""
    class_weights: bool = False
    """Weight classes by inverse frequency in the train split."""
    warm_start: bool = False
    """Start from the last blessed model's weights when its base and classes match."""
    augment: bool = True
    """Training-only augmentation (horizontal flip always, plus the strengths below)."""
    rotation: Strength = 0.05
    """Augmentation: rotation as a fraction of a full turn (0: off)."""
    zoom: Strength = 0.1
    """Augmentation: zoom as a fraction of the size (0: off)."""
    translation: Strength = 0.1
    """Augmentation: translation as a fraction of the size (0: off)."""
    contrast: Strength = 0.1
    """Augmentation: contrast factor (0: off)."""
    seed: int = 42
    """Seed of weights, augmentation and shuffling."""


class EvaluatorConfig(Section):
    min_accuracy: Share = 0.7
    """Gate: overall accuracy at least this (value threshold)..."""
    max_accuracy_drop: Annotated[Float, Field(ge=0)] = 0.0
    """...and not more than this below the last blessed model (change threshold)."""
    min_class_recall: Share = 0.0
    """Optional gate: every class's recall (accuracy on its true-label slice) at least this."""
    top_k: Annotated[int, Field(ge=1)] = 2
    """k of the reported top-k accuracy."""


class PusherConfig(Section):
    keep_versions: Annotated[int, Field(ge=0)] = 5
    """Keep the newest N versions (0 keeps all); a version a label points at is never deleted."""
    warmup_requests: Annotated[int, Field(ge=0)] = 4
    """Eval images replayed as TF Serving warmup requests before a version takes traffic."""


class ScheduleConfig(Section):
    every: Text = "24h"
    """Interval between scheduled runs ("30m", "6h", "1d") unless `cron` is given."""
    cron: OptionalText = None
    """A 5-field cron expression instead of `every`."""
    webhook_url: OptionalText = None
    """POST a JSON summary here when a run fails or is not blessed (none: log only)."""


class BeamConfig(Section):
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"
    """Beam DirectRunner mode."""
    direct_num_workers: Annotated[int, Field(ge=1)] = 1
    """Beam DirectRunner workers."""
    extra_args: Annotated[list[Text], BeforeValidator(_list_from_text)] = []
    """Extra Beam pipeline args, e.g. ["--runner=DataflowRunner", "--project=..."]."""


class StorageConfig(Section):
    """Where artifacts go, when not under work_dir: any URL tf.io.gfile and TFX fileio read (gs://,
    s3://, hdfs://...) or a local path."""

    pipeline_root: OptionalText = None
    """TFX pipeline root (every artifact); none: <work_dir>/pipeline."""
    serving_dir: OptionalText = None
    """TF Serving base path the pusher writes <model_name>/<version>/ under; none: <work_dir>/serving."""
    feature_cache_dir: OptionalText = None
    """Cache of frozen-base features (trainer.phase1_features=cached); none: <work_dir>/cache/features."""
    local_dir: OptionalText = None
    """Local folder for what only makes sense on this machine (logs, the scheduler's lock, the demo
    download, the default SQLite store, compare reports); none: work_dir, which must then be local."""


class MySQLConfig(Section):
    host: Text = "127.0.0.1"
    """MySQL/MariaDB server host."""
    port: Annotated[int, Field(ge=0, le=65535)] = 3306
    """Server port (0 with `socket`)."""
    socket: OptionalText = None
    """Unix socket of a local server instead of host:port."""
    database: Text
    """Database holding the ML Metadata tables (created when missing)."""
    user: Text
    """User name."""
    password_env: OptionalText = None
    """Environment variable holding the password (never the password itself; none: no password)."""

    def password(self) -> str:
        if self.password_env is None:
            return ""
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(f"metadata.mysql.password_env: environment variable {self.password_env} is not set")
        return value

    def describe(self) -> str:
        """Where the store is, for messages: no password."""
        where = f"socket {self.socket}" if self.socket else f"{self.host}:{self.port}"
        return f"mysql://{self.user}@{where}/{self.database}"


class MetadataConfig(Section):
    """ML Metadata store: `{sqlite: PATH}` or `{mysql: {host, port, database, user, password_env}}`."""

    sqlite: OptionalText = None
    """SQLite file (local); none, without mysql: <local_dir>/metadata.sqlite."""
    mysql: MySQLConfig | None = None
    """A MySQL/MariaDB server, as production TFX uses."""

    @model_validator(mode="after")
    def _one_store(self):
        if self.sqlite is not None and self.mysql is not None:
            raise ValueError("set either metadata.sqlite or metadata.mysql, not both")
        if self.sqlite is not None and storage.is_url(self.sqlite):
            raise ValueError(f"metadata.sqlite must be a local file, got {self.sqlite!r}")
        return self


class ModelSettings(Section):
    """What the Tuner's and Trainer's module code gets as custom_config["settings"]: only the
    sections they read, so editing other settings keeps them cached."""

    base: BaseModelConfig = Field(default_factory=BaseModelConfig)
    tuner: TunerConfig = Field(default_factory=TunerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    def to_custom_config(self) -> dict[str, Any]:
        # When to tune is not how to tune: retune_every must not change cache keys.
        return self.model_dump(exclude={"tuner": {"retune_every"}})


class TransformSettings(Section):
    """What preprocessing_fn gets as custom_config["settings"]: the transform section, the base
    (whose input convention it bakes in) and the storage size; nothing the model alone uses."""

    transform: TransformConfig = Field(default_factory=TransformConfig)
    base_name: Text = BaseModelConfig().name
    storage_size: InputSize = TunerConfig().storage_size


class PipelineConfig(Section):
    model_name: PlainName = "flowers"
    """Name of the served model: the folder under the work dir's serving/ and the name clients ask for."""
    pipeline_name: Text = "tlpipe"
    """TFX pipeline name (ML Metadata context)."""
    work_dir: Text = "tlpipe-work"
    """Where everything is written (a local path or a URL): pipeline root, serving base, feature
    cache; when local also logs and the SQLite ML Metadata store (see storage, metadata)."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    metadata: MetadataConfig = Field(default_factory=MetadataConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    transform: TransformConfig = Field(default_factory=TransformConfig)
    base: BaseModelConfig = Field(default_factory=BaseModelConfig)
    tuner: TunerConfig = Field(default_factory=TunerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    pusher: PusherConfig = Field(default_factory=PusherConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)

    # Derived locations: one place decides the work-dir layout. URLs are never resolve()d.
    def _under_work_dir(self, setting: str | None, *parts: str) -> str:
        return storage.absolute(setting) if setting else storage.join(storage.absolute(self.work_dir), *parts)

    @property
    def pipeline_root(self) -> str:
        return self._under_work_dir(self.storage.pipeline_root, "pipeline")

    @property
    def serving_base(self) -> str:
        return self._under_work_dir(self.storage.serving_dir, "serving")

    @property
    def serving_model_dir(self) -> str:
        return storage.join(self.serving_base, self.model_name)

    @property
    def feature_cache_dir(self) -> str:
        return self._under_work_dir(self.storage.feature_cache_dir, "cache", "features")

    @property
    def local_dir(self) -> str:
        """This machine's folder for logs, locks, downloads and the default SQLite store."""
        if self.storage.local_dir:
            return storage.absolute(self.storage.local_dir)
        if storage.is_url(self.work_dir):
            raise ConfigError(f"work_dir {self.work_dir!r} is a URL: set storage.local_dir to a local folder "
                              "for logs and the local ML Metadata store (or metadata.mysql)")
        return storage.absolute(self.work_dir)

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.local_dir, "logs")

    @property
    def metadata_path(self) -> str | None:
        """The SQLite store's file; None with metadata.mysql."""
        if self.metadata.mysql is not None:
            return None
        if self.metadata.sqlite:
            return storage.absolute(self.metadata.sqlite)
        return os.path.join(self.local_dir, "metadata.sqlite")

    @property
    def metadata_description(self) -> str:
        """Where ML Metadata lives, for messages (never a password)."""
        return self.metadata_path or self.metadata.mysql.describe()

    @property
    def storage_size(self) -> int:
        return self.tuner.storage_size

    def transform_settings(self) -> TransformSettings:
        return TransformSettings(transform=self.transform, base_name=self.base.name,
                                 storage_size=self.storage_size)

    def model_settings(self) -> ModelSettings:
        return ModelSettings(base=self.base, tuner=self.tuner, trainer=self.trainer)

    def beam_pipeline_args(self) -> list[str]:
        return [
            f"--direct_running_mode={self.beam.direct_running_mode}",
            f"--direct_num_workers={self.beam.direct_num_workers}",
            *self.beam.extra_args,
        ]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PipelineConfig:
        return cls.from_dict(json.loads(text))
