"""The configuration reference (docs/configuration.md) must say what components/config.py does."""
import re

import yaml
from conftest import REPO

from components.config import PipelineConfig


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_config_reference_matches_defaults():
    text = (REPO / "docs" / "configuration.md").read_text()
    table = text.split("<!-- config-reference")[1].split("\n\n")[0]
    documented = {}
    for match in re.finditer(r"^\| `([\w.]+)` \| `([^`]*)` \|", table, re.M):
        raw = match.group(2)
        try:
            documented[match.group(1)] = yaml.safe_load(raw)
        except yaml.YAMLError:  # a glob such as */* is a plain string
            documented[match.group(1)] = raw
    defaults = dict(_flatten(PipelineConfig().to_dict()))
    assert documented == defaults


def test_readme_shows_the_commands_ci_and_users_need():
    text = (REPO / "README.md").read_text()
    for command in ("make setup", "make run", "make test"):
        assert command in text
    assert "make test" in (REPO / ".ci" / "run").read_text()
