"""MkDocs hook: links from the docs to files of the repository outside docs/.

The pages link to the repository as it is checked out (``](../results/mnist-quick/table.md)``),
so that they work when read on a git host. ``mkdocs build`` only knows the files under
docs/, and ``--strict`` fails on those links. This hook:

- finds every relative link of every page (inline ``[text](target)`` and ``![alt](target)``,
  and reference definitions ``[id]: target``; not inside code) whose target lies outside
  docs/ but inside the repository;
- adds exactly those files to the site: a file under a folder keeps its path
  (``results/mnist-quick/table.md``), a file at the repository's root goes under ``repo/``
  (``repo/README.md``) so that it does not take the home page's place;
- a link to a folder becomes a link to the folder's ``README.md`` if it has one, else to a
  generated ``index.md`` that lists the folder's files (never ``*.pt`` checkpoints nor a
  ``runs/`` folder) and links them, so that they are added too;
- an added Markdown file is a page of the site: its own links are followed the same way;
- rewrites each such link in the page's Markdown before MkDocs validates it, so that
  ``--strict`` still checks that the target is there: a link to a file that does not exist
  is a warning (from this hook or from MkDocs), and fails the strict build.

Registered under ``hooks:`` in mkdocs.yml; the Markdown sources are not changed.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mkdocs.structure.files import File, Files, InclusionLevel

log = logging.getLogger("mkdocs.hooks.repo_links")

ROOT_PREFIX = "repo"  # where files at the repository's root go in the site
SKIP_SUFFIXES = (".pt",)  # never listed in a folder's index (checkpoints)
SKIP_DIRS = ("runs", "__pycache__")  # never listed in a folder's index
MARKDOWN = (".md", ".markdown")

# code is left alone: fenced blocks and inline code spans
_CODE = re.compile(
    r"(?ms)^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]{0,3}(?P=fence)[ \t]*$|\Z)"
    r"|(?P<ticks>`+)(?!`).+?(?<!`)(?P=ticks)(?!`)"
)
_INLINE = re.compile(r"(?P<pre>\]\(\s*<?)(?P<url>[^)\s<>]+)")
_REFDEF = re.compile(r"(?m)(?P<pre>^[ ]{0,3}\[[^\]\n]+\]:[ \t]*<?)(?P<url>[^\s<>]+)")


def _links(text: str):
    """(start, end, url) of each link target outside code, in order."""
    spans, pos = [], 0
    for code in [*_CODE.finditer(text), None]:
        end = code.start() if code else len(text)
        for rx in (_INLINE, _REFDEF):
            spans += [(pos + m.start("url"), pos + m.end("url"), m.group("url")) for m in rx.finditer(text[pos:end])]
        if code:
            pos = code.end()
    return sorted(spans)


def _split(url: str):
    """(path, suffix) of a relative link, suffix being ``?query#fragment``; None for the rest."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("/", "\\", "#")) or not parts.path:
        return None
    return unquote(parts.path), url[len(url.split("?")[0].split("#")[0]) :]


class _Repo:
    """Which repository files the site needs, and where they go."""

    def __init__(self, config) -> None:
        self.docs = Path(config["docs_dir"]).resolve()
        self.root = Path(config["config_file_path"]).resolve().parent
        self.origin: dict[str, Path] = {}  # site src_uri -> where its links are resolved from
        self.listings: dict[str, str] = {}  # generated folder indexes: src_uri -> Markdown

    def site_path(self, target: Path) -> str | None:
        """src_uri of ``target`` (a file) in the site; None when it is outside the repository."""
        if target.is_relative_to(self.docs):
            return target.relative_to(self.docs).as_posix()
        if not target.is_relative_to(self.root):
            return None
        rel = target.relative_to(self.root)
        return (rel if len(rel.parts) > 1 else Path(ROOT_PREFIX) / rel).as_posix()

    def resolve(self, page_uri: str, url: str):
        """(rewritten url, repository file to add or None, problem or None) for one link of a page."""
        split = _split(url)
        if split is None:
            return url, None, None
        path, suffix = split
        origin = self.origin.get(page_uri, self.docs / page_uri)
        target = Path(os.path.normpath(origin.parent / path))
        if target.is_relative_to(self.docs) and origin.is_relative_to(self.docs):
            return url, None, None  # inside docs/: MkDocs checks these itself
        if not target.is_relative_to(self.root):
            return url, None, f"links to '{url}', outside the repository"
        if not target.exists():
            return url, None, f"links to '{url}', but {target.relative_to(self.root)} does not exist"
        if target.is_dir():
            readme = target / "README.md"
            target = readme if readme.is_file() else target / "index.md"
        site = self.site_path(target)
        new = posixpath.relpath(site, posixpath.dirname(page_uri) or ".") + suffix
        return new, target, None

    def listing(self, folder: Path) -> str:
        """Markdown of a generated index of ``folder``: its files and folders, linked."""
        rel = folder.relative_to(self.root).as_posix()
        items, skipped = [], []
        for p in sorted(folder.iterdir()):
            if p.name.startswith("."):
                continue
            if p.suffix in SKIP_SUFFIXES or (p.is_dir() and p.name in SKIP_DIRS):
                skipped.append(f"`{p.name}{'/' if p.is_dir() else ''}`")
            else:
                items.append(f"- [`{p.name}/`]({p.name}/)" if p.is_dir() else f"- [`{p.name}`]({p.name})")
        note = f" Not copied to this site: {', '.join(skipped)} (in the repository)." if skipped else ""
        return f"# {rel}/\n\nThe files of the repository's folder `{rel}/`.{note}\n\n" + "\n".join(items) + "\n"


_repo: _Repo | None = None


def on_files(files: Files, config) -> Files:
    """Adds the repository files the pages link to (and those the added pages link to)."""
    global _repo
    repo = _repo = _Repo(config)
    todo = [f for f in files.documentation_pages()]
    while todo:
        page = todo.pop()
        text = (
            repo.listings[page.src_uri]
            if page.src_uri in repo.listings
            else Path(page.abs_src_path).read_text(encoding="utf-8")
        )
        for _, _, url in _links(text):
            _, target, _ = repo.resolve(page.src_uri, url)
            if target is None:
                continue
            site = repo.site_path(target)
            if files.get_file_from_path(site) is not None:
                continue  # already there (or a page of docs/: left to MkDocs)
            if target.exists():
                new = File.generated(config, site, abs_src_path=str(target), inclusion=InclusionLevel.NOT_IN_NAV)
            else:  # a folder without README.md: its generated index
                repo.listings[site] = repo.listing(target.parent)
                new = File.generated(config, site, content=repo.listings[site], inclusion=InclusionLevel.NOT_IN_NAV)
            repo.origin[site] = target
            files.append(new)
            if site.endswith(MARKDOWN):
                todo.append(new)
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Points each link to a repository file at its copy in the site; warns on broken ones."""
    out, pos = [], 0
    for start, end, url in _links(markdown):
        new, _, problem = _repo.resolve(page.file.src_uri, url)
        if problem:
            log.warning("Doc file '%s' %s", page.file.src_uri, problem)
        out += [markdown[pos:start], new]
        pos = end
    return "".join(out) + markdown[pos:]
