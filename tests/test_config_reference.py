"""docs/configuration.md is what `tlpipe config --markdown` generates from components/config.py."""
import re

import yaml
from conftest import REPO
from tlpipe.components.config import PipelineConfig
from tlpipe.components.config_reference import markdown, rows

REFERENCE = REPO / "docs" / "configuration.md"


def test_committed_reference_is_current():
    assert REFERENCE.read_text() == markdown(), (
        "docs/configuration.md is stale: regenerate it with `tlpipe config --markdown > docs/configuration.md`")


def test_every_setting_is_documented_with_its_default():
    def flatten(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    documented = {}
    for key, default, meaning in rows():
        assert meaning, f"{key} has no docstring in components/config.py"
        try:
            documented[key] = yaml.safe_load(default)
        except yaml.YAMLError:  # a glob such as */* is a plain string
            documented[key] = default
    assert documented == dict(flatten(PipelineConfig().to_dict()))
    assert len(re.findall(r"^\| `[\w.]+` \|", markdown(), re.M)) == len(documented)
