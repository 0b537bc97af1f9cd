"""What `tlpipe compare` shows: every trained version side by side, two of them head to head
(text and HTML output: pipeline/compare_report.py).

Rows come from ML Metadata (every Model the trainer produced, with its evaluations and
blessings) joined with the serving directory (pushed versions, their metadata.json, labels); a
pushed version whose model is not in this ML Metadata still gets a row from its metadata.json.
Metrics are read from TFMA's own output (the ModelEvaluation artifact) through the verdict
module, so compare shows what the gate saw.

Head to head, the accuracy difference is tested with McNemar's exact test on the same test
examples (the split the Evaluator gates on, which no tuning or early stopping saw): both
SavedModels' `serving_examples` signature is re-run on the test split of the second version's run
(TFMA keeps no per-example predictions). Runs from before the test split existed fall back to
their eval split, and the report says which split it used.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tlpipe.components import features, storage
from tlpipe.components.config import PipelineConfig
from tlpipe.components.errors import UsageError

HEADLINE_METRICS = ("accuracy", "macro_auc", "log_loss")  # the table's metric columns
SIGNIFICANCE = 0.05
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class CompareError(UsageError, RuntimeError):
    """A version that is not there, or two versions that cannot be compared."""


@dataclass
class VersionRow:
    """One trained model: its serving version when pushed, its ML Metadata id when known."""

    key: str                       # "3" (serving version) or "m17" (ML Metadata model id)
    version: int | None = None
    model_id: int | None = None
    created: str | None = None
    data_span: int | None = None
    base: str | None = None
    input_size: int | None = None
    phase1_learning_rate: float | None = None
    phase2_learning_rate: float | None = None
    phase1_epochs: int | None = None
    phase2_epochs: int | None = None
    training_seconds: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    confusion_matrix: list[list[float]] = field(default_factory=list)
    blessed: bool | None = None
    forced: bool = False
    pushed: bool = False
    labels: list[str] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    model_uri: str | None = None
    saved_model_dir: str | None = None
    evaluation_uri: str | None = None
    examples_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- gathering

def serving_labels(model_dir: str) -> dict[str, int]:
    """label -> version as the servers see it: labels.json, overridden by the
    ModelServerConfig's version_labels (serving.source's rule)."""
    from tlpipe.serving import config as server_config
    from tlpipe.serving import layout, source

    name = os.path.basename(storage.absolute(model_dir))
    model = server_config.ModelConfig(name, storage.absolute(model_dir))
    path = layout.model_server_config_path(model_dir)
    if storage.exists(path):
        entry = next((m for m in server_config.read_model_config_file(path) if m.name == name), None)
        if entry is not None:
            model = server_config.ModelConfig(name, model.base_path, labels=entry.labels)
    return source.version_labels(model)


def _read_json(path: str) -> dict[str, Any]:
    if not path or not storage.exists(path):
        return {}
    return storage.read_json(path)


def _fill_model_info(row: VersionRow, saved_model_dir: str) -> None:
    info = _read_json(os.path.join(saved_model_dir, features.MODEL_INFO_FILE))
    hp = info.get("hyperparameters", {})
    row.saved_model_dir = saved_model_dir
    row.base = info.get("base")
    row.class_names = info.get("class_names", [])
    row.input_size = info.get("input_size", hp.get(features.HP_INPUT_SIZE))
    row.phase1_learning_rate = info.get("phase1_learning_rate", hp.get(features.HP_LEARNING_RATE))
    row.phase2_learning_rate = info.get("phase2_learning_rate")
    row.phase1_epochs = info.get("phase1_epochs")
    row.phase2_epochs = info.get("phase2_epochs")
    row.training_seconds = info.get("training_seconds")


def _fill_evaluation(row: VersionRow, evaluation_uri: str) -> None:
    from tlpipe.components.evaluator import verdict

    row.evaluation_uri = evaluation_uri
    row.metrics = verdict.load_metrics(evaluation_uri).get(verdict.OVERALL, {}).get("candidate", {})
    row.confusion_matrix = verdict.confusion_matrix(evaluation_uri, len(row.class_names))
    row.per_class = verdict.per_class_scores(row.confusion_matrix, row.class_names,
                                             verdict.class_metrics(evaluation_uri))


def _local_time(stamp: str | None) -> str | None:
    """metadata.json's pushed_at (ISO with offset) in the table's local format."""
    if not stamp:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").astimezone().strftime(TIME_FORMAT)


def _mlmd_rows(config: PipelineConfig) -> list[VersionRow]:
    """A row per Model the trainer node produced, with its latest evaluation as candidate."""
    from tlpipe.components.pusher.component import SERVING_SUBDIR
    from tlpipe.pipeline.lineage import INPUT, OUTPUT, Lineage, custom_property

    lineage = Lineage.open(config)
    if lineage is None:
        return []
    rows = []
    for model in lineage.node_artifacts("trainer", "Model"):
        row = VersionRow(key=f"m{model.id}", model_id=model.id, model_uri=model.uri,
                         created=datetime.fromtimestamp(
                             model.create_time_since_epoch / 1000).strftime(TIME_FORMAT))
        _fill_model_info(row, os.path.join(model.uri, SERVING_SUBDIR))

        def first(execution_id: int, kind: int, key: str):
            found = lineage.artifacts(execution_id, kind, key)
            return found[0] if found else None

        model_run = first(min(lineage.producers(model.id)), OUTPUT, "model_run")
        if model_run is not None:
            row.history = _read_json(os.path.join(
                model_run.uri, features.TRAINING_SUMMARY_FILE)).get("history", {})
        row.blessed = lineage.is_blessed(model.id)
        evaluations = [(e, first(e, OUTPUT, "evaluation")) for e in lineage.readers(model.id, "model")]
        latest = next(((e, ev) for e, ev in reversed(evaluations)
                       if ev is not None and storage.exists(ev.uri)), None)
        if latest is not None:
            examples = first(latest[0], INPUT, "examples")
            if examples is not None:
                row.examples_uri = examples.uri
                row.data_span = custom_property(examples, "span")
            _fill_evaluation(row, latest[1].uri)
        rows.append(row)
    return rows


def gather(config: PipelineConfig, model_name: str | None = None) -> list[VersionRow]:
    """Every trained version: ML Metadata's models joined with the serving directory."""
    from tlpipe.serving import layout

    model_dir = storage.join(config.serving_base, model_name or config.model_name)
    rows = _mlmd_rows(config)
    by_uri = {row.model_uri: row for row in rows}
    labels: dict[int, list[str]] = {}
    for label, number in sorted(serving_labels(model_dir).items()):
        labels.setdefault(number, []).append(label)
    for version in layout.versions(model_dir):
        meta = version.metadata
        row = by_uri.get(meta.get("source_model_uri"))
        if row is None:  # pushed from elsewhere: what metadata.json and the files say
            row = VersionRow(key=str(version.number), created=_local_time(meta.get("pushed_at")),
                             data_span=meta.get("data_span"),
                             blessed=meta.get("verdict", {}).get("blessed"))
            _fill_model_info(row, version.path)
            if meta.get("evaluation_uri") and storage.exists(meta["evaluation_uri"]):
                _fill_evaluation(row, meta["evaluation_uri"])
            rows.append(row)
        row.key, row.version, row.pushed = str(version.number), version.number, True
        row.saved_model_dir = version.path
        row.forced = "forced" in meta
        row.labels = labels.get(version.number, [])
    return sorted(rows, key=lambda r: (r.created or "", r.model_id or 0))


