"""A table's files in its output folder, written by one worker at a time and never over
someone else's: ``table.md`` and ``table.csv`` (:func:`nsm.studies.tables.write_table`) and
``curves.png`` (:func:`nsm.studies.figures.plot_table_curves`).

- :func:`check_table_files`: the files there are nsm's to rewrite (a file that does not begin
  as nsm's, or anything but a regular file, is refused, and never opened in a way that waits);
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

__all__ = ["check_table_files", "write_table_locked"]


def check_table_files(out: Path) -> None:
    """The table files in ``out`` are nsm's to rewrite only if nsm wrote them: a ``table.md``
    that does not begin as nsm's tables do, a ``table.csv`` without their header, or a
    ``curves.png`` without a table beside it is someone else's, and is not overwritten.
    Anything but a regular file there (a FIFO, a device, a directory, a link) is someone
    else's too, and is never opened in a way that could wait on it."""
    foreign = []
    for name, start in (("table.md", "# nsm reproduce "), ("table.csv", "dataset,model,error_mean_pct,")):
        path = out / name
        if os.path.lexists(path):
            kind = _table_file_kind(path, start)
            if kind is not None:
                foreign.append(f"{name} ({kind})" if kind else name)
    if os.path.lexists(out / "curves.png") and not os.path.lexists(out / "table.md"):
        foreign.append("curves.png")
    if foreign:
        raise ValueError(
            f"{out} holds {', '.join(foreign)}, which nsm did not write; nsm does not overwrite "
            f"them: choose another --out or move them away"
        )


def _table_file_kind(path: Path, start: str) -> Optional[str]:
    """None when ``path`` is a regular file (not a symbolic link) that begins with ``start``,
    as nsm's table files do; else what is there instead ('' for a file that begins otherwise).
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
            head = f.read(len(start.encode())).decode("utf-8", "replace")
    except (OSError, ValueError):  # ValueError: DataError, swapped for something else since lstat
        return ""
    return None if head == start else ""


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
        save_figure(out / "curves.png", fig)
