"""Speed and memory of the Table 6 network on this machine, as ratios measured in one run.

Prints, at the chosen batch size and device:
  1. the training-step time (forward + backward + Adam) of the dCNN and of each network of
     --models (default: the bNSM with each sampler), eager and compiled
     (``torch.compile(fullgraph=True, dynamic=False)``, inductor), as ratios to the eager dCNN
     step and to the best dCNN step; the compile time (the first compiled step, after a
     throwaway compile that takes inductor's one-time start-up, printed apart); the peak memory
     a step adds, as torch's allocator counts it (:func:`nsm.utils.memory.peak_allocated`: CPU
     through the profiler's memory events, CUDA through torch's peak counter), as a ratio to
     the eager dCNN's;
  2. Monte-Carlo inference images per second of the bNSM at S samples: nsm.mc_predict, eager
     and compiled, against a plain eager Python loop of S single passes of the same batch
     (medians of max(3, repeats // 4) repeats: 5 for --repeats 21).

Usage: python benchmarks/bench_speed.py [--device cpu] [--batch 100] [--repeats 15]
       [--samples 100] [--threads N] [--models bnsm/neuron ...] [--no-compile]
       [--fresh-cache] [--json FILE]
--models takes registered model names (``nsm models``), each optionally with a sampler as
``name/sampler``; the dCNN is always measured (it is the ratios' base). Samplers ``synapse``
run eagerly only. Timings are medians over repeats, interleaved so that machine noise hits
every variant, the variants' order rotated from one repeat to the next.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import nsm
from nsm.utils.memory import peak_allocated

DEFAULT_MODELS = ("bnsm/neuron", "bnsm/probability", "bnsm/synapse")  # beside the dCNN, always measured


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
    """Median seconds of each call over ``repeats`` rounds (after two warm-up calls each); in
    round r the calls start at the r-th one (order rotated), so no variant always runs first."""
    for f in fns.values():  # warm up
        f()
        f()
    keys = list(fns)
    times = {k: [] for k in keys}
    for r in range(repeats):
        shift = r % len(keys)
        for k in keys[shift:] + keys[:shift]:
            sync(device)
            t0 = time.perf_counter()
            fns[k]()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def parse_models(names) -> dict:
    """{variant: (model name, build options)} for ``name`` or ``name/sampler`` entries, the dCNN first."""
    variants = {"dcnn": ("dcnn", {})}
    for name in names:
        model, _, sampler = name.partition("/")
        variants[name] = (model, {"sampler": sampler} if sampler else {})
    return variants


def warm_up_compiler(device) -> float:
    """Seconds of a throwaway compile (forward and backward of a tiny function): inductor's
    one-time start-up (its imports, compiler checks, worker pool), so that it is not counted in
    the first network's compile time."""
    a = torch.rand(8, 8, device=device, requires_grad=True)
    f = torch.compile(lambda t: torch.tanh(t @ t).sum(), fullgraph=True, dynamic=False)
    sync(device)
    t0 = time.perf_counter()
    f(a).backward()
    sync(device)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        metavar="NAME[/SAMPLER]",
        help=f"networks to time beside the dCNN (default: {' '.join(DEFAULT_MODELS)}); e.g. bn gnsm ste",
    )
    ap.add_argument("--no-compile", action="store_true", help="eager variants only")
    ap.add_argument(
        "--fresh-cache",
        action="store_true",
        help="compile into a new, empty inductor cache (TORCHINDUCTOR_CACHE_DIR: a temporary folder, removed after)",
    )
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.batch < 1 or args.samples < 1:
        ap.error("--repeats, --batch and --samples must be at least 1")
    variants = parse_models(dict.fromkeys(args.models))  # each once: a second compile of one graph is no compile
    for k, (m, o) in variants.items():
        try:
            nsm.build_model(m, **o)
        except ValueError as exc:
            ap.error(f"--models {k}: {exc}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cache, before = None, os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if args.fresh_cache and not args.no_compile:
        cache = tempfile.TemporaryDirectory(prefix="nsm-inductor-cache-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name  # read when inductor first uses its cache
    try:
        return run(args, variants, device)
    finally:
        if cache is not None:
            cache.cleanup()
            if before is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def run(args, variants, device):
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    mc_repeats = max(3, args.repeats // 4)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, batch {args.batch}")
    report: dict = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "repeats": args.repeats,
        "mc_repeats": mc_repeats,
        "samples": args.samples,
        "models": list(variants),
        "fresh_cache": bool(args.fresh_cache and not args.no_compile),
        "compile_warmup_s": None,
        "train": {},
        "mc": {},
    }
    if not args.no_compile:
        # One dynamo state for every training variant (no torch._dynamo.reset() between them: a
        # reset makes every model compiled before it compile again when next called).
        # dynamic=False: a model compiled after another is not given dynamic shapes for what the two
        # differ in; the raised limit lets every variant keep its own graph on nn.Sequential.forward.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        report["compile_warmup_s"] = warm_up_compiler(device)
        print(f"inductor start-up (a throwaway compile, not counted below): {report['compile_warmup_s']:.1f} s")

    fns, compile_s = {}, {}
    for k, (m, o) in variants.items():
        model = nsm.build_model(m, **o).to(device)
        fns[f"{k} eager"] = step_fn(model, x, y)
        if not args.no_compile and o.get("sampler") != "synapse":
            fast = torch.compile(nsm.build_model(m, **o).to(device), fullgraph=True, dynamic=False)
            step = step_fn(fast, x, y)
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            compile_s[f"{k} compiled"] = time.perf_counter() - t0
            fns[f"{k} compiled"] = step
    memory = {k: float(peak_allocated(f, device)) for k, f in fns.items()}
    t = time_interleaved(fns, args.repeats, device)
    best_dcnn = min(v for k, v in t.items() if k.startswith("dcnn "))
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
    if any(o.get("sampler") == "synapse" for _, o in variants.values()):
        print("   (NAME/synapse: the synapse sampler in the fc layer; the convolutions use neuron)")

    model = nsm.build_model("bnsm").to(device)
    S = args.samples
    fns = {
        "mc_predict eager": lambda: nsm.mc_predict(model, x, S),
        "python loop eager": lambda: loop_predict(model, x, S),
    }
    if not args.no_compile:
        torch._dynamo.reset()  # the training variants are done with; the MC graph starts afresh
        fast = torch.compile(model, fullgraph=True)
        t0 = time.perf_counter()
        nsm.mc_predict(fast, x, S)
        sync(device)
        report["mc"]["compile_s"] = time.perf_counter() - t0
        fns["mc_predict compiled"] = lambda: nsm.mc_predict(fast, x, S)
    t = time_interleaved(fns, mc_repeats, device)
    print(f"\n2. MC inference of bNSM at S={S} on a batch of {args.batch}, median of {mc_repeats}")
    print(f"{'method':<26}{'images/s':>10}{'x loop':>8}")
    for k, v in t.items():
        print(f"{k:<26}{args.batch / v:>10.1f}{t['python loop eager'] / v:>8.2f}")
        report["mc"][k] = {"images_per_s": args.batch / v, "x_loop": t["python loop eager"] / v}
    if "compile_s" in report["mc"]:
        print(f"   (compiling the MC passes took {report['mc']['compile_s']:.1f} s, first call included)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
