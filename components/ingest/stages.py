"""The Beam stages of ingest (wired together in graph.py): list, read and inspect each file
once, deduplicate and plan classes and splits on metadata, write each example into its bundle's
shard (shards.py), and fold every outcome into one report.

Counters travel as `Tally`s (tally.py), one per folder or bundle rather than one per image.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam
import tensorflow as tf
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from tlpipe.components import features
from tlpipe.components.ingest import images
from tlpipe.components.ingest.listing import (
    Candidate,
    Rejected,
    classify_entry,
    iter_directory,
    parse_manifest_row,
    relative_to,
)
from tlpipe.components.ingest.shards import BundleWriter, Shard
from tlpipe.components.ingest.splits import ClassSplitSummary, SplitRatios, unit_hash
from tlpipe.components.ingest.tally import Tally

_METRICS = "tlpipe_ingest"


class Meta(NamedTuple):
    sha256: str
    relative_path: str
    label_name: str
    given_split: str


def windowed(value):
    """An element emitted from finish_bundle (which has no input element to inherit from)."""
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


# ---------------------------------------------------------------------------------------------
# Listing

def class_folders(_, head_glob: str) -> Iterable[str]:
    """Folders matching the pattern's directory part: one element per class folder."""
    for path in tf.io.gfile.glob(head_glob):
        if tf.io.gfile.isdir(path):
            yield path


class ListFolder(beam.DoFn):
    """Streams one folder's entries that match the pattern's file part; counts them per folder."""

    def __init__(self, input_base: str, file_glob: str, extensions: frozenset[str]):
        self._base, self._glob, self._exts = input_base, file_glob, extensions

    def process(self, folder: str):
        tally = Tally()
        for name, is_dir in iter_directory(folder):
            if not fnmatch.fnmatchcase(name, self._glob):
                continue
            outcome = classify_entry(name, is_dir, folder, self._base, self._exts)
            tally.count_input(outcome.label_name)
            if isinstance(outcome, Rejected):
                yield beam.pvalue.TaggedOutput("rejected", outcome)
            else:
                yield outcome
        if not tally.inputs:
            tally.empty_folders.add(relative_to(folder.rstrip("/"), self._base))
        yield beam.pvalue.TaggedOutput("stats", tally)


class ParseManifest(beam.DoFn):
    """CSV rows -> candidates or rejections; counts them per bundle."""

    def __init__(self, input_base: str, extensions: frozenset[str], split_names: list[str]):
        self._base, self._exts, self._splits = input_base, extensions, split_names

    def start_bundle(self):
        self._tally = Tally()

    def process(self, item: tuple[str, str]):
        filename, line = item
        outcome = parse_manifest_row(line, filename, self._base, self._exts, self._splits)
        if outcome is None:
            return
        self._tally.count_input(outcome.label_name)
        if isinstance(outcome, Rejected):
            yield beam.pvalue.TaggedOutput("rejected", outcome)
        else:
            yield outcome

    def finish_bundle(self):
        if self._tally:
            yield beam.pvalue.TaggedOutput("stats", windowed(self._tally))
        self._tally = Tally()


def one_row_per_path(item: tuple[str, Iterable[Candidate]]):
    """A path listed more than once: kept once if the rows agree on the label, else a conflict."""
    _, rows = item
    rows = sorted(rows, key=lambda c: (c.label_name, c.given_split))
    labels = sorted({c.label_name for c in rows})
    if len(labels) > 1:
        for c in rows:
            yield beam.pvalue.TaggedOutput("rejected", Rejected(
                c.relative_path, images.LABEL_CONFLICT,
                f"listed with labels {', '.join(labels)}", c.label_name))
        return
    yield rows[0]
    for c in rows[1:]:
        yield beam.pvalue.TaggedOutput("rejected", Rejected(
            c.relative_path, images.DUPLICATE, "listed again in the manifest", c.label_name))


# ---------------------------------------------------------------------------------------------
# Reading and deciding

def _read_bytes(path: str) -> bytes:
    """The file's bytes: one read, no header probe first (local paths skip tf.io.gfile)."""
    if "://" in path:
        with tf.io.gfile.GFile(path, "rb") as fh:
            return fh.read()
    with open(path, "rb") as fh:
        return fh.read()


