"""Experiment configuration: one frozen dataclass, validated before any work starts.

Defaults follow the authors' protocol for the MNIST family (docs/design.md §5): Adam, batch
100, lr 3e-4, weight decay 1e-6, 100 epochs, lr halved every 50 epochs, 100 MC samples at
test time. The resolved configuration is saved as ``config.json`` in the run directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from ..data import DATASETS
from ..models import MODELS

__all__ = ["TrainConfig", "PROTOCOLS", "LR_SCHEDULES", "ARCHITECTURES", "model_for_dataset"]

LR_SCHEDULES = ("step", "linear")

# The authors' protocol per dataset where it differs from the MNIST family's (docs/design.md §5):
# the defaults of `nsm train --dataset D` and `nsm reproduce` (any field given wins).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "dvs-gesture": {"epochs": 200, "lr_step": 100, "samples": 101},
    "cifar10": {"epochs": 300, "lr": 1e-3, "lr_schedule": "linear", "lr_decay_start": 100, "samples": 101},
    "cifar100": {"epochs": 300, "lr": 1e-3, "lr_schedule": "linear", "lr_decay_start": 100, "samples": 101},
}

# dataset -> network family the paper uses for it (Table 6 otherwise)
ARCHITECTURES = {"dvs-gesture": "table7", "cifar10": "allconv", "cifar100": "allconv"}
_FAMILY_MODELS = ("bnsm", "gnsm", "dcnn")


def model_for_dataset(model: str, dataset: str) -> str:
    """The registered model to train for ``model`` on ``dataset``: ``bnsm`` on ``cifar10`` is
    ``bnsm-allconv``; names that already say their network are returned as they are."""
    arch = ARCHITECTURES.get(dataset)
    if arch is None or model not in _FAMILY_MODELS:
        if arch is not None and not model.endswith(f"-{arch}"):
            raise ValueError(
                f"model {model!r} is defined on the Table 6 network only; on {dataset} "
                f"the paper uses the {arch} network: use one of "
                f"{', '.join(f'{m}-{arch}' for m in _FAMILY_MODELS)} (or bnsm, gnsm, dcnn)"
            )
        return model
    return f"{model}-{arch}"


MAX_THREADS = 1024
_DEFAULT_RECORD_DRAWS = 4  # TrainConfig.record_draws
COMPILE_MODES = ("auto", "on", "off")
# fields whose meaning in a config.json that lacks them is not today's default
LEGACY_DEFAULTS: dict[str, Any] = {"compile": "off", "flush_denormal": False}


def check_run_name(name: str) -> str:
    """A run directory's name: one path component, so that the run stays inside ``out``."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or (os.sep in name)
        or (os.altsep and os.altsep in name)
        or "\0" in name
    ):
        raise ValueError(
            f"config field 'run_name' must be a plain folder name (no path separators, not '.' "
            f"or '..'), so that the run stays inside --out; got {name!r}"
        )
    return name


