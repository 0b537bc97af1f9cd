"""The pinned label domain: which classes a run's data may have, and what to do when it differs.

The first run's class list (ingest's label vocabulary) becomes the pinned domain. Every later
run compares its own class list with the pinned one:
- an unknown class: a class with examples in this data that the pinned domain does not have;
- a dropped class: a class of the pinned domain with no example in this data (no folder, an
  empty folder, or every file quarantined). TFDV does not flag values that never occur, so this
  check is here, not in ExampleValidator.

Label ids are positions in the sorted class list, so either change renumbers classes, changes
the model's output layer (and a warm start's head), and makes the comparison with the last
blessed model compare different classes. `data.on_class_change` decides:
- fail (default): the run stops before Transform, with one message naming the classes;
- warn: reported (log, the LabelDomain artifact, ExampleValidator's anomalies on `label_name`
  and `label`), the run goes on, the domain stays pinned (the next run warns again);
- accept: reported, the run goes on and this run's classes become the pinned domain (the
  deliberate way to add or retire a class: one run with `--set data.on_class_change=accept`).

No TFX here: tests and the component share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tensorflow_metadata.proto.v0 import schema_pb2
from tlpipe.components import features
from tlpipe.components.errors import TlpipeError

ON_CHANGE = ("fail", "warn", "accept")

# Statuses recorded on the LabelDomain artifact.
FIRST_PIN = "pinned"          # no earlier domain: this run's classes are pinned
UNCHANGED = "unchanged"       # same classes as pinned
WARNED = "changed_warned"     # changed, reported, domain kept (on_class_change=warn)
ACCEPTED = "changed_accepted"  # changed, this run's classes pinned (on_class_change=accept)


class LabelDomainError(TlpipeError, RuntimeError):
    """The data's classes differ from the pinned domain and data.on_class_change is fail."""


@dataclass
class DomainCheck:
    pinned: list[str]                 # the domain this run is compared with
    current: list[str]                # classes with examples in this run's data
    unknown: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    examples: dict[str, int] = field(default_factory=dict)  # class -> examples in this run
    unusable: list[str] = field(default_factory=list)  # folders present, no usable image

    @property
    def changed(self) -> bool:
        return bool(self.unknown or self.dropped)


def compare(pinned: list[str], current: list[str], examples: dict[str, int] | None = None,
            unusable: list[str] | None = None) -> DomainCheck:
    pinned_set, current_set = set(pinned), set(current)
    return DomainCheck(pinned=sorted(pinned), current=sorted(current),
                       unknown=sorted(current_set - pinned_set),
                       dropped=sorted(pinned_set - current_set),
                       examples=dict(examples or {}), unusable=sorted(unusable or []))


def describe(check: DomainCheck) -> str:
    """One sentence per kind of change, naming the classes."""
    parts = []
    if check.unknown:
        named = ", ".join(f"'{c}'" + (f" ({check.examples[c]} examples)"
                                      if c in check.examples else "") for c in check.unknown)
        parts.append(f"unknown class{'es' if len(check.unknown) > 1 else ''} {named} not in the "
                     f"pinned domain")
    if check.dropped:
        named = ", ".join(f"'{c}'" + (" (folder present, no usable image)"
                                      if c in check.unusable else "") for c in check.dropped)
        parts.append(f"pinned class{'es' if len(check.dropped) > 1 else ''} {named} without "
                     f"examples in this data")
    return "; ".join(parts)


def decide(check: DomainCheck, on_change: str, first: bool) -> tuple[str, list[str], str]:
    """(status, the domain to pin for the next run, one log line). Raises LabelDomainError when
    the domain changed and `on_change` is fail."""
    if on_change not in ON_CHANGE:
        raise ValueError(f"data.on_class_change must be one of {', '.join(ON_CHANGE)}, "
                         f"got '{on_change}'")
    n = len(check.current)
    if first:
        return FIRST_PIN, check.current, (
            f"label_domain: pinned {n} classes from this run's data: {', '.join(check.current)}")
    if not check.changed:
        return UNCHANGED, check.pinned, (
            f"label_domain: {n} classes, as pinned")
    what = describe(check)
    pinned = f"pinned domain ({len(check.pinned)}): {', '.join(check.pinned)}"
    if on_change == "fail":
        raise LabelDomainError(
            f"label_domain: the classes changed: {what}; {pinned}. This changes the model's "
            f"output layer, and label ids (positions in the sorted class list) may shift. Fix "
            f"the data, or run once with --set data.on_class_change=accept to pin this data's "
            f"{n} classes (data.on_class_change=warn reports and goes on)")
    if on_change == "warn":
        return WARNED, check.pinned, (
            f"label_domain: WARNING the classes changed: {what}; {pinned}; going on "
            f"(data.on_class_change=warn): the model is trained on this data's {n} classes, the "
            f"domain stays pinned, ExampleValidator reports the unknown values")
    return ACCEPTED, check.current, (
        f"label_domain: the classes changed: {what}; accepted (data.on_class_change=accept): "
        f"pinned this data's {n} classes: {', '.join(check.current)}")


def pin_schema(schema: schema_pb2.Schema, domain: list[str]) -> schema_pb2.Schema:
    """The inferred schema with the label domains pinned: `label_name` takes a string domain of
    the pinned class names and `label` an int domain [0, n-1], so ExampleValidator reports an
    unknown class name (ENUM_TYPE_UNEXPECTED_STRING_VALUES) and an id beyond the pinned classes
    (INT_TYPE_BIG_INT). Every other feature stays as inferred from this run's data."""
    pinned = schema_pb2.Schema()
    pinned.CopyFrom(schema)
    by_name = {f.name: f for f in pinned.feature}
    missing = [k for k in (features.LABEL_NAME_KEY, features.LABEL_KEY) if k not in by_name]
    if missing:
        raise ValueError(f"the inferred schema has no feature {', '.join(missing)}")
    kept = [d for d in pinned.string_domain if d.name != features.LABEL_NAME_KEY]
    del pinned.string_domain[:]
    pinned.string_domain.extend(kept)
    pinned.string_domain.add(name=features.LABEL_NAME_KEY, value=sorted(domain))
    by_name[features.LABEL_NAME_KEY].domain = features.LABEL_NAME_KEY
    by_name[features.LABEL_KEY].int_domain.CopyFrom(
        schema_pb2.IntDomain(name=features.LABEL_KEY, min=0, max=max(len(domain) - 1, 0)))
    return pinned


def examples_by_class(summary: dict[str, Any]) -> dict[str, int]:
    """From ingest's summary.json: class -> examples written (all splits)."""
    return {label: sum(splits.values())
            for label, splits in summary.get("written_by_class", {}).items()}
