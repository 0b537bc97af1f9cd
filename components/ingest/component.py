"""The ingest node: a FileBasedExampleGen with two more outputs and a span-window driver.

Outputs:
- `examples`: the standard Examples artifact, splits train / eval (/ test when data.test_ratio>0);
- `label_vocabulary`: `label_vocabulary.json`, the sorted class names (index = label id);
- `quarantine_report`: `quarantine.csv` (path, reason, detail, label) and `summary.json`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from google.protobuf import any_pb2, struct_pb2
from tfx import types
from tfx import v1 as tfx

# tfx.v1 exposes neither FileBasedExampleGen nor its spec or executor specs; a custom
# ExampleGen with extra outputs needs all three.
from tfx.components import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tlpipe.components import features
from tlpipe.components.config import DataConfig
from tlpipe.components.ingest.driver import SpanWindowDriver
from tlpipe.components.ingest.executor import (
    DATA_FIELDS,
    DATA_SETTINGS_KEY,
    QUARANTINE_KEY,
    VOCABULARY_KEY,
    ImageExampleGenExecutor,
)
from tlpipe.components.ingest.listing import SPAN_SPEC

_BUCKETS = 100
_PACKAGE = Path(__file__).resolve().parent


class LabelVocabulary(types.Artifact):
    """Sorted class names; index i is label id i (`label_vocabulary.json`)."""
    TYPE_NAME = "tlpipe.LabelVocabulary"


class QuarantineReport(types.Artifact):
    """Every input not turned into an example, with its reason (`quarantine.csv`, `summary.json`)."""
    TYPE_NAME = "tlpipe.QuarantineReport"


class ImageExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    """FileBasedExampleGen's parameters and `examples`, plus the vocabulary and the report."""
    OUTPUTS = {
        **standard_component_specs.FileBasedExampleGenSpec.OUTPUTS,
        VOCABULARY_KEY: ChannelParameter(type=LabelVocabulary),
        QUARANTINE_KEY: ChannelParameter(type=QuarantineReport),
    }


class ImageExampleGen(FileBasedExampleGen):
    """Labelled images (folder per class, or a CSV manifest) -> Examples + vocabulary + report.

    A FileBasedExampleGen, so orchestrators treat it as one (span resolution, fingerprints).
    """
    SPEC_CLASS = ImageExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(ImageExampleGenExecutor)
    DRIVER_CLASS = SpanWindowDriver

    def __init__(self, input_base: str, input_config: example_gen_pb2.Input,
                 output_config: example_gen_pb2.Output,
                 custom_config: example_gen_pb2.CustomConfig,
                 range_config=None):
        spec = ImageExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            custom_config=custom_config,
            range_config=range_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            examples=types.Channel(type=standard_artifacts.Examples),
            label_vocabulary=types.Channel(type=LabelVocabulary),
            quarantine_report=types.Channel(type=QuarantineReport))
        # FileBasedExampleGen.__init__ builds its own spec; skip to the Beam component's.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)


def code_fingerprint() -> str:
    """TFX caches a custom executor by class path only: its code goes into the cache key here."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.glob("*.py")) + [_PACKAGE.parent / "features.py"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def split_buckets(train_ratio: float, test_ratio: float) -> dict[str, int]:
    """Ratios as hash buckets out of 100: the output config is the one statement of them."""
    test = round(test_ratio * _BUCKETS) if test_ratio > 0 else 0
    test = min(max(test, 1 if test_ratio > 0 else 0), _BUCKETS - 2)
    train = max(1, min(_BUCKETS - test - 1, round(train_ratio * _BUCKETS)))
    buckets = {features.TRAIN_SPLIT: train, features.EVAL_SPLIT: _BUCKETS - train - test}
    if test:
        buckets[features.TEST_SPLIT] = test
    return buckets


def make_ingest(data: DataConfig, data_root: str):
    """The ingest node of the data section, reading `data_root`."""
    options = struct_pb2.Struct()
    # As JSON text: a Struct would turn every number into a float.
    options.update({DATA_SETTINGS_KEY: json.dumps({k: getattr(data, k) for k in DATA_FIELDS},
                                                  sort_keys=True),
                    "code": code_fingerprint()})
    packed = any_pb2.Any()
    packed.Pack(options)
    pattern = data.pattern
    if data.manifest:  # the manifest is the input file; an absolute one is made root-relative
        pattern = (os.path.relpath(data.manifest, data_root)
                   if os.path.isabs(data.manifest) else data.manifest)
    range_config = None
    if SPAN_SPEC.search(pattern):
        range_config = tfx.proto.RangeConfig(
            rolling_range=tfx.proto.RollingRange(num_spans=data.num_spans))
    return ImageExampleGen(
        input_base=data_root,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="images",
                                                                   pattern=pattern)]),
        output_config=tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
            tfx.proto.SplitConfig.Split(name=name, hash_buckets=n)
            for name, n in split_buckets(data.train_ratio, data.test_ratio).items()])),
        custom_config=tfx.proto.CustomConfig(custom_config=packed),
        range_config=range_config,
    ).with_id("ingest")
