"""Pointers from the code into the documentation resolve: every ``docs/PAGE.md`` or
``docs/PAGE.md#id`` named in a module, test or template names a page of ``docs/`` and a section id
of that page (the MkDocs build checks the links between pages; this checks the code's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
POINTER = re.compile(r"docs/([\w./-]+\.md)(?:#([\w-]+))?")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*(?:\{\s*#([\w-]+)[^}]*\})?\s*$")


def _ids(page: Path) -> set[str]:
    """Section ids of a page: explicit ``{ #id }`` attributes and the default slugs of headings."""
    ids, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = None if fenced else HEADING.match(line)
        if m:
            ids.add(m.group(2) or re.sub(r"[^\w\- ]", "", m.group(1).lower()).strip().replace(" ", "-"))
    return ids


def _pointers() -> list[tuple[str, int, str, str | None]]:
    out = []
    for pkg in ("estimators", "reference", "bench", "reports", "tests"):
        for path in sorted((ROOT / pkg).rglob("*")):
            if path.suffix not in (".py", ".j2", ".toml", ".json") or path == Path(__file__):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                out.extend((str(path.relative_to(ROOT)), n, m.group(1), m.group(2)) for m in POINTER.finditer(line))
    return out


POINTERS = _pointers()


def test_the_code_points_into_the_docs():
    assert len(POINTERS) > 50  # the code cites its documentation; an empty scan would prove nothing


@pytest.mark.parametrize("where,line,page,anchor", POINTERS, ids=[f"{w}:{n}" for w, n, *_ in POINTERS])
def test_pointer_resolves(where, line, page, anchor):
    target = DOCS / page
    assert target.is_file(), f"{where}:{line} points to docs/{page}, which does not exist"
    if anchor:
        assert anchor in _ids(target), f"{where}:{line} points to docs/{page}#{anchor}: no such section"


def test_the_checker_finds_broken_pointers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Title { #top }\n\n## Second part\n\n```\n# not a heading\n```\n")
    assert _ids(page) == {"top", "second-part"}
    assert POINTER.findall("see ``docs/model.md#encodings`` and docs/exact.md") == [("model.md", "encodings"),
                                                                                  ("exact.md", "")]
