"""Speed and memory of the Table 6 network on this machine, as ratios measured in one run.

Prints, at the chosen batch size and device:
  1. the training-step time (forward + backward + Adam) of the dCNN and of the bNSM with each
     sampler, eager and compiled (``torch.compile(fullgraph=True)``, inductor), as ratios to
     the eager dCNN step and to the best dCNN step; the compile time (the first compiled
     step); the peak memory a step adds, as torch's allocator counts it
     (:func:`nsm.utils.memory.peak_allocated`: CPU through the profiler's memory events,
     CUDA through torch's peak counter), as a ratio to the eager dCNN's;
  2. Monte-Carlo inference images per second at S samples: nsm.mc_predict, eager and
     compiled, against a plain eager Python loop of S single passes of the same batch.

Usage: python benchmarks/bench_speed.py [--device cpu] [--batch 100] [--repeats 15]
       [--samples 100] [--threads N] [--no-compile] [--json FILE]
Timings are medians over repeats, interleaved so that machine noise hits every variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import nsm
from nsm.utils.memory import peak_allocated


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_fn(model, x, y):
    opt = torch.optim.Adam([p for p in model.parameters()], lr=1e-4)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def loop_predict(model, x, n_samples):
    with torch.no_grad():
        acc = 0
        for _ in range(n_samples):
            acc = acc + torch.softmax(model(x), -1)
        return acc / n_samples


def time_interleaved(fns: dict, repeats: int, device) -> dict:
    for f in fns.values():  # warm up
        f()
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            sync(device)
            t0 = time.perf_counter()
            f()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true", help="eager variants only")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, batch {args.batch}")
    report: dict = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "train": {},
        "mc": {},
    }

    variants = {"dcnn": ("dcnn", {})}
    for s in ("neuron", "probability", "synapse"):
        variants[f"bnsm/{s}"] = ("bnsm", {"sampler": s})
    fns, compile_s = {}, {}
    for k, (m, o) in variants.items():
        model = nsm.build_model(m, **o).to(device)
        fns[f"{k} eager"] = step_fn(model, x, y)
        if not args.no_compile and not k.endswith("synapse"):
            torch._dynamo.reset()
            fast = torch.compile(nsm.build_model(m, **o).to(device), fullgraph=True)
            step = step_fn(fast, x, y)
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            compile_s[f"{k} compiled"] = time.perf_counter() - t0
            fns[f"{k} compiled"] = step
    memory = {k: float(peak_allocated(f, device)) for k, f in fns.items()}
    t = time_interleaved(fns, args.repeats, device)
    best_dcnn = min(v for k, v in t.items() if k.startswith("dcnn"))
    print(f"\n1. training step (forward + backward + Adam), median of {args.repeats}")
    print(f"{'variant':<26}{'ms/step':>9}{'x dCNN':>8}{'x best':>8}{'compile s':>11}{'peak MB':>9}{'x mem':>7}")
    for k, v in t.items():
        mem = memory[k] / memory["dcnn eager"] if memory["dcnn eager"] > 0 else float("nan")
        comp = compile_s.get(k)
        print(
            f"{k:<26}{1e3 * v:>9.2f}{v / t['dcnn eager']:>8.2f}{v / best_dcnn:>8.2f}"
            f"{'' if comp is None else f'{comp:.1f}':>11}{memory[k] / 2**20:>9.1f}{mem:>7.2f}"
        )
        report["train"][k] = {
            "ms": 1e3 * v,
            "x_dcnn_eager": v / t["dcnn eager"],
            "x_best_dcnn": v / best_dcnn,
            "compile_s": comp,
            "peak_mb": memory[k] / 2**20,
            "x_mem_dcnn": mem,
        }
    print("   (bnsm/synapse: the synapse sampler in the fc layer; convolutions use neuron)")

    model = nsm.build_model("bnsm").to(device)
    S = args.samples
    reps = max(3, args.repeats // 4)
    fns = {
        "mc_predict eager": lambda: nsm.mc_predict(model, x, S),
        "python loop eager": lambda: loop_predict(model, x, S),
    }
    if not args.no_compile:
        torch._dynamo.reset()
        fast = torch.compile(model, fullgraph=True)
        t0 = time.perf_counter()
        nsm.mc_predict(fast, x, S)
        report["mc"]["compile_s"] = time.perf_counter() - t0
        fns["mc_predict compiled"] = lambda: nsm.mc_predict(fast, x, S)
    t = time_interleaved(fns, reps, device)
    print(f"\n2. MC inference of bNSM at S={S} on a batch of {args.batch}, median of {reps}")
    print(f"{'method':<26}{'images/s':>10}{'x loop':>8}")
    for k, v in t.items():
        print(f"{k:<26}{args.batch / v:>10.1f}{t['python loop eager'] / v:>8.2f}")
        report["mc"][k] = {"images_per_s": args.batch / v, "x_loop": t["python loop eager"] / v}
    if "compile_s" in report["mc"]:
        print(f"   (compiling the MC passes took {report['mc']['compile_s']:.1f} s, first call included)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
