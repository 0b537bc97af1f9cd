"""Layer names of each registry base, shipped as base_layers.json, and the checks on the layers a
config names (`base.cut_at`, `trainer.fine_tune_from`).

Building a base imports TensorFlow and takes seconds; the shipped table lets `validate` check
those names in milliseconds, before anything runs. The trainer runs the same checks on the base
it built. Regenerate the table with `python -m components.trainer.base_layers`; a test compares
it with freshly built bases.
"""
from __future__ import annotations

import difflib
import functools
import json
import sys
from pathlib import Path

from tlpipe.components.errors import TlpipeError
from tlpipe.components.trainer.backbones import BACKBONES, build_base

TABLE = Path(__file__).with_name("base_layers.json")


class CutLayerError(TlpipeError, ValueError):
    """`base.cut_at` or `trainer.fine_tune_from` names no layer of the base, or the cut lies below
    the fine-tune boundary."""


@functools.cache
def _table() -> dict[str, list[str]]:
    return json.loads(TABLE.read_text()) if TABLE.is_file() else {}


def layer_names(base: str) -> list[str] | None:
    """The layers of a registry base in order, from the shipped table (None: not in it)."""
    return _table().get(base)


def _near(name: str, names: list[str]) -> str:
    return ", ".join(difflib.get_close_matches(name, names, n=8, cutoff=0.4) or names[-8:])


def fine_tune_boundary(base: str, names: list[str], fine_tune_from: str | None) -> str:
    """First layer phase 2 unfreezes: the configured name or fraction, else the registry's."""
    if not fine_tune_from:
        return BACKBONES[base].fine_tune_at
    try:
        fraction = float(fine_tune_from)
    except ValueError:
        if fine_tune_from not in names:
            raise CutLayerError(f"trainer.fine_tune_from: '{fine_tune_from}' is not a layer of base "
                                f"'{base}' (near it: {_near(fine_tune_from, names)})") from None
        return fine_tune_from
    if not 0.0 <= fraction < 1.0:
        raise CutLayerError(f"trainer.fine_tune_from: fraction {fine_tune_from} must be in [0, 1)")
    return names[min(int(len(names) * fraction), len(names) - 1)]


def check_cut(base: str, names: list[str], cut_at: str | None, fine_tune_from: str | None) -> None:
    """The cut names a layer of the base at or above the fine-tune boundary (or there is none)."""
    boundary = fine_tune_boundary(base, names, fine_tune_from)
    if not cut_at:
        return
    if cut_at not in names:
        raise CutLayerError(f"base.cut_at: '{cut_at}' is not a layer of base '{base}' "
                            f"(near it: {_near(cut_at, names)})")
    if names.index(boundary) > names.index(cut_at):
        raise CutLayerError(
            f"base.cut_at: '{cut_at}' lies below the fine-tune boundary '{boundary}' of base "
            f"'{base}': set trainer.fine_tune_from to a layer at or below the cut")


def build_table() -> dict[str, list[str]]:
    """Each registry base built (random weights, default size) in a fresh Keras session, so
    auto-named layers get their first names, as in a trainer process."""
    import keras

    table = {}
    for name, backbone in BACKBONES.items():
        keras.backend.clear_session()
        table[name] = [layer.name for layer in build_base(backbone, "none", backbone.default_size).layers]
    return table


if __name__ == "__main__":
    TABLE.write_text(json.dumps(build_table(), indent=0) + "\n")
    print(f"wrote {TABLE}", file=sys.stderr)
