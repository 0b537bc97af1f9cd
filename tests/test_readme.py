"""The README and docs/ must say what the code does and link only to what exists."""
import re

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


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
