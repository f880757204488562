"""How much memory a call adds at its peak, as torch's allocator counts it.

On the CPU the process's resident set is no measure of a step: freed pages stay mapped and
are reused, so a step that follows a larger one seems to add nothing. Here a call is run
twice under ``torch.profiler`` with ``profile_memory=True``; every allocation and free of
torch's CPU allocator is then an event carrying the running total of allocated bytes, and
the peak of the second call is read against the total just before it (the first call's
allocations, such as optimizer state, are not a step's). On CUDA, torch's own peak counter
is used the same way.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Callable

import torch

__all__ = ["peak_allocated"]

_MARK = "nsm.utils.memory.call"


def peak_allocated(fn: Callable[[], object], device="cpu") -> int:
    """Bytes that a call of ``fn()`` allocates beyond what is allocated before it, at its peak.

    ``fn`` is called three times: once to warm up, once to settle, once measured. Only
    tensors allocated through torch count (not Python objects, not the allocator's cache).
    """
    device = torch.device(device)
    fn()
    if device.type == "cuda":
        fn()
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    if device.type != "cpu":
        raise ValueError(f"peak_allocated measures cpu and cuda devices, got {device}")
    from torch.profiler import ProfilerActivity, profile, record_function

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the profiler's notes on blocks allocated before it
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()  # frees of the warm-up's blocks are seen from here on
            with record_function(_MARK):
                fn()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            with open(path) as f:
                events = json.load(f)["traceEvents"]
    (call,) = [e for e in events if e.get("name") == _MARK and e.get("ph") == "X"]
    start, end = call["ts"], call["ts"] + call["dur"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    before = [e["args"]["Total Allocated"] for e in memory if e["ts"] < start]
    inside = [e["args"]["Total Allocated"] for e in memory if start <= e["ts"] <= end]
    base = before[-1] if before else 0
    return max(0, max(inside, default=base) - base)
