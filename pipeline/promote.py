"""`tlpipe promote`: the rare forced release of a model the gate did not bless (tfx#4390).

It goes through the same serving layout as the pusher (atomic, next integer version, warmup),
and metadata.json records that it was forced, by whom and why, so nobody mistakes it for a
gated push.
"""
from __future__ import annotations

import getpass
import glob
import json
import os

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import features
from components.config import PipelineConfig
from components.errors import UsageError
from pipeline.summary import open_store


class PromoteError(UsageError, RuntimeError):
    """Nothing to promote, or a model already serving."""


def _existing_store(config: PipelineConfig) -> metadata_store.MetadataStore:
    if not os.path.exists(config.metadata_path):
        raise PromoteError(f"no ML Metadata at {config.metadata_path}: run the pipeline first")
    return open_store(config)


def _latest(store, type_name: str, artifact_id: int | None = None,
            node_context: str | None = None):
    """The newest live artifact of a type (of one node's, when given; Transform's examples
    share the Examples type with ingest's)."""
    if node_context:
        context = store.get_context_by_type_and_name("node", node_context)
        candidates = store.get_artifacts_by_context(context.id) if context else []
        type_id = store.get_artifact_type(type_name).id
        candidates = [a for a in candidates if a.type_id == type_id]
    else:
        candidates = store.get_artifacts_by_type(type_name)
    artifacts = [a for a in candidates if a.state == metadata_store_pb2.Artifact.LIVE]
    if artifact_id is not None:
        artifacts = [a for a in artifacts if a.id == artifact_id]
        if not artifacts:
            raise PromoteError(f"no live {type_name} artifact with id {artifact_id}")
    if not artifacts:
        raise PromoteError(f"no {type_name} artifact in ML Metadata yet: run the pipeline first")
    return max(artifacts, key=lambda a: a.id)


def promote(config: PipelineConfig, reason: str, model_id: int | None = None,
            promoted_by: str | None = None) -> dict:
    from components.pusher.component import SERVING_SUBDIR
    from components.pusher.warmup import warmup_records
    from serving import layout

    if not reason.strip():
        raise PromoteError("a forced release needs --reason")
    store = _existing_store(config)
    model = _latest(store, "Model", model_id)
    source = os.path.join(model.uri, SERVING_SUBDIR)
    with open(os.path.join(source, features.MODEL_INFO_FILE)) as fh:
        info = json.load(fh)
    existing = layout.find_pushed(config.serving_model_dir, model.uri)
    if existing is not None:
        raise PromoteError(f"model {model.id} is already serving as version {existing.number}")
    examples = _latest(store, "Examples", node_context=f"{config.pipeline_name}.ingest")
    eval_files = sorted(glob.glob(os.path.join(examples.uri, f"Split-{features.EVAL_SPLIT}", "*")))
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
