"""How NSM networks are evaluated: Monte-Carlo prediction and the forward mode, in one place.

An NSM stays stochastic at test time (``model.eval()`` changes nothing about the noise).
The prediction is the mean of the softmax over S stochastic passes (docs/design.md §4)::

    p(y | x) ~= 1/S sum_s softmax(f_s(x)),     f_s one sampled network

:func:`mc_predict` draws the S passes as batched passes: each example is repeated ``k``
times along the batch, with ``k * N`` bounded by ``max_pass`` so that memory stays bounded,
rather than a Python loop of S single passes.

Deterministic evaluation is an explicit choice, ``mode=``:

- ``"sample"`` (default): the stochastic network, S samples.
- ``"mean"``: every NSM unit outputs E[z] = 2P - 1 (mean field); one pass.
- ``"threshold"``: every NSM unit outputs sgn(E[u]) (noise switched off); one pass.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from ..utils.checks import check_int
from .functional import MODES
from .layers import stochastic_layers

__all__ = ["forward_mode", "mc_predict", "mc_sample_probs", "accuracy", "error_rate"]


@contextlib.contextmanager
def forward_mode(model: nn.Module, mode: str = "sample"):
    """Within the block, every NSM layer of ``model`` runs in ``mode`` (restored after)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    with _set_layers(model, "mode", mode):
        yield model


@contextlib.contextmanager
def _set_layers(model: nn.Module, attr: str, value):
    layers = stochastic_layers(model)
    saved = [getattr(layer, attr) for layer in layers]
    try:
        for layer in layers:
            setattr(layer, attr, value)
        yield
    finally:
        for layer, v in zip(layers, saved):
            setattr(layer, attr, v)


def _default_pass(x: Tensor, max_pass: Optional[int]) -> Optional[int]:
    if max_pass is None and isinstance(x, Tensor):
        return 200 if x.device.type == "cpu" else 8192
    return max_pass


def _check(x: Tensor, n_samples: int, max_pass: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(
            f"x must be a torch.Tensor batch (N, ...), got {type(x).__name__}; "
            f"convert it with torch.as_tensor(x, dtype=torch.float32)"
        )
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch tensor (N, ...), got {tuple(x.shape)}")
    check_int("n_samples", n_samples), check_int("max_pass", max_pass)
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            rows = bad.flatten(1).any(1).nonzero().flatten() if x.dim() > 1 else bad.nonzero().flatten()
            raise ValueError(
                f"x has {int(bad.sum())} non-finite value(s) (NaN or inf) in "
                f"{rows.numel()} example(s), the first at index {int(rows[0])}; an NSM would "
                f"turn them into states: clean the input first"
            )


def _run(model: nn.Module, rep: Tensor, shape: tuple, k: int) -> Tensor:
    """``model(rep)`` for ``k`` stacked copies of a part of the user's input of ``shape``; errors
    and wrong outputs are reported in terms of the user's input, not the stacked batch."""
    try:
        logits = model(rep)
    except (RuntimeError, ValueError, TypeError) as exc:
        if type(exc) not in (RuntimeError, ValueError, TypeError):
            raise  # a subclass may not take one message
        raise type(exc)(
            f"the model failed on the input of shape {shape} (evaluated as {k} stacked "
            f"copies, shape {tuple(rep.shape)}): {exc}"
        ) from exc
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"the model returned a {type(logits).__name__}; mc_predict needs a model that "
            f"returns one tensor of logits (N, classes)"
        )
    if logits.dim() != 2 or logits.shape[0] != rep.shape[0]:
        raise ValueError(
            f"the model returned logits of shape {tuple(logits.shape)} for {rep.shape[0]} "
            f"examples; expected ({rep.shape[0]}, classes)"
        )
    return logits


def _passes(model: nn.Module, x: Tensor, n_samples: int, mode: str, max_pass: int) -> Iterator[tuple[slice, Tensor]]:
    """Yield (rows, probs) with probs of shape (k, n, K): k samples of rows ``rows`` of x."""
    n_total = x.shape[0]
    if mode != "sample":
        n_samples = 1
    with forward_mode(model, mode), torch.no_grad():
        # Many copies of few examples per pass: the first layer's noise-free product is
        # then shared by more samples (computed once per example and pass).
        chunk = min(n_total, max(1, max_pass // n_samples))
        for start in range(0, n_total, chunk):
            rows = slice(start, min(start + chunk, n_total))
            xb = x[rows]
            n = xb.shape[0]
            k_max = max(1, max_pass // n)
            done = 0
            while done < n_samples:
                k = min(k_max, n_samples - done)
                rep = xb.repeat((k,) + (1,) * (xb.dim() - 1))  # (k*n, ...) sample-major
                with _set_layers(model, "copies", k):  # lets the first layer share op(x, w)
                    logits = _run(model, rep, tuple(x.shape), k)
                # float32 at least (half-precision models), float64 kept
                dtype = torch.promote_types(logits.dtype, torch.float32)
                yield rows, torch.softmax(logits.to(dtype), dim=-1).view(k, n, -1)
                done += k


def mc_predict(
    model: nn.Module, x: Tensor, n_samples: int = 100, *, mode: str = "sample", max_pass: Optional[int] = None
) -> Tensor:
    """Mean over ``n_samples`` stochastic passes of softmax(model(x)): (N, K) probabilities
    (float64 for a float64 model, float32 otherwise).

    ``max_pass`` bounds the examples in one forward pass (memory grows linearly with it);
    default 200 on the CPU (larger passes fall out of cache and run slower there: measured
    on a 2-core machine, see benchmarks/) and 8192 on accelerators.
    The result is on x's device; errors and accuracies are computed from it
    (:func:`error_rate`, :func:`accuracy`). ``mode`` other than ``"sample"`` makes one pass.
    """
    max_pass = _default_pass(x, max_pass)
    _check(x, n_samples, max_pass)
    out: Optional[Tensor] = None
    count: Optional[Tensor] = None
    for rows, p in _passes(model, x, n_samples, mode, max_pass):
        if out is None:
            out = torch.zeros(x.shape[0], p.shape[-1], device=p.device, dtype=p.dtype)
            count = torch.zeros(x.shape[0], 1, device=p.device, dtype=p.dtype)
        out[rows] += p.sum(0)
        count[rows] += p.shape[0]
    return out / count


def mc_sample_probs(
    model: nn.Module, x: Tensor, n_samples: int = 100, *, mode: str = "sample", max_pass: Optional[int] = None
) -> Tensor:
    """Every pass's softmax, (S, N, K): for uncertainty measures that need the samples."""
    max_pass = _default_pass(x, max_pass)
    _check(x, n_samples, max_pass)
    parts: dict[int, list[Tensor]] = {}
    for rows, p in _passes(model, x, n_samples, mode, max_pass):
        parts.setdefault(rows.start, []).append(p)
    return torch.cat([torch.cat(parts[k], 0) for k in sorted(parts)], dim=1)


def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose argmax equals the label."""
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs has {probs.shape[0]} rows but labels has {labels.shape[0]}")
    return (probs.argmax(-1) == labels.to(probs.device)).float().mean().item()


def error_rate(probs: Tensor, labels: Tensor) -> float:
    """1 - accuracy."""
    return 1.0 - accuracy(probs, labels)
