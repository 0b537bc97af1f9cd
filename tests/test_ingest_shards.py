"""The examples sink on its own: bundles write and list their shards, the commit moves only the
listed ones into Beam-style split files and leaves no staging behind."""
from __future__ import annotations

import os

import tensorflow as tf
from tlpipe.components.ingest.shards import BundleWriter, commit_shards, prepare_staging, write_shard_list


def _records(path) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]


def test_only_listed_shards_are_committed_and_numbered_per_split(tmp_path):
    staging = str(tmp_path / "staging")
    prepare_staging(staging, ["train", "eval"])
    first, second, failed = BundleWriter(staging), BundleWriter(staging), BundleWriter(staging)
    for i in range(3):
        first.write("train", b"a%d" % i)
    first.write("eval", b"e0")
    second.write("train", b"b0")
    failed.write("train", b"lost")  # a bundle that failed: its file is never listed
    shards = first.close() + second.close()
    assert sorted((s.split, s.records) for s in shards) == [("eval", 1), ("train", 1), ("train", 3)]
    failed.close()
    write_shard_list(staging, shards)

    splits = {s: str(tmp_path / f"Split-{s}") for s in ("train", "eval")}
    assert commit_shards(staging, splits) == {"train": 4, "eval": 1}
    assert not os.path.exists(staging)
    train = sorted(os.listdir(splits["train"]))
    assert train == ["data_tfrecord-00000-of-00002.gz", "data_tfrecord-00001-of-00002.gz"]
    committed = sorted(r for name in train for r in _records(os.path.join(splits["train"], name)))
    assert committed == [b"a0", b"a1", b"a2", b"b0"]
    assert _records(os.path.join(splits["eval"], "data_tfrecord-00000-of-00001.gz")) == [b"e0"]


def test_a_split_without_examples_gets_one_empty_file(tmp_path):
    staging = str(tmp_path / "staging")
    prepare_staging(staging, ["train", "eval"])
    writer = BundleWriter(staging)
    writer.write("train", b"x")
    write_shard_list(staging, writer.close())
    records = commit_shards(staging, {"train": str(tmp_path / "Split-train"),
                                      "eval": str(tmp_path / "Split-eval")})
    assert records == {"train": 1, "eval": 0}
    assert os.listdir(tmp_path / "Split-train") == ["data_tfrecord-00000-of-00001.gz"]
    assert _records(tmp_path / "Split-eval" / "data_tfrecord-00000-of-00001.gz") == []
