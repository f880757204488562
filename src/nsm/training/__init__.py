"""Training: the run configuration (:mod:`.config`); :func:`fit` (:mod:`.loop`), which checks a
run before any work (:mod:`.preflight`), trains its epochs (:mod:`.run`) of steps and evaluations
(:mod:`.epoch`) and writes its run directory (:mod:`.run_dir`, :mod:`.summary`); checkpoints and
resuming (:mod:`.checkpoint`), data-parallel training (:mod:`.distributed`), the compiled fast
path (:mod:`.compiled`) and the weight/gradient recorder (:mod:`.recorder`)."""

from .config import TrainConfig
from .loop import fit

__all__ = ["TrainConfig", "fit"]
