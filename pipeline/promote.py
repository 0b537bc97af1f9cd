"""`tlpipe promote`: the rare forced release of a model the gate did not bless (tfx#4390).

It goes through the same serving layout as the pusher (atomic, next integer version, warmup),
and metadata.json records that it was forced, by whom and why, so nobody mistakes it for a
gated push.
"""
from __future__ import annotations

import getpass
import os

from tlpipe.components import features, storage
from tlpipe.components.config import PipelineConfig
from tlpipe.components.errors import UsageError
from tlpipe.pipeline.lineage import Lineage


class PromoteError(UsageError, RuntimeError):
    """Nothing to promote, or a model already serving."""


def _lineage(config: PipelineConfig) -> Lineage:
    lineage = Lineage.open(config)
    if lineage is None:
        raise PromoteError(f"no ML Metadata at {config.metadata_description}: run the pipeline first")
    return lineage


def _latest(candidates: list, type_name: str, artifact_id: int | None = None):
    """The newest of the live artifacts given, or the one with `artifact_id`."""
    if artifact_id is not None:
        candidates = [a for a in candidates if a.id == artifact_id]
        if not candidates:
            raise PromoteError(f"no live {type_name} artifact with id {artifact_id}")
    if not candidates:
        raise PromoteError(f"no {type_name} artifact in ML Metadata yet: run the pipeline first")
    return candidates[-1]


def promote(config: PipelineConfig, reason: str, model_id: int | None = None,
            promoted_by: str | None = None) -> dict:
    from tlpipe.components.pusher.component import SERVING_SUBDIR
    from tlpipe.components.pusher.warmup import warmup_records
    from tlpipe.serving import layout

    if not reason.strip():
        raise PromoteError("a forced release needs --reason")
    lineage = _lineage(config)
    model = _latest(lineage.live_artifacts("Model"), "Model", model_id)
    source = os.path.join(model.uri, SERVING_SUBDIR)
    info = storage.read_json(os.path.join(source, features.MODEL_INFO_FILE))
    existing = layout.find_pushed(config.serving_model_dir, model.uri)
    if existing is not None:
        raise PromoteError(f"model {model.id} is already serving as version {existing.number}")
    # by node: Transform's examples share the Examples type with ingest's
    examples = _latest(lineage.node_artifacts("ingest", "Examples", live_only=True), "Examples")
    eval_files = storage.glob(os.path.join(examples.uri, f"Split-{features.EVAL_SPLIT}", "*"))
    extra = {}
    if config.pusher.warmup_requests > 0 and eval_files:
        extra[features.WARMUP_FILE] = warmup_records(eval_files, config.model_name,
                                                     config.pusher.warmup_requests)
    version = layout.push(source, config.serving_model_dir, {
        "source_model_uri": model.uri, "model_artifact_id": model.id, "base": info["base"],
        "hyperparameters": info["hyperparameters"], "label_vocabulary": info["class_names"],
        "forced": {"promoted_by": promoted_by or getpass.getuser(), "reason": reason},
    }, extra_files=extra)
    return {"version": version.number, "path": version.path, "model_artifact_id": model.id}
