"""Cost of ``--record`` (nsm.training.recorder.Recorder), as ratios measured in one run.

Times one pass of ``train_one_epoch`` of the bNSM (Table 6 network, batch 100) over the
same random images, interleaved, in three variants:
  off:        no recorder (the default: train_step gets no callback, nothing is written);
  per epoch:  a recorder that accumulates gradient means every step and records once;
  every K:    a recorder that also records every K steps, with a companion for the
              gradient cosine (the setting of results/mnist-analysis).
Prints the median time of each and its ratio to "off".

Usage: python benchmarks/bench_record.py [--images 3000] [--repeats 5] [--every 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from nsm.models import build_model
from nsm.training.loop import train_one_epoch
from nsm.training.recorder import Recorder


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(args.images, 1, 28, 28, generator=g), torch.randint(0, 10, (args.images,), generator=g)
    torch.manual_seed(0)
    model = build_model("bnsm")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    steps = -(-args.images // 100)
    tmp = tempfile.TemporaryDirectory()

    def variant(every, companions):
        def run():
            rec = None
            if every is not None:
                rec = Recorder(
                    model,
                    tmp.name,
                    probe_x=x[:500],
                    probe_y=y[:500],
                    steps_per_epoch=steps,
                    every=every,
                    companions={name: build_model(name) for name in companions},
                )
            train_one_epoch(
                model,
                opt,
                x,
                y,
                batch_size=100,
                generator=torch.Generator().manual_seed(1),
                device=torch.device("cpu"),
                recorder=rec,
            )
            if rec is not None:
                rec.end_epoch()

        return run

    fns = {
        "off": variant(None, ()),
        "per epoch": variant(0, ()),
        f"every {args.every} + cosine": variant(args.every, ("sigmoid",)),
    }
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(args.repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["off"])
    print(
        f"bNSM, {args.images} images, batch 100, {args.repeats} interleaved repeats, {torch.get_num_threads()} threads"
    )
    for k, ts in times.items():
        m = statistics.median(ts)
        print(f"  {k:<22} {m:7.2f} s   {m / base:5.2f}x")
    tmp.cleanup()


if __name__ == "__main__":
    main()
