"""The one ML Metadata reader, and the re-tune decision and forced promotion that use it, on a
small store written here the way TFX writes it: run and node contexts, events keyed by the
output name, a blessing per evaluation."""
from __future__ import annotations

import json
import time

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb
from tlpipe.components.config_loading import load_config
from tlpipe.pipeline import retune
from tlpipe.pipeline.lineage import INPUT, OUTPUT, Lineage, execution_state
from tlpipe.pipeline.promote import PromoteError, _latest


class _Writer:
    def __init__(self, config):
        conn = pb.ConnectionConfig()
        conn.sqlite.filename_uri = config.metadata_path
        conn.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(conn)
        self.prefix = config.pipeline_name + "."
        self.run_type = self.store.put_context_type(pb.ContextType(name="pipeline_run"))
        self.node_type = self.store.put_context_type(pb.ContextType(name="node"))
        self.nodes: dict[str, pb.Context] = {}
        self.run = None

    def new_run(self, name):
        [run_id] = self.store.put_contexts([pb.Context(type_id=self.run_type, name=name)])
        self.run = self.store.get_contexts_by_id([run_id])[0]
        time.sleep(0.01)  # distinct creation times

    def artifact(self, type_name, uri, **props) -> pb.Artifact:
        artifact = pb.Artifact(type_id=self.store.put_artifact_type(pb.ArtifactType(name=type_name)),
                               uri=uri, state=props.pop("state", pb.Artifact.LIVE))
        for key, value in props.items():
            artifact.custom_properties[key].int_value = value
        [artifact.id] = self.store.put_artifacts([artifact])
        return artifact

    def execute(self, node, state="COMPLETE", inputs=(), outputs=(), **props) -> int:
        if node not in self.nodes:
            [ctx] = self.store.put_contexts([pb.Context(type_id=self.node_type,
                                                        name=self.prefix + node)])
            self.nodes[node] = self.store.get_contexts_by_id([ctx])[0]
        execution = pb.Execution(type_id=self.store.put_execution_type(pb.ExecutionType(name=node)),
                                 last_known_state=pb.Execution.State.Value(state))
        for key, value in props.items():
            execution.custom_properties[key].string_value = value
        events = []
        for kind, pairs in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
            for key, artifact in pairs:
                event = pb.Event(type=kind)
                event.path.steps.add().key = key
                events.append((artifact, event))
        execution_id, _, _ = self.store.put_execution(execution, events,
                                                      [self.run, self.nodes[node]])
        return execution_id


def _tuning(settings: dict) -> str:
    return json.dumps({"settings": settings, "code": "abc"})


@pytest.fixture
def recorded(tmp_path):
    """Two runs: the first tunes, trains model 1 (not blessed); the second reuses the
    hyperparameters, trains model 2 and blesses it."""
    config = load_config(work_dir=str(tmp_path))
    tmp_path.mkdir(exist_ok=True)
    w = _Writer(config)
    w.new_run("r1")
    examples = w.artifact("Examples", "ex1", span=1)
    w.execute("ingest", outputs=[("examples", examples)])
    hp = w.artifact("HyperParameters", "hp1")
    w.execute("tuner", outputs=[("best_hyperparameters", hp)], custom_config=_tuning({"a": 1}))
    model1 = w.artifact("Model", "m1")
    w.execute("trainer", inputs=[("hyperparameters", hp)], outputs=[("model", model1)])
    w.execute("evaluator", inputs=[("model", model1)],
              outputs=[("blessing", w.artifact("ModelBlessing", "b1", blessed=0))])
    w.new_run("r2")
    w.execute("ingest", "CACHED", outputs=[("examples", examples)])
    model2 = w.artifact("Model", "m2")
    w.execute("trainer", inputs=[("hyperparameters", hp)], outputs=[("model", model2)])
    w.execute("evaluator", "FAILED", inputs=[("model", model2)])
    w.execute("evaluator", inputs=[("model", model2), ("baseline_model", model1)],
              outputs=[("blessing", w.artifact("ModelBlessing", "b2", blessed=1))])
    w.artifact("Examples", "gone", state=pb.Artifact.DELETED)
    return config, hp, model1, model2


def test_runs_nodes_and_artifacts_by_key(recorded):
    config, hp, model1, model2 = recorded
    lineage = Lineage.open(config)
    r1, r2 = lineage.runs()
    assert (r1.name, r2.name) == ("r1", "r2")
    assert [(n, execution_state(e)) for n, e in lineage.run_executions(r2)] == [
        ("ingest", "CACHED"), ("trainer", "COMPLETE"), ("evaluator", "FAILED"),
        ("evaluator", "COMPLETE")]
    trainer = lineage.node_executions("trainer")
    assert len(trainer) == 2 and lineage.runs_of(trainer[1]) == [r2.id]
    assert [a.uri for a in lineage.artifacts(trainer[0].id, OUTPUT)] == ["m1"]
    assert [a.uri for a in lineage.artifacts(trainer[0].id, INPUT, "hyperparameters")] == ["hp1"]
    assert lineage.artifacts(trainer[0].id, INPUT, "model") == []
    assert lineage.producers(hp.id) == {lineage.node_executions("tuner")[0].id}
    assert len(lineage.readers(model1.id, "model")) == 1  # a baseline read does not count
    assert [a.uri for a in lineage.node_artifacts("ingest", "Examples")] == ["ex1"]
    assert [a.uri for a in lineage.live_artifacts("Examples")] == ["ex1"]
    assert lineage.node_executions("pusher") == [] and lineage.node_artifacts("pusher", "Model") == []


def test_blessed_models(recorded):
    config, _, model1, model2 = recorded
    lineage = Lineage.open(config)
    assert lineage.is_blessed(model1.id) is False
    assert lineage.is_blessed(model2.id) is True
    assert lineage.is_blessed(lineage.live_artifacts("HyperParameters")[0].id) is None


def test_no_store_yet(tmp_path):
    assert Lineage.open(load_config(work_dir=str(tmp_path))) is None
    config = load_config(None, ["tuner.retune_every=3"], work_dir=str(tmp_path))
    assert retune.decide(config, {"settings": {"a": 1}}).reason == \
        "no earlier tuning with these settings"


def test_retune_reuses_the_latest_matching_tuning(recorded):
    config, *_ = recorded
    config.tuner.retune_every = 3
    reuse = retune.decide(config, {"settings": {"a": 1}, "code": "abc"})
    assert (reuse.tune, reuse.hyperparameters_uri) == (False, "hp1")
    assert "tuned 1 run(s) ago" in reuse.reason
    assert retune.decide(config, {"settings": {"a": 2}, "code": "abc"}).tune
    config.tuner.retune_every = 2
    assert retune.decide(config, {"settings": {"a": 1}, "code": "abc"}).tune


def test_promote_picks_the_newest_live_artifact_or_the_one_asked_for(recorded):
    config, _, model1, model2 = recorded
    models = Lineage.open(config).live_artifacts("Model")
    assert _latest(models, "Model").id == model2.id
    assert _latest(models, "Model", model1.id).id == model1.id
    with pytest.raises(PromoteError, match="no live Model artifact with id 99"):
        _latest(models, "Model", 99)
    with pytest.raises(PromoteError, match="no PushedModel artifact in ML Metadata yet"):
        _latest([], "PushedModel")


def test_compare_rows_come_from_the_trainers_models_and_their_evaluations(recorded):
    from tlpipe.pipeline import compare

    config, _, model1, model2 = recorded
    rows = compare.gather(config)
    assert [(r.model_id, r.model_uri, r.blessed) for r in rows] == [
        (model1.id, "m1", False), (model2.id, "m2", True)]
