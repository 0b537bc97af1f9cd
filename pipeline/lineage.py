"""The one reader of ML Metadata: runs, a node's executions, what an execution read or wrote,
and the models an evaluation blessed. The run summary, `tlpipe runs`, the re-tune decision,
`tlpipe promote` and `tlpipe compare` ask it instead of querying the store each their own way.

TFX records one `pipeline_run` context per run and one `node` context per node, named
`<pipeline name>.<node id>`; events carry the output key in their path (`model`, `blessing`...).
A SQLite store is opened read-only unless the caller asks to write: only the clean-up of
abandoned executions does (pipeline/abandoned.py).

`connection_config` is the one place the config's `metadata` section becomes ML Metadata's
ConnectionConfig (SQLite file or MySQL/MariaDB server); the pipeline and every reader use it.
"""
from __future__ import annotations

import json
import os
from typing import Any

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd
from tlpipe.components.config import PipelineConfig
from tlpipe.pipeline.events import CACHED, COMPLETE

OK_STATES = (COMPLETE, CACHED)  # an execution that produced (or reused) its outputs
UNFINISHED = (mlmd.Execution.NEW, mlmd.Execution.RUNNING)  # running, or left so by a dead process
RUN_CONTEXT = "pipeline_run"  # TFX's context type of one run
RUN_OWNER = "tlpipe_owner"  # on a run's context: the process running it (JSON, pipeline/abandoned.py)
ABANDONED = "tlpipe_abandoned"  # on an execution a dead process left unfinished: why it was marked
INPUT, OUTPUT = mlmd.Event.INPUT, mlmd.Event.OUTPUT
_STATE_NAMES = {v: k for k, v in mlmd.Execution.State.items()}


