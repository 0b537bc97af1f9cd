"""Node events from a real LocalDagRunner run (a two-node pipeline, seconds): a resolver that
finds nothing, a node that runs, the same node cached, a node that fails; and the events file
as the scheduler follows it."""

import os

import pytest
from tfx import v1 as tfx
from tlpipe.pipeline.events import (
    CACHED,
    COMPLETE,
    EMPTY,
    FAILED,
    STARTED,
    Event,
    EventFollower,
    EventWriter,
)
from tlpipe.pipeline.local_runner import observed_nodes, progress_line


@tfx.dsl.components.component
def Produce(out: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
            fail: tfx.dsl.components.Parameter[int] = 0):
    if fail:
        raise ValueError("asked to fail")
    with open(os.path.join(out.uri, "data.txt"), "w") as fh:
        fh.write("x")


def _run(tmp_path, fail: int = 0) -> list[Event]:
    produce = Produce(fail=fail).with_id("produce")
    latest = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                 producer_component_id="produce", output_key="out"),
    ).with_id("latest_examples")
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="events", pipeline_root=str(tmp_path / "root"), components=[latest, produce],
        enable_cache=True, metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(str(tmp_path / "metadata.sqlite")))
    events: list[Event] = []
    with observed_nodes(events.append, str(tmp_path / "run.lock")):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return events


@pytest.mark.e2e  # a real (two-node) LocalDagRunner run
def test_node_events_carry_the_state_ml_metadata_recorded(tmp_path):
    first = _run(tmp_path)
    assert [(e.node, e.state) for e in first] == [
        ("latest_examples", STARTED), ("latest_examples", EMPTY),
        ("produce", STARTED), ("produce", COMPLETE)]
    assert all(e.execution_id for e in first if e.ended) and first[3].seconds > 0
    again = _run(tmp_path)
    assert [(e.node, e.state) for e in again if e.ended] == [
        ("latest_examples", COMPLETE), ("produce", CACHED)]
    assert all(e.ok for e in again if e.ended)
    from tfx.orchestration.portable import launcher

    assert launcher.Launcher.__name__ == "Launcher"  # TFX's own again after the run


@pytest.mark.e2e  # a real (two-node) LocalDagRunner run
def test_a_failed_node_is_reported_before_the_run_raises(tmp_path):
    seen: list[Event] = []
    produce = Produce(fail=1).with_id("produce")
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="events", pipeline_root=str(tmp_path / "root"), components=[produce],
        metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(str(tmp_path / "metadata.sqlite")))
    with pytest.raises(Exception, match="asked to fail"), observed_nodes(seen.append, str(tmp_path / "run.lock")):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    assert [(e.node, e.state) for e in seen] == [("produce", STARTED), ("produce", FAILED)]
    assert "asked to fail" in seen[1].detail and not seen[1].ok


def test_the_events_file_is_followed_line_by_line(tmp_path):
    path = str(tmp_path / "run.events.jsonl")
    follower = EventFollower(path)
    assert follower.poll() == []  # not written yet
    shown = []
    writer = EventWriter(path, [lambda e: shown.append(progress_line(e, "run.log"))])
    writer.emit(Event(STARTED, "trainer", at=1.0))
    writer.emit(Event(CACHED, "trainer", 2.5, 7, at=2.0))
    with open(path, "a") as fh:
        fh.write('{"state": "RUNNING", "no')  # a line still being written
    assert follower.poll() == [Event(STARTED, "trainer", at=1.0), Event(CACHED, "trainer", 2.5, 7, at=2.0)]
    with open(path, "a") as fh:
        fh.write('de": "evaluator", "at": 3.0}\n')
    assert follower.poll() == [Event(STARTED, "evaluator", at=3.0)]
    assert shown == ["  trainer                running ...",
                     "  trainer                CACHED        2.5s  (reused from an earlier run)"]
