"""The ingest node: TFX's FileBasedExampleGen running our image-folder executor."""
from __future__ import annotations

from google.protobuf import any_pb2, struct_pb2
from tfx import v1 as tfx
# tfx.v1 exposes neither FileBasedExampleGen nor executor specs; custom ExampleGens need both.
from tfx.components import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec

from components import features
from components.ingest.executor import ImageFolderExecutor
from pipeline.config import PipelineConfig

_BUCKETS = 100


def make_ingest(config: PipelineConfig, data_root: str):
    options = struct_pb2.Struct()
    options.update({"extensions": list(config.data.extensions),
                    "min_images_per_class": config.data.min_images_per_class})
    packed = any_pb2.Any()
    packed.Pack(options)
    train_buckets = max(1, min(_BUCKETS - 1, round(config.data.train_ratio * _BUCKETS)))
    return FileBasedExampleGen(
        input_base=data_root,
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name="images", pattern=config.data.pattern)]),
        output_config=tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
            tfx.proto.SplitConfig.Split(name=features.TRAIN_SPLIT, hash_buckets=train_buckets),
            tfx.proto.SplitConfig.Split(name=features.EVAL_SPLIT,
                                        hash_buckets=_BUCKETS - train_buckets)])),
        custom_config=tfx.proto.CustomConfig(custom_config=packed),
        custom_executor_spec=executor_spec.BeamExecutorSpec(ImageFolderExecutor),
    ).with_id("ingest")
