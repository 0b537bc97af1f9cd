"""Beam executor of the image ExampleGen: labelled images -> tf.Examples, a label vocabulary and a
quarantine report, in one Beam pipeline.

TFX's ImportExampleGen cannot read `root/<class>/*.jpg` (tensorflow/tfx#80). Span resolution and
input fingerprinting (the cache key) come from TFX's FileBasedDriver (components/ingest/driver.py
adds a rolling window of spans); everything else happens on Beam, so no process holds the list of
all files: class folders are listed one per element, manifests are read as text shards.

    patterns ─┬─ folders: glob the class folders ─ list each folder ─────────┐
              └─ manifest: CSV lines ─ parse ─ group by path (one row each) ─┴─ candidates
    candidates ─ Reshuffle ─ read once + inspect (images.py) ─ rejected | metadata | described
    metadata ─ group by sha256 ─ losers (duplicates, label conflicts): a side input
                               └ kept ─ one combine: class names, split fixes: a side input
    described ─ decided, tf.Example written by its bundle into a staging file of its split
    rejected + counters + staged files ─ one combine ─ quarantine.csv, summary.json,
        label_vocabulary.json and the list of staged files
    then, here: the listed staging files move into Split-<name>/ (a failed bundle's files are
    never listed), and the checks (rejected share, classes, counts add up) fail the run.

Profiled with cProfile on the DirectRunner (bench/ingest_bench.py): beyond the per-image work
any loop pays (read, TensorFlow decode check, sha256, gzip), Beam costs about 0.5 s per run
(building, translating and setting up the stages: it grows with the number of transforms, hence
one Reshuffle (of files, not folders), counters summed per folder or bundle rather than one
element per image, and no TFRecord sink stages) and about 0.4 ms per image to hand its bytes from
the reading stage to the writing stage (the in-memory data plane copies them). That hand-over is
the price of deciding duplicates, class ids and split fixes over the whole input while reading
each file once; Beam's WriteToTFRecord would have added a second one.
"""
from __future__ import annotations

import csv
import fnmatch
import io
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
import tensorflow as tf
from absl import logging
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs

from components import features
from components.config import DataConfig
from components.ingest import images
from components.ingest.listing import (
    Candidate,
    Rejected,
    classify_entry,
    iter_directory,
    join,
    normalize_extensions,
    parse_manifest_row,
    relative_to,
    split_folder_pattern,
)
from components.ingest.report import QUARANTINE_FILE, SUMMARY_FILE
from components.ingest.splits import ClassSplitSummary, SplitRatios, unit_hash

EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
VOCABULARY_KEY = "label_vocabulary"
QUARANTINE_KEY = "quarantine_report"
LABEL_VOCABULARY_FILE = "label_vocabulary.json"
QUARANTINE_COLUMNS = ("path", "reason", "detail", "label")

_DATA = DataConfig()  # the defaults live in the config object only


class IngestError(RuntimeError):
    """The input cannot make a trustworthy dataset; the message says why and where to look."""


@dataclass(frozen=True)
class IngestOptions:
    """The executor's settings (from CustomConfig); see DataConfig for their meaning."""
    source: str = "folder"  # folder | manifest
    extensions: tuple[str, ...] = tuple(_DATA.extensions)
    max_pixels: int = _DATA.max_pixels
    max_rejected_share: float = _DATA.max_rejected_share
    min_images_per_class: int = _DATA.min_images_per_class

    @classmethod
    def from_exec_properties(cls, exec_properties: dict[str, Any]) -> IngestOptions:
        raw = ingest_options(exec_properties)
        return cls(source=str(raw.get("source", cls.source)),
                   extensions=tuple(raw.get("extensions", cls.extensions)),
                   max_pixels=int(raw.get("max_pixels", cls.max_pixels)),
                   max_rejected_share=float(raw.get("max_rejected_share",
                                                    cls.max_rejected_share)),
                   min_images_per_class=int(raw.get("min_images_per_class",
                                                    cls.min_images_per_class)))


