"""Deterministic, per-class splits that stay put when files are added. No TensorFlow, no Beam.

A file's split is decided by a hash of its relative path, mapped to [0, 1): below `train` it is
train, then eval, then test. The hash ignores list order and the other files, so adding files
never moves an existing one.

One correction needs the class as a whole: a class that the hash put wholly outside a split
(likely only for tiny classes) gives that split the file whose hash is nearest to it. That file
can move back when the class grows and the hash fills the split naturally; no rule can avoid
this for every class size (three files, pairwise forced apart, cannot all stay apart), so the
correction is the one, documented, exception to stability.

The correction needs only a bounded summary per class (counts and the few extreme hashes of each
split), so it runs as a Beam CombineFn without holding a class's file list in one process.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from tlpipe.components.features import EVAL_SPLIT as EVAL
from tlpipe.components.features import TEST_SPLIT as TEST
from tlpipe.components.features import TRAIN_SPLIT as TRAIN

ORDER = (TRAIN, EVAL, TEST)  # hash order: train lowest, test highest
_KEEP = 3  # extreme hashes kept per split and end: at most two corrections draw on one split


def unit_hash(relative_path: str) -> float:
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class SplitRatios:
    train: float
    eval: float
    test: float = 0.0

    @classmethod
    def from_buckets(cls, buckets: dict[str, int]) -> SplitRatios:
        total = sum(buckets.values())
        return cls(train=buckets.get(TRAIN, 0) / total, eval=buckets.get(EVAL, 0) / total,
                   test=buckets.get(TEST, 0) / total)

    @property
    def names(self) -> list[str]:
        return [TRAIN, EVAL] + ([TEST] if self.test > 0 else [])

    def natural(self, h: float) -> str:
        if h < self.train:
            return TRAIN
        if h < self.train + self.eval or self.test <= 0:
            return EVAL
        return TEST

    def required(self, class_size: int) -> list[str]:
        """Splits every class must reach: train and eval from 2 files, test too from 3."""
        if class_size < 2:
            return []
        return [TRAIN, EVAL] + ([TEST] if self.test > 0 and class_size >= 3 else [])


def _bound(items: list, reverse: bool) -> list:
    return sorted(items, reverse=reverse)[:_KEEP]


class ClassSplitSummary:
    """Mergeable per-class summary: per split, the count and the lowest/highest hashed files.

    Files whose split is given (a manifest's split column) count but are never moved.
    """

    def __init__(self, ratios: SplitRatios):
        self.ratios = ratios
        self.counts = {name: 0 for name in ORDER}
        self.low: dict[str, list[tuple[float, str]]] = {name: [] for name in ORDER}
        self.high: dict[str, list[tuple[float, str]]] = {name: [] for name in ORDER}

    def add(self, relative_path: str, given_split: str = "") -> ClassSplitSummary:
        if given_split:
            self.counts[given_split] += 1
            return self
        h = unit_hash(relative_path)
        name = self.ratios.natural(h)
        self.counts[name] += 1
        self.low[name] = _bound(self.low[name] + [(h, relative_path)], reverse=False)
        self.high[name] = _bound(self.high[name] + [(h, relative_path)], reverse=True)
        return self

    def merge(self, other: ClassSplitSummary) -> ClassSplitSummary:
        for name in ORDER:
            self.counts[name] += other.counts[name]
            self.low[name] = _bound(self.low[name] + other.low[name], reverse=False)
            self.high[name] = _bound(self.high[name] + other.high[name], reverse=True)
        return self

    def corrections(self) -> dict[str, str]:
        """relative_path -> split for the few files moved so every required split has one."""
        counts = dict(self.counts)
        moved: dict[str, str] = {}

        def extreme(split: str, highest: bool) -> tuple[float, str] | None:
            pool = self.high[split] if highest else self.low[split]
            return next((item for item in pool if item[1] not in moved), None)

        required = self.ratios.required(sum(counts.values()))
        # train first (lowest hash), then test (highest), then eval between them.
        for target in [s for s in (TRAIN, TEST, EVAL) if s in required]:
            if counts[target]:
                continue
            candidates = []
            for donor in ORDER:
                if donor == target or counts[donor] < 2:
                    continue
                below = ORDER.index(donor) < ORDER.index(target)
                item = extreme(donor, highest=below)
                if item is not None:
                    # Nearest to the target's interval: distance to its boundary.
                    lo = {TRAIN: 0.0, EVAL: self.ratios.train,
                          TEST: self.ratios.train + self.ratios.eval}[target]
                    hi = {TRAIN: self.ratios.train, EVAL: self.ratios.train + self.ratios.eval,
                          TEST: 1.0}[target]
                    distance = lo - item[0] if below else item[0] - hi
                    candidates.append((distance, item[1], donor))
            if not candidates:
                continue
            _, path, donor = min(candidates)
            moved[path] = target
            counts[donor] -= 1
            counts[target] += 1
        return moved


def assign_splits(files: Iterable[tuple[str, str]], ratios: SplitRatios,
                  given: dict[str, str] | None = None) -> dict[str, str]:
    """(relative_path, label) pairs -> {relative_path: split}; the same rule the executor runs.

    For tests and the benchmark's plain loop; the executor computes the same thing on Beam.
    """
    given = given or {}
    by_class: dict[str, ClassSplitSummary] = {}
    paths = []
    for path, label in files:
        by_class.setdefault(label, ClassSplitSummary(ratios)).add(path, given.get(path, ""))
        paths.append(path)
    forced: dict[str, str] = {}
    for summary in by_class.values():
        forced.update(summary.corrections())
    return {p: given.get(p) or forced.get(p) or ratios.natural(unit_hash(p)) for p in paths}
