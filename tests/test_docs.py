"""The README and docs/ stand alone: every relative link points to a file of this repository,
and nothing sends users to a document they do not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = page.read_text()
    missing = [m.group(1) for m in re.finditer(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text)
               if not (page.parent / m.group(1)).exists()]
    assert not missing, f"{page.name}: links to missing files {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_refers_to_the_spec(page):
    assert "SPEC" not in page.read_text()
