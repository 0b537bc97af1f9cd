"""Honest evaluation, as wired in the DAG: train fits, eval selects (tuner trials, early
stopping), test is read by the Evaluator alone, which gates on it."""
from __future__ import annotations

import pytest
from tlpipe.components import features
from tlpipe.components.config import ConfigError, DataConfig, PipelineConfig
from tlpipe.components.ingest.component import split_buckets
from tlpipe.components.ingest.splits import SplitRatios, assign_splits
from tlpipe.pipeline.pipeline import create_pipeline


def _splits(component, name: str) -> list[str]:
    from tfx.proto import trainer_pb2
    from tfx.utils import proto_utils

    message = trainer_pb2.TrainArgs() if name == "train_args" else trainer_pb2.EvalArgs()
    return list(proto_utils.json_to_proto(component.exec_properties[name], message).splits)


def test_only_the_evaluator_reads_the_test_split(tmp_path):
    config = PipelineConfig(work_dir=str(tmp_path))
    nodes = {n.id: n for n in create_pipeline(config, str(tmp_path)).components}
    for node in ("tuner", "trainer"):
        assert _splits(nodes[node], "train_args") == [features.TRAIN_SPLIT], node
        assert _splits(nodes[node], "eval_args") == [features.EVAL_SPLIT], node
    import json
    assert json.loads(nodes["evaluator"].exec_properties["example_splits"]) == [features.TEST_SPLIT]
    # Nothing else that selects reads the raw examples' test split either.
    readers = [n for n in nodes.values() if "examples" in n.inputs and n.id not in
               ("statistics_gen", "transform", "evaluator", "pusher", "tuner", "trainer")]
    assert not readers, [n.id for n in readers]


def test_default_splits_are_70_15_15_with_a_test_split_for_every_class():
    data = DataConfig()
    assert (data.train_ratio, data.test_ratio) == (0.7, 0.15)
    ratios = SplitRatios.from_buckets(split_buckets(data.train_ratio, data.test_ratio))
    files = [(f"{label}/{i}.jpg", label) for label in ("a", "b") for i in range(3)]
    files += [(f"c/{i}.jpg", "c") for i in range(40)]
    splits = assign_splits(files, ratios)
    for label in ("a", "b", "c"):
        got = {splits[p] for p, lab in files if lab == label}
        assert got == {features.TRAIN_SPLIT, features.EVAL_SPLIT, features.TEST_SPLIT}, label


@pytest.mark.parametrize("setting, message", [
    ({"min_images_per_class": 2}, "greater than or equal to 3"),
    ({"test_ratio": 0}, "'test_ratio' must be greater than 0"),
])
def test_three_splits_are_required(setting, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig.from_dict(setting)
