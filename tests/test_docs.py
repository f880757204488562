"""The README and docs/ stand alone: every relative link points to a file of this repository,
nothing sends users to a document they do not have, every page is reachable from the site's
navigation, and what the pages name in the code (files, modules) exists.

The site itself is built by `.ci/docs` (`mkdocs build --strict`); these checks need no mkdocs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SRC = ROOT / "src"
DOC_PAGES = sorted(DOCS.rglob("*.md"))
PAGES = [ROOT / "README.md", *DOC_PAGES]
# the results folders' pages, and the tables the commands wrote there: their links resolve and
# they send nobody to a document users do not have
RESULT_PAGES = sorted((ROOT / "results").rglob("*.md"))


def _id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _code_spans(text: str) -> list[str]:
    """The inline code of a page (fenced blocks left out)."""
    text = re.sub(r"(?ms)^[ \t]*(`{3,}|~{3,}).*?^[ \t]*\1[ \t]*$", "", text)
    return [m.group(2) for m in re.finditer(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", text, re.S)]


@pytest.mark.parametrize("page", PAGES + RESULT_PAGES, ids=_id)
def test_every_relative_link_resolves(page):
    text = page.read_text()
    missing = [
        m.group(1)
        for m in re.finditer(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text)
        if not (page.parent / m.group(1)).exists()
    ]
    assert not missing, f"{page.name}: links to missing files {missing}"


@pytest.mark.parametrize("page", PAGES + RESULT_PAGES, ids=_id)
def test_no_page_refers_to_the_spec(page):
    assert "SPEC" not in page.read_text()


def _nav() -> list[str]:
    """The pages mkdocs.yml's nav lists: `- Title: page.md` or `- page.md` lines under `nav:`."""
    text = (ROOT / "mkdocs.yml").read_text()
    block = re.search(r"(?m)^nav:[ \t]*\n((?:[ \t]+.*\n|[ \t]*\n)*)", text)
    assert block, "mkdocs.yml has no nav"
    return re.findall(r"(?m)^[ \t]*-[ \t]+(?:[^\n]*?:[ \t]+)?([\w./-]+\.md)[ \t]*$", block.group(1))


def test_every_page_is_in_the_nav():
    nav = _nav()
    pages = {p.relative_to(DOCS).as_posix() for p in DOC_PAGES}
    assert set(nav) <= pages, f"mkdocs.yml's nav lists pages that do not exist: {sorted(set(nav) - pages)}"
    left_out = sorted(p for p in pages - set(nav) if p != "index.md" and not p.startswith("api/"))
    assert not left_out, f"pages missing from mkdocs.yml's nav: {left_out}"
    assert nav[0] == "index.md", "the site opens on index.md"


def _modules() -> list[str]:
    """Every public module of the package, dotted (nsm, nsm.nn, nsm.nn.layers, ...)."""
    out = []
    for path in sorted((SRC / "nsm").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if not any(p.startswith("_") for p in parts):
            out.append(".".join(parts))
    return out


def test_the_api_reference_documents_every_module():
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"(?m)^:::[ \t]+([\w.]+)", page.read_text()))
    missing = sorted(set(_modules()) - documented)
    assert not missing, f"modules with no `::: module` in docs/api/: {missing}"
    stale = sorted(documented - set(_modules()))
    assert not stale, f"docs/api/ documents modules that do not exist: {stale}"


def test_the_api_index_lists_every_public_name_of_nsm():
    tree = ast.parse((SRC / "nsm" / "__init__.py").read_text())
    names = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    )
    text = (DOCS / "api" / "index.md").read_text()
    missing = [n for n in names if not n.startswith("__") and f"[nsm.{n}]" not in text]
    assert not missing, f"docs/api/index.md does not list nsm.{missing}"


REPO_PATH = re.compile(r"(?<![\w./-])((?:src|tests|benchmarks|examples|results|constraints|docs|\.ci)/[\w./-]*[\w/])")


@pytest.mark.parametrize("page", DOC_PAGES, ids=_id)
def test_files_named_in_the_pages_exist(page):
    """`tests/x.py`, `src/nsm/...`, `benchmarks/...` written in a page's code are there."""
    named = {m.group(1) for span in _code_spans(page.read_text()) for m in REPO_PATH.finditer(span)}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{_id(page)} names files that do not exist: {missing}"


def _defines(module: str, name: str) -> bool:
    base = SRC.joinpath(*module.split("."))
    source = (base / "__init__.py" if base.is_dir() else base.with_suffix(".py")).read_text()
    return re.search(rf"\b{re.escape(name)}\b", source) is not None


@pytest.mark.parametrize("page", DOC_PAGES, ids=_id)
def test_modules_named_in_the_pages_exist(page):
    """`nsm.studies.devices.with_device`: the longest module prefix exists, and the name after it
    is in that module's source."""
    modules, bad = set(_modules()), []
    for span in _code_spans(page.read_text()):
        for dotted in re.findall(r"(?<![\w.])nsm(?:\.\w+)+", span):
            parts = dotted.split(".")
            k = max(i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules)
            if k < len(parts) and not _defines(".".join(parts[:k]), parts[k]):
                bad.append(dotted)
    assert not bad, f"{_id(page)} names what the package does not have: {sorted(set(bad))}"


CODE_PAGES = [p for p in PAGES if "```python" in p.read_text()]


@pytest.mark.parametrize("page", CODE_PAGES, ids=lambda p: p.name)
def test_the_python_blocks_of_the_pages_run_and_give_the_shapes_they_state(page):
    """Each ```python block runs as written; a comment `shape (a, b)` or `(a, b)` after an
    assignment is the shape that name gets."""
    import torch

    torch.manual_seed(0)
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
        names: dict = {}
        exec(compile(block, f"{page.name}:python", "exec"), names)  # noqa: S102 (our own docs)
        for name, shape in re.findall(r"^(\w+) = .*#.*?\((\d+(?:, \d+)*)\)\s*$", block, re.M):
            assert tuple(names[name].shape) == tuple(int(d) for d in shape.split(", ")), (page.name, name)
