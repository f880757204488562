"""Speed of the Table 6 network on this machine, as ratios measured in one run.

Prints, at batch 100 on the chosen device:
  1. the training-step time (forward + backward + Adam) of bNSM with each sampler, and of
     the dCNN of the same widths, as ratios to the dCNN;
  2. Monte-Carlo inference images per second at S samples with nsm.mc_predict, against a
     plain Python loop of S single passes of the same batch (both without autograd).

Usage: python benchmarks/bench_speed.py [--device cpu] [--repeats 20] [--samples 100]
Timings are medians over repeats, interleaved so that machine noise hits every variant.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import nsm


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_fn(model, x, y):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

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
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, batch {args.batch}")

    variants = {"dcnn": ("dcnn", {})}
    for s in ("neuron", "probability", "synapse"):
        variants[f"bnsm/{s}"] = ("bnsm", {"sampler": s})
    fns = {k: step_fn(nsm.build_model(m, **o).to(device), x, y) for k, (m, o) in variants.items()}
    t = time_interleaved(fns, args.repeats, device)
    print("\n1. training step (forward + backward + Adam), median of", args.repeats)
    print(f"{'model':<22}{'ms/step':>10}{'x dCNN':>10}")
    for k, v in t.items():
        note = "  (synapse sampler in the fc layer; convolutions use neuron)" if k.endswith("synapse") else ""
        print(f"{k:<22}{1e3 * v:>10.2f}{v / t['dcnn']:>10.2f}{note}")

    model = nsm.build_model("bnsm").to(device)
    S = args.samples
    reps = max(3, args.repeats // 4)
    fns = {"mc_predict": lambda: nsm.mc_predict(model, x, S), "python loop": lambda: loop_predict(model, x, S)}
    t = time_interleaved(fns, reps, device)
    print(f"\n2. MC inference of bNSM at S={S} on a batch of {args.batch}, median of {reps}")
    print(f"{'method':<22}{'images/s':>10}{'speed-up':>10}")
    for k, v in t.items():
        print(f"{k:<22}{args.batch / v:>10.1f}{t['python loop'] / v:>10.2f}")


if __name__ == "__main__":
    main()
