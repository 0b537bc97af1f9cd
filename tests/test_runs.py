"""`tlpipe runs` and `tlpipe run --if-new-data` on a small ML Metadata history written here the
way TFX writes it (the real history is checked by the scheduler simulation in
test_schedule.py), and the span listing on disk."""
from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import tlpipe
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb
from tlpipe.components.config_loading import load_config
from tlpipe.pipeline.runs import (
    NO_NEW_DATA,
    history_lines,
    last_complete_run,
    latest_span_on_disk,
    new_data_check,
    run_history,
)


def _history(work: Path, runs: list[tuple[str, int, dict[str, str]]]) -> None:
    """One pipeline_run context per (run id, span, {node: state}), with node contexts, the
    ingest's Examples (its `span`) and the trainer reading a HyperParameters artifact that the
    first run's tuner wrote."""
    config = load_config(work_dir=str(work))
    work.mkdir(parents=True, exist_ok=True)
    conn = pb.ConnectionConfig()
    conn.sqlite.filename_uri = config.metadata_path
    conn.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(conn)
    run_type = store.put_context_type(pb.ContextType(name="pipeline_run"))
    node_type = store.put_context_type(pb.ContextType(name="node"))
    examples_type = store.put_artifact_type(pb.ArtifactType(name="Examples"))
    hp_type = store.put_artifact_type(pb.ArtifactType(name="HyperParameters"))
    nodes = {}
    hyperparameters = None
    for run_id, span, states in runs:
        [run_ctx] = store.put_contexts([pb.Context(type_id=run_type, name=run_id)])
        for node, state in states.items():
            if node not in nodes:
                [nodes[node]] = store.put_contexts(
                    [pb.Context(type_id=node_type, name=f"{config.pipeline_name}.{node}")])
            exec_type = store.put_execution_type(pb.ExecutionType(name=node))
            execution = pb.Execution(type_id=exec_type,
                                     last_known_state=pb.Execution.State.Value(state))
            events = []
            if node == "ingest":
                artifact = pb.Artifact(type_id=examples_type, uri=str(work / run_id))
                artifact.custom_properties["span"].int_value = span
                events.append((artifact, pb.Event(type=pb.Event.OUTPUT)))
            elif node == "tuner":
                hyperparameters = pb.Artifact(type_id=hp_type, uri=str(work / "hp"))
                events.append((hyperparameters, pb.Event(type=pb.Event.OUTPUT)))
            elif node == "trainer" and hyperparameters is not None:
                events.append((hyperparameters, pb.Event(type=pb.Event.INPUT)))
            contexts = [store.get_contexts_by_id([run_ctx])[0],
                        store.get_contexts_by_id([nodes[node]])[0]]
            _, artifact_ids, _ = store.put_execution(execution, events, contexts)
            if node == "tuner":
                hyperparameters.id = artifact_ids[0]
        time.sleep(0.01)  # distinct creation times


WHOLE = {"ingest": "COMPLETE", "tuner": "COMPLETE", "trainer": "COMPLETE",
         "evaluator": "COMPLETE", "pusher": "COMPLETE"}


def _spans(root: Path, *spans: str) -> Path:
    for span in spans:
        for label in ("a", "b"):
            (root / span / label).mkdir(parents=True)
            (root / span / label / "1.jpg").write_bytes(b"x")
    return root


def test_latest_span_on_disk(tmp_path):
    root = _spans(tmp_path / "d", "span-1", "span-2", "span-10", "other-99")
    assert latest_span_on_disk(str(root), "span-{SPAN}/*/*") == 10
    assert latest_span_on_disk(str(root), "*/*") is None
    assert latest_span_on_disk(str(root), "sp*-{SPAN}/*/*") == 10
    width = _spans(tmp_path / "w", "day-03", "day-7")
    assert latest_span_on_disk(str(width), "day-{SPAN:2}/*/*") == 3
    assert latest_span_on_disk(str(tmp_path / "empty"), "span-{SPAN}/*/*") is None


