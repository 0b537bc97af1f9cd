"""Executions a dead process left RUNNING (issue 19, item 8). Before: a run killed with kill -9
left its execution RUNNING in ML Metadata for ever and its partial output folders behind, and
`tlpipe runs` called it incomplete as if it were still going. Now `tlpipe run` marks such
executions abandoned (CANCELED, with the reason) and deletes what they were writing, before its
DAG starts; a live run's executions are never touched.

The unit tests write a real SQLite store the way TFX 1.21 writes one for a killed node (its
outputs are not registered until it succeeds; a newer TFX registers them PENDING: both are
covered), with a real process killed with SIGKILL as the owner. The e2e test kills a real
LocalDagRunner run."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, tlpipe
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb
from tlpipe.components.config_loading import load_config
from tlpipe.pipeline.abandoned import _process_identity, abandon_dead_runs, this_process, why_gone
from tlpipe.pipeline.lineage import ABANDONED, RUN_OWNER, Lineage, connection_config
from tlpipe.pipeline.runs import history_lines, run_history
from tlpipe.pipeline.work_dir_lock import WorkDirLock, lock_path


def _killed_process() -> dict:
    """The owner record of a real process that was killed with kill -9."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        identity = _process_identity(child.pid)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return {"pid": child.pid, "host": socket.gethostname(), "process": identity,
            "started": "2026-01-01T00:00:00"}


class _Store:
    """A store as TFX writes it: pipeline, run and node contexts, executions in both."""

    def __init__(self, config):
        self.config = config
        Path(config.metadata_path).parent.mkdir(parents=True, exist_ok=True)
        conn = pb.ConnectionConfig()
        conn.sqlite.filename_uri = config.metadata_path
        conn.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(conn)
        self.run_type = self.store.put_context_type(pb.ContextType(name="pipeline_run"))
        self.node_type = self.store.put_context_type(pb.ContextType(name="node"))
        self.examples = self.store.put_artifact_type(pb.ArtifactType(name="Examples"))

    def run(self, name: str, owner: dict | None):
        context = pb.Context(type_id=self.run_type, name=name)
        if owner is not None:
            context.custom_properties[RUN_OWNER].string_value = json.dumps(owner)
        [context.id] = self.store.put_contexts([context])
        return context

    def execute(self, run, node: str, state: str, outputs=()) -> int:
        node_ctx = self.store.get_context_by_type_and_name("node", f"{self.config.pipeline_name}.{node}")
        if node_ctx is None:
            [ctx_id] = self.store.put_contexts([pb.Context(type_id=self.node_type,
                                                           name=f"{self.config.pipeline_name}.{node}")])
            [node_ctx] = self.store.get_contexts_by_id([ctx_id])
        execution = pb.Execution(type_id=self.store.put_execution_type(pb.ExecutionType(name=node)),
                                 last_known_state=pb.Execution.State.Value(state))
        events = []
        for key, artifact in outputs:
            event = pb.Event(type=pb.Event.OUTPUT)
            event.path.steps.add().key = key
            events.append((artifact, event))
        execution_id, _, _ = self.store.put_execution(execution, events, [run, node_ctx])
        time.sleep(0.01)  # distinct creation times
        return execution_id

    def artifact(self, uri: Path, state=pb.Artifact.LIVE) -> pb.Artifact:
        uri.mkdir(parents=True, exist_ok=True)
        (uri / "part-0").write_bytes(b"x")
        return pb.Artifact(type_id=self.examples, uri=str(uri), state=state)


def _killed_transform(work: Path, owner: dict | None, run_name: str = "killed", pending: bool = True):
    """A complete ingest, then a transform left RUNNING by `owner` with the folders TFX 1.21
    leaves (outputs at `<node>/<key>/<id>`, its `.system` folder) and, with `pending`, one PENDING
    output artifact as a TFX that registers outputs up front leaves. Returns (config, store,
    transform execution id, its partial paths, the live paths)."""
    config = load_config(work_dir=str(work))
    root = Path(config.pipeline_root)
    store = _Store(config)
    run = store.run(run_name, None if owner is None else {**owner, "pipeline_root": str(root)})
    live = root / "ingest" / "examples" / "1"
    store.execute(run, "ingest", "COMPLETE", [("examples", store.artifact(live))])
    outputs = [("pending_output", store.artifact(root / "transform" / "pending_output" / "x",
                                                 pb.Artifact.PENDING))] if pending else []
    execution_id = store.execute(run, "transform", "RUNNING", outputs)
    partial = [root / "transform" / "transformed_examples" / str(execution_id),
               root / "transform" / ".system" / "executor_execution" / str(execution_id),
               *(Path(a.uri) for _, a in outputs)]
    for path in partial:
        path.mkdir(parents=True, exist_ok=True)
        (path / "partial.tfrecord").write_bytes(b"half")
    return config, store, execution_id, partial, [live]


