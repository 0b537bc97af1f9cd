"""What counts as an input, without TensorFlow: patterns, directory entries, manifest rows.

Used by config validation (a bounded look before any component runs) and by the ingest
executor, whose Beam pipeline lists one directory per element, so both agree on what an input is.
"""
from __future__ import annotations

import csv
import errno
import fnmatch
import glob
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from tlpipe.components.errors import TlpipeError

SPAN_SPEC = re.compile(r"\{SPAN(:\d+)?\}")

# Quarantine reasons of inputs that are not regular files (the others are in images.py). They
# are never opened: a FIFO blocks its reader forever, a device can stream without end.
DANGLING_SYMLINK = "dangling_symlink"
SYMLINK_LOOP = "symlink_loop"
NOT_A_REGULAR_FILE = "not_a_regular_file"


class DatasetError(TlpipeError, ValueError):
    """The input cannot make a classification dataset."""


@dataclass(frozen=True)
class Candidate:
    """One input that looks like an image and will be read."""
    path: str           # full path (anything tf.io.gfile reaches)
    relative_path: str  # relative to the input base; the split hash and the report use it
    label_name: str
    given_split: str = ""  # a manifest's split column; "" means by hash


@dataclass(frozen=True)
class Rejected:
    """One input that will not become an example, and why: a row of the quarantine report."""
    relative_path: str
    reason: str
    detail: str = ""
    label_name: str = ""


