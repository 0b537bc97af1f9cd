"""A toy model trained, evaluated and pushed by the product's own nodes, in this process.

Serving, compare and CLI tests need *a* pushed model with the real signatures, warmup file,
metadata.json and verdict, not a good one; the DAG takes minutes to make one, this takes
seconds. The nodes are those `create_pipeline` builds (same executors, module files and
execution properties as a real run); each runs once, in order, into folders of its own, with
no LocalDagRunner and no ML Metadata. The model is a toy (MobileNet v1 0.25, random weights,
32 px, one epoch) and the test config opens the gate (min_accuracy 0), so the pusher writes
it to `<work>/serving/flowers/<version>/` exactly as in a real run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
from conftest import TOY_MODEL_SETTINGS
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.dsl.components.base.base_executor import BaseExecutor
from tlpipe.components.config import PipelineConfig
from tlpipe.components.config_loading import load_config
from tlpipe.components.ingest.local import run_ingest
from tlpipe.components.transform.local import write_raw_schema
from tlpipe.pipeline.pipeline import create_pipeline

# The test's own config: a random toy passes this gate (product defaults stay as they are).
TOY_SETTINGS = [
    *TOY_MODEL_SETTINGS, "trainer.batch_size=8",
    "trainer.early_stopping_patience=0", "trainer.augment=false",
    "evaluator.min_accuracy=0", "evaluator.max_accuracy_drop=1", "pusher.warmup_requests=2",
]


def run_node(node, inputs: dict[str, list], out_dir: Path, beam_args: list[str]
             ) -> dict[str, list]:
    """One node's executor with its own execution properties; outputs under `out_dir/<key>`."""
    outputs = {}
    for key, channel in node.outputs.items():
        artifact = channel.type()
        artifact.uri = str(out_dir / key)
        os.makedirs(artifact.uri, exist_ok=True)
        outputs[key] = [artifact]
    props = {k: v for k, v in node.exec_properties.items() if v is not None}
    executor_class = node.executor_spec.executor_class
    tmp_dir = str(out_dir / ".tmp")
    if issubclass(executor_class, BaseBeamExecutor):
        context = BaseBeamExecutor.Context(
            tmp_dir=tmp_dir, make_beam_pipeline_fn=lambda: beam.Pipeline(argv=beam_args))
    else:
        context = BaseExecutor.Context(tmp_dir=tmp_dir)
    executor_class(context).Do(inputs, outputs, props)
    return outputs


@dataclass
class ToyRun:
    """Ingest and Transform once; then any number of models trained and pushed on them."""

    work_dir: Path
    data: Path
    examples: list = field(default_factory=list)   # ingest's Examples artifact
    transform: dict[str, list] = field(default_factory=dict)  # Transform's outputs
    trained: int = 0

    @property
    def model_dir(self) -> Path:
        return Path(self.config().serving_model_dir)

    def config(self, *extra: str) -> PipelineConfig:
        return load_config(None, [*TOY_SETTINGS, *extra], work_dir=str(self.work_dir))

    def run(self, node_id: str, inputs: dict[str, list], out_dir: Path, *extra: str
            ) -> dict[str, list]:
        """Node `node_id` of the DAG built from the toy settings (plus `extra`)."""
        config = self.config(*extra)
        [node] = [n for n in create_pipeline(config, str(self.data)).components if n.id == node_id]
        return run_node(node, inputs, out_dir, config.beam_pipeline_args())

    def save(self, path: Path) -> None:
        """Writes this run (its folders and artifacts) to `path`, for another process to load."""
        from tfx.utils import json_utils

        path.write_text(json_utils.dumps({
            "work_dir": str(self.work_dir), "data": str(self.data), "examples": self.examples,
            "transform": self.transform, "trained": self.trained}))

    @classmethod
    def load(cls, path: Path) -> ToyRun:
        from tfx.utils import json_utils

        record = json_utils.loads(path.read_text())
        return cls(Path(record["work_dir"]), Path(record["data"]), record["examples"],
                   record["transform"], record["trained"])

    def train_and_push(self, *extra: str) -> int:
        """Trainer, Evaluator (no baseline: a first run's gate) and pusher; the pushed version."""
        self.trained += 1
        root = self.work_dir / "nodes" / f"model-{self.trained}"
        trained = self.run("trainer", {
            "examples": self.transform["transformed_examples"],
            "transform_graph": self.transform["transform_graph"], "schema": [_raw_schema(root)]},
            root / "trainer", *extra)
        evaluated = self.run("evaluator", {"examples": self.examples, "model": trained["model"]},
                             root / "evaluator", *extra)
        pushed = self.run("pusher", {
            "model": trained["model"], "model_blessing": evaluated["blessing"],
            "evaluation": evaluated["evaluation"], "examples": self.examples},
            root / "pusher", *extra)
        artifact = pushed["pushed_model"][0]
        assert artifact.get_int_custom_property("pushed") == 1, "the toy gate refused the model"
        return artifact.get_int_custom_property("pushed_version")


def _raw_schema(root: Path):
    """A Schema artifact of the raw features Transform and Trainer read (what SchemaGen infers)."""
    from tfx.types import standard_artifacts

    schema = standard_artifacts.Schema()
    schema.uri = write_raw_schema(str(root / "schema"))
    return schema


def start_toy_run(work_dir: Path, data: Path) -> ToyRun:
    """Ingest (with its span driver) and Transform on `data` (a folder per class)."""
    run = ToyRun(work_dir, data)
    root = work_dir / "nodes"
    run.examples = run_ingest(run.config(), str(data), str(root / "ingest")).artifacts["examples"]
    run.transform = run.run("transform", {"examples": run.examples, "schema": [_raw_schema(root)]},
                            root / "transform")
    return run
