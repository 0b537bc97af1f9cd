"""The ingest node's report files: their names, and reading them back (for the run summary and
for people).

No TensorFlow import unless the artifact lives on a remote filesystem.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

QUARANTINE_FILE = "quarantine.csv"
QUARANTINE_COLUMNS = ("path", "reason", "detail", "label")
SUMMARY_FILE = "summary.json"
LABEL_VOCABULARY_FILE = "label_vocabulary.json"  # in the LabelVocabulary and Examples artifacts


def _read_text(path: str) -> str:
    if "://" in path:
        import tensorflow as tf

        with tf.io.gfile.GFile(path) as fh:
            return fh.read()
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def quarantine_rows(artifact_uri: str) -> list[dict[str, str]]:
    """Every rejected input: {path, reason, detail, label}, sorted by path."""
    text = _read_text(os.path.join(artifact_uri, QUARANTINE_FILE))
    return list(csv.DictReader(io.StringIO(text)))


def quarantine_summary(artifact_uri: str) -> dict[str, Any]:
    """What the run summary shows about ingest, from a QuarantineReport artifact's folder.

    Keys: inputs, written, quarantined, written_by_split, by_reason (reason -> count),
    rejected_share, max_rejected_share, class_names, classes_without_examples, empty_folders,
    accepted_notes (accepted with a conversion, e.g. cmyk, exif_orientation_not_applied), spans,
    rows (every quarantined input: path, reason, detail, label) and lines (a short human text).
    """
    summary = json.loads(_read_text(os.path.join(artifact_uri, SUMMARY_FILE)))
    rows = quarantine_rows(artifact_uri)
    by_reason = summary.get("quarantined_by_reason", {})
    out = {
        "inputs": summary["inputs"],
        "written": summary["written"],
        "quarantined": summary["quarantined"],
        "written_by_split": summary["written_by_split"],
        "by_reason": by_reason,
        "rejected_share": summary["rejected_share"],
        "max_rejected_share": summary["max_rejected_share"],
        "class_names": summary["class_names"],
        "classes_without_examples": summary.get("classes_without_examples", []),
        "empty_folders": summary.get("empty_folders", []),
        "accepted_notes": summary.get("accepted_notes", {}),
        "spans": summary.get("spans", []),
        "rows": rows,
    }
    out["lines"] = summary_lines(out, os.path.join(artifact_uri, QUARANTINE_FILE))
    return out


def summary_lines(s: dict[str, Any], report_path: str) -> list[str]:
    splits = ", ".join(f"{k} {v}" for k, v in s["written_by_split"].items())
    lines = [f"ingest: {s['inputs']} inputs -> {s['written']} examples ({splits}), "
             f"{s['quarantined']} quarantined"]
    if s["quarantined"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["by_reason"].items()))
        lines.append(f"  quarantined: {reasons} (rejected share {s['rejected_share']:.1%}, "
                     f"limit {s['max_rejected_share']:.0%}); see {report_path}")
    if s["classes_without_examples"] or s["empty_folders"]:
        missing = sorted(set(s["classes_without_examples"]) | set(s["empty_folders"]))
        lines.append(f"  folders without usable images: {', '.join(missing)}")
    if s["accepted_notes"]:
        notes = ", ".join(f"{k} {v}" for k, v in sorted(s["accepted_notes"].items()))
        lines.append(f"  accepted with conversion at decode: {notes}")
    return lines
