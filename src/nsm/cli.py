"""The ``nsm`` command: ``nsm train``, ``nsm fetch``, ``nsm models``.

Run ``nsm COMMAND --help`` for the options. Every option of ``nsm train`` overrides one
field of :class:`nsm.config.TrainConfig`; the resolved configuration is saved in the run
directory.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

# option -> (config field, type, help)
_TRAIN_OPTIONS = [
    ("--model", "model", str, "registered model name (see `nsm models`); default bnsm"),
    ("--dataset", "dataset", str, "dataset name; default mnist"),
    ("--epochs", "epochs", int, "training epochs; default 100"),
    ("--seed", "seed", int, "random seed (initialization, shuffling, noise); default 0"),
    ("--device", "device", str, "cpu, cuda, cuda:N or auto; default cpu"),
    ("--samples", "samples", int, "Monte-Carlo samples per test image; default 100"),
    ("--batch-size", "batch_size", int, "training mini-batch size; default 100"),
    ("--lr", "lr", float, "Adam learning rate; default 3e-4"),
    ("--weight-decay", "weight_decay", float, "Adam weight decay; default 1e-6"),
    ("--lr-step", "lr_step", int, "epochs between learning-rate halvings; default 50"),
    ("--eval-every", "eval_every", int, "evaluate every N epochs (and after the last); default 1"),
    ("--train-subset", "train_subset", int, "train on the first N training images only"),
    ("--test-subset", "test_subset", int, "test on the first N test images only"),
    ("--threads", "threads", int, "torch CPU threads (default: torch's choice)"),
    ("--data-dir", "data_dir", str, "folder with one sub-folder per dataset "
     "(default $NSM_DATA_DIR or ~/.cache/nsm/data)"),
    ("--out", "out", str, "parent folder of run directories; default runs"),
    ("--run-name", "run_name", str, "run directory name (default MODEL-DATASET-seedSEED; "
     "never overwrites: a taken name gets a suffix)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsm", description="Neural Sampling Machines in PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    train = sub.add_parser("train", help="train one model on one dataset",
                           description="Train one model; prints the MC test error and the run directory.")
    for flag, dest, typ, help_ in _TRAIN_OPTIONS:
        train.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    train.add_argument("--sampler", default=None, help="NSM sampler: neuron, synapse, probability")
    train.add_argument("--estimator", default=None, help="NSM estimator: prob, ste, binconcrete")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")

    fetch = sub.add_parser("fetch", help="download a dataset into the data directory")
    fetch.add_argument("dataset", choices=["mnist"])
    fetch.add_argument("--data-dir", default=None, help="default $NSM_DATA_DIR or ~/.cache/nsm/data")

    sub.add_parser("models", help="list the registered models")
    return parser


def _train(args) -> int:
    from .config import TrainConfig
    from .train import fit

    fields = {dest: getattr(args, dest) for _, dest, _, _ in _TRAIN_OPTIONS if getattr(args, dest) is not None}
    options = {k: getattr(args, k) for k in ("sampler", "estimator") if getattr(args, k) is not None}
    config = TrainConfig(**fields, model_options=options, progress=not args.no_progress)
    summary = fit(config)
    print(f"test error (MC mean of softmax, S={summary['samples']}): "
          f"{100 * summary['final_test_error']:.2f}% after {summary['epochs']} epoch(s) "
          f"in {summary['wall_seconds']:.0f} s")
    print(f"run directory: {summary['run_dir']}")
    return 0


def _fetch(args) -> int:
    from .data import fetch_mnist

    folder = fetch_mnist(args.data_dir)
    print(f"MNIST is in {folder}")
    return 0


def _models(args) -> int:
    from .models import MODELS

    width = max(len(n) for n in MODELS.names())
    for name in MODELS.names():
        print(f"{name:<{width}}  {MODELS.get(name).description}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"train": _train, "fetch": _fetch, "models": _models}[args.command]
    try:
        return handler(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        print(f"nsm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