def normalize_extensions(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset(e.lower().lstrip(".") for e in extensions)


def has_image_extension(path: str, extensions: Iterable[str]) -> bool:
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    allowed = extensions if isinstance(extensions, frozenset) else normalize_extensions(extensions)
    return ext in allowed


def join(base: str, *parts: str) -> str:
    """Joins with '/' for URLs (gs://...) and os.path for local paths."""
    return posixpath.join(base, *parts) if "://" in base else os.path.join(base, *parts)


def relative_to(path: str, base: str) -> str:
    """`path` relative to `base` with '/' separators; the path itself when it is outside base."""
    if "://" in base or "://" in path:
        prefix = base.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path
    rel = os.path.relpath(path, base)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return path
    return rel.replace(os.sep, "/")


def split_folder_pattern(pattern: str) -> tuple[str, str]:
    """'span-3/*/*' -> ('span-3/*', '*'): directories to list, then names to keep in each.

    The class of an image is the name of the directory holding it, so the pattern needs at least
    two components.
    """
    head, _, tail = pattern.rstrip("/").rpartition("/")
    if not head or not tail:
        raise DatasetError(
            f"data.pattern '{pattern}' must name a class folder and a file, e.g. '*/*'")
    return head, tail


def iter_directory(path: str) -> Iterator[tuple[str, bool]]:
    """(name, is_directory) of each entry, streamed for local trees; gs:// through tf.io.gfile."""
    if "://" not in path:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:  # a symlink loop: classify_entry says so
                    is_dir = False
                yield entry.name, is_dir
        return
    import tensorflow as tf  # only for remote filesystems

    for name in tf.io.gfile.listdir(path):
        if name.endswith("/"):
            yield name.rstrip("/"), True
        else:
            yield name, tf.io.gfile.isdir(join(path, name))


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def odd_file_problem(path: str) -> tuple[str, str] | None:
    """(reason, detail) when a local path named like an image is not a regular file and must not
    be opened: a dangling symlink, a symlink loop, a FIFO, socket or device. None otherwise, and
    for a missing or unreadable path or a URL: the reader reports those."""
    if "://" in path:
        return None
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a link to a FIFO is a FIFO
    except FileNotFoundError:
        try:
            return DANGLING_SYMLINK, f"symlink to {os.readlink(path)!r}, which does not exist"
        except OSError:  # not a symlink: simply missing
            return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            return SYMLINK_LOOP, "symlink loop: it resolves back to itself"
        return None
    if stat.S_ISREG(mode):
        return None
    return NOT_A_REGULAR_FILE, f"a {_file_kind(mode)}, not a regular file: never opened"


def classify_entry(name: str, is_dir: bool, directory: str, input_base: str,
                   extensions: frozenset[str]) -> Candidate | Rejected:
    """The outcome of listing one directory entry that matched the pattern."""
    full = join(directory, name)
    rel = relative_to(full, input_base)
    label = posixpath.basename(directory.rstrip("/").replace(os.sep, "/"))
    if is_dir:
        return Rejected(rel, "directory", "a folder where image files are expected; its "
                        "contents are not read (see data.pattern)", label)
    if not has_image_extension(name, extensions):
        return Rejected(rel, "not_an_image",
                        f"extension not in data.extensions ({','.join(sorted(extensions))})", label)
    odd = odd_file_problem(full)
    if odd:
        return Rejected(rel, *odd, label)
    return Candidate(full, rel, label)


MANIFEST_HEADER = ("path", "label")


def parse_manifest_row(line: str, manifest_path: str, input_base: str,
                       extensions: frozenset[str], split_names: Iterable[str],
                       ) -> Candidate | Rejected | None:
    """One CSV line `path,label[,split]` -> a candidate, a rejection, or None (blank or header).

    Relative paths are relative to the CSV's folder; absolute paths and URLs are used as given.
    """
    line = line.lstrip("\ufeff")
    if not line.strip():
        return None
    try:
        fields = [f.strip() for f in next(csv.reader([line]))]
    except (csv.Error, StopIteration) as err:
        return Rejected(line, "bad_manifest_row", f"not CSV: {err}")
    if tuple(f.lower() for f in fields[:2]) == MANIFEST_HEADER:
        return None
    if len(fields) < 2 or len(fields) > 3 or not fields[0] or not fields[1]:
        return Rejected(fields[0] if fields and fields[0] else line, "bad_manifest_row",
                        "expected path,label[,split] with a path and a label")
    path, label = fields[0], fields[1]
    split = fields[2].lower() if len(fields) == 3 else ""
    if "://" in path or os.path.isabs(path):
        full = path
    else:
        folder = posixpath.dirname(manifest_path) if "://" in manifest_path else os.path.dirname(
            manifest_path)
        full = join(folder, path) if "://" in folder else os.path.normpath(join(folder, path))
    rel = relative_to(full, input_base)
    if split and split not in set(split_names):
        return Rejected(rel, "bad_manifest_row",
                        f"split '{split}' is not one of {', '.join(split_names)}", label)
    if not has_image_extension(full, extensions):
        return Rejected(rel, "not_an_image",
                        f"extension not in data.extensions ({','.join(sorted(extensions))})", label)
    odd = odd_file_problem(full)
    if odd:
        return Rejected(rel, *odd, label)
    return Candidate(full, rel, label, split)


@dataclass(frozen=True)
class TreeCheck:
    class_names: list[str]
    source: str  # what was checked, for messages


def check_image_tree(root: str, pattern: str, extensions: Iterable[str], min_per_class: int = 1,
                     glob_fn: Callable[[str], list[str]] | None = None) -> TreeCheck:
    """Fast, bounded sanity check before anything runs (config validation).

    Lists only the class folders, and in each stops after `min_per_class` image names, so it
    stays quick on large trees; the executor does the real, complete listing on Beam. Folders
    without images (empty classes) are left for the executor to report.
    """
    if "://" not in root and not os.path.isdir(root):
        raise DatasetError(f"data directory not found: {root}")
    if glob_fn is None and "://" in root:
        import tensorflow as tf  # gs:// and other remote filesystems

        glob_fn = tf.io.gfile.glob
    glob_fn = glob_fn or glob.glob
    exts = normalize_extensions(extensions)
    head, tail = split_folder_pattern(SPAN_SPEC.sub("*", pattern))  # any span will do
    counts: dict[str, int] = {}
    for directory in sorted(glob_fn(join(root, head))):
        if "://" not in directory and not os.path.isdir(directory):
            continue
        label = posixpath.basename(directory.rstrip("/").replace(os.sep, "/"))
        found = counts.get(label, 0)
        for name, is_dir in iter_directory(directory):
            if found >= min_per_class:
                break
            if not is_dir and fnmatch.fnmatchcase(name, tail) and has_image_extension(name, exts):
                found += 1
        if found:
            counts[label] = found
    if not counts:
        raise DatasetError(
            f"no images in {root} matching '{pattern}' with extensions {','.join(extensions)} "
            f"(expected {root}/<class>/<image>)")
    if len(counts) < 2:
        raise DatasetError(
            f"{root} has {len(counts)} class ({', '.join(counts)}): a classifier needs at least 2 "
            f"class folders, each holding images")
    small = sorted(name for name, n in counts.items() if n < min_per_class)
    if small:
        raise DatasetError(
            f"class '{small[0]}' has {counts[small[0]]} image(s); each class needs at least "
            f"{min_per_class} (one for train, one for eval)")
    return TreeCheck(class_names=sorted(counts), source=join(root, pattern))


def check_manifest(root: str, manifest: str) -> str:
    """The manifest (any span) exists and starts like `path,label[,split]`; returns its path."""
    if "://" not in root and not os.path.isdir(root):
        raise DatasetError(f"data directory not found: {root}")
    matches = sorted(glob.glob(join(root, SPAN_SPEC.sub("*", manifest)))) if "://" not in root \
        else [join(root, manifest)]
    if not matches:
        raise DatasetError(f"manifest not found: {join(root, manifest)}")
    path = matches[-1]
    if "://" in path:
        return path
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for row in csv.reader(fh):
            if not row or not any(f.strip() for f in row):
                continue
            if len(row) < 2:
                raise DatasetError(f"manifest {path}: expected rows 'path,label[,split]', got "
                                   f"{','.join(row)!r}")
            return path
    raise DatasetError(f"manifest {path} is empty")


def check_input(root: str, pattern: str, manifest: str | None, extensions: Iterable[str],
                min_per_class: int, num_spans: int = 1) -> None:
    """Config validation of the data settings against the data root; raises DatasetError."""
    source = manifest or pattern
    if num_spans > 1 and not SPAN_SPEC.search(source):
        raise DatasetError(f"data.num_spans {num_spans} needs '{{SPAN}}' in "
                           f"{'data.manifest' if manifest else 'data.pattern'} ('{source}')")
    if num_spans > 1 and "{VERSION" in source:
        raise DatasetError("data.num_spans > 1 does not support {VERSION} in the pattern")
    if manifest:
        check_manifest(root, manifest)
    else:
        check_image_tree(root, pattern, extensions, min_per_class=min_per_class)
