"""The shipped layer-name table config validation checks `base.cut_at` against is the bases' own."""
import json

from tlpipe.components.trainer.backbones import BACKBONES
from tlpipe.components.trainer.base_layers import TABLE, build_table


def test_shipped_layer_names_match_freshly_built_bases():
    """Built in this process: build_table clears the Keras session before each base, so its
    auto-named layers get their first names, as in a fresh interpreter (`python -m
    components.trainer.base_layers`, which writes the table) or a trainer process."""
    assert build_table() == json.loads(TABLE.read_text())
    assert set(json.loads(TABLE.read_text())) == set(BACKBONES)
