"""The S2M computes its own update (contrastive divergence), not through ``forward``: it is
never compiled, also under ``--compile on``; the run says why in its log and trains eagerly."""

from __future__ import annotations

import pytest
import torch

import nsm.training.run
from nsm.models import build_model
from nsm.training.compiled import Compiled, decide
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from toys import toy_dataset


def test_decide_never_compiles_a_model_that_computes_its_own_update():
    for mode in ("on", "auto"):
        use, why = decide(
            mode, network="s2m", sampler=None, steps=10**6, record=False, distributed=False, own_update=True
        )
        assert use is False and "s2m computes its own update by contrastive divergence" in why
    assert decide("off", network="s2m", sampler=None, steps=1, record=False, distributed=False, own_update=True) == (
        False,
        "--compile off",
    )


def test_compiled_refuses_to_wrap_a_model_that_computes_its_own_update():
    data = toy_dataset()
    with pytest.raises(TypeError, match="contrastive divergence"):
        Compiled(build_model("s2m", data.in_shape, data.num_classes))


def test_fit_of_s2m_with_compile_on_trains_eagerly_and_says_why(tmp_path, monkeypatch, one_thread):
    def refuse(*args, **kwargs):
        raise AssertionError("the S2M was compiled")

    monkeypatch.setattr(nsm.training.run, "Compiled", refuse)
    logs = []
    config = TrainConfig(
        model="s2m", epochs=1, batch_size=30, samples=1, progress=False, threads=1, compile="on", out=str(tmp_path)
    )
    summary = fit(config, dataset=toy_dataset(), log=logs.append)
    assert (
        "torch.compile: no (s2m computes its own update by contrastive divergence, not through forward: eager)" in logs
    )
    assert 0 <= summary["final_test_error"] <= 1
    state = torch.load(tmp_path / "s2m-mnist-seed0" / "checkpoint.pt", weights_only=True)["model_state"]
    assert not any(k.startswith(("_orig_mod", "model.")) for k in state)
