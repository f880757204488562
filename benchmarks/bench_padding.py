"""What the border-aware variance of padded NSM convolutions costs, as ratios measured in one run.

A zero-padded ``NSMConv2d`` with ``variance="norm"`` computes each unit's weight norm over the
synapses that meet the image (one convolution of w^2 over a single all-ones example), so that
``firing_probability``, the gradient and every sampler describe the same law at the border.
This compares one training step (forward + backward) and one pass without autograd of:

- ``full-norm``: the same layer with the full-filter norm ||w|| everywhere (the old default,
  whose border units fired at another law than the one they reported);
- ``border-norm``: the default now;
- ``exact``: ``variance="exact"``, a second convolution over the whole batch.

Usage: python benchmarks/bench_padding.py [--batch 100] [--channels 96] [--size 32] [--repeats 15]
Timings are medians over interleaved repeats; ratios are to ``full-norm``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import nsm


def make(variance: str, border: bool, channels: int) -> nsm.NSMConv2d:
    torch.manual_seed(0)
    layer = nsm.NSMConv2d(channels, channels, 3, padding=1, variance=variance)
    layer._padded = border  # full-norm: treat the padding as if it were +-1 input
    return layer


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--channels", type=int, default=96)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randint(0, 2, (args.batch, args.channels, args.size, args.size)).float() * 2 - 1
    layers = {
        "full-norm": make("norm", False, args.channels),
        "border-norm": make("norm", True, args.channels),
        "exact": make("exact", True, args.channels),
    }

    def train(layer):
        return lambda: layer(x).sum().backward()

    def infer(layer):
        def run():
            with torch.no_grad():
                layer(x)

        return run

    for what, wrap in (("train step", train), ("no-grad pass", infer)):
        fns = {k: wrap(v) for k, v in layers.items()}
        for f in fns.values():
            f()
        times = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{what} (batch {args.batch}, {args.channels} channels, {args.size}x{args.size}, "
            f"{torch.get_num_threads()} threads):"
        )
        for k, m in med.items():
            print(f"  {k:12s} {1e3 * m:8.1f} ms   x{m / med['full-norm']:.3f}")


if __name__ == "__main__":
    main()
