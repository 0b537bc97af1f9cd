"""The file-system source: which versions of each model should be served right now.

Like TF Serving's FileSystemStoragePathSource it only lists version directories (through
`serving.layout`, which owns the format: integer names, dot-prefixed temp dirs ignored) and
applies the version policy; loading and unloading are the manager's business. It also reads
the layout's labels file, so a label moved on disk takes effect at the next poll.
"""
from __future__ import annotations

import logging
import os

from tlpipe.serving import layout
from tlpipe.serving.config import ModelConfig

log = logging.getLogger(__name__)


def aspired_versions(model: ModelConfig) -> dict[int, str] | None:
    """Version number -> directory, for the versions the policy wants served; None when the
    directory could not be listed this time (a version retired mid-listing, a bad
    metadata.json), so the caller changes nothing rather than unloading what it serves."""
    try:
        found = {v.number: v.path for v in layout.versions(model.base_path)}
    except Exception as err:
        log.warning("model %s: cannot list %s: %s", model.name, model.base_path, err)
        return None
    if not found:
        log.debug("model %s: no versions under %s", model.name, model.base_path)
    return {number: found[number] for number in model.policy.select(list(found))}


def version_labels(model: ModelConfig) -> dict[str, int]:
    """Labels for the model: the base path's labels file (written by tlpipe, re-read every
    poll), overridden by the server config's `version_labels`."""
    try:
        from_files = layout.read_labels(model.base_path)
    except Exception as err:  # a half-edited labels file must not stop the poll
        log.warning("model %s: cannot read labels: %s", model.name, err)
        from_files = {}
    return {**from_files, **model.labels}


def fingerprint(path: str) -> tuple:
    """What a version directory looks like now (files, sizes, mtimes): a version that failed to
    load is retried once this changes, so a copy that was half-written when first seen loads
    when it completes. Remote file systems (no os.walk) give the path alone."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in [*dirs, *sorted(files)]:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            entries.append((os.path.relpath(os.path.join(root, name), path), stat.st_size,
                            stat.st_mtime_ns))
    return (path, tuple(entries))
