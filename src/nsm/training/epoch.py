"""One training step, one epoch, one evaluation: what :func:`nsm.training.loop.fit` computes.

Training (docs/design.md §4): cross-entropy of the readout on one stochastic pass per
example (:func:`train_step`), a shuffled pass over the training set in mini-batches
(:func:`train_one_epoch`, from :func:`new_epoch`), Adam, the learning rate of each epoch set by
:func:`make_scheduler` (multiplied by ``lr_gamma`` every ``lr_step`` epochs by default).
Testing: the mean softmax over ``samples`` stochastic passes (:func:`evaluate`,
:func:`nsm.mc_predict`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.baselines import after_step
from ..nn.mc import mc_predict
from .config import TrainConfig
from .distributed import SINGLE, Group

__all__ = ["train_step", "new_epoch", "train_one_epoch", "evaluate", "make_scheduler"]


def _bar(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    xb: Tensor,
    yb: Tensor,
    before_step=None,
    *,
    loss_weight: float = 1.0,
) -> tuple[float, int]:
    """One optimizer step on a batch; returns (loss, number of wrong predictions).

    Back-propagation of the cross-entropy for every model except those that compute their
    own update direction (``model.contrastive_divergence(x, y)`` fills ``.grad``: the S2M;
    its loss is the pixel reconstruction error). Afterwards every module's ``after_step``
    hook runs (BNN weight clipping). ``before_step()``, if given, runs between the
    gradient and the step (the :class:`nsm.training.recorder.Recorder` reads the gradients there).
    ``loss_weight``: the factor of the loss that is back-propagated (the returned loss is
    unweighted); data-parallel training weights each process's share (:mod:`nsm.training.distributed`).
    """
    optimizer.zero_grad(set_to_none=True)
    cd = getattr(model, "contrastive_divergence", None)
    if cd is not None:
        stats = cd(xb, yb)
        loss, n_wrong = stats["loss"], stats["wrong"]
    else:
        logits = model(xb)
        loss_t = F.cross_entropy(logits, yb)
        (loss_t if loss_weight == 1.0 else loss_t * loss_weight).backward()
        loss, n_wrong = loss_t.item(), int((logits.argmax(-1) != yb).sum())
    if before_step is not None:
        before_step()
    optimizer.step()
    after_step(model)
    return loss, n_wrong


def new_epoch(n: int, generator: torch.Generator) -> dict:
    """The state of an epoch about to start: a random order of the ``n`` training examples
    (drawn from ``generator``), no batch done yet, running sums at zero."""
    return {"order": torch.randperm(n, generator=generator), "batch": 0, "loss_sum": 0.0, "wrong": 0, "seen": 0}


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    progress: bool = False,
    desc: str = "train",
    transform=None,
    recorder=None,
    state: Optional[dict] = None,
    on_step=None,
    group: Group = SINGLE,
) -> dict:
    """One pass over (x, y) in shuffled mini-batches; returns mean loss and training error.

    The training error is that of the single stochastic pass used for the gradient.
    ``transform(xb, generator)``: training-time augmentation of each batch (e.g. CIFAR's).
    ``recorder``: an :class:`nsm.training.recorder.Recorder` fed after every step (None: no cost).
    ``state``: where the epoch stands (:func:`new_epoch`, the default, starts one; a
    checkpoint's resumes one), updated in place after every step, then ``on_step(state)``
    runs (fit writes its step checkpoints there). A loss that is not finite raises
    ``FloatingPointError`` naming ``desc`` and the step, before ``on_step`` sees it.
    ``group``: under torchrun (:mod:`nsm.training.distributed`), this process trains on its part of
    every batch (``model`` is then DDP-wrapped); loss and error are those of whole batches.
    """
    model.train()
    if state is None:
        state = new_epoch(x.shape[0], generator)
    order = state["order"]
    n_batches = math.ceil(x.shape[0] / batch_size)
    bar = _bar(range(state["batch"], n_batches), n_batches - state["batch"], desc, progress)
    for b in bar:
        idx = order[b * batch_size : (b + 1) * batch_size]
        xb = x[idx] if transform is None else transform(x[idx], generator)
        yb, n = y[idx], idx.shape[0]
        if group.active:  # this rank's part of the global batch (augmented whole: the same draws as one process)
            part = group.part(n)
            xb, yb = xb[part], yb[part]
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if group.active:
            loss, n_wrong = train_step(model, optimizer, xb, yb, loss_weight=group.world_size * yb.shape[0] / n)
            loss_sum, n_wrong = group.sum([loss * yb.shape[0], n_wrong], device)
            loss, n_wrong = loss_sum / n, int(n_wrong)
        elif recorder is None:
            loss, n_wrong = train_step(model, optimizer, xb, yb)
        else:
            loss, n_wrong = train_step(model, optimizer, xb, yb, before_step=recorder.after_backward)
            recorder.after_step()
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{desc}, step {b + 1} of {n_batches}: the training loss became {loss}; lower the learning rate"
            )
        state["loss_sum"] += loss * n
        state["wrong"] += n_wrong
        state["seen"] += n
        state["batch"] = b + 1
        if on_step is not None:
            on_step(state)
        if progress and b % 20 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
    return {"train_loss": state["loss_sum"] / state["seen"], "train_error": state["wrong"] / state["seen"]}


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    samples: int,
    device: torch.device,
    batch_size: int = 100,
    mode: str = "sample",
    progress: bool = False,
    group: Group = SINGLE,
) -> dict:
    """Test error, accuracy and NLL of the MC-averaged prediction over ``samples`` passes.

    ``group``: under torchrun, this process evaluates its contiguous part of (x, y) and the
    counts are added over processes: every process returns the figures of the whole set.
    ``model`` is then the plain module, not its DDP wrapper (the parts differ in size).
    """
    model.eval()
    part = group.part(x.shape[0])
    starts = range(part.start, part.stop, batch_size)
    wrong, nll = 0, 0.0
    for s in _bar(starts, len(starts), "test", progress):
        xb = x[s : min(s + batch_size, part.stop)].to(device)
        yb = y[s : min(s + batch_size, part.stop)].to(device)
        probs = mc_predict(model, xb, samples, mode=mode)
        wrong += (probs.argmax(-1) != yb).sum().item()
        nll -= probs.gather(1, yb[:, None]).clamp_min(1e-12).log().sum().item()
    if group.active:
        wrong, nll = group.sum([wrong, nll], device)
        wrong = int(wrong)
    n = x.shape[0]
    return {"test_error": wrong / n, "test_accuracy": 1 - wrong / n, "test_nll": nll / n}


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """The learning rate of each epoch, set from the number of epochs done, E.

    ``"step"``: lr x lr_gamma^floor(E / lr_step) (halved after epochs 50, 100...).
    ``"linear"`` (the CIFAR protocol): lr x (epochs - E) / (epochs - lr_decay_start) once
    E >= lr_decay_start, lr before: a ramp that leaves lr after lr_decay_start epochs and would
    reach 0 after the last; so the first decreased epoch is lr_decay_start + 2 (CIFAR:
    epochs 1-101 at 1e-3, epoch 102 at 0.995e-3, epoch 300 at 5e-6)."""
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    start, end = config.lr_decay_start, config.epochs

    def factor(epoch: int) -> float:  # epoch = number of epochs done
        if epoch < start or end <= start:
            return 1.0
        return max(0.0, (end - epoch) / (end - start))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