class Inspect(beam.DoFn):
    """Reads and checks each file once and writes its example at once into its bundle's
    provisional shard of its natural (or given) split, with no label id yet: example bytes never
    wait in memory for the decisions over the whole input, which travel as small `Meta`s."""

    def __init__(self, max_pixels: int, ratios: SplitRatios, provisional_dir: str):
        self._max_pixels, self._ratios, self._dir = max_pixels, ratios, provisional_dir
        self._read = beam.metrics.Metrics.counter(_METRICS, "files_read")

    def start_bundle(self):
        self._writer = BundleWriter(self._dir, gzip=False)

    def process(self, c: Candidate):
        self._read.inc()
        try:
            data = _read_bytes(c.path)
        except (FileNotFoundError, tf.errors.NotFoundError):
            yield beam.pvalue.TaggedOutput("rejected", Rejected(
                c.relative_path, images.MISSING_FILE, "no such file", c.label_name))
            return
        except (tf.errors.OpError, OSError) as err:
            yield beam.pvalue.TaggedOutput("rejected", Rejected(
                c.relative_path, images.UNREADABLE, f"{type(err).__name__}: {err}"[:200],
                c.label_name))
            return
        outcome = images.inspect_image(data, self._max_pixels)
        if isinstance(outcome, images.Problem):
            yield beam.pvalue.TaggedOutput("rejected", Rejected(
                c.relative_path, outcome.reason, outcome.detail, c.label_name))
            return
        split = c.given_split or self._ratios.natural(unit_hash(c.relative_path))
        self._writer.write(split, make_example(c, outcome, data, PROVISIONAL_LABEL,
                                               notes=outcome.notes))
        yield beam.pvalue.TaggedOutput("meta", (outcome.sha256, Meta(
            outcome.sha256, c.relative_path, c.label_name, c.given_split)))

    def finish_bundle(self):
        for shard in self._writer.close():
            yield windowed(shard)


def deduplicate(item: tuple[str, Iterable[Meta]]):
    """Byte-identical files: kept once within a class (smallest path), all rejected across classes.

    Yields the kept file's metadata; each file that is not kept goes to the `lost` output as
    (relative_path, (reason, detail)).
    """
    _, group = item
    group = sorted(group, key=lambda m: m.relative_path)
    if len(group) == 1:
        yield group[0]
        return
    labels = sorted({m.label_name for m in group})
    if len(labels) > 1:
        for m in group:
            others = [f"{o.relative_path} ({o.label_name})" for o in group if o is not m]
            yield beam.pvalue.TaggedOutput("lost", (m.relative_path, (
                images.LABEL_CONFLICT, f"same bytes as {'; '.join(others[:5])}"[:300])))
        return
    yield group[0]
    for m in group[1:]:
        yield beam.pvalue.TaggedOutput("lost", (m.relative_path, (
            images.DUPLICATE, f"same bytes as {group[0].relative_path}")))


class ClassPlan(beam.CombineFn):
    """Kept files -> (sorted class names, split corrections): one bounded summary per class
    (splits.py), so the accumulator grows with the number of classes, not of files."""

    def __init__(self, ratios: SplitRatios):
        self._ratios = ratios

    def create_accumulator(self):
        return {}

    def add_input(self, acc, m: Meta):
        summary = acc.get(m.label_name)
        if summary is None:
            summary = acc[m.label_name] = ClassSplitSummary(self._ratios)
        summary.add(m.relative_path, m.given_split)
        return acc

    def merge_accumulators(self, accs):
        out: dict[str, ClassSplitSummary] = {}
        for acc in accs:
            for label, summary in acc.items():
                if label in out:
                    out[label].merge(summary)
                else:
                    out[label] = summary
        return out

    def extract_output(self, acc):
        corrections: dict[str, str] = {}
        for summary in acc.values():
            corrections.update(summary.corrections())
        return sorted(acc), corrections


def _bytes(v: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))


PROVISIONAL_LABEL = -1  # in a provisional example: the class id is set by Finalize
NOTES_KEY = "_ingest_notes"  # only in provisional examples: what Finalize counts as accepted notes


