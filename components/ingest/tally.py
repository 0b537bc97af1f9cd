"""What ingest counted, and what that means: a small typed accumulator the Beam stages fill per
folder or bundle and merge once, the summary written to `summary.json`, and the checks that fail
the run. Pure Python: no Beam, no TensorFlow, so it is tested on plain values.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tlpipe.components.config import DataConfig
from tlpipe.components.ingest import images


@dataclass
class Tally:
    """Counts of one folder, bundle or the whole run; `merge` adds another one in."""
    inputs: int = 0
    inputs_by_class: Counter[str] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    written: Counter[tuple[str, str]] = field(default_factory=Counter)  # (label, split) -> examples
    notes: Counter[str] = field(default_factory=Counter)  # accepted with a conversion
    empty_folders: set[str] = field(default_factory=set)

    def count_input(self, label_name: str) -> None:
        self.inputs += 1
        self.inputs_by_class[label_name] += 1

    def count_written(self, label_name: str, split: str, notes: tuple[str, ...] | list[str]) -> None:
        self.written[(label_name, split)] += 1
        self.notes.update(notes)

    def merge(self, other: Tally) -> Tally:
        self.inputs += other.inputs
        self.inputs_by_class.update(other.inputs_by_class)
        self.rejected_by_reason.update(other.rejected_by_reason)
        self.written.update(other.written)
        self.notes.update(other.notes)
        self.empty_folders |= other.empty_folders
        return self

    def __bool__(self) -> bool:
        return bool(self.inputs or self.rejected_by_reason or self.written or self.empty_folders)


def summarize(tally: Tally, class_names: list[str], data: DataConfig, split_names: list[str],
              spans: list[int]) -> dict[str, Any]:
    """The content of `summary.json` (its keys are read by report.py and the run summary)."""
    by_reason = tally.rejected_by_reason
    written = {s: 0 for s in split_names}
    per_class: dict[str, dict[str, int]] = {}
    for (label, split), n in tally.written.items():
        written[split] += n
        per_class.setdefault(label, {s: 0 for s in split_names})[split] = n
    quarantined = sum(by_reason.values())
    candidates = tally.inputs - by_reason[images.NOT_AN_IMAGE] - by_reason[images.DIRECTORY]
    counted = sum(v for k, v in by_reason.items() if k not in images.NOT_COUNTED)
    return {
        "inputs": tally.inputs,
        "written": sum(written.values()),
        "quarantined": quarantined,
        "written_by_split": written,
        "quarantined_by_reason": {k: v for k, v in sorted(by_reason.items()) if v},
        "rejected_share": counted / candidates if candidates else 0.0,
        "rejected_share_counts": {"rejected": counted, "image_files": candidates},
        "max_rejected_share": data.max_rejected_share,
        "not_counted_in_share": sorted(images.NOT_COUNTED),
        "class_names": class_names,
        "written_by_class": dict(sorted(per_class.items())),
        "classes_without_examples": sorted(set(tally.inputs_by_class) - set(class_names) - {""}),
        "empty_folders": sorted(tally.empty_folders),
        "accepted_notes": {k: v for k, v in sorted(tally.notes.items()) if v},
        "spans": spans,
    }


def problems(summary: dict[str, Any], data: DataConfig, report_path: str) -> list[str]:
    """Why this dataset must not go on, one sentence each (empty: fine)."""
    out = []
    if summary["inputs"] != summary["written"] + summary["quarantined"]:
        out.append(f"internal error: {summary['inputs']} inputs but {summary['written']} written "
                   f"+ {summary['quarantined']} quarantined")
    share = summary["rejected_share"]
    if share > data.max_rejected_share:
        reasons = ", ".join(f"{k} {v}" for k, v in summary["quarantined_by_reason"].items()
                            if k not in images.NOT_COUNTED)
        out.append(f"{share:.1%} of {summary['rejected_share_counts']['image_files']} image "
                   f"files rejected ({reasons}), above data.max_rejected_share "
                   f"{data.max_rejected_share:.1%}; see {report_path}")
    names = summary["class_names"]
    if len(names) < 2:
        out.append(f"{len(names)} class with usable images ({', '.join(names) or 'none'}): a "
                   f"classifier needs at least 2; see {report_path}")
    small = {k: sum(v.values()) for k, v in summary["written_by_class"].items()
             if sum(v.values()) < data.min_images_per_class}
    if small:
        name = sorted(small)[0]
        out.append(f"class '{name}' has {small[name]} usable image(s), fewer than "
                   f"data.min_images_per_class {data.min_images_per_class}")
    return out