def ingest_options(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """Settings packed into ExampleGen's CustomConfig (an Any holding a Struct)."""
    raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not raw:
        return {}
    custom = example_gen_pb2.CustomConfig()
    json_format.Parse(raw, custom) if isinstance(raw, str) else custom.CopyFrom(raw)
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


class Described(NamedTuple):
    candidate: Candidate
    info: images.ImageInfo
    data: bytes


class Meta(NamedTuple):
    sha256: str
    relative_path: str
    label_name: str
    given_split: str


# ---------------------------------------------------------------------------------------------
# Listing (inside Beam)

def _class_folders(_, head_glob: str) -> Iterable[str]:
    """Folders matching the pattern's directory part: one element per class folder."""
    for path in tf.io.gfile.glob(head_glob):
        if tf.io.gfile.isdir(path):
            yield path


def _counted(counts: dict[str, int], item: Candidate | Rejected) -> Candidate | Rejected:
    """Counts one listed input (the report's `inputs` and per-class inputs) and returns it."""
    for key in ("inputs", f"input_class:{item.label_name}"):
        counts[key] = counts.get(key, 0) + 1
    return item


class _ListFolder(beam.DoFn):
    """Streams one folder's entries that match the pattern's file part; counts them per folder."""

    def __init__(self, input_base: str, file_glob: str, extensions: frozenset[str]):
        self._base, self._glob, self._exts = input_base, file_glob, extensions

    def process(self, folder: str):
        counts: dict[str, int] = {}
        for name, is_dir in iter_directory(folder):
            if not fnmatch.fnmatchcase(name, self._glob):
                continue
            outcome = _counted(counts, classify_entry(name, is_dir, folder, self._base,
                                                      self._exts))
            if isinstance(outcome, Rejected):
                yield beam.pvalue.TaggedOutput("rejected", outcome)
            else:
                yield outcome
        if not counts:
            counts[f"empty_folder:{relative_to(folder.rstrip('/'), self._base)}"] = 1
        yield beam.pvalue.TaggedOutput("stats", counts)


class _ParseManifest(beam.DoFn):
    """CSV rows -> candidates or rejections; counts them per bundle."""

    def __init__(self, input_base: str, extensions: frozenset[str], split_names: list[str]):
        self._base, self._exts, self._splits = input_base, extensions, split_names

    def start_bundle(self):
        self._counts: dict[str, int] = {}

    def process(self, item: tuple[str, str]):
        filename, line = item
        outcome = parse_manifest_row(line, filename, self._base, self._exts, self._splits)
        if outcome is None:
            return
        if isinstance(_counted(self._counts, outcome), Rejected):
            yield beam.pvalue.TaggedOutput("rejected", outcome)
        else:
            yield outcome

    def finish_bundle(self):
        if self._counts:
            yield beam.pvalue.TaggedOutput("stats", _windowed(self._counts))
        self._counts = {}


def _one_row_per_path(item: tuple[str, Iterable[Candidate]]):
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

_METRICS = "tlpipe_ingest"
STAGING_DIR = ".ingest-staging"  # in the Examples artifact; removed once the shards are moved
SHARDS_FILE = "shards.json"
_EXAMPLE_FILE = write_split.DEFAULT_TF_RECORD_FILE_NAME + "-{index:05d}-of-{count:05d}.gz"


def _windowed(value):
    """An element emitted from finish_bundle (which has no input element to inherit from)."""
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


def _read_bytes(path: str) -> bytes:
    """The file's bytes: one read, no header probe first (local paths skip tf.io.gfile)."""
    if "://" in path:
        with tf.io.gfile.GFile(path, "rb") as fh:
            return fh.read()
    with open(path, "rb") as fh:
        return fh.read()


class _Inspect(beam.DoFn):
    def __init__(self, max_pixels: int):
        self._max_pixels = max_pixels
        self._read = beam.metrics.Metrics.counter(_METRICS, "files_read")

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
        else:
            yield Described(c, outcome, data)
            yield beam.pvalue.TaggedOutput("meta", (outcome.sha256, Meta(
                outcome.sha256, c.relative_path, c.label_name, c.given_split)))


def _deduplicate(item: tuple[str, Iterable[Meta]]):
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


class _ClassPlan(beam.CombineFn):
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


def make_example(c: Candidate, info: images.ImageInfo, data: bytes, label_id: int) -> bytes:
    """The serialized tf.Example of one accepted image: the bytes exactly as stored."""
    return tf.train.Example(features=tf.train.Features(feature={
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
    })).SerializeToString()


class Shard(NamedTuple):
    """One gzipped TFRecord file a bundle wrote into the staging folder."""
    split: str
    path: str
    records: int


class _WriteExamples(beam.DoFn):
    """Decides each image (kept or lost, its split) and writes its tf.Example straight into a
    per-bundle gzipped TFRecord file per split in the staging folder (TensorFlow's writer, as
    TFX's readers expect), so example bytes never cross a stage boundary again. The bundle emits
    its files (`Shard`s) and its counters once it has closed them: a failed and retried bundle's
    files are never listed, and the executor moves only listed files into the splits (the
    temp-file-then-rename scheme of Beam's own file sinks)."""

    def __init__(self, ratios: SplitRatios, staging_dir: str):
        self._ratios, self._staging = ratios, staging_dir
        self._seen = beam.metrics.Metrics.counter(_METRICS, "images_decided")

    def start_bundle(self):
        self._writers: dict[str, list] = {}
        self._counts: dict[str, int] = {}
        self._plan, self._ids = None, {}

    def _count(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def process(self, d: Described, losers: dict, plan: tuple):
        self._seen.inc()
        c = d.candidate
        lost = losers.get(c.relative_path)
        if lost is not None:
            yield beam.pvalue.TaggedOutput("rejected", Rejected(
                c.relative_path, lost[0], lost[1], c.label_name))
            return
        if plan is not self._plan:
            self._plan, self._ids = plan, {name: i for i, name in enumerate(plan[0])}
        split = (c.given_split or plan[1].get(c.relative_path)
                 or self._ratios.natural(unit_hash(c.relative_path)))
        shard = self._writers.get(split)
        if shard is None:
            path = join(self._staging, split, f"{uuid.uuid4().hex}.gz")
            shard = self._writers[split] = [tf.io.TFRecordWriter(path, options="GZIP"), path, 0]
        shard[0].write(make_example(c, d.info, d.data, self._ids[c.label_name]))
        shard[2] += 1
        self._count(f"written:{split}")
        self._count(f"class:{c.label_name}:{split}")
        for note in d.info.notes:
            self._count(f"note:{note}")

    def finish_bundle(self):
        for split, (writer, path, records) in sorted(self._writers.items()):
            writer.close()
            yield _windowed(Shard(split, path, records))
        if self._counts:
            yield beam.pvalue.TaggedOutput("stats", _windowed(self._counts))
        self._writers, self._counts = {}, {}


class _Report(beam.CombineFn):
    """Every outcome -> (counters, quarantine rows sorted by path, shards): one element.

    Items: a Rejected (a row, counted by reason), a counter dict, a counter name, or a Shard."""

    def create_accumulator(self):
        return {}, [], []

    def add_input(self, acc, item):
        counts, rows, shards = acc
        if isinstance(item, Rejected):
            rows.append(item)
            item = f"rejected:{item.reason}"
        elif isinstance(item, Shard):
            shards.append(item)
            return acc
        if isinstance(item, dict):
            for k, v in item.items():
                counts[k] = counts.get(k, 0) + v
        else:
            counts[item] = counts.get(item, 0) + 1
        return acc

    def merge_accumulators(self, accs):
        counts: dict[str, int] = {}
        rows: list[Rejected] = []
        shards: list[Shard] = []
        for c, r, s in accs:
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
            rows.extend(r)
            shards.extend(s)
        return counts, rows, shards

    def extract_output(self, acc):
        counts, rows, shards = acc
        return (counts, sorted(rows, key=lambda r: (r.relative_path, r.reason)),
                sorted(shards, key=lambda s: (s.split, s.path)))


# ---------------------------------------------------------------------------------------------
# The pipeline

@dataclass
class IngestCollections:
    report: beam.PCollection                # one (counters, sorted quarantine rows, shards)
    plan: beam.pvalue.AsSingleton           # (sorted class names, split corrections)


def build_ingest(pipeline: beam.Pipeline, input_base: str, patterns: list[str],
                 options: IngestOptions, ratios: SplitRatios,
                 staging_dir: str) -> IngestCollections:
    """The whole ingest as Beam transforms. Examples are written into `staging_dir/<split>/` by
    the bundles (see _WriteExamples); the report lists them, `commit_shards` moves them."""
    exts = normalize_extensions(options.extensions)
    split_names = ratios.names
    rejected_parts, stats_parts = [], []
    if options.source == "manifest":
        lines = [pipeline | f"ReadManifest[{i}]" >> beam.io.ReadFromTextWithFilename(
            join(input_base, p)) for i, p in enumerate(patterns)]
        parsed = (lines | "FlattenManifests" >> beam.Flatten()
                  | "ParseRows" >> beam.ParDo(_ParseManifest(input_base, exts, split_names))
                  .with_outputs("rejected", "stats", main="candidates"))
        rows = (parsed.candidates
                | "KeyByPath" >> beam.Map(lambda c: (c.relative_path, c))
                | "GroupByPath" >> beam.GroupByKey()
                | "OneRowPerPath" >> beam.FlatMap(_one_row_per_path)
                .with_outputs("rejected", main="candidates"))
        rejected_parts += [parsed.rejected, rows.rejected]
        stats_parts.append(parsed.stats)
        candidates = rows.candidates
    else:
        folders = []
        for i, pattern in enumerate(patterns):
            head, tail = split_folder_pattern(pattern)
            # One glob of the class folders (as Beam's MatchFiles does), their listings streamed,
            # then the files (not the folders) spread across workers.
            listing = (pipeline
                       | f"Start[{i}]" >> beam.Impulse()
                       | f"FindClassFolders[{i}]" >> beam.FlatMap(
                           _class_folders, join(input_base, head))
                       | f"ListFolders[{i}]" >> beam.ParDo(_ListFolder(input_base, tail, exts))
                       .with_outputs("rejected", "stats", main="candidates"))
            folders.append(listing)
        candidates = ([f.candidates for f in folders] | "FlattenCandidates" >> beam.Flatten()
                      | "SpreadFiles" >> beam.Reshuffle())
        rejected_parts += [f.rejected for f in folders]
        stats_parts += [f.stats for f in folders]

    inspected = candidates | "ReadAndInspect" >> beam.ParDo(
        _Inspect(options.max_pixels)).with_outputs("rejected", "meta", main="described")
    rejected_parts.append(inspected.rejected)
    # Duplicates, class names and split corrections are decided on metadata (no bytes shuffled).
    kept = (inspected.meta
            | "GroupByContent" >> beam.GroupByKey()
            | "Deduplicate" >> beam.FlatMap(_deduplicate).with_outputs("lost", main="kept"))
    plan = beam.pvalue.AsSingleton(
        kept.kept | "ClassPlan" >> beam.CombineGlobally(_ClassPlan(ratios)).without_defaults(),
        default_value=([], {}))  # nothing kept: no classes
    written = inspected.described | "WriteExamples" >> beam.ParDo(
        _WriteExamples(ratios, staging_dir), losers=beam.pvalue.AsDict(kept.lost),
        plan=plan).with_outputs("rejected", "stats", main="shards")
    rejected_parts.append(written.rejected)
    stats_parts.append(written.stats)

    report = (rejected_parts + stats_parts + [written.shards] | "Outcomes" >> beam.Flatten()
              | "Report" >> beam.CombineGlobally(_Report()).without_defaults())
    return IngestCollections(report=report, plan=plan)


def write_outputs(collections: IngestCollections, staging_dir: str, quarantine_dir: str,
                  vocabulary_dir: str, options: IngestOptions, split_names: list[str],
                  spans: list[int]) -> None:
    """The report, the vocabulary and the list of written shards, as four small files."""
    _ = collections.report | "WriteReport" >> beam.Map(
        _write_report, staging_dir, quarantine_dir, vocabulary_dir, options, split_names, spans,
        plan=collections.plan)


def _write_report(report, staging_dir: str, quarantine_dir: str, vocabulary_dir: str,
                  options: IngestOptions, split_names: list[str], spans: list[int],
                  plan: tuple) -> None:
    """One element, so one writer; rewriting the same content on a retry is harmless."""
    counts, rows, shards = report
    class_names = plan[0]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(QUARANTINE_COLUMNS)
    writer.writerows([r.relative_path, r.reason, r.detail, r.label_name] for r in rows)
    summary = summarize(counts, class_names, options, split_names, spans)
    for path, text in ((os.path.join(quarantine_dir, QUARANTINE_FILE), buf.getvalue()),
                       (os.path.join(quarantine_dir, SUMMARY_FILE),
                        json.dumps(summary, indent=2, ensure_ascii=False)),
                       (os.path.join(vocabulary_dir, LABEL_VOCABULARY_FILE),
                        json.dumps(class_names, ensure_ascii=False)),
                       (join(staging_dir, SHARDS_FILE),
                        json.dumps([s._asdict() for s in shards]))):
        with tf.io.gfile.GFile(path, "w") as fh:
            fh.write(text)


def commit_shards(staging_dir: str, split_uris: dict[str, str]) -> dict[str, int]:
    """Moves the shards the pipeline listed into `Split-<name>/data_tfrecord-i-of-n.gz` (an
    empty file for a split without examples, as Beam's sink writes) and removes the staging
    folder with anything a failed bundle left there. Returns the records per split."""
    shards = _read_json(join(staging_dir, SHARDS_FILE))
    records = {}
    for split, uri in split_uris.items():
        mine = [s for s in shards if s["split"] == split]
        tf.io.gfile.makedirs(uri)
        if not mine:
            tf.io.TFRecordWriter(join(uri, _EXAMPLE_FILE.format(index=0, count=1)),
                                 options="GZIP").close()
        for i, shard in enumerate(mine):
            tf.io.gfile.rename(shard["path"], join(uri, _EXAMPLE_FILE.format(
                index=i, count=len(mine))), overwrite=True)
        records[split] = sum(s["records"] for s in mine)
    tf.io.gfile.rmtree(staging_dir)
    return records

# ---------------------------------------------------------------------------------------------
# After the pipeline: the summary and the checks

def summarize(counts: dict[str, int], class_names: list[str], options: IngestOptions,
              split_names: list[str], spans: list[int]) -> dict[str, Any]:
    by_reason = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("rejected:")}
    written = {s: counts.get(f"written:{s}", 0) for s in split_names}
    inputs = counts.get("inputs", 0)
    quarantined = sum(by_reason.values())
    candidates = inputs - by_reason.get(images.NOT_AN_IMAGE, 0) - by_reason.get(
        images.DIRECTORY, 0)
    counted = sum(v for k, v in by_reason.items() if k not in images.NOT_COUNTED)
    per_class: dict[str, dict[str, int]] = {}
    for key, value in counts.items():
        if key.startswith("class:"):
            label, split = key[len("class:"):].rsplit(":", 1)
            per_class.setdefault(label, {s: 0 for s in split_names})[split] = value
    input_labels = {k.split(":", 1)[1] for k in counts if k.startswith("input_class:")}
    return {
        "inputs": inputs,
        "written": sum(written.values()),
        "quarantined": quarantined,
        "written_by_split": written,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "rejected_share": counted / candidates if candidates else 0.0,
        "rejected_share_counts": {"rejected": counted, "image_files": candidates},
        "max_rejected_share": options.max_rejected_share,
        "not_counted_in_share": sorted(images.NOT_COUNTED),
        "class_names": class_names,
        "written_by_class": dict(sorted(per_class.items())),
        "classes_without_examples": sorted(input_labels - set(class_names) - {""}),
        "empty_folders": sorted(k.split(":", 1)[1] for k in counts
                                if k.startswith("empty_folder:")),
        "accepted_notes": {k.split(":", 1)[1]: v for k, v in sorted(counts.items())
                           if k.startswith("note:")},
        "spans": spans,
    }


def problems(summary: dict[str, Any], options: IngestOptions, report_path: str) -> list[str]:
    """Why this dataset must not go on, one sentence each (empty: fine)."""
    out = []
    if summary["inputs"] != summary["written"] + summary["quarantined"]:
        out.append(f"internal error: {summary['inputs']} inputs but {summary['written']} written "
                   f"+ {summary['quarantined']} quarantined")
    share = summary["rejected_share"]
    if share > options.max_rejected_share:
        reasons = ", ".join(f"{k} {v}" for k, v in summary["quarantined_by_reason"].items()
                            if k not in images.NOT_COUNTED)
        out.append(f"{share:.1%} of {summary['rejected_share_counts']['image_files']} image "
                   f"files rejected ({reasons}), above data.max_rejected_share "
                   f"{options.max_rejected_share:.1%}; see {report_path}")
    names = summary["class_names"]
    if len(names) < 2:
        out.append(f"{len(names)} class with usable images ({', '.join(names) or 'none'}): a "
                   f"classifier needs at least 2; see {report_path}")
    small = {k: sum(v.values()) for k, v in summary["written_by_class"].items()
             if sum(v.values()) < options.min_images_per_class}
    if small:
        name = sorted(small)[0]
        out.append(f"class '{name}' has {small[name]} usable image(s), fewer than "
                   f"data.min_images_per_class {options.min_images_per_class}")
    return out


def _read_json(path: str) -> Any:
    with tf.io.gfile.GFile(path) as fh:
        return json.loads(fh.read())


def _spans(exec_properties: dict[str, Any], input_config: example_gen_pb2.Input) -> list[int]:
    names = [s.name for s in input_config.splits]
    if all(n.startswith("span-") for n in names):
        return sorted(int(n[len("span-"):]) for n in names)
    span = exec_properties.get("span")
    return [int(span)] if span is not None else []


class ImageExampleGenExecutor(base_beam_executor.BaseBeamExecutor):
    """Writes the splits, the quarantine report and the vocabulary; fails loudly on bad data."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = example_gen_pb2.Input()
        json_format.Parse(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                          input_config)
        output_config = example_gen_pb2.Output()
        json_format.Parse(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                          output_config)
        ratios = SplitRatios.from_buckets(
            {s.name: s.hash_buckets for s in output_config.split_config.splits})
        options = IngestOptions.from_exec_properties(exec_properties)
        patterns = [s.pattern for s in input_config.splits]
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        quarantine = artifact_utils.get_single_instance(output_dict[QUARANTINE_KEY])
        vocabulary = artifact_utils.get_single_instance(output_dict[VOCABULARY_KEY])
        split_names = ratios.names
        examples.split_names = artifact_utils.encode_split_names(split_names)
        split_uris = {s: artifact_utils.get_split_uri([examples], s) for s in split_names}
        spans = _spans(exec_properties, input_config)
        logging.info("ingest: %s from %s, patterns %s, splits %s", options.source,
                     exec_properties[standard_component_specs.INPUT_BASE_KEY], patterns,
                     split_names)

        staging = join(examples.uri, STAGING_DIR)
        for name in split_names:
            tf.io.gfile.makedirs(join(staging, name))
        with self._make_beam_pipeline() as pipeline:
            collections = build_ingest(
                pipeline, exec_properties[standard_component_specs.INPUT_BASE_KEY], patterns,
                options, ratios, staging)
            write_outputs(collections, staging, quarantine.uri, vocabulary.uri, options,
                          split_names, spans)
        records = commit_shards(staging, split_uris)

        summary = _read_json(os.path.join(quarantine.uri, SUMMARY_FILE))
        # The id -> name table also travels with the examples, as before.
        names_json = json.dumps(summary["class_names"], ensure_ascii=False)
        with tf.io.gfile.GFile(os.path.join(examples.uri, LABEL_VOCABULARY_FILE), "w") as fh:
            fh.write(names_json)

        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, write_split.to_file_format_str(
            example_gen_pb2.FORMAT_TFRECORDS_GZIP))
        examples.set_string_custom_property("label_names", names_json)
        examples.set_string_custom_property("spans", ",".join(map(str, spans)))
        vocabulary.set_string_custom_property("label_names", names_json)
        vocabulary.set_int_custom_property("num_classes", len(summary["class_names"]))
        for artifact in (quarantine, examples):
            artifact.set_int_custom_property("num_inputs", summary["inputs"])
            artifact.set_int_custom_property("num_quarantined", summary["quarantined"])
        quarantine.set_float_custom_property("rejected_share", summary["rejected_share"])

        report_path = os.path.join(quarantine.uri, QUARANTINE_FILE)
        logging.info("ingest: %d inputs, %d written %s, %d quarantined %s (report %s)",
                     summary["inputs"], summary["written"], summary["written_by_split"],
                     summary["quarantined"], summary["quarantined_by_reason"], report_path)
        found = problems(summary, options, report_path)
        if records != summary["written_by_split"]:  # what the files hold = what was counted
            found.insert(0, f"internal error: the split files hold {records} records but "
                            f"{summary['written_by_split']} were written")
        if found:
            raise IngestError("ingest: " + "; ".join(found))