@pytest.fixture
def runs_json(tlpipe_in_process):
    """`tlpipe runs --format json`, in this process (a child would spend ~8 s of CPU importing
    TensorFlow; test_runs.py and test_cli.py run `tlpipe runs` as a real child)."""
    def listing(work: Path) -> list[dict]:
        result = tlpipe_in_process("runs", "--work-dir", str(work), "--format", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return listing


def test_a_killed_runs_execution_is_marked_abandoned_and_its_partial_outputs_removed(tmp_path, runs_json):
    work = tmp_path / "work"
    lock = str(lock_path(str(work)))
    config, store, execution_id, partial, live = _killed_transform(work, {**_killed_process(), "lock": lock})
    # The old behaviour's terms: RUNNING, its folders there, and `tlpipe runs` cannot tell.
    [execution] = store.store.get_executions_by_id([execution_id])
    assert execution.last_known_state == pb.Execution.RUNNING and all(p.exists() for p in partial)
    assert [r.status for r in run_history(config)] == ["incomplete"]

    [marked] = abandon_dead_runs(config, lock)

    assert (marked.run_id, marked.node, marked.execution_id) == ("killed", "transform", execution_id)
    assert sorted(marked.removed) == sorted(str(p) for p in partial)
    assert not any(p.exists() for p in partial) and all(p.exists() for p in live)
    [execution] = store.store.get_executions_by_id([execution_id])
    assert execution.last_known_state == pb.Execution.CANCELED
    reason = execution.custom_properties[ABANDONED].string_value
    assert "is no longer running" in reason and "pid " in reason
    [pending] = store.store.get_artifacts_by_uri(str(partial[-1]))
    assert pending.state == pb.Artifact.ABANDONED
    [record] = runs_json(work)
    assert record["status"] == "abandoned" and "is no longer running" in record["abandoned_reason"]
    assert history_lines(run_history(config))[2].split()[:1] == ["abandoned:"]  # the table says why
    assert abandon_dead_runs(config, lock) == []  # healed once


def test_a_live_runs_executions_and_folders_are_left_alone(tmp_path):
    work = tmp_path / "work"
    lock = str(lock_path(str(work)))
    me = this_process(lock, "")  # this test process: alive
    config, store, execution_id, partial, _ = _killed_transform(work, me)
    assert abandon_dead_runs(config, lock) == []
    [execution] = store.store.get_executions_by_id([execution_id])
    assert execution.last_known_state == pb.Execution.RUNNING and ABANDONED not in execution.custom_properties
    assert all(p.exists() for p in partial)
    assert [r.status for r in run_history(config)] == ["incomplete"]


def test_an_unknown_owner_is_left_alone(tmp_path):
    """A run no tlpipe recorded (an older tlpipe, another orchestrator on the same store)."""
    work = tmp_path / "work"
    config, store, execution_id, partial, _ = _killed_transform(work, None)
    assert abandon_dead_runs(config, str(lock_path(str(work)))) == []
    assert store.store.get_executions_by_id([execution_id])[0].last_known_state == pb.Execution.RUNNING
    assert all(p.exists() for p in partial)


def test_liveness_by_pid_process_identity_host_and_lock():
    lock = "/w/run.lock"
    me = this_process(lock, "")
    assert why_gone(me, lock) is None
    assert "no longer running" in why_gone({**_killed_process(), "lock": lock}, lock)
    if me["process"]:  # Linux: a pid now used by another process is not the run's process
        assert "no longer running" in why_gone({**me, "process": me["process"] + "0"}, lock)
    elsewhere = {**me, "host": "other-host"}
    assert "no longer holds the run lock /w/run.lock" in why_gone(elsewhere, lock)  # we hold it
    assert why_gone({**elsewhere, "lock": "/other/run.lock"}, lock) is None  # can't know
    assert why_gone(None, lock) is None and why_gone({"pid": "7"}, lock) is None


def test_tfx_cache_never_reuses_an_abandoned_execution(tmp_path):
    from tfx.orchestration import metadata
    from tfx.orchestration.portable import cache_utils

    work = tmp_path / "work"
    lock = str(lock_path(str(work)))
    # As TFX 1.21 leaves it: no output registered, so only the execution's state keeps the cache off.
    config, store, execution_id, _, _ = _killed_transform(work, {**_killed_process(), "lock": lock},
                                                          pending=False)
    cache_type = store.store.put_context_type(pb.ContextType(name="execution_cache"))
    [cache_id] = store.store.put_contexts([pb.Context(type_id=cache_type, name="transform-inputs")])
    [cache] = store.store.get_contexts_by_id([cache_id])
    store.store.put_attributions_and_associations([], [pb.Association(context_id=cache_id,
                                                                      execution_id=execution_id)])
    abandon_dead_runs(config, lock)
    with metadata.Metadata(connection_config(config)) as handle:
        assert cache_utils.get_cached_outputs(handle, cache) is None
        [execution] = handle.store.get_executions_by_id([execution_id])
        execution.last_known_state = pb.Execution.COMPLETE  # had it been marked so, TFX would reuse it
        handle.store.put_executions([execution])
        assert cache_utils.get_cached_outputs(handle, cache) is not None


def test_tlpipe_run_heals_before_its_dag_starts(tmp_path, tiny_images, runs_json):
    """`tlpipe run` itself does the clean-up, first thing under its lock (here a run that then
    finds no new data, so no DAG runs)."""
    work = tmp_path / "work"
    data = tmp_path / "data"
    shutil.copytree(tiny_images, data / "span-1")
    config, store, execution_id, partial, _ = _killed_transform(
        work, {**_killed_process(), "lock": str(lock_path(str(work)))}, run_name="older")
    done = store.run("done", None)
    examples = store.artifact(Path(config.pipeline_root) / "ingest" / "examples" / "9")
    examples.custom_properties["span"].int_value = 1
    store.execute(done, "ingest", "COMPLETE", [("examples", examples)])
    store.execute(done, "pusher", "COMPLETE")

    result = tlpipe("run", "--if-new-data", "--data", str(data), "--work-dir", str(work),
                    "--set", "data.pattern=span-{SPAN}/*/*")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"tlpipe: marked transform (execution {execution_id}) of run older abandoned: ")
    assert "removed 3 partial output(s)" in lines[0] and "no new data" in lines[1]
    assert not any(p.exists() for p in partial)
    assert [r["status"] for r in runs_json(work)] == ["abandoned", "complete"]


