"""The examples sink: temp files, then commit (the scheme of Beam's own file sinks).

Each Beam bundle writes its examples into TFRecord files of its own under a staging folder in
the Examples artifact (one per split it saw) and lists them (`Shard`s) only once it has closed
them: first provisional, uncompressed files as the images are read (`PROVISIONAL_DIR`), then the
final gzipped ones, streamed from those with the corrections applied (stages.Finalize). After
the pipeline, `commit_shards` moves the listed files into
`Split-<name>/data_tfrecord-i-of-n.gz` and removes the staging folder, so a file of a failed and
retried bundle, never listed, never reaches a split.
"""
from __future__ import annotations

import json
import uuid
from typing import NamedTuple

import tensorflow as tf
from tfx.components.example_gen import write_split
from tlpipe.components.ingest.listing import join

STAGING_DIR = ".ingest-staging"  # in the Examples artifact; removed once the shards are moved
PROVISIONAL_DIR = "provisional"  # in the staging folder: examples as read, before corrections
SHARDS_FILE = "shards.json"  # in the staging folder: the list of committed bundles' files
EXAMPLE_FILE = write_split.DEFAULT_TF_RECORD_FILE_NAME + "-{index:05d}-of-{count:05d}.gz"


class Shard(NamedTuple):
    """One gzipped TFRecord file a bundle wrote into the staging folder."""
    split: str
    path: str
    records: int


class BundleWriter:
    """One bundle's open files, one per split, in `staging_dir/<split>/<random>.gz` (gzipped) or
    `.tfrecord` (not: provisional files, read once and deleted with the staging folder)."""

    def __init__(self, staging_dir: str, gzip: bool = True):
        self._staging = staging_dir
        self._options, self._suffix = ("GZIP", ".gz") if gzip else ("", ".tfrecord")
        self._open: dict[str, list] = {}  # split -> [writer, path, records]

    def write(self, split: str, record: bytes) -> None:
        shard = self._open.get(split)
        if shard is None:
            path = join(self._staging, split, f"{uuid.uuid4().hex}{self._suffix}")
            shard = self._open[split] = [tf.io.TFRecordWriter(path, options=self._options), path, 0]
        shard[0].write(record)
        shard[2] += 1

    def close(self) -> list[Shard]:
        """Closes every file and lists them; only listed files are ever committed."""
        done = []
        for split, (writer, path, records) in sorted(self._open.items()):
            writer.close()
            done.append(Shard(split, path, records))
        self._open = {}
        return done


def prepare_staging(staging_dir: str, split_names: list[str]) -> None:
    for name in split_names:
        tf.io.gfile.makedirs(join(staging_dir, name))
        tf.io.gfile.makedirs(join(staging_dir, PROVISIONAL_DIR, name))


def write_shard_list(staging_dir: str, shards: list[Shard]) -> None:
    """Written once, by the pipeline's last step, after every bundle that counts has finished."""
    with tf.io.gfile.GFile(join(staging_dir, SHARDS_FILE), "w") as fh:
        fh.write(json.dumps([s._asdict() for s in sorted(shards, key=lambda s: (s.split, s.path))]))


def commit_shards(staging_dir: str, split_uris: dict[str, str]) -> dict[str, int]:
    """Moves the listed shards into `Split-<name>/data_tfrecord-i-of-n.gz` (an empty file for a
    split without examples, as Beam's sink writes) and removes the staging folder with anything
    a failed bundle left there. Returns the records per split."""
    with tf.io.gfile.GFile(join(staging_dir, SHARDS_FILE)) as fh:
        shards = [Shard(**s) for s in json.loads(fh.read())]
    records = {}
    for split, uri in split_uris.items():
        mine = [s for s in shards if s.split == split]
        tf.io.gfile.makedirs(uri)
        if not mine:
            tf.io.TFRecordWriter(join(uri, EXAMPLE_FILE.format(index=0, count=1)),
                                 options="GZIP").close()
        for i, shard in enumerate(mine):
            tf.io.gfile.rename(shard.path, join(uri, EXAMPLE_FILE.format(index=i, count=len(mine))),
                               overwrite=True)
        records[split] = sum(s.records for s in mine)
    tf.io.gfile.rmtree(staging_dir)
    return records
