"""Data-parallel training over the processes that ``torchrun`` starts (DistributedDataParallel).

``torchrun --nproc_per_node N -m nsm train ...`` starts N processes and tells each one its
place in the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR/PORT``).
:func:`from_env` reads it; with ``WORLD_SIZE`` > 1, :func:`nsm.training.loop.fit` trains one model
copy per process, wrapped in ``DistributedDataParallel``:

- data: every process draws the same permutation of the training set from the shared seed;
  each global mini-batch of ``batch_size`` examples (the single-process batch) is cut into
  ``world_size`` contiguous, disjoint parts (:meth:`Group.part`), one per process. Each
  process's loss is weighted by ``world_size * n_r / n`` (n_r of the batch's n examples are
  its own), so DDP's average of the gradients is the gradient of the mean loss over the whole
  batch, as in one process, also for a smaller last batch. Not so where the loss of an example
  depends on the others of its batch: a model with batch normalization (each process would
  normalize with the statistics of its own part) is refused, as are the S2M (its contrastive
  divergence is not DDP's gradient) and ``--record``;
- noise: process r reseeds torch with :func:`noise_seed` (``seed + 1000003 * r``) after the
  model is built (the same initial weights everywhere), so every process draws other noise
  and the same world size and seed give the same run;
- evaluation: process r takes the r-th contiguous part of the test set; the error counts and
  NLL sums are added over processes (:meth:`Group.sum`);
- files: only rank 0 writes the run directory; :meth:`Group.on_main` runs a step on rank 0
  and hands its result, or its exception, to every process;
- checkpoints: every rank's random state is gathered into rank 0's checkpoint (every rank
  calls the gather); on ``--resume`` rank 0 checks the run directory and reads the checkpoint,
  every rank receives it (the same ``on_main`` calls, in the same order, on every rank) and
  takes back its own random state. Only the same world size may resume a run.

The backend is gloo on the CPU and nccl on CUDA, where process r uses ``cuda:LOCAL_RANK``.
A :class:`Group` of one process (``SINGLE``) does nothing collective: the single-process
path is the plain one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["Group", "SINGLE", "from_env", "noise_seed", "device_for", "process_group", "wrap"]

NOISE_STRIDE = 1000003  # a prime: rank r's noise seed is seed + NOISE_STRIDE * r


@dataclass(frozen=True)
class Group:
    """This process's place among ``world_size`` training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def part(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (sizes differ by at most one)."""
        q, extra = divmod(n, self.world_size)
        start = self.rank * q + min(self.rank, extra)
        return slice(start, start + q + (self.rank < extra))

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Each value added over all processes (float64; ``device``: where nccl reduces)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on rank 0; every rank returns its result or raises its exception (so
        that a failure on rank 0 stops every process instead of leaving them waiting)."""
        if not self.active:
            return fn()
        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = (True, fn())
            except Exception as exc:
                box[0] = (False, exc)
        torch.distributed.broadcast_object_list(box, src=0)
        ok, value = box[0]
        if not ok:
            if self.main:
                raise value
            raise type(value)(*value.args) if _rebuildable(value) else RuntimeError(f"rank 0: {value}")
        return value


SINGLE = Group()


def _rebuildable(exc: Exception) -> bool:
    try:
        type(exc)(*exc.args)
        return True
    except Exception:
        return False


def from_env() -> Group:
    """The group ``torchrun`` describes in the environment; ``SINGLE`` without one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank = int(os.environ["RANK"])
    return Group(rank=rank, world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", rank)))


def noise_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s noise: ``seed + 1000003 * rank``."""
    return seed + NOISE_STRIDE * rank


def device_for(group: Group, name: str) -> torch.device:
    """The device of this process for config device ``name`` under torchrun: the CPU, or
    ``cuda:LOCAL_RANK`` for ``cuda``/``auto`` (one GPU per process)."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name in ("cuda", "auto"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
        if group.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process with LOCAL_RANK {group.local_rank} has no GPU: this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per node"
            )
        return torch.device("cuda", group.local_rank)
    raise ValueError(
        f"under torchrun, --device must be cpu, cuda or auto (each process uses cuda:LOCAL_RANK), got {name!r}"
    )


@contextlib.contextmanager
def process_group(group: Group, device: torch.device):
    """The torch.distributed process group for the life of the block (gloo on the CPU,
    nccl on CUDA), torn down after, also after an error; nothing for ``SINGLE``."""
    if not group.active:
        yield
        return
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed: train in one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=group.rank, world_size=group.world_size)
    try:
        yield
        # every rank done with the group before any tears it down: a gloo rank whose peer has
        # already closed its connections may abort at exit ("terminate called ...", SIGABRT)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, group: Group, device: torch.device) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` (its gradients averaged over the processes at
    every backward pass); ``model`` itself for ``SINGLE``."""
    if not group.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
