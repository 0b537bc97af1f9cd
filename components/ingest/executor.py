"""Beam executor of the image ExampleGen: folder-per-class images -> tf.Examples.

TFX's ImportExampleGen cannot read `root/<class>/*.jpg` (tensorflow/tfx#80); this executor plugs
into FileBasedExampleGen, so span resolution and input fingerprinting (the cache key) come from
TFX's own FileBasedDriver, and only listing, labelling and splitting are ours.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import apache_beam as beam
import tensorflow as tf
from absl import logging
from google.protobuf import json_format, struct_pb2
from PIL import Image
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components import features
from components.ingest.listing import ImageFile, assign_splits, scan_image_tree

LABEL_VOCABULARY_FILE = "label_vocabulary.json"
_SKIPPED = beam.metrics.Metrics.counter("tlpipe_ingest", "undecodable_images")


def ingest_options(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """Settings packed into ExampleGen's CustomConfig (an Any holding a Struct)."""
    raw = exec_properties.get("custom_config")
    if not raw:
        return {}
    custom = example_gen_pb2.CustomConfig()
    json_format.Parse(raw, custom) if isinstance(raw, str) else custom.CopyFrom(raw)
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


def _bytes(v: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))


class _ToExample(beam.DoFn):
    """Reads one image as stored (no re-encode) and describes it; skips what PIL cannot parse."""

    def __init__(self, class_names: list[str]):
        self._ids = {name: i for i, name in enumerate(class_names)}

    def process(self, item: ImageFile):
        with tf.io.gfile.GFile(item.path, "rb") as fh:
            data = fh.read()
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.verify()
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                channels = len(img.getbands())
                fmt = (img.format or "").lower()
        except Exception as err:  # PIL raises many types for corrupt input
            logging.warning("ingest: skipping undecodable image %s: %s", item.relative_path, err)
            _SKIPPED.inc()
            return
        yield tf.train.Example(features=tf.train.Features(feature={
            features.IMAGE_KEY: _bytes(data),
            features.LABEL_KEY: _int(self._ids[item.label_name]),
            features.LABEL_NAME_KEY: _bytes(item.label_name.encode()),
            features.PATH_KEY: _bytes(item.relative_path.encode()),
            features.HEIGHT_KEY: _int(height),
            features.WIDTH_KEY: _int(width),
            features.CHANNELS_KEY: _int(channels),
            features.FORMAT_KEY: _bytes(fmt.encode()),
            features.SHA256_KEY: _bytes(hashlib.sha256(data).hexdigest().encode()),
        }))


class ImageFolderExecutor(base_example_gen_executor.BaseExampleGenExecutor):
    """Lists the (span-resolved) pattern once, then reads and encodes the images on Beam."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("GenerateExamplesByBeam is overridden: splits are per class")

    def _listing(self, exec_properties: dict[str, Any]):
        input_config = example_gen_pb2.Input()
        json_format.Parse(exec_properties["input_config"], input_config)
        options = ingest_options(exec_properties)
        return scan_image_tree(
            exec_properties["input_base"], input_config.splits[0].pattern,
            options.get("extensions", []), glob_fn=tf.io.gfile.glob,
            min_per_class=int(options.get("min_images_per_class", 1)))

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: dict[str, Any]):
        output_config = example_gen_pb2.Output()
        json_format.Parse(exec_properties["output_config"], output_config)
        splits = list(output_config.split_config.splits)
        split_names = [s.name for s in splits]
        # The output config's hash buckets are the one statement of the split ratio.
        train_ratio = splits[0].hash_buckets / sum(s.hash_buckets for s in splits)
        listing = self._listing(exec_properties)
        assignment = assign_splits(listing, train_ratio, split_names[0], split_names[1])
        logging.info("ingest: %d images, %d classes: %s", len(listing.files),
                     len(listing.class_names), ", ".join(listing.class_names))
        self._class_names = listing.class_names
        examples = (pipeline
                    | "ListImages" >> beam.Create(listing.files, reshuffle=True)
                    | "ReadAndDescribe" >> beam.ParDo(_ToExample(listing.class_names))
                    | "Partition" >> beam.Partition(
                        lambda ex, n: split_names.index(assignment[
                            ex.features.feature[features.PATH_KEY].bytes_list.value[0].decode()]),
                        len(split_names)))
        return {name: examples[i] for i, name in enumerate(split_names)}

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        super().Do(input_dict, output_dict, exec_properties)
        # The id -> name table travels with the examples, readable by people and tools.
        artifact = artifact_utils.get_single_instance(output_dict["examples"])
        vocabulary = json.dumps(self._class_names)
        with tf.io.gfile.GFile(os.path.join(artifact.uri, LABEL_VOCABULARY_FILE), "w") as fh:
            fh.write(vocabulary)
        artifact.set_string_custom_property("label_names", vocabulary)
