"""The README stays a front page (short, every link and sample file there) and the docs' links
resolve, so a newcomer never follows a dead one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#([^)\s]*))?\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            out.add(title)
    return out


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_a_front_page() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for heading in ("## Two commands", "## A five-minute tour", "## Disguises and languages",
                    "## Where to go next"):
        assert heading in text
    assert "make run" in text and "make test" in text


def test_readme_tour_uses_files_of_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    images = set(re.findall(r"--image (\S+)", text))
    assert images == {"examples/chart.png", "examples/typographic_list.png"}
    for image in images:
        assert (ROOT / image).is_file(), image
    assert "../shared/bench" not in text.split("## Where to go next")[0]


def test_links_and_anchors_resolve() -> None:
    broken = []
    for doc in _docs():
        for target, anchor in LINK.findall(doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path = (doc.parent / target).resolve()
            if not path.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{doc.name}: {target}#{anchor}")
    assert not broken, broken


def test_every_doc_is_listed_in_the_index() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    missing = [p.name for p in (ROOT / "docs").glob("*.md")
               if p.name != "index.md" and f"]({p.name})" not in index]
    assert not missing, f"add these to docs/index.md: {missing}"
