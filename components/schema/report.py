"""Reading a LabelDomain artifact back (run summary, people), from any storage tlpipe writes to."""
from __future__ import annotations

import os
from typing import Any

from tlpipe.components import storage

LABEL_DOMAIN_FILE = "label_domain.json"


def read_label_domain(artifact_uri: str) -> dict[str, Any]:
    """label_domain.json: classes (the pinned domain after this run), status, pinned_at,
    previous (the domain this run was compared with, or null), current (this run's classes),
    unknown, dropped, examples_by_class, on_class_change, message."""
    return storage.read_json(os.path.join(artifact_uri, LABEL_DOMAIN_FILE))


def label_domain_lines(artifact_uri: str) -> list[str]:
    """The run summary's lines about the label domain: one, or two when the classes changed."""
    d = read_label_domain(artifact_uri)
    lines = [f"label domain: {len(d['classes'])} classes, {d['status']} "
             f"(pinned {d['pinned_at']})"]
    if d["unknown"] or d["dropped"]:
        lines.append(f"  classes changed: unknown {', '.join(d['unknown']) or '-'}; "
                     f"without examples {', '.join(d['dropped']) or '-'} "
                     f"(data.on_class_change={d['on_class_change']})")
    return lines
