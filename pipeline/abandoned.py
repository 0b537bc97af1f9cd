"""Executions a dead process left RUNNING: found and healed when `tlpipe run` starts.

A `tlpipe run` killed with kill -9 (or by the OOM killer, or a power cut) cannot tell ML Metadata
that its execution ended: the execution stays RUNNING for ever and the folders its executor was
writing stay behind. TFX 1.21's LocalDagRunner records no process with a run, so the runner
writes its own (`record_run_owner`: pid, host, process start, the run lock it ran under, the
pipeline root) into the run's `pipeline_run` context before the run's first node starts.

`abandon_dead_runs`, called by `tlpipe run` while it holds the work dir's run lock and before
the DAG starts, marks each NEW/RUNNING execution whose run's process is known to be gone: on
this host, its pid is no longer that process; on another host, it ran under the very lock we now
hold. The execution becomes CANCELED (a state TFX's cache never reuses) with a custom property
saying why, its unpublished outputs are deleted and any PENDING output artifact is marked
ABANDONED. A run without an owner record (an older tlpipe, or another orchestrator sharing the
store) and a run whose process is alive are left as they are.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
from dataclasses import dataclass, field

from ml_metadata.proto import metadata_store_pb2 as mlmd
from tlpipe.components import storage
from tlpipe.components.config import PipelineConfig
from tlpipe.pipeline.lineage import ABANDONED, OUTPUT, RUN_CONTEXT, RUN_OWNER, Lineage
from tlpipe.pipeline.work_dir_lock import describe

# TFX's layout of a node's folder (tfx/orchestration/portable/outputs_utils.py): each output at
# `<node>/<key>/<execution id>`, the executor's output and temp files under `.system`. (Its
# `.system/stateful_working_dir/<uuid>` is left: TFX 1.21 does not record which execution's it is,
# and it stays empty for tlpipe's components.)
_SYSTEM = ".system"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a TFX node id
_EXECUTOR_DIR = "executor_execution"


def _process_identity(pid: int) -> str:
    """`<boot id>/<start tick>` of a live process on Linux ('' elsewhere, or when it is gone): a pid
    reused by another process after a reboot or a wrap-around has another identity."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return ""
    return f"{boot}/{stat.rpartition(')')[2].split()[19]}"  # field 22: start time in clock ticks


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def this_process(lock_path: str, pipeline_root: str) -> dict:
    """The owner record of a run this process starts."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process": _process_identity(pid),
            "started": dt.datetime.now().isoformat(timespec="seconds"), "lock": lock_path,
            "pipeline_root": pipeline_root}


def record_run_owner(mlmd_handle, pipeline_node, run_id: str, owner: dict) -> None:
    """Writes `owner` into the run's pipeline_run context. Called before TFX's launcher prepares
    the first node's contexts: TFX's own `prepare_contexts` creates them (with their parent links)
    exactly as the launcher would, which then finds them there."""
    from tfx.orchestration.portable.mlmd import context_lib

    store = mlmd_handle.store
    contexts = context_lib.prepare_contexts(mlmd_handle, pipeline_node.contexts)
    run_type = store.get_context_type(RUN_CONTEXT).id
    [run] = [c for c in contexts if c.type_id == run_type and c.name == run_id]
    run.custom_properties[RUN_OWNER].string_value = json.dumps(owner, sort_keys=True)
    store.put_contexts([run])


def why_gone(owner: dict | None, held_lock: str) -> str | None:
    """Why the process of a run is known to be gone (we hold `held_lock`); None when it may be
    alive or nothing says which process it was."""
    if not owner or not isinstance(owner.get("pid"), int):
        return None
    who = describe(owner)
    if owner.get("host") == socket.gethostname():
        pid, identity = owner["pid"], owner.get("process") or ""
        if _pid_alive(pid) and (not identity or _process_identity(pid) in ("", identity)):
            return None
        return f"its process ({who}) is no longer running"
    if owner.get("lock") == held_lock:
        return f"its process ({who}) no longer holds the run lock {held_lock}"
    return None  # another host, another lock: its liveness cannot be known from here


@dataclass
class AbandonedExecution:
    run_id: str
    node: str
    execution_id: int
    reason: str
    removed: list[str] = field(default_factory=list)

    def line(self) -> str:
        removed = f"; removed {len(self.removed)} partial output(s)" if self.removed else ""
        return (f"tlpipe: marked {self.node} (execution {self.execution_id}) of run {self.run_id} "
                f"abandoned: {self.reason}{removed}")


def _partial_outputs(lineage: Lineage, node: str, execution, pending: list,
                     pipeline_root: str | None) -> list[str]:
    """What the execution was writing: its `pending` output artifacts' URIs and, under TFX's node
    folder layout, its `<key>/<id>` outputs (TFX 1.21 registers outputs only when an execution
    succeeds) and its `.system` folder. A path a LIVE artifact points at is never included."""
    paths = [a.uri for a in pending if a.uri]
    if pipeline_root and _PLAIN_NAME.fullmatch(node) and node not in (".", ".."):  # never a path out of the root
        node_dir = storage.join(pipeline_root, node)
        outputs = storage.glob(storage.join(node_dir, "*", str(execution.id)))
        paths += [p for p in outputs if p.rstrip("/").rsplit("/", 2)[-2] != _SYSTEM]
        paths.append(storage.join(node_dir, _SYSTEM, _EXECUTOR_DIR, str(execution.id)))
    live = {a.uri for p in paths for a in lineage.store.get_artifacts_by_uri(p)
            if a.state == mlmd.Artifact.LIVE}
    return [p for p in dict.fromkeys(paths) if p not in live and storage.exists(p)]


def abandon_dead_runs(config: PipelineConfig, held_lock: str) -> list[AbandonedExecution]:
    """Marks and cleans the executions left unfinished by dead processes (see the module doc).
    The caller holds the run lock `held_lock`, so no tlpipe run of this work dir is starting."""
    lineage = Lineage.open(config, writable=True)
    if lineage is None:
        return []
    marked = []
    for run, node, execution in lineage.unfinished_executions():
        owner = lineage.run_owner(run)
        reason = why_gone(owner, held_lock)
        if reason is None:
            continue
        pending = [a for a in lineage.artifacts(execution.id, OUTPUT) if a.state == mlmd.Artifact.PENDING]
        removed = _partial_outputs(lineage, node, execution, pending, owner.get("pipeline_root"))
        for path in removed:  # before marking: a clean-up cut short is found again next time
            storage.remove_tree(path)
        for artifact in pending:
            artifact.state = mlmd.Artifact.ABANDONED
        if pending:
            lineage.store.put_artifacts(pending)
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        execution.last_known_state = mlmd.Execution.CANCELED
        execution.custom_properties[ABANDONED].string_value = f"{reason} (found {stamp})"
        lineage.store.put_executions([execution])
        marked.append(AbandonedExecution(run.name, node, execution.id, reason, removed))
    return marked