# The real thing: a LocalDagRunner run, killed with kill -9 while its node writes.
_KILLED_RUN = textwrap.dedent("""
    import os, sys, time
    from tfx import v1 as tfx
    from tlpipe.components.config_loading import load_config
    from tlpipe.pipeline.local_runner import observed_nodes
    from tlpipe.pipeline.work_dir_lock import WorkDirLock

    @tfx.dsl.components.component
    def Slow(out: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples]):
        with open(os.path.join(out.uri, "part-0"), "w") as fh:
            fh.write("half")
        print("writing", flush=True)
        time.sleep(600)

    config = load_config(work_dir=sys.argv[1])
    pipeline = tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name, pipeline_root=config.pipeline_root,
        components=[Slow().with_id("transform")],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path))
    with WorkDirLock(config.local_dir, "run") as lock, observed_nodes(lambda e: None, str(lock.path)):
        tfx.orchestration.LocalDagRunner().run(pipeline)
""")


@pytest.mark.e2e  # a real (one-node) LocalDagRunner run, ~15 s
def test_a_real_run_killed_with_sigkill_is_healed(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    child = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(work)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    config = load_config(work_dir=str(work))
    node_dir = Path(config.pipeline_root) / "transform"
    [output] = list((node_dir / "out").iterdir())
    lineage = Lineage.open(config)
    [(run, node, execution)] = lineage.unfinished_executions()  # the old behaviour: RUNNING for ever
    assert lineage.run_owner(run)["pid"] == child.pid and output.name == str(execution.id)
    run_parents = lineage.store.get_parent_contexts_by_context(run.id)
    assert [c.name for c in run_parents] == [config.pipeline_name]  # TFX's links kept

    with WorkDirLock(config.local_dir, "run") as lock:
        [marked] = abandon_dead_runs(config, str(lock.path))

    assert marked.execution_id == execution.id and str(output) in marked.removed
    assert not output.exists() and not (node_dir / ".system" / "executor_execution" / str(execution.id)).exists()
    assert Lineage.open(config).unfinished_executions() == []

