"""Denormal floats (nsm.utils.floats): where a saturated NSM makes them, that flushing them
changes nothing above 1.2e-38, and that every run trains in the mode its configuration records,
a run begun before the option in the mode it had (no flushing)."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

import nsm.training.epoch
import nsm.training.preflight
from nsm.cli import _set_denormal_mode, main
from nsm.models import build_model
from nsm.nn.functional import sign_prob
from nsm.studies.reproduce import _resumable
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from nsm.training.preflight import check_thread_modes
from nsm.utils.floats import denormals_flushed, flush_denormals, flushed_fraction
from toys import toy_dataset

TINY = torch.finfo(torch.float32).tiny  # 1.18e-38: below it, float32 numbers are denormal


@pytest.fixture(autouse=True)
def _restore_threads():
    """(conftest puts the denormal mode back after each test.)"""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _denormal(t: torch.Tensor) -> torch.Tensor:
    return (t != 0) & (t.abs() < TINY)


def test_the_mode_is_set_for_a_block_and_restored():
    for outer in (False, True):
        torch.set_flush_denormal(outer)
        assert denormals_flushed() is outer
        for inner in (False, True):
            with flush_denormals(inner) as supported:
                assert supported  # x86 with SSE3 or ARM64: the machines this project runs on
                assert denormals_flushed() is inner
                product = torch.tensor([1e-30]) * 1e-9
                assert (product.item() == 0.0) is inner
                assert inner or 0 < product.item() < TINY
            assert denormals_flushed() is outer


def test_a_saturated_unit_gradient_is_denormal_and_flushing_zeroes_exactly_those():
    # the prob estimator's backward carries d erf(t)/dt = 2/sqrt(pi) exp(-t^2): a float32 denormal
    # for t^2 between -log(TINY) = 87.3 and about 103.3 (t in [9.35, 10.16]), zero beyond
    t = torch.linspace(8.0, 11.0, 301)
    s = t.clone().requires_grad_(True)
    grads = {}
    for on in (False, True):
        with flush_denormals(on):
            s.grad = None
            sign_prob(torch.ones(301), s, torch.ones(301)).sum().backward()
            grads[on] = s.grad.clone()
    exact = 2 / math.sqrt(math.pi) * torch.exp(-(t.double() ** 2))
    denormal = _denormal(grads[False])
    assert denormal.any() and bool((exact[denormal] < TINY).all())
    lo, hi = t[denormal].min().item(), t[denormal].max().item()
    assert 9.3 < lo < 9.4 and 10.0 < hi < 10.2, (lo, hi)
    # flushed: the denormals become 0 and so may values just above them (a denormal
    # intermediate, 2/sqrt(pi) times it normal); every value above 1e-37 is unchanged bit for bit
    assert bool((grads[True][denormal] == 0).all())
    clear = grads[False].abs() > 1e-37
    assert torch.equal(grads[True][clear], grads[False][clear])
    assert (grads[True] - grads[False]).abs().max() < 1e-37
    normal = exact >= TINY
    assert torch.allclose(grads[False][normal].double(), exact[normal], rtol=1e-5, atol=0)


def test_a_saturated_bnsm_gets_the_same_gradients_flushed_to_within_denormals():
    torch.manual_seed(0)
    model = build_model("bnsm", (1, 28, 28), 10)
    with torch.no_grad():  # a network far into training: its units saturate (|t| up to ~30)
        for name, p in model.named_parameters():
            if name.endswith("magnitude"):
                p.mul_(12.0)
    x, y = torch.rand(50, 1, 28, 28), torch.arange(50) % 10
    grads = {}
    for on in (False, True):
        with flush_denormals(on):
            torch.manual_seed(1)  # the same noise both times
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            grads[on] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name in grads[True]:
        a, b = grads[True][name], grads[False][name]
        assert not _denormal(a).any(), name
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-30), f"{name}: {(a - b).abs().max()}"


def _run_modes(monkeypatch, config, **kwargs) -> set:
    """The modes the training steps of ``fit(config)`` ran in."""
    seen, original = set(), nsm.training.epoch.train_step

    def spy(*args, **kw):
        seen.add(denormals_flushed())
        return original(*args, **kw)

    monkeypatch.setattr(nsm.training.epoch, "train_step", spy)
    fit(config, dataset=toy_dataset(), log=lambda *a: None, **kwargs)
    return seen


def test_a_run_trains_in_its_configured_mode_and_records_it(tmp_path, monkeypatch):
    base = dict(model="bnsm", epochs=1, batch_size=40, samples=2, progress=False, threads=1, out=str(tmp_path))
    for flush in (True, False):
        torch.set_flush_denormal(not flush)  # whatever the process had: the run's mode wins, then it is back
        name = f"flush-{flush}"
        assert _run_modes(monkeypatch, TrainConfig(run_name=name, **base, flush_denormal=flush)) == {flush}
        assert denormals_flushed() is (not flush)
        assert json.loads((tmp_path / name / "config.json").read_text())["flush_denormal"] is flush
    assert TrainConfig().flush_denormal is True


def test_a_run_begun_before_the_option_resumes_without_flushing(tmp_path, monkeypatch):
    base = dict(model="bnsm", epochs=2, batch_size=40, samples=2, progress=False, threads=1, out=str(tmp_path))
    # an old run: its config.json has no flush_denormal; it was interrupted after epoch 1
    config = TrainConfig(run_name="old", **{**base, "epochs": 1}, flush_denormal=False)
    fit(config, dataset=toy_dataset(), log=lambda *a: None)
    run = tmp_path / "old"
    saved = json.loads((run / "config.json").read_text())
    del saved["flush_denormal"]
    saved["epochs"] = 2
    (run / "config.json").write_text(json.dumps(saved))
    (run / "summary.json").unlink()
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    checkpoint["config"]["epochs"], checkpoint["finished"] = 2, False
    del checkpoint["config"]["flush_denormal"]
    torch.save(checkpoint, run / "checkpoint.pt")
    assert TrainConfig.from_dict({k: v for k, v in saved.items() if k != "_environment"}).flush_denormal is False
    # nsm reproduce resumes it as it was, though new runs flush (it is not moved aside)
    asked = TrainConfig(run_name="old", **base)
    assert asked.flush_denormal is True
    resumed, why = _resumable(run, asked)
    assert why == "" and resumed.flush_denormal is False
    saved["flush_denormal"] = True  # a run that began flushing keeps flushing
    (run / "config.json").write_text(json.dumps(saved))
    assert _resumable(run, asked.replace(flush_denormal=False))[0].flush_denormal is True
    del saved["flush_denormal"]
    (run / "config.json").write_text(json.dumps(saved))
    # the command sets the process's mode from the run before torch starts its threads ...
    torch.set_flush_denormal(True)
    _set_denormal_mode(argparse.Namespace(flush_denormal=None, resume=str(run)))
    assert denormals_flushed() is False
    _set_denormal_mode(argparse.Namespace(flush_denormal=None, resume=None))
    assert denormals_flushed() is True
    # ... and the resumed run trains without flushing
    assert _run_modes(monkeypatch, asked.replace(flush_denormal=False), resume=run) == {False}
    assert (run / "summary.json").exists()


def test_the_option_reads_on_or_off(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--flush-denormal", "yes"])
    assert exc.value.code == 2
    assert "--flush-denormal: expected on or off, got 'yes'" in capsys.readouterr().err


def test_threads_that_do_not_share_the_runs_mode_are_named(capsys, monkeypatch):
    torch.set_num_threads(2)
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: nothing to mismatch")
    pool = flushed_fraction() == 1.0  # the mode torch's threads started with (this thread's now)
    monkeypatch.setattr(nsm.training.preflight, "_WARNED_THREAD_MODES", False)
    with flush_denormals(not pool):
        fraction = flushed_fraction()
        if fraction in (0.0, 1.0):
            pytest.skip("this torch build runs the product in the calling thread only")
        check_thread_modes(not pool)
        check_thread_modes(not pool)  # once a process
    err = capsys.readouterr().err
    assert err.count("nsm: warning: torch's intra-op threads do not all") == 1
    assert f"torch.set_flush_denormal({not pool})" in err
    with flush_denormals(pool):  # the same mode everywhere: nothing to say
        monkeypatch.setattr(nsm.training.preflight, "_WARNED_THREAD_MODES", False)
        check_thread_modes(pool)
    assert capsys.readouterr().err == ""
