"""The bNSM's training step with denormal floats computed or flushed to zero, as ratios measured
in one run (nsm.utils.floats; the `flush_denormal` option of nsm train and nsm reproduce).

A network far into training has saturated units whose gradients underflow into float32
denormals, which x86 CPUs compute many times slower. Prints the median step time (forward +
backward + Adam, Table 6 network, batch 100 by default) of each network with denormals computed and with
them flushed, steps of the two modes interleaved so that machine noise hits both:

  fresh       a newly built bNSM (few saturated units)
  saturated   the same with every NSM layer's magnitude multiplied by --saturate, which pushes
              its drives |t| out to where exp(-t^2) underflows, as training does
  checkpoint  the weights and Adam state of a run's checkpoint.pt (--checkpoint), if given

Also the share of each network's units in the denormal band 9.35 < |t| < 10.16 on the batch.

Usage: python benchmarks/bench_denormal.py [--checkpoint RUN/checkpoint.pt] [--saturate 12]
       [--repeats 15] [--batch 100] [--json FILE]
One thread: the mode of torch's other threads is fixed when they start, so the two modes
could not be interleaved across them.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from bench_speed import time_interleaved  # this folder's: medians of interleaved repeats

import nsm
from nsm.nn.layers import NSMConv2d, NSMLinear
from nsm.training.checkpoint import read_checkpoint
from nsm.utils.floats import flush_denormals


def saturation(model, x) -> float:
    """The share of NSM units whose drive t lies where exp(-t^2) is a float32 denormal."""
    band, total = 0, 0

    def hook(module, inputs, output):
        nonlocal band, total
        t = module.drive(inputs[0])
        band += int(((t.abs() > 9.35) & (t.abs() < 10.16)).sum())
        total += t.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (NSMConv2d, NSMLinear))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return band / total if total else float("nan")


def stepper(model, optimizer, x, y, flush: bool):
    def step():
        with flush_denormals(flush):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="a run's checkpoint.pt (a bnsm or gnsm run on MNIST)")
    ap.add_argument("--saturate", type=float, default=12.0, help="factor on the magnitudes of the saturated net")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, default=100, help="random images per step")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))

    def network(kind):
        """(model, optimizer) of each of the two modes: the same start, stepped separately."""
        pair = []
        for _ in range(2):
            if kind == "checkpoint":
                ck = read_checkpoint(args.checkpoint)
                model = nsm.build_model(ck["model"], tuple(ck["in_shape"]), int(ck["num_classes"]))
                model.load_state_dict(ck["model_state"])
                opt = torch.optim.Adam(model.parameters())
                opt.load_state_dict(ck["optimizer_state"])
            else:
                torch.manual_seed(0)
                model = nsm.build_model("bnsm")
                if kind == "saturated":
                    with torch.no_grad():
                        for name, p in model.named_parameters():
                            if name.endswith("magnitude"):
                                p.mul_(args.saturate)
                opt = torch.optim.Adam(model.parameters(), lr=1.5e-4, weight_decay=1e-6)
            model.train()
            pair.append((model, opt))
        return pair

    kinds = ["fresh", "saturated"] + (["checkpoint"] if args.checkpoint else [])
    fns, band = {}, {}
    for kind in kinds:
        (m0, o0), (m1, o1) = network(kind)
        band[kind] = saturation(m0, x)
        fns[(kind, "computed")] = stepper(m0, o0, x, y, flush=False)
        fns[(kind, "flushed")] = stepper(m1, o1, x, y, flush=True)
    ms = {k: 1000 * v for k, v in time_interleaved(fns, args.repeats, torch.device("cpu")).items()}
    print(f"torch {torch.__version__}, one thread, batch {args.batch}, median of {args.repeats} interleaved steps")
    print(f"{'network':<12}{'units in band':>14}{'computed ms':>13}{'flushed ms':>12}{'computed/flushed':>18}")
    report = {"torch": torch.__version__, "threads": 1, "batch": args.batch, "repeats": args.repeats, "networks": {}}
    for kind in kinds:
        a, b = ms[(kind, "computed")], ms[(kind, "flushed")]
        print(f"{kind:<12}{100 * band[kind]:>13.2f}%{a:>13.1f}{b:>12.1f}{a / b:>18.2f}")
        report["networks"][kind] = {"band_share": band[kind], "computed_ms": a, "flushed_ms": b, "ratio": a / b}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