def connection_config(config: PipelineConfig, read_only: bool = False) -> mlmd.ConnectionConfig:
    """ML Metadata's connection to the configured store. The MySQL password is read from the
    environment variable the config names, here and only here; it lives in this proto, which
    tlpipe never prints (messages use `config.metadata_description`)."""
    conn = mlmd.ConnectionConfig()
    mysql = config.metadata.mysql
    if mysql is None:
        if not read_only:
            os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
        conn.sqlite.filename_uri = config.metadata_path
        conn.sqlite.connection_mode = (mlmd.SqliteMetadataSourceConfig.READONLY if read_only else
                                       mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
        return conn
    conn.mysql.host = mysql.host
    conn.mysql.port = mysql.port
    if mysql.socket:
        conn.mysql.socket = mysql.socket
    conn.mysql.database = mysql.database
    conn.mysql.user = mysql.user
    conn.mysql.password = mysql.password()
    return conn


def execution_state(execution) -> str:
    """COMPLETE, CACHED, FAILED, RUNNING, ... (the name of the execution's last known state)."""
    return _STATE_NAMES.get(execution.last_known_state, str(execution.last_known_state))


def custom_property(artifact, name: str) -> Any:
    """A custom property's value whatever its kind (int, double, string); None when absent."""
    value = artifact.custom_properties.get(name)
    if value is None:
        return None
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _event_keys(event) -> set[str]:
    return {step.key for step in event.path.steps if step.HasField("key")}


class Lineage:
    """One pipeline's record in its ML Metadata store."""

    def __init__(self, store: metadata_store.MetadataStore, pipeline_name: str):
        self.store, self.pipeline_name = store, pipeline_name

    @classmethod
    def open(cls, config: PipelineConfig, writable: bool = False) -> Lineage | None:
        """The config's store (a SQLite one read-only unless `writable`); None when no run has
        written one yet."""
        if config.metadata_path is not None and not os.path.exists(config.metadata_path):
            return None
        return cls(metadata_store.MetadataStore(connection_config(config, read_only=not writable)),
                   config.pipeline_name)

    # Runs and nodes

    def runs(self) -> list:
        """Every pipeline run's context, oldest first."""
        return sorted(self.store.get_contexts_by_type(RUN_CONTEXT),
                      key=lambda c: (c.create_time_since_epoch, c.id))

    def run_executions(self, run) -> list[tuple[str, Any]]:
        """(node id, execution) of one run, in execution order; resolvers that found nothing
        record a FAILED execution, the ones that found something a COMPLETE one."""
        prefix = self.pipeline_name + "."
        out = []
        for execution in sorted(self.store.get_executions_by_context(run.id), key=lambda e: e.id):
            node = next((c.name[len(prefix):] for c in self.store.get_contexts_by_execution(
                execution.id) if c.name.startswith(prefix)), "?")
            out.append((node, execution))
        return out

    def unfinished_executions(self) -> list[tuple[Any, str, Any]]:
        """(run context, node id, execution) of each of this pipeline's executions still NEW or
        RUNNING, oldest first: running now, or left so by a process that died."""
        unfinished = [e for e in self.store.get_executions() if e.last_known_state in UNFINISHED]
        if not unfinished:
            return []
        runs = {c.id: c for c in self.runs()}
        prefix = self.pipeline_name + "."
        out = []
        for execution in sorted(unfinished, key=lambda e: e.id):
            contexts = self.store.get_contexts_by_execution(execution.id)
            run = next((runs[c.id] for c in contexts if c.id in runs), None)
            node = next((c.name[len(prefix):] for c in contexts if c.name.startswith(prefix)), None)
            if run is not None and node is not None:
                out.append((run, node, execution))
        return out

    @staticmethod
    def run_owner(run) -> dict | None:
        """The process that ran a run, as the runner recorded it; None for runs it did not."""
        try:
            owner = json.loads(custom_property(run, RUN_OWNER) or "null")
        except ValueError:
            return None
        return owner if isinstance(owner, dict) else None

    @staticmethod
    def abandoned_reason(execution) -> str | None:
        """Why an execution was marked abandoned (None: it was not)."""
        return custom_property(execution, ABANDONED)

    def node_executions(self, node: str) -> list:
        """Every execution of one node across runs, oldest first."""
        context = self._node_context(node)
        if context is None:
            return []
        return sorted(self.store.get_executions_by_context(context.id), key=lambda e: e.id)

    def runs_of(self, execution) -> list[int]:
        """The ids of the run contexts an execution belongs to."""
        run_ids = {c.id for c in self.runs()}
        return [c.id for c in self.store.get_contexts_by_execution(execution.id) if c.id in run_ids]

    def _node_context(self, node: str):
        return self.store.get_context_by_type_and_name("node", f"{self.pipeline_name}.{node}")

    # Artifacts

    def artifacts(self, execution_id: int, kind: int, key: str | None = None) -> list:
        """What an execution read (`INPUT`) or wrote (`OUTPUT`), under one key when given."""
        ids = [e.artifact_id for e in self.store.get_events_by_execution_ids([execution_id])
               if e.type == kind and (key is None or key in _event_keys(e))]
        return self.store.get_artifacts_by_id(ids) if ids else []

    def producers(self, artifact_id: int) -> set[int]:
        """The ids of the executions that wrote an artifact (a cached execution writes none)."""
        return {e.execution_id for e in self.store.get_events_by_artifact_ids([artifact_id])
                if e.type == OUTPUT}

    def readers(self, artifact_id: int, key: str) -> list[int]:
        """The ids of the executions that read an artifact under `key`, oldest first."""
        return sorted({e.execution_id for e in self.store.get_events_by_artifact_ids([artifact_id])
                       if e.type == INPUT and key in _event_keys(e)})

    def node_artifacts(self, node: str, type_name: str, live_only: bool = False) -> list:
        """One node's artifacts of one type, oldest first (Transform's examples share the
        Examples type with ingest's, hence by node)."""
        context = self._node_context(node)
        if context is None:
            return []
        type_id = self.store.get_artifact_type(type_name).id
        return sorted((a for a in self.store.get_artifacts_by_context(context.id)
                       if a.type_id == type_id
                       and (not live_only or a.state == mlmd.Artifact.LIVE)), key=lambda a: a.id)

    def live_artifacts(self, type_name: str) -> list:
        """Every live artifact of one type, oldest first."""
        return sorted((a for a in self.store.get_artifacts_by_type(type_name)
                       if a.state == mlmd.Artifact.LIVE), key=lambda a: a.id)

    def is_blessed(self, model_id: int) -> bool | None:
        """Whether an evaluation blessed this model (None: no evaluation read it)."""
        evaluations = self.readers(model_id, "model")
        if not evaluations:
            return None
        return any(bool(custom_property(b, "blessed"))
                   for e in evaluations for b in self.artifacts(e, OUTPUT, "blessing"))
