"""The compiled fast path: ``torch.compile`` of a whole model, used when it pays.

Under ``torch.compile`` (inductor) the NSM layers trace to one graph per mode (training, no
grad, each forward mode): the noise is drawn inside the generated kernels and fused with the
element-wise chain around it (:mod:`nsm.nn.noise`, :func:`nsm.nn.functional.sign_prob`). The laws
are the eager ones; the random numbers are not the same bits (inductor draws its own).

``nsm train`` / ``nsm reproduce`` / ``nsm evaluate`` take ``--compile auto|on|off``:

- ``off``: eager, as before (every run made before this option existed was eager);
- ``on``: compile;
- ``auto`` (default): compile when it pays, :func:`decide`: a long enough run of a model
  whose compiled step was measured faster (``benchmarks/bench_speed.py``), on one process,
  without ``--record``. Only the training step is compiled: compiled Monte-Carlo passes were
  measured slower than eager ones on the CPU, so evaluation stays eager.

A model that computes its own update (the S2M's ``contrastive_divergence``) trains eagerly
whatever the mode: its step does not go through ``forward``, so there is nothing to compile;
the run's log line says so.

If compiling fails (no C++ compiler for inductor, an unsupported operation), the run says so
once and goes on eagerly: :class:`Compiled`.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch
from torch import nn

from .config import COMPILE_MODES

__all__ = ["COMPILE_MODES", "decide", "Compiled", "AUTO_MIN_STEPS", "FASTER_COMPILED"]

# Optimizer steps below which "auto" stays eager: compiling the training and the test graphs
# costs about a minute on a 2-core CPU, which a short run does not win back.
AUTO_MIN_STEPS = 3000

# Networks whose compiled training step was measured faster than the eager one on the 2-core
# CPU: bnsm (default sampler) and bn. Measured slower or level there, so eager under "auto":
# dcnn, gnsm (Gaussian draws inside inductor's kernels are slow on this CPU), ste, the
# probability sampler. The figures, how they were measured and how far they can be trusted
# (some runs' scripts and results were not kept) are in docs/speed.md; measure with
# benchmarks/bench_speed.py (--models).
FASTER_COMPILED = ("bnsm", "bn")


def decide(
    mode: str,
    *,
    network: str,
    sampler: Optional[str],
    steps: int,
    record: bool,
    distributed: bool,
    own_update: bool = False,
) -> tuple[bool, str]:
    """(compile?, why) for a run of ``steps`` optimizer steps of ``network``; ``own_update``:
    the model computes its own update (``contrastive_divergence``), never compiled."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {COMPILE_MODES}, got {mode!r}")
    if mode == "off":
        return False, "--compile off"
    if own_update:
        return False, f"{network} computes its own update by contrastive divergence, not through forward: eager"
    if mode == "on":
        return True, "--compile on"
    if record:
        return False, "auto: --record runs eagerly"
    if distributed:
        return False, "auto: several processes run eagerly"
    if network not in FASTER_COMPILED or (sampler not in (None, "neuron")):
        return False, f"auto: {network} ({sampler or 'default'} sampler) is not measured faster compiled"
    if steps < AUTO_MIN_STEPS:
        return False, f"auto: {steps} steps are too few to win back the compile time (< {AUTO_MIN_STEPS})"
    return True, f"auto: {steps} steps of {network}"


class Compiled(nn.Module):
    """``torch.compile(model, fullgraph=True)`` that falls back to ``model`` itself, saying so
    with ``log``, if compiling fails. Parameters, modes and generators are the model's own:
    saving, loading and :func:`nsm.forward_mode` act on ``model``."""

    def __init__(self, model: nn.Module, log: Callable[[str], None] = print) -> None:
        if hasattr(model, "contrastive_divergence"):  # train_step would not find it on the wrapper
            raise TypeError(
                f"{type(model).__name__} computes its own update by contrastive divergence, not through forward: "
                f"nothing to compile"
            )
        super().__init__()
        self.model = model
        object.__setattr__(self, "_fast", torch.compile(model, fullgraph=True))  # not a second submodule
        self._log = log
        self.failed: Optional[str] = None
        self.first_calls: dict[bool, float] = {}  # seconds of the first call with / without autograd

    def forward(self, *args, **kwargs):
        if self.failed is not None:
            return self.model(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            out = self._fast(*args, **kwargs)
        except Exception as exc:  # the compiler, not the model: the eager call below says if the model fails
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            self.failed = f"{type(exc).__name__}: {first}"
            self._log(f"torch.compile failed ({self.failed}); running eagerly")
            return self.model(*args, **kwargs)
        self.first_calls.setdefault(torch.is_grad_enabled(), time.perf_counter() - t0)
        return out
