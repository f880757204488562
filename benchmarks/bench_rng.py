"""Random draws on this CPU, eager and compiled: why the compiled Gaussian paths are slow.

Times, for one bNSM training step's worth of numbers (batch 100 of the Table 6 network: 23,040
outputs per image for the `probability` sampler), medians of interleaved repeats:
  - a sign drawn from a Gaussian, sgn(eps + sqrt(2) t) (the `probability` sampler);
  - the same law from one uniform, sgn(erf(t) - (2U - 1)) (P(+1) = 1/2 (1 + erf t) either way);
  - Gaussian noise xi ~ N(1, 1) on +-1 inputs, from randn and by inversion (erfinv of a uniform);
each eager and under torch.compile(fullgraph=True).

Usage: python benchmarks/bench_rng.py [--numbers 2304000] [--repeats 25] [--no-compile]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch


def sign_gauss(t):
    return torch.where(torch.randn_like(t) + math.sqrt(2.0) * t > 0, 1.0, -1.0)


def sign_uniform(t):
    return torch.where(torch.erf(t) - (torch.rand_like(t) * 2 - 1) > 0, 1.0, -1.0)


def noise_randn(x):
    return (torch.randn_like(x) + 1.0) * x


def noise_erfinv(x):
    v = (torch.rand_like(x) * 2 - 1).clamp_(min=-1 + 2**-24)
    return (torch.erfinv(v) * math.sqrt(2.0) + 1.0) * x


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numbers", type=int, default=100 * 23040, help="numbers per draw (default: one step's worth)")
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    args = ap.parse_args(argv)
    repeats = args.repeats
    torch.manual_seed(0)
    t = torch.randn(args.numbers) * 0.5
    x = torch.randn(args.numbers).sign()
    cases = {}
    for f, arg in ((sign_gauss, t), (sign_uniform, t), (noise_randn, x), (noise_erfinv, x)):
        cases[f"{f.__name__}, eager"] = (f, arg)
        if args.no_compile:
            continue
        compiled = torch.compile(f, fullgraph=True)
        t0 = time.perf_counter()
        compiled(arg)
        print(f"compiling {f.__name__}: {time.perf_counter() - t0:.1f} s")
        cases[f"{f.__name__}, compiled"] = (compiled, arg)
    times = {k: [] for k in cases}
    for _ in range(repeats):
        for k, (f, arg) in cases.items():
            t0 = time.perf_counter()
            f(arg)
            times[k].append(time.perf_counter() - t0)
    print(f"\n{len(t):,} numbers, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {repeats}")
    for k, v in times.items():
        print(f"  {k:<26} {1000 * statistics.median(v):7.2f} ms")


if __name__ == "__main__":
    main()