@dataclass(frozen=True)
class TrainConfig:
    model: str = "bnsm"
    dataset: str = "mnist"
    epochs: int = 100
    batch_size: int = 100
    lr: float = 3e-4
    weight_decay: float = 1e-6
    lr_schedule: str = "step"  # "step": x lr_gamma every lr_step epochs; "linear": see below
    lr_step: int = 50  # epochs between learning-rate decays ("step")
    lr_gamma: float = 0.5  # factor applied every lr_step epochs ("step")
    lr_decay_start: int = 100  # "linear": constant lr until this epoch, then linearly to 0 at `epochs`
    seed: int = 0
    samples: int = 100  # MC samples per test image
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    eval_last: int = 0  # also evaluate each of the last N epochs (at `samples`)
    eval_samples: Optional[int] = None  # MC samples of the evaluations before those (None: `samples`)
    device: str = "cpu"
    threads: Optional[int] = None
    data_dir: Optional[str] = None
    out: str = "runs"
    run_name: Optional[str] = None
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    model_options: dict = field(default_factory=dict)  # passed to the model builder
    dataset_options: dict = field(default_factory=dict)  # passed to the dataset loader (zca, split)
    progress: bool = True
    record: bool = False  # record weight/gradient statistics (nsm.training.recorder) into RUN_DIR/record
    record_every: int = 0  # record every N optimizer steps; 0: after every epoch
    record_probe: int = 500  # training images in the fixed probe batch (percentiles, gradient agreement)
    record_compare: list = field(default_factory=list)  # companion models for the gradient cosine
    record_draws: int = _DEFAULT_RECORD_DRAWS  # stochastic passes averaged per gradient in the cosine
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps; 0: at epoch ends only
    compile: str = "auto"  # torch.compile: "auto" (when it pays, nsm.training.compiled.decide), "on", "off"
    # flush denormal floats to zero on the CPU (nsm.utils.floats): a saturated NSM's gradients
    # underflow into them, which made late training up to 3.9x slower; changes only numbers below 1.2e-38
    flush_denormal: bool = True

    _POSITIVE = (
        "epochs",
        "batch_size",
        "lr_step",
        "lr_decay_start",
        "samples",
        "eval_every",
        "eval_samples",
        "threads",
        "train_subset",
        "test_subset",
        "record_probe",
        "record_draws",
    )

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        for name in self._POSITIVE:
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"config field {name!r} must be >= 1, got {v!r}")
        for name in ("lr", "lr_gamma"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"config field {name!r} must be a finite number > 0, got {v!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"config field 'weight_decay' must be a finite number >= 0, got {self.weight_decay!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"config field 'compile' must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"config field 'lr_schedule' must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"config field 'seed' must be an int in [0, 2^63), got {self.seed!r}")
        if self.threads is not None and self.threads > MAX_THREADS:
            raise ValueError(
                f"config field 'threads' must be an int in [1, {MAX_THREADS}], got {self.threads!r} "
                f"(this machine has {os.cpu_count()} cores)"
            )
        if self.run_name is not None:
            check_run_name(self.run_name)
        if self.record_every < 0:
            raise ValueError(f"config field 'record_every' must be >= 0 (0: every epoch), got {self.record_every!r}")
        if self.eval_last < 0:
            raise ValueError(f"config field 'eval_last' must be >= 0 (0: no extra evaluations), got {self.eval_last!r}")
        if self.checkpoint_every < 0:
            raise ValueError(
                f"config field 'checkpoint_every' must be >= 0 (0: at epoch ends only), got {self.checkpoint_every!r}"
            )
        if (self.record_every or self.record_compare) and not self.record:
            raise ValueError("config fields 'record_every' and 'record_compare' need record=True (--record)")
        if self.record_draws != _DEFAULT_RECORD_DRAWS and not self.record_compare:
            raise ValueError(
                f"config field 'record_draws' (--record-draws {self.record_draws}) sets the passes per gradient "
                f"of the gradient agreement and needs record_compare (--compare-grad MODEL): without a companion "
                f"model it would change nothing"
            )
        if self.model not in MODELS:
            raise ValueError(f"config field 'model': unknown model {self.model!r}; known: {', '.join(MODELS.names())}")
        for name in self.record_compare:
            if not isinstance(name, str) or name not in MODELS:
                raise ValueError(
                    f"config field 'record_compare': unknown model {name!r}; known: {', '.join(MODELS.names())}"
                )
            try:  # a companion is built as the network its name is on this dataset, as the run's model
                model_for_dataset(name, self.dataset)
            except ValueError as exc:
                raise ValueError(f"config field 'record_compare' (--compare-grad): {exc}") from None
        if self.dataset not in DATASETS:
            raise ValueError(
                f"config field 'dataset': unknown dataset {self.dataset!r}; known: {', '.join(DATASETS.names())}"
            )
        if not (self.device in ("cpu", "cuda", "mps", "auto") or self.device.startswith("cuda:")):
            raise ValueError(f"config field 'device' must be cpu, cuda, cuda:N, mps or auto, got {self.device!r}")

    @classmethod
    def for_dataset(cls, dataset: str = "mnist", **fields) -> "TrainConfig":
        """The dataset's protocol (:data:`PROTOCOLS`) with ``fields`` on top."""
        return cls(**{**PROTOCOLS.get(dataset, {}), **fields, "dataset": dataset})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. a saved config.json); unknown keys are refused, and a field an
        older run did not save takes the value it had then (:meth:`saved_defaults`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(names)}")
        return cls(**{**LEGACY_DEFAULTS, **d})

    @staticmethod
    def saved_defaults() -> dict[str, Any]:
        """What each field meant in a saved configuration that lacks it: its default, except
        where the default changed (runs made before ``compile`` existed were eager, and those made
        before ``flush_denormal`` did not flush)."""
        return {**TrainConfig().to_dict(), **LEGACY_DEFAULTS}

    def samples_at(self, epoch: int, full: int) -> Optional[int]:
        """The Monte-Carlo samples epoch ``epoch`` is evaluated with, None if it is not
        evaluated: ``full`` (``samples``, or 1 for a deterministic network) for the last
        ``eval_last`` epochs and the final one, ``eval_samples`` (when set and ``full > 1``)
        for the others every ``eval_every`` epochs."""
        if epoch > self.epochs - self.eval_last or epoch == self.epochs:
            return full
        if epoch % self.eval_every == 0:
            return full if self.eval_samples is None or full == 1 else self.eval_samples
        return None

    def reported(self, epoch: int) -> bool:
        """Whether an evaluation of ``epoch`` is one of the full evaluations the reported error
        is made of: the last ``eval_last`` epochs and the final one, and every evaluated epoch
        when ``eval_samples`` is not set (or equals ``samples``: no evaluation is cheap then).
        The cheap evaluations of ``eval_samples`` never count, even for a deterministic
        network, where they are made at the same S = 1 (they did: a dCNN's 10-epoch error took
        in its epoch-5 evaluation, a bNSM's did not)."""
        cheap = self.eval_samples is not None and self.eval_samples != self.samples
        return not cheap or epoch > self.epochs - self.eval_last or epoch == self.epochs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _check_type(name: str, value: Any, hint) -> None:
    allowed = get_args(hint) if get_origin(hint) is Union else (hint,)
    allowed = tuple(get_origin(a) or a for a in allowed)
    ok = any(
        (a is type(None) and value is None)
        or (a is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (a is int and isinstance(value, int) and not isinstance(value, bool))
        or (a not in (int, float, type(None)) and isinstance(value, a))
        for a in allowed
    )
    if not ok:
        names = " or ".join("None" if a is type(None) else a.__name__ for a in allowed)
        raise TypeError(f"config field {name!r} must be {names}, got {type(value).__name__} {value!r}")
