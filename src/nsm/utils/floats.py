"""Denormal floats on the CPU.

An NSM unit's firing probability is P = 1/2 (1 + erf t), and its gradient carries the
derivative of erf, 2 exp(-t²)/sqrt(pi). As training goes on, more units saturate; for
9.35 < |t| < 10.16 that derivative, and the products it enters, are float32 denormals (below
1.2e-38), which x86 CPUs compute tens of times slower than normal numbers. Measured on this
project's CPU (``benchmarks/bench_denormal.py``, docs/speed.md): a bNSM training step of MNIST's
Table 6 network after 71 epochs took 282.9 ms at one thread, against 73.1 ms with denormals
flushed to zero (3.87x; a fresh network: 66-68 ms either way); the convolutions' backward pass
was 13 times slower. Flushing (x86 FTZ/DAZ, ``torch.set_flush_denormal``) changes
only numbers smaller than 1.2e-38.

The mode is a per-thread CPU setting. A thread takes the mode of the thread that creates it, so
it reaches torch's intra-op threads only if it is set before they start: the ``nsm`` command
sets it at start-up; from Python, call ``torch.set_flush_denormal(True)`` before other torch
work. :func:`denormals_flushed` with ``parallel=True`` tells whether every thread flushes.
CUDA devices compute denormals at full speed; the mode concerns the CPU only.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["denormals_flushed", "flushed_fraction", "flush_denormals"]


def flushed_fraction(parallel: bool = True) -> float:
    """The fraction of 2^20 float32 products falling below 1.2e-38 that come out as zero, torch
    splitting them over its intra-op threads (``parallel=False``: one product, in the calling
    thread): 1 where every thread flushes, 0 where none does, between where the threads differ."""
    n = (1 << 20) if parallel else 1
    x = torch.full((n,), 1e-30, dtype=torch.float32)
    return 1.0 - int((x * 1e-9).count_nonzero()) / n


def denormals_flushed(parallel: bool = False) -> bool:
    """Whether denormal results are flushed to zero: in the calling thread, or, with
    ``parallel=True``, in every one of torch's intra-op threads."""
    return flushed_fraction(parallel) == 1.0


@contextlib.contextmanager
def flush_denormals(on: bool = True) -> Iterator[bool]:
    """Flush denormal floats to zero in the calling thread (``on=False``: compute them) for the
    block, then restore the mode found; yields whether the CPU supports the mode (x86 with
    SSE3, ARM64), as ``torch.set_flush_denormal`` reports it."""
    before = denormals_flushed()
    supported = torch.set_flush_denormal(on)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(before)
