"""The ingest Beam pipeline: labelled images -> tf.Examples in staged shards, a label
vocabulary and a quarantine report, in one pipeline (the stages are in stages.py).

    patterns ─┬─ folders: glob the class folders ─ list each folder ─────────┐
              └─ manifest: CSV lines ─ parse ─ group by path (one row each) ─┴─ candidates
    candidates ─ Reshuffle ─ read once + inspect (images.py) ─ rejected | metadata |
        provisional shards (each example written by the reading bundle, natural split, no id)
    metadata ─ group by sha256 ─ losers (duplicates, label conflicts): a side input
                               └ kept ─ one combine: class names, split fixes: a side input
    provisional shards ─ Reshuffle ─ streamed, one record at a time: losers dropped, split fixes
        and class ids applied, written into the bundle's final gzipped shard of its split
    rejected + tallies + shards ─ one combine ─ quarantine.csv, summary.json,
        label_vocabulary.json and the list of staged shards (shards.py commits them after)

Memory stays flat in the number of images: example bytes never cross a stage boundary (on the
in-memory DirectRunner a PCollection between stages is held whole). What does cross, and grows
with N, is small: one path per candidate and one Meta (sha256, path, label) per image. The price
is one extra local write and read of each example's bytes (uncompressed; gzip happens once, in
Finalize) and one tf.Example parse, in place of Beam copying every image's bytes from the reading
stage to the writing stage (bench/ingest_bench.py --scale measures both).
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass

import apache_beam as beam
import tensorflow as tf
from tlpipe.components.config import DataConfig
from tlpipe.components.ingest import stages
from tlpipe.components.ingest.listing import join, normalize_extensions, split_folder_pattern
from tlpipe.components.ingest.report import (
    LABEL_VOCABULARY_FILE,
    QUARANTINE_COLUMNS,
    QUARANTINE_FILE,
    SUMMARY_FILE,
)
from tlpipe.components.ingest.shards import PROVISIONAL_DIR, write_shard_list
from tlpipe.components.ingest.splits import SplitRatios
from tlpipe.components.ingest.tally import summarize


@dataclass
class IngestCollections:
    report: beam.PCollection                # one (tally, sorted quarantine rows, shards)
    plan: beam.pvalue.AsSingleton           # (sorted class names, split corrections)


def build_ingest(pipeline: beam.Pipeline, input_base: str, patterns: list[str], data: DataConfig,
                 ratios: SplitRatios, staging_dir: str) -> IngestCollections:
    """The whole ingest as Beam transforms. Examples are written into `staging_dir/<split>/` by
    the bundles (stages.Finalize, from the provisional shards stages.Inspect wrote); the report
    lists them, `commit_shards` moves them."""
    exts = normalize_extensions(data.extensions)
    rejected_parts, stats_parts = [], []
    if data.manifest:
        lines = [pipeline | f"ReadManifest[{i}]" >> beam.io.ReadFromTextWithFilename(
            join(input_base, p)) for i, p in enumerate(patterns)]
        parsed = (lines | "FlattenManifests" >> beam.Flatten()
                  | "ParseRows" >> beam.ParDo(stages.ParseManifest(input_base, exts, ratios.names))
                  .with_outputs("rejected", "stats", main="candidates"))
        rows = (parsed.candidates
                | "KeyByPath" >> beam.Map(lambda c: (c.relative_path, c))
                | "GroupByPath" >> beam.GroupByKey()
                | "OneRowPerPath" >> beam.FlatMap(stages.one_row_per_path)
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
                           stages.class_folders, join(input_base, head))
                       | f"ListFolders[{i}]" >> beam.ParDo(stages.ListFolder(input_base, tail, exts))
                       .with_outputs("rejected", "stats", main="candidates"))
            folders.append(listing)
        candidates = ([f.candidates for f in folders] | "FlattenCandidates" >> beam.Flatten()
                      | "SpreadFiles" >> beam.Reshuffle())
        rejected_parts += [f.rejected for f in folders]
        stats_parts += [f.stats for f in folders]

    inspected = candidates | "ReadAndInspect" >> beam.ParDo(stages.Inspect(
        data.max_pixels, ratios, join(staging_dir, PROVISIONAL_DIR))).with_outputs(
        "rejected", "meta", main="provisional")
    rejected_parts.append(inspected.rejected)
    # Duplicates, class names and split corrections are decided on metadata (no bytes shuffled).
    kept = (inspected.meta
            | "GroupByContent" >> beam.GroupByKey()
            | "Deduplicate" >> beam.FlatMap(stages.deduplicate).with_outputs("lost", main="kept"))
    plan = beam.pvalue.AsSingleton(
        kept.kept | "ClassPlan" >> beam.CombineGlobally(stages.ClassPlan(ratios)).without_defaults(),
        default_value=([], {}))  # nothing kept: no classes
    written = (inspected.provisional | "SpreadShards" >> beam.Reshuffle()
               | "Finalize" >> beam.ParDo(stages.Finalize(staging_dir),
                                          losers=beam.pvalue.AsDict(kept.lost), plan=plan)
               .with_outputs("rejected", "stats", main="shards"))
    rejected_parts.append(written.rejected)
    stats_parts.append(written.stats)

    report = (rejected_parts + stats_parts + [written.shards] | "Outcomes" >> beam.Flatten()
              | "Report" >> beam.CombineGlobally(stages.Report()).without_defaults())
    return IngestCollections(report=report, plan=plan)


def write_outputs(collections: IngestCollections, staging_dir: str, quarantine_dir: str,
                  vocabulary_dir: str, data: DataConfig, split_names: list[str],
                  spans: list[int]) -> None:
    """The report, the vocabulary and the list of written shards, as four small files."""
    _ = collections.report | "WriteReport" >> beam.Map(
        _write_report, staging_dir, quarantine_dir, vocabulary_dir, data, split_names, spans,
        plan=collections.plan)


def _write_report(report, staging_dir: str, quarantine_dir: str, vocabulary_dir: str,
                  data: DataConfig, split_names: list[str], spans: list[int], plan: tuple) -> None:
    """One element, so one writer; rewriting the same content on a retry is harmless."""
    tally, rows, shards = report
    class_names = plan[0]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(QUARANTINE_COLUMNS)
    writer.writerows([r.relative_path, r.reason, r.detail, r.label_name] for r in rows)
    summary = summarize(tally, class_names, data, split_names, spans)
    for path, text in ((os.path.join(quarantine_dir, QUARANTINE_FILE), buf.getvalue()),
                       (os.path.join(quarantine_dir, SUMMARY_FILE),
                        json.dumps(summary, indent=2, ensure_ascii=False)),
                       (os.path.join(vocabulary_dir, LABEL_VOCABULARY_FILE),
                        json.dumps(class_names, ensure_ascii=False))):
        with tf.io.gfile.GFile(path, "w") as fh:
            fh.write(text)
    write_shard_list(staging_dir, shards)