def make_example(c: Candidate, info: images.ImageInfo, data: bytes, label_id: int,
                 notes: tuple[str, ...] = ()) -> bytes:
    """The serialized tf.Example of one accepted image: the bytes exactly as stored (`notes`, for
    a provisional example only, travel in a feature Finalize removes)."""
    example = tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: _bytes(data),
        features.LABEL_KEY: _int(label_id),
        features.LABEL_NAME_KEY: _bytes(c.label_name.encode("utf-8")),
        features.PATH_KEY: _bytes(c.relative_path.encode("utf-8")),
        features.HEIGHT_KEY: _int(info.height),
        features.WIDTH_KEY: _int(info.width),
        features.CHANNELS_KEY: _int(info.channels),
        features.FORMAT_KEY: _bytes(info.format.encode()),
        features.SHA256_KEY: _bytes(info.sha256.encode()),
        features.EXIF_ORIENTATION_KEY: _int(info.orientation),
    }))
    if notes:
        example.features.feature[NOTES_KEY].bytes_list.value.extend(n.encode() for n in notes)
    return example.SerializeToString()


class Finalize(beam.DoFn):
    """Streams one provisional shard into its bundle's final gzipped shards: drops the losers
    (duplicates, label conflicts) to the quarantine, moves the few files the stratification
    corrects, sets the class id. One record in memory at a time; emits its shards and its tally
    once it has closed them."""

    def __init__(self, staging_dir: str):
        self._staging = staging_dir
        self._seen = beam.metrics.Metrics.counter(_METRICS, "images_decided")

    def start_bundle(self):
        self._writer = BundleWriter(self._staging)
        self._tally = Tally()
        self._plan, self._ids = None, {}

    def process(self, shard: Shard, losers: dict, plan: tuple):
        if plan is not self._plan:
            self._plan, self._ids = plan, {name: i for i, name in enumerate(plan[0])}
        for record in tf.compat.v1.io.tf_record_iterator(shard.path):
            self._seen.inc()
            example = tf.train.Example.FromString(record)
            feature = example.features.feature
            path = feature[features.PATH_KEY].bytes_list.value[0].decode("utf-8")
            label = feature[features.LABEL_NAME_KEY].bytes_list.value[0].decode("utf-8")
            lost = losers.get(path)
            if lost is not None:
                yield beam.pvalue.TaggedOutput("rejected", Rejected(path, lost[0], lost[1], label))
                continue
            notes = []
            if NOTES_KEY in feature:
                notes = [n.decode() for n in feature[NOTES_KEY].bytes_list.value]
                del feature[NOTES_KEY]
            feature[features.LABEL_KEY].int64_list.value[:] = [self._ids[label]]
            split = plan[1].get(path) or shard.split  # given splits are never corrected
            self._writer.write(split, example.SerializeToString())
            self._tally.count_written(label, split, notes)

    def finish_bundle(self):
        for shard in self._writer.close():
            yield windowed(shard)
        if self._tally:
            yield beam.pvalue.TaggedOutput("stats", windowed(self._tally))
        self._tally = Tally()


class Report(beam.CombineFn):
    """Every outcome -> (tally, quarantine rows sorted by path, shards): one element.

    Items: a Rejected (a row, counted by reason), a Tally, or a Shard."""

    def create_accumulator(self):
        return Tally(), [], []

    def add_input(self, acc, item):
        tally, rows, shards = acc
        if isinstance(item, Rejected):
            rows.append(item)
            tally.rejected_by_reason[item.reason] += 1
        elif isinstance(item, Shard):
            shards.append(item)
        else:
            tally.merge(item)
        return acc

    def merge_accumulators(self, accs):
        tally, rows, shards = Tally(), [], []
        for t, r, s in accs:
            tally.merge(t)
            rows.extend(r)
            shards.extend(s)
        return tally, rows, shards

    def extract_output(self, acc):
        tally, rows, shards = acc
        return (tally, sorted(rows, key=lambda r: (r.relative_path, r.reason)),
                sorted(shards, key=lambda s: (s.split, s.path)))
