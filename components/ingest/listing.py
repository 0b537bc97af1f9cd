"""Listing a folder-per-class image tree and assigning splits, without TensorFlow.

Used twice on purpose: by config validation (fail fast, before any component) and by the
ingest executor (the source of truth at run time), so both agree on what counts as an image.
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Optional


class DatasetError(ValueError):
    """The input tree cannot make a classification dataset."""


@dataclass(frozen=True)
class ImageFile:
    path: str           # full path (any tf.io.gfile-reachable path)
    relative_path: str  # relative to the input base; the split hash uses it
    label_name: str


@dataclass(frozen=True)
class ImageListing:
    files: list[ImageFile]
    class_names: list[str]  # sorted: the id of a class is its index here

    def label_id(self, name: str) -> int:
        return self.class_names.index(name)


def has_image_extension(path: str, extensions: Iterable[str]) -> bool:
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    return ext in {e.lower().lstrip(".") for e in extensions}


def scan_image_tree(root: str, pattern: str, extensions: Iterable[str], min_per_class: int = 1,
                    glob_fn: Optional[Callable[[str], list[str]]] = None) -> ImageListing:
    """Lists images matching root/pattern; the class of an image is its parent folder's name."""
    if glob_fn is None:
        if not os.path.isdir(root):
            raise DatasetError(f"data directory not found: {root}")
        glob_fn = lambda p: glob.glob(p)  # noqa: E731
        pattern = pattern.replace("{SPAN}", "*")  # validation: any span will do
    matches = sorted(glob_fn(os.path.join(root, pattern)))
    files = []
    for path in matches:
        if not has_image_extension(path, extensions):
            continue
        rel = os.path.relpath(path, root) if "://" not in root else path[len(root.rstrip("/")) + 1:]
        label = os.path.basename(os.path.dirname(path))
        files.append(ImageFile(path=path, relative_path=rel.replace(os.sep, "/"), label_name=label))
    if not files:
        raise DatasetError(
            f"no images in {root} matching '{pattern}' with extensions {','.join(extensions)} "
            f"(expected {root}/<class>/<image>)")
    counts: dict[str, int] = {}
    for f in files:
        counts[f.label_name] = counts.get(f.label_name, 0) + 1
    if len(counts) < 2:
        raise DatasetError(
            f"{root} has {len(counts)} class ({', '.join(counts)}): a classifier needs at least 2 "
            f"class folders, each holding images")
    small = sorted(name for name, n in counts.items() if n < min_per_class)
    if small:
        raise DatasetError(
            f"class '{small[0]}' has {counts[small[0]]} image(s); each class needs at least "
            f"{min_per_class} (one for train, one for eval)")
    return ImageListing(files=files, class_names=sorted(counts))


def _unit_hash(relative_path: str) -> float:
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(listing: ImageListing, train_ratio: float, train_split: str,
                  eval_split: str) -> dict[str, str]:
    """relative_path -> split, stable when files are added (hash of the path, not list order).

    Per class, so every class is in both splits: a class that the threshold put wholly on one
    side gives its extreme-hash file to the other.
    """
    by_class: dict[str, list[ImageFile]] = {}
    for f in listing.files:
        by_class.setdefault(f.label_name, []).append(f)
    result = {}
    for members in by_class.values():
        ranked = sorted(members, key=lambda f: _unit_hash(f.relative_path))
        splits = [train_split if _unit_hash(f.relative_path) < train_ratio else eval_split
                  for f in ranked]
        if len(ranked) >= 2:
            if eval_split not in splits:
                splits[-1] = eval_split
            if train_split not in splits:
                splits[0] = train_split
        result.update({f.relative_path: s for f, s in zip(ranked, splits)})
    return result
