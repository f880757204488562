"""A table folder's ``curves.png`` is rewritten only when nsm drew it: the figure carries a PNG
text chunk that says so, and anything else there (a user's own figure, an unmarked PNG, a link)
is refused and left as it was."""

from __future__ import annotations

import json
import os

import matplotlib
import pytest

from nsm.studies.table_files import CURVES_MARK, check_table_files, write_table_locked
from nsm.utils.io import save_figure

matplotlib.use("Agg")

CELLS = [("mnist", "bnsm")]


def _finished_run(runs, seed: int) -> None:
    d = runs / f"bnsm-mnist-seed{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": "bnsm", "dataset": "mnist", "seed": seed}))
    rows = [{"epoch": 1, "test_error": 0.02, "samples": 20}, {"epoch": 2, "test_error": 0.01, "samples": 20}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"last5_test_error": 0.01, "final_test_error": 0.01, "wall_seconds": 1.0, "epochs": 2}
    (d / "summary.json").write_text(json.dumps(summary | {"samples": 20, "n_last": 1}))


def _write(out):
    return write_table_locked(out, CELLS, [0], "nsm reproduce test: a table", "nsm reproduce test")


def _figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


def test_nsm_marks_the_curves_it_draws_and_rewrites_them(tmp_path):
    _finished_run(tmp_path / "runs", 0)
    _write(tmp_path)
    first = (tmp_path / "curves.png").read_bytes()
    key, text = CURVES_MARK
    assert first.startswith(b"\x89PNG") and b"tEXt" + key.encode() + b"\0" + text.encode() in first
    check_table_files(tmp_path)  # its own: no complaint
    _write(tmp_path)  # and written again
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("marked", [False, True])
def test_a_users_png_named_curves_beside_nsms_table_is_never_overwritten(tmp_path, marked):
    """Before the mark, any curves.png beside nsm's table.md counted as nsm's and was replaced."""
    _finished_run(tmp_path / "runs", 0)
    _write(tmp_path)
    mine = tmp_path / "mine.png"
    save_figure(mine, _figure(), metadata=dict([CURVES_MARK]) if marked else None)
    os.replace(mine, tmp_path / "curves.png")
    precious = (tmp_path / "curves.png").read_bytes()
    if marked:  # a PNG that carries the mark is taken as nsm's: the mark is what tells them apart
        _write(tmp_path)
        assert (tmp_path / "curves.png").read_bytes() != precious
        return
    with pytest.raises(ValueError, match=r"holds curves.png, which nsm did not write.*carries no mark"):
        _write(tmp_path)
    assert (tmp_path / "curves.png").read_bytes() == precious


@pytest.mark.parametrize(
    "content",
    [
        b"my notes, not a PNG",
        b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00" * 17 + b"\x00\x00\x00\x00IEND\xaeB`\x82",
        b"\x89PNG\r\n\x1a\n" + b"\xff\xff\xff\xf0tEXt",  # a chunk claiming 4 GB: read past, not into memory
        b"\x89PNG\r\n\x1a\n",  # cut short
    ],
)
def test_a_curves_png_that_is_not_nsms_is_refused(tmp_path, content):
    _finished_run(tmp_path / "runs", 0)
    _write(tmp_path)
    (tmp_path / "curves.png").write_bytes(content)
    with pytest.raises(ValueError, match="holds curves.png, which nsm did not write"):
        check_table_files(tmp_path)
    assert (tmp_path / "curves.png").read_bytes() == content


def test_a_link_named_curves_is_refused_even_to_nsms_own_figure(tmp_path):
    _finished_run(tmp_path / "runs", 0)
    _write(tmp_path)
    os.replace(tmp_path / "curves.png", tmp_path / "elsewhere.png")
    os.symlink("elsewhere.png", tmp_path / "curves.png")
    with pytest.raises(ValueError, match=r"holds curves.png \(a symbolic link"):
        _write(tmp_path)
    assert os.path.islink(tmp_path / "curves.png")


def test_nsms_curves_without_a_table_beside_them_are_refused(tmp_path):
    _finished_run(tmp_path / "runs", 0)
    _write(tmp_path)
    (tmp_path / "table.md").unlink()
    with pytest.raises(ValueError, match="holds curves.png, which nsm did not write"):
        check_table_files(tmp_path)
