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
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from tlpipe.components.errors import UsageError
from tlpipe.components.features import RESIZE_POLICIES  # plain constants, no TensorFlow

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp")
MIN_IMAGES_PER_CLASS = 3  # one image each for train, eval (selection) and test (the gate)
MAX_INPUT_SIZE = 1024  # Transform stores every image at the largest size: bound the bytes


class ConfigError(UsageError):
    """A configuration problem, reported as one line before anything runs."""


def _number_from_text(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as text: take it as the number it spells."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _none_from_text(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() in ("none", "null", "") else value


def _text_from_number(value: Any) -> Any:
    """`--set model_name=2024` or `trainer.fine_tune_from=0.7` arrive as numbers from YAML."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _list_from_text(value: Any) -> Any:
    """`--set tuner.input_sizes=160,192` (YAML reads it as one string)."""
    if isinstance(value, str):
        return [yaml.safe_load(v) for v in (s.strip() for s in value.strip("[]").split(",")) if v]
    return value


def _plain_name(value: str) -> str:
    if value in (".", ".."):
        raise ValueError("must be a plain name, not '.' or '..'")
    return value


Float = Annotated[float, BeforeValidator(_number_from_text), Field(allow_inf_nan=False)]
PositiveFloat = Annotated[Float, Field(gt=0)]
Share = Annotated[Float, Field(ge=0, le=1)]
Strength = Annotated[Float, Field(ge=0, lt=1)]
Text = Annotated[str, BeforeValidator(_text_from_number)]
OptionalText = Annotated[Text | None, BeforeValidator(_none_from_text)]
PlainName = Annotated[Text, Field(pattern=r"^[A-Za-z0-9._-]+$"), AfterValidator(_plain_name)]
InputSize = Annotated[int, Field(ge=1, le=MAX_INPUT_SIZE)]


class Section(BaseModel):
    """Strict, closed (unknown keys are errors), documented by attribute docstrings."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,
                              use_attribute_docstrings=True)

    @classmethod
    def from_dict(cls, raw: Any):
        """The typed section from plain data (YAML, JSON, TFX's custom_config); one-line errors."""
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(_one_line(err.errors()[0], cls)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any):
        """A validated copy with `changes` (pydantic's model_copy would not validate them)."""
        return self.from_dict({**self.to_dict(), **changes})


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
    train_ratio: Annotated[Float, Field(gt=0, lt=1)] = 0.7
    """Train share per class (deterministic split by hash of the relative path): what fits."""
    test_ratio: Annotated[Float, Field(gt=0, lt=1)] = 0.15
    """Test share per class: touched only by the Evaluator, which gates on it and reports its
    accuracy as the run's. Eval (1 - train_ratio - test_ratio) selects: tuner trials, early
    stopping."""
    min_images_per_class: Annotated[int, Field(ge=MIN_IMAGES_PER_CLASS)] = MIN_IMAGES_PER_CLASS
    """A class with fewer images fails the run (at least 3: one each for train, eval and test)."""
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
    max_trials: Annotated[int, Field(ge=1)] = 24
    """Trials of the search; the first ones cover every input size."""
    epochs_per_trial: Annotated[int, Field(ge=1)] = 10
    """Epochs each trial trains (early stopping on the eval split may end it sooner)."""
    max_failed_trials: Annotated[int, Field(ge=0)] = 0
    """Failed trials tolerated before the tuner fails the run (none succeeding always fails it)."""
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
    phase1_epochs: Annotated[int, Field(ge=1)] = 20
    """Epochs of phase 1 (new head on the frozen base; early stopping usually ends it sooner)."""
    phase2_epochs: Annotated[int, Field(ge=0)] = 5
    """Epochs of phase 2 (fine-tuning the top of the base, live, with augmentation); 0: none."""
    phase2_schedule: Literal["constant", "cosine"] = "cosine"
    """Phase-2 learning rate: constant, or cosine decay from the phase-2 rate to 0."""
    label_smoothing: Strength = 0.1
    """Targets (1 - s) * one-hot + s / classes in both phases (0: plain cross-entropy)."""
    phase1_learning_rate: PositiveFloat = 1e-3
    """Phase-1 learning rate when not tuned (the tuner's default)."""
    phase2_learning_rate: Annotated[PositiveFloat | None, BeforeValidator(_none_from_text)] = None
    """None: the phase-1 (tuned) rate / 10."""
    phase1_features: Literal["live", "cached"] = "cached"
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
    distribution: Literal["none", "mirrored"] = "none"
    """none: the default device; mirrored: tf.distribute.MirroredStrategy over every local GPU
    (or logical CPU device), batch_size per replica (the global batch scales with replicas)."""


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
    """Where everything is written: pipeline root, ML Metadata, serving base, logs."""
    data: DataConfig = Field(default_factory=DataConfig)
    transform: TransformConfig = Field(default_factory=TransformConfig)
    base: BaseModelConfig = Field(default_factory=BaseModelConfig)
    tuner: TunerConfig = Field(default_factory=TunerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    pusher: PusherConfig = Field(default_factory=PusherConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)

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


def _one_line(error: dict[str, Any], root: type[BaseModel]) -> str:
    """pydantic's first error as tlpipe's one line: the dotted setting, what it must be, the value."""
    path = [str(p) for p in error["loc"]]
    name = ".".join(path) or "config"
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        section: Any = root
        for part in path[:-1]:
            section = section.model_fields[part].annotation
        valid = ", ".join(sorted(section.model_fields))
        return f"unknown setting '{name}' (valid: {valid})"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"'{name}' must be a mapping of settings, got {value!r}"
    message = (error["msg"].replace("Input should", "must").replace("Value should", "must")
               .replace(" after validation", "").replace("Value error, ", ""))
    if message.startswith("String should match pattern"):
        message = "must be a plain name of letters, digits, '.', '_' or '-'"
    return f"'{name}' {message}, got {value!r}"