def select(rows: list[VersionRow], keys: list[str] | None) -> list[VersionRow]:
    """The rows named by `--versions` (serving versions, or m<id> for ML Metadata models)."""
    if not keys:
        return rows
    by_key = {row.key: row for row in rows}
    by_key.update({f"m{row.model_id}": row for row in rows if row.model_id is not None})
    missing = [k for k in keys if k not in by_key]
    if missing:
        known = ", ".join(row.key for row in rows) or "none"
        raise CompareError(f"unknown version(s) {', '.join(missing)} (known: {known})")
    return [by_key[k] for k in keys]


# ---------------------------------------------------------------- head to head

def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs as a Binomial(n, 1/2) test."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _held_out_examples(examples_uri: str) -> tuple[str, list[bytes]]:
    """The split the gate used (test), or eval for runs older than the test split."""
    import tensorflow as tf

    for split in (features.TEST_SPLIT, features.EVAL_SPLIT):
        files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
        if files:
            return split, [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    raise CompareError(f"no test or eval examples under {examples_uri}")


def predict_classes(saved_model_dir: str, records: list[bytes], batch: int = 64) -> list[str]:
    """Predicted class names of serialized tf.Examples through the `serving_examples`
    signature (the one TFMA evaluated)."""
    import numpy as np
    import tensorflow as tf

    signature = tf.saved_model.load(saved_model_dir).signatures[features.EXAMPLES_SIGNATURE]
    [input_name] = signature.structured_input_signature[1]
    names = _read_json(os.path.join(saved_model_dir, features.MODEL_INFO_FILE))["class_names"]
    predicted: list[str] = []
    for start in range(0, len(records), batch):
        out = signature(**{input_name: tf.constant(records[start:start + batch])})
        predicted.extend(names[i] for i in np.argmax(out[features.PROBABILITIES_KEY].numpy(), 1))
    return predicted


def paired_test(a: VersionRow, b: VersionRow) -> dict[str, Any]:
    """McNemar's exact test of a vs b on the test examples of b's run (else a's)."""
    import tensorflow as tf

    examples_uri = b.examples_uri or a.examples_uri
    if not examples_uri:
        return {"skipped": "no examples in ML Metadata for either version"}
    split, records = _held_out_examples(examples_uri)
    truth = [tf.train.Example.FromString(r).features.feature[features.LABEL_NAME_KEY]
             .bytes_list.value[0].decode() for r in records]
    right_a = [p == t for p, t in zip(predict_classes(a.saved_model_dir, records), truth)]
    right_b = [p == t for p, t in zip(predict_classes(b.saved_model_dir, records), truth)]
    only_a = sum(x and not y for x, y in zip(right_a, right_b))
    only_b = sum(y and not x for x, y in zip(right_a, right_b))
    p_value = mcnemar_exact(only_a, only_b)
    return {"test": "McNemar exact (two-sided binomial on discordant pairs)",
            "examples": len(records), "examples_uri": examples_uri, "split": split,
            "accuracy_a": sum(right_a) / len(records), "accuracy_b": sum(right_b) / len(records),
            "both_right": sum(x and y for x, y in zip(right_a, right_b)),
            "both_wrong": sum(not x and not y for x, y in zip(right_a, right_b)),
            "only_a_right": only_a, "only_b_right": only_b, "p_value": p_value,
            "significant": p_value < SIGNIFICANCE, "alpha": SIGNIFICANCE}


def head_to_head(a: VersionRow, b: VersionRow, paired: bool = True) -> dict[str, Any]:
    """b minus a, per metric and per class, and the paired test of their accuracy."""
    def deltas(x: dict, y: dict) -> dict[str, float]:
        return {k: y[k] - x[k] for k in sorted(set(x) & set(y))
                if isinstance(x[k], (int, float)) and isinstance(y[k], (int, float))}

    return {"a": a.key, "b": b.key,
            "metrics": {k: {"a": a.metrics[k], "b": b.metrics[k], "delta": d}
                        for k, d in deltas(a.metrics, b.metrics).items()},
            "per_class": {name: deltas(a.per_class[name], b.per_class[name])
                          for name in b.class_names if name in a.per_class and name in b.per_class},
            "paired_test": paired_test(a, b) if paired else {"skipped": "not requested"}}
