"""What a run is refused or warned about before it trains: at the start, not hours in.

- :func:`check_model_options`: the model's options (``--sampler``, ``--estimator``, ...), by
  building the model without memory before any data is read or downloaded;
- :func:`check_distributed`: what data-parallel training (:mod:`nsm.training.distributed`)
  cannot do as one process does;
- :func:`check_batch_norm`: a batch of one example for a model with batch normalization;
- :func:`check_thread_modes`: torch's threads that do not share the run's denormal mode (a
  warning, once a process).
"""

from __future__ import annotations

import sys
from typing import Optional

import torch
from torch import nn

from ..utils.floats import flushed_fraction
from .config import TrainConfig, model_for_dataset
from .distributed import Group

__all__ = ["check_model_options", "check_distributed", "check_batch_norm", "check_thread_modes"]


def check_model_options(config: TrainConfig, in_shape: Optional[tuple] = None) -> None:
    """Build the run's model on the meta device (no memory, no weights drawn from any
    generator) for ``in_shape``, default the shape ``config.dataset`` gives
    (:data:`nsm.data.datasets.IN_SHAPES`): an option the model does not have or a value it does
    not know (``--sampler pixel``, ``--sampler`` for the dCNN) is refused here, naming it, and
    not after minutes of reading or downloading the data. A dataset registered by the user,
    whose shape is not known before it is loaded, is checked when its model is built."""
    from ..data.datasets import IN_SHAPES
    from ..models import build_model

    shape = in_shape if in_shape is not None else IN_SHAPES.get(config.dataset)
    if shape is None:
        return
    with torch.device("meta"):
        build_model(model_for_dataset(config.model, config.dataset), shape, 10, **config.model_options)


def check_distributed(
    config: TrainConfig, group: Group, *, model: Optional[nn.Module] = None, n_train: Optional[int] = None
) -> None:
    """Refuse what data-parallel training cannot do exactly (before any work; the model and the
    training-set size, once known)."""
    w = group.world_size
    if config.batch_size % w:
        raise ValueError(
            f"--batch-size {config.batch_size} is not divisible by the {w} processes (WORLD_SIZE): "
            f"each trains on batch_size / {w} examples of every batch; pick a multiple of {w}"
        )
    if config.record:
        raise ValueError(f"--record is not supported with {w} processes (torchrun): record in one process")
    if model is not None and hasattr(model, "contrastive_divergence"):
        raise ValueError(
            f"model {config.model!r} computes its own update (contrastive divergence), which DDP "
            f"does not average: train it in one process"
        )
    if model is not None and _has_batch_norm(model):
        raise ValueError(
            f"model {config.model!r} has batch normalization: each process would normalize its part of "
            f"a batch with that part's statistics, so the averaged gradient is not the one of the whole "
            f"batch; train it in one process"
        )
    if n_train is not None and 0 < n_train % config.batch_size < w:
        raise ValueError(
            f"the last batch of an epoch has {n_train % config.batch_size} example(s) "
            f"({n_train} training images, batch size {config.batch_size}), fewer than the {w} "
            f"processes; change --batch-size or --train-subset"
        )


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_batch_norm(config: TrainConfig, model: nn.Module, n_train: int) -> None:
    """Refuse, before any work, a batch of one example for a model with batch normalization:
    in training mode it normalizes with the batch's statistics, which one example does not
    have (PyTorch raises "Expected more than 1 value per channel when training")."""
    if not _has_batch_norm(model):
        return
    remedy = "change --batch-size or --train-subset"
    if config.batch_size == 1:
        where = "every batch has one (--batch-size 1)"
        remedy = "use a larger --batch-size"
    elif n_train % config.batch_size == 1:
        where = f"the last batch of every epoch has one ({n_train} training images, batch size {config.batch_size})"
    elif config.record and config.record_probe == 1:  # (one training image: caught above)
        where = "the probe batch of --record has one (record_probe 1)"
        remedy = "raise record_probe"
    else:
        return
    raise ValueError(
        f"model {config.model!r} has batch normalization, which cannot train on a batch of one example, "
        f"and {where}; {remedy}"
    )


_WARNED_THREAD_MODES = False


def check_thread_modes(flush: bool) -> None:
    """Warn once a process if torch's intra-op threads do not all share the run's denormal mode
    (it reaches them only if set before they start: nsm.utils.floats)."""
    global _WARNED_THREAD_MODES
    if _WARNED_THREAD_MODES or torch.get_num_threads() == 1 or flushed_fraction() in (0.0, 1.0):
        return
    _WARNED_THREAD_MODES = True
    effect = (
        "late training can be several times slower"
        if flush
        else "a run begun without flushing does not resume bit for bit at more than one thread"
    )
    print(
        f"nsm: warning: torch's intra-op threads do not all {'flush' if flush else 'keep'} denormal floats "
        f"as this run does (the mode was set after torch started them): {effect}. Call "
        f"torch.set_flush_denormal({flush}) before any other torch work, as the nsm command does, or use one thread.",
        file=sys.stderr,
    )
