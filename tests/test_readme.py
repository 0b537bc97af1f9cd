"""The README and docs/ must say what the code does and link only to what exists."""
import re

import yaml
from conftest import REPO

from tlpipe.components.config import PipelineConfig

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


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


def test_readme_stays_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def _without_fences(text):
    """The text outside fenced code blocks (a `# comment` there is no heading, a `[x](y)` no link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _links(page):
    prose = re.sub(r"`[^`\n]*`", "", _without_fences(page.read_text()))  # inline code holds no links
    return LINK.findall(prose)


def _anchors(page):
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", _without_fences(page.read_text()).replace("`", ""), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_local_link_resolves():
    broken = []
    for page in PAGES:
        for target in _links(page):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert PAGES[1:], "docs/ holds no page"
    assert not broken, broken
