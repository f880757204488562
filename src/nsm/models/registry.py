"""The model registry: a name -> builder table that ``nsm train --model`` and :func:`build_model`
read. The networks themselves live in :mod:`nsm.models.table6` (the SI Table 6 family and every
baseline) and :mod:`nsm.models.allconv` (SI Table 7 and the all-convolutional network); a user
registers more with :func:`register_model`.

A spec's ``defaults["stochastic"]`` says whether the model is evaluated by Monte-Carlo sampling
(True) or with one deterministic pass (False).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from ..nn.layers import set_generator
from ..utils.checks import check_int
from ..utils.registry import Registry

__all__ = ["ModelSpec", "MODELS", "build_model", "register_model", "is_stochastic"]


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its builder, a one-line description and its training defaults."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    defaults: dict = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(name: str, description: str, **defaults):
    """Decorator: register ``builder(in_shape, num_classes, **options)`` as model ``name``."""

    def add(builder):
        MODELS.register(name, ModelSpec(name, builder, description, defaults))
        return builder

    return add


def build_model(
    name: str, in_shape=(1, 28, 28), num_classes: int = 10, *, generator: Optional[torch.Generator] = None, **options
) -> nn.Module:
    """Build the registered model ``name`` for inputs ``in_shape`` (C, H, W).

    ``generator``: every module that draws noise draws it from this ``torch.Generator``
    (:func:`nsm.nn.layers.set_generator`; refused for a model without noise); default torch's
    global generator. The weights are initialized from the global generator either way.
    """
    spec = MODELS.get(name)
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"model must be a registered name ({', '.join(MODELS.names())}), got {name!r}")
    if len(in_shape) != 3 or any(int(d) < 1 for d in in_shape):
        raise ValueError(f"in_shape must be (C, H, W) with positive sizes, got {tuple(in_shape)}")
    check_int("num_classes", num_classes, minimum=2)
    try:
        model = spec.builder(tuple(int(d) for d in in_shape), num_classes, **options)
    except TypeError as exc:  # an option this model does not have (e.g. --sampler for the dCNN)
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if bad is None:
            raise
        raise ValueError(
            f"model {name!r} has no option {bad.group(1)!r} (options given: "
            f"{', '.join(f'{k}={v!r}' for k, v in options.items())}); see `nsm models`"
        ) from None
    return model if generator is None else set_generator(model, generator)


def is_stochastic(name: str) -> bool:
    """Whether model ``name`` is evaluated by Monte-Carlo sampling (else one pass)."""
    return bool(MODELS.get(name).defaults.get("stochastic", True))
