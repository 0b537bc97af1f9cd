"""The DAG, as a pure function of the config: every path and parameter is injected.

ingest -> statistics_gen -> schema_gen -> example_validator -> transform -> tuner -> trainer
-> latest_blessed_model (Resolver) -> evaluator -> pusher

Scheduled runs can reuse tuned values (`tuner.retune_every`): then an Importer
(`latest_hyperparameters`) of earlier tuned hyperparameters stands in for the tuner.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from tfx import v1 as tfx
from tlpipe.components import features
from tlpipe.components.config import PipelineConfig
from tlpipe.components.evaluator.eval_config import make_eval_config
from tlpipe.components.ingest.component import make_ingest
from tlpipe.components.pusher.component import ServingPusher
from tlpipe.components.schema.component import make_label_domain
from tlpipe.pipeline import lineage
from tlpipe.pipeline.nodes import HYPERPARAMETERS_NODE, NODE_ORDER, RESOLVER_NODE
from tlpipe.pipeline.retune import TuningDecision, decide

COMPONENTS_DIR = Path(__file__).resolve().parent.parent / "components"
TRANSFORM_MODULE = COMPONENTS_DIR / "transform" / "preprocessing.py"
TUNER_MODULE = COMPONENTS_DIR / "tuner" / "tuner_module.py"
TRAINER_MODULE = COMPONENTS_DIR / "trainer" / "trainer_module.py"



def code_fingerprint(*paths: Path) -> str:
    """Hash of the project code a module imports from outside its own folder.

    TFX puts only the module's own folder into the cache key; a change in shared code
    (features.py, the backbone registry) must invalidate the cached result too.
    """
    digest = hashlib.sha256()
    for path in paths:
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(COMPONENTS_DIR.parent).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def model_custom_config(config: PipelineConfig) -> dict:
    """What the Tuner and Trainer get: their settings (only the sections they read, so editing
    others keeps them cached), the code they import, the feature cache."""
    shared_code = [COMPONENTS_DIR / "features.py", COMPONENTS_DIR / "trainer"]
    return {"settings": config.model_settings().to_custom_config(),
            "code": code_fingerprint(*shared_code),
            "feature_cache_dir": config.feature_cache_dir}


def plan_run(config: PipelineConfig, data_root: str, to_node: str | None = None,
             retune: bool = False) -> tuple[tfx.dsl.Pipeline, TuningDecision]:
    """The DAG a local run executes and whether it tunes, from one model custom config (the
    tuning decision compares it with earlier tunings; the Tuner and Trainer get it)."""
    model_config = model_custom_config(config)
    tuning = decide(config, model_config, force=retune or to_node == "tuner")
    return create_pipeline(config, data_root, to_node, tuning.hyperparameters_uri, model_config), tuning


def create_pipeline(config: PipelineConfig, data_root: str, to_node: str | None = None,
                    reuse_hyperparameters: str | None = None,
                    model_config: dict | None = None, with_metadata: bool = True) -> tfx.dsl.Pipeline:
    """The DAG; with `reuse_hyperparameters` (a HyperParameters artifact URI, see
    pipeline/retune.py) an Importer stands in for the tuner. `model_config`: the Tuner's and
    Trainer's custom config when the caller has built it (default: built here).
    `with_metadata=False` leaves the ML Metadata connection to the orchestrator (Kubeflow brings
    its own)."""
    tune = reuse_hyperparameters is None
    ingest = make_ingest(config.data, data_root)
    statistics_gen = tfx.components.StatisticsGen(
        examples=ingest.outputs["examples"]).with_id("statistics_gen")
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"],
        infer_feature_shape=True).with_id("schema_gen")
    # The label domain pinned by the first run (components/schema/): a class added or dropped
    # by new data fails the run here (data.on_class_change), before Transform.
    latest_label_domain, label_domain = make_label_domain(
        ingest, schema_gen, config.data.on_class_change)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=label_domain.outputs["schema"]).with_id("example_validator")
    transform = tfx.components.Transform(
        examples=ingest.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        module_file=str(TRANSFORM_MODULE),
        # Its statistics would describe serialized pixel blobs and repeat StatisticsGen's
        # (measured: 17 of 71 s on the 1,500 flowers).
        disable_statistics=True,
        custom_config={
            "settings": config.transform_settings().to_dict(),
            # preprocessing_fn imports these two; model code changes keep it cached.
            "code": code_fingerprint(COMPONENTS_DIR / "features.py",
                                     COMPONENTS_DIR / "trainer" / "backbones.py"),
        }).with_id("transform")
    # schema_gen's schema (as inferred, so Transform stays cached when nothing changed), but
    # only after the label domain check passed.
    transform.add_upstream_node(label_domain)
    custom_config = model_config or model_custom_config(config)
    if tune:
        tuner = tfx.components.Tuner(
            module_file=str(TUNER_MODULE),
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT]),
            eval_args=tfx.proto.EvalArgs(splits=[features.EVAL_SPLIT]),
            custom_config=custom_config).with_id("tuner")
        hyperparameters = tuner.outputs["best_hyperparameters"]
    else:
        tuner = tfx.dsl.Importer(
            source_uri=reuse_hyperparameters,
            artifact_type=tfx.types.standard_artifacts.HyperParameters,
        ).with_id(HYPERPARAMETERS_NODE)
        hyperparameters = tuner.outputs["result"]
    latest_blessed_model = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(RESOLVER_NODE)
    trainer = tfx.components.Trainer(
        module_file=str(TRAINER_MODULE),
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=hyperparameters,
        base_model=latest_blessed_model.outputs["model"] if config.trainer.warm_start else None,
        train_args=tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT]),
        eval_args=tfx.proto.EvalArgs(splits=[features.EVAL_SPLIT]),
        custom_config=custom_config).with_id("trainer")
    evaluator = tfx.components.Evaluator(
        examples=ingest.outputs["examples"],
        # Our TFMA metrics live here; as the module file, it is part of the evaluator's cache
        # key (TFX hashes only module files it is given).
        module_file=str(COMPONENTS_DIR / "evaluator" / "metrics.py"),
        model=trainer.outputs["model"],
        baseline_model=latest_blessed_model.outputs["model"],
        # The gate and the run's reported accuracy: the test split, which neither the tuner nor
        # the trainer reads (they get train to fit and eval to select).
        example_splits=[features.TEST_SPLIT],
        eval_config=make_eval_config(config.evaluator)).with_id("evaluator")
    pusher = ServingPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"],
        examples=ingest.outputs["examples"],
        serving_model_dir=config.serving_model_dir,
        model_name=config.model_name,
        keep_versions=config.pusher.keep_versions,
        warmup_requests=config.pusher.warmup_requests).with_id("pusher")

    nodes = [ingest, statistics_gen, schema_gen, latest_label_domain, label_domain,
             example_validator, transform, tuner, trainer, latest_blessed_model, evaluator, pusher]
    assert [n.id for n in nodes] == [n if tune or n != "tuner" else HYPERPARAMETERS_NODE
                                     for n in NODE_ORDER]
    if to_node is not None:
        nodes = _upstream_of(nodes, to_node)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=nodes,
        enable_cache=True,
        metadata_connection_config=lineage.connection_config(config) if with_metadata else None,
        beam_pipeline_args=config.beam_pipeline_args(),
    )


def _producers(node) -> set[str]:
    """Ids of the nodes `node` waits for: the producers of the outputs it reads (a Resolver's
    query of earlier runs' artifacts is no dependency) and explicit `add_upstream_node`s."""
    ids = set()
    for channel in node.inputs.values():
        ids.update(channel.get_data_dependent_node_ids())
    ids.update(n.id for n in node.upstream_nodes)
    return ids


def _upstream_of(nodes, target: str):
    """The nodes `target` depends on, and itself: what `--to target` runs.

    Read from the input channels (`upstream_nodes` holds only explicit dependencies until a
    Pipeline is built); explicit links to nodes left out are cut, or TFX's compiler refuses them.
    """
    by_id = {n.id: n for n in nodes}
    if target not in by_id:
        raise ValueError(f"unknown node '{target}' (nodes: {', '.join(NODE_ORDER)})")
    keep, todo = set(), [target]
    while todo:
        node_id = todo.pop()
        if node_id in keep:
            continue
        keep.add(node_id)
        todo.extend(p for p in _producers(by_id[node_id]) if p in by_id)
    kept = [n for n in nodes if n.id in keep]
    for node in kept:
        for down in [d for d in node.downstream_nodes if d.id not in keep]:
            node.remove_downstream_node(down)
    return kept
