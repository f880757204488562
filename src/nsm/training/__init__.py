"""Training: the run configuration (:mod:`.config`), the loop (:mod:`.loop`), checkpoints and
resuming (:mod:`.checkpoint`), data-parallel training (:mod:`.distributed`), the compiled fast
path (:mod:`.compiled`) and the weight/gradient recorder (:mod:`.recorder`)."""

from .config import TrainConfig
from .loop import fit

__all__ = ["TrainConfig", "fit"]