def test_history_status_span_and_hyperparameter_source(tmp_path):
    _history(tmp_path, [
        ("r1", 1, WHOLE),
        ("r2", 2, {**WHOLE, "tuner": "CACHED", "trainer": "FAILED"}),
        ("r3", 2, {"ingest": "CACHED", "trainer": "COMPLETE"}),  # hyperparameters reused
        ("r4", 2, {"ingest": "COMPLETE"}),  # `--to ingest`
        ("r5", 3, {"ingest": "COMPLETE", "tuner": "RUNNING"}),  # killed, or still running
    ])
    config = load_config(work_dir=str(tmp_path))
    records = run_history(config)
    assert [(r.run_id, r.status, r.span, r.hyperparameters_source) for r in records] == [
        ("r1", "complete", 1, "tuned"), ("r2", "failed", 2, "reused"),
        ("r3", "partial", 2, "reused"), ("r4", "partial", 2, None),
        ("r5", "incomplete", 3, None)]
    assert last_complete_run(config).run_id == "r1"
    assert [r.run_id for r in run_history(config, last=2)] == ["r4", "r5"]
    lines = history_lines(records)
    assert lines[0].split()[:4] == ["start", "duration", "status", "span"]
    assert lines[1].split()[3:5] == ["complete", "1"] and "tuned: " in lines[1]


def test_new_data_check_compares_the_latest_span_with_the_last_complete_run(tmp_path):
    data = _spans(tmp_path / "data", "span-1")
    config = load_config(None, ["data.pattern=span-{SPAN}/*/*"], work_dir=str(tmp_path / "w"))
    assert new_data_check(config, str(data)) == (True, "span 1 on disk, no complete run yet")
    _history(tmp_path / "w", [("r1", 1, WHOLE), ("r2", 2, {**WHOLE, "pusher": "FAILED"})])
    run, why = new_data_check(config, str(data))
    assert not run and "already ingested span 1" in why
    _spans(data, "span-2")  # the failed run's span is still new
    assert new_data_check(config, str(data))[0]
    folder = load_config(None, [], work_dir=str(tmp_path / "w"))
    assert new_data_check(folder, str(data / "span-1"))[0]  # no {SPAN}: the run decides


def test_run_if_new_data_exits_at_once_when_nothing_arrived(tmp_path, tiny_images):
    data = tmp_path / "data"
    (data / "span-4").mkdir(parents=True)
    for label in ("class_a", "class_b"):
        (data / "span-4" / label).symlink_to(tiny_images / label)
    _history(tmp_path / "w", [("r1", 4, WHOLE)])
    started = time.time()
    result = tlpipe("run", "--if-new-data", "--data", str(data), "--work-dir",
                    str(tmp_path / "w"), "--set", "data.pattern=span-{SPAN}/*/*")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{NO_NEW_DATA} latest span on disk is 4; the last "
                                    f"complete run (r1) already ingested span 4")
    assert not (tmp_path / "w" / "pipeline").exists()
    assert time.time() - started < 30  # no TensorFlow import, no pipeline


def test_runs_command(tmp_path, tlpipe_in_process):
    """The empty listing in a real child (no store: no TensorFlow import, well under a second);
    the listing of a store in this process, through the same main() (its artifact checks go
    through tf.io.gfile: a child would spend ~8 s of CPU importing TensorFlow)."""
    empty = tlpipe("runs", "--work-dir", str(tmp_path))
    assert empty.returncode == 0 and "no runs recorded" in empty.stdout
    _history(tmp_path, [("r1", 1, WHOLE)])
    listed = tlpipe_in_process("runs", "--work-dir", str(tmp_path), "--json")
    assert listed.returncode == 0, listed.stderr
    [run] = json.loads(listed.stdout)
    assert (run["run_id"], run["status"], run["span"]) == ("r1", "complete", 1)
