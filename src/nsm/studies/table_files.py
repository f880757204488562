"""A table's files in its output folder, written by one worker at a time and never over
someone else's: ``table.md`` and ``table.csv`` (:func:`nsm.studies.tables.write_table`) and
``curves.png`` (:func:`nsm.studies.figures.plot_table_curves`).

- :func:`check_table_files`: the files there are nsm's to rewrite (a table file that does not
  begin as nsm's, a figure without nsm's mark :data:`CURVES_MARK`, or anything but a regular
  file, is refused, and never opened in a way that waits);
- :func:`write_table_locked`: aggregate the finished runs and write the three files while
  holding ``OUT/.table.lock``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

from ..training.checkpoint import open_own_file
from ..utils.io import save_figure
from .tables import PAPER_ERRORS, aggregate, write_table

__all__ = ["CURVES_MARK", "check_table_files", "write_table_locked"]

#: The text chunk (keyword, text) that marks a ``curves.png`` as drawn by nsm for a table.
CURVES_MARK = ("Comment", "nsm reproduce: table curves")
_MARK_SCAN_BYTES = 1 << 16


def check_table_files(out: Path) -> None:
    """The table files in ``out`` are nsm's to rewrite only if nsm wrote them: a ``table.md``
    that does not begin as nsm's tables do, a ``table.csv`` without their header, or a
    ``curves.png`` that is not a PNG marked as nsm's table curves (:data:`CURVES_MARK`), or has
    no table beside it, is someone else's, and is not overwritten. Anything but a regular file
    there (a FIFO, a device, a directory, a link) is someone else's too, and is never opened in
    a way that could wait on it."""
    foreign = []
    for name, start in (("table.md", "# nsm reproduce "), ("table.csv", "dataset,model,error_mean_pct,")):
        path = out / name
        if os.path.lexists(path):
            kind = _table_file_kind(path, start)
            if kind is not None:
                foreign.append(f"{name} ({kind})" if kind else name)
    curves = out / "curves.png"
    if os.path.lexists(curves):
        kind = _curves_kind(curves)
        if kind is not None or not os.path.lexists(out / "table.md"):
            foreign.append(f"curves.png ({kind})" if kind else "curves.png")
    if foreign:
        older = any(f.startswith("curves.png") for f in foreign)
        raise ValueError(
            f"{out} holds {', '.join(foreign)}, which nsm did not write; nsm does not overwrite "
            f"them: choose another --out or move them away"
            + ("; a curves.png drawn by nsm 0.1.0 carries no mark that says so and is refused too" if older else "")
        )


def _table_file_kind(path: Path, start: str) -> Optional[str]:
    """None when ``path`` is a regular file (not a symbolic link) that begins with ``start``,
    as nsm's table files do; else what is there instead ('' for a file that begins otherwise)."""
    n = len(start.encode())
    return _own_file_kind(path, lambda f: f.read(n).decode("utf-8", "replace") == start)


def _curves_kind(path: Path) -> Optional[str]:
    """None when ``path`` is a regular file holding a PNG that carries :data:`CURVES_MARK` (as
    :func:`_write_curves` writes it) in a text chunk before its image data; else as
    :func:`_table_file_kind`. Reads chunk headers and small text chunks only, at most
    :data:`_MARK_SCAN_BYTES` into the file."""
    return _own_file_kind(path, lambda f: _png_has_text(f, *CURVES_MARK))


def _own_file_kind(path: Path, is_own) -> Optional[str]:
    """None when ``path`` is a regular file (not a symbolic link) for whose binary reader
    ``is_own`` is true; else what is there instead ('' for a regular file that is not nsm's).
    The file is opened without blocking and checked on its descriptor
    (:func:`nsm.data.files.open_regular`): a FIFO never hangs the check."""
    from ..data.files import describe, open_regular

    try:
        st = os.lstat(path)
    except OSError:
        return ""
    if not stat.S_ISREG(st.st_mode):
        return describe(st)
    try:
        with open_regular(path) as f:
            return None if is_own(f) else ""
    except (OSError, ValueError):  # ValueError: DataError, swapped for something else since lstat
        return ""


def _png_has_text(f, key: str, value: str) -> bool:
    """Whether the PNG read from ``f`` has the ``tEXt`` chunk ``key``=``value`` before its first
    ``IDAT``, within :data:`_MARK_SCAN_BYTES` (a bound: a hostile file cannot make this read much)."""
    if f.read(8) != b"\x89PNG\r\n\x1a\n":
        return False
    want = key.encode("latin-1") + b"\0" + value.encode("latin-1")
    pos = 8
    while pos < _MARK_SCAN_BYTES:
        head = f.read(8)
        if len(head) < 8:
            return False
        length, kind = int.from_bytes(head[:4], "big"), head[4:]
        if kind in (b"IDAT", b"IEND"):
            return False
        if kind == b"tEXt" and length == len(want):
            if f.read(length) == want:
                return True
            f.seek(4, os.SEEK_CUR)  # its CRC
        else:
            f.seek(length + 4, os.SEEK_CUR)
        pos += 12 + length
    return False


def write_table_locked(out: Path, cells, seeds, title: str, command: Optional[str], pairs=()) -> list[dict]:
    """Aggregate and write the table while holding ``out/.table.lock``: runs only ever get
    finished, so the worker that writes last has seen the most, whatever the order."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fd = open_own_file(out / ".table.lock", "table lock")  # never through a link
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        check_table_files(out)
        rows = aggregate(out / "runs", cells, seeds, partial=True)
        write_table(rows, out, title, command, pairs)
        _write_curves(out, cells, seeds)
    finally:
        os.close(fd)  # drops the flock
    return rows


def _write_curves(out: Path, cells, seeds) -> None:
    """``out/curves.png``: every finished run's test error against epoch, beside the paper's."""
    from .figures import plot_table_curves

    fig = plot_table_curves(out / "runs", cells, seeds, PAPER_ERRORS)
    if fig is not None:
        save_figure(out / "curves.png", fig, metadata=dict([CURVES_MARK]))
