"""What the ``nsm`` command accepts: its commands, their options and help
(:func:`build_parser`), and the rules that read an option's text once it is parsed.

Every option of ``nsm train`` overrides one field of
:class:`nsm.training.config.TrainConfig`; they are listed once, with the field each sets and
its help, in ``_TRAIN_OPTIONS``, which ``nsm reproduce`` shares for the fields in
``_REPRODUCE_FIELDS``. What a command does with its options is in the module named after it
(:mod:`nsm.cli.train`, :mod:`nsm.cli.reproduce`, :mod:`nsm.cli.reports`,
:mod:`nsm.cli.resources`).
"""

from __future__ import annotations

import argparse

_REPRODUCE_FIELDS = (
    "epochs",
    "samples",
    "eval_every",
    "eval_last",
    "eval_samples",
    "train_subset",
    "test_subset",
    "device",
    "threads",
    "compile",
    "flush_denormal",
    "data_dir",
    "batch_size",
    "lr",
    "checkpoint_every",
)


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


# option -> (config field, type, help)
_TRAIN_OPTIONS = [
    ("--model", "model", str, "registered model name (see `nsm models`); default bnsm"),
    ("--dataset", "dataset", str, "dataset name; default mnist"),
    (
        "--epochs",
        "epochs",
        int,
        "training epochs; default: the dataset's protocol (MNIST: 100; DVS Gesture: 200; CIFAR: 300)",
    ),
    ("--seed", "seed", int, "random seed (initialization, shuffling, noise); default 0"),
    ("--device", "device", str, "cpu, cuda, cuda:N, mps or auto; default cpu"),
    (
        "--samples",
        "samples",
        int,
        "Monte-Carlo samples per test image; default: the dataset's protocol (MNIST: 100; DVS Gesture, CIFAR: 101)",
    ),
    ("--batch-size", "batch_size", int, "training mini-batch size; default 100"),
    ("--lr", "lr", float, "Adam learning rate; default: the dataset's protocol (MNIST: 3e-4; CIFAR: 1e-3)"),
    ("--weight-decay", "weight_decay", float, "Adam weight decay; default 1e-6"),
    (
        "--lr-step",
        "lr_step",
        int,
        "step schedule: epochs between learning-rate halvings; default: the dataset's protocol "
        "(MNIST: 50; DVS Gesture: 100)",
    ),
    (
        "--lr-schedule",
        "lr_schedule",
        str,
        "step (halve every --lr-step epochs) or linear (CIFAR: "
        "constant until --lr-decay-start, then linearly to 0); default: the dataset's protocol",
    ),
    (
        "--lr-decay-start",
        "lr_decay_start",
        int,
        "linear schedule: the epochs done after which the lr ramps down (lr x (epochs - E) / "
        "(epochs - start) after E epochs); default 100 (CIFAR's protocol)",
    ),
    ("--eval-every", "eval_every", int, "evaluate every N epochs (and after the last); default 1"),
    (
        "--eval-last",
        "eval_last",
        int,
        "also evaluate each of the last N epochs, at --samples (the reported "
        "error is the mean of the last 5 full evaluations; the cheap ones of --eval-samples never count); default 0",
    ),
    (
        "--eval-samples",
        "eval_samples",
        int,
        "Monte-Carlo samples of the evaluations before the last --eval-last "
        "epochs (a cheaper learning curve); default --samples",
    ),
    ("--train-subset", "train_subset", int, "train on the first N training images only"),
    ("--test-subset", "test_subset", int, "test on the first N test images only"),
    ("--threads", "threads", int, "torch CPU threads (default: torch's choice)"),
    (
        "--data-dir",
        "data_dir",
        str,
        "folder with one sub-folder per dataset (default $NSM_DATA_DIR or ~/.cache/nsm/data)",
    ),
    ("--out", "out", str, "parent folder of run directories; default runs"),
    (
        "--run-name",
        "run_name",
        str,
        "run directory name (default MODEL-DATASET-seedSEED; never overwrites: a taken name gets a suffix)",
    ),
    (
        "--checkpoint-every",
        "checkpoint_every",
        int,
        "also write RUN_DIR/checkpoint.pt every N optimizer steps (default 0: after every epoch only)",
    ),
    (
        "--compile",
        "compile",
        str,
        "torch.compile the model: auto (default: when it pays, for long runs of "
        "models measured faster compiled), on, off",
    ),
    (
        "--flush-denormal",
        "flush_denormal",
        _on_off,
        "on (default) or off: flush denormal floats to zero on the CPU; a saturated NSM's "
        "gradients underflow into them, which makes late training several times slower",
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsm", description="Neural Sampling Machines in PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    train = sub.add_parser(
        "train",
        help="train one model on one dataset",
        description="Train one model; prints the MC test error and the run directory.",
    )
    for flag, dest, typ, help_ in _TRAIN_OPTIONS:
        train.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    train.add_argument("--no-compile", action="store_true", help="run eagerly (the same as --compile off)")
    train.add_argument("--sampler", default=None, help="NSM sampler: neuron, synapse, probability")
    train.add_argument("--estimator", default=None, help="NSM estimator: prob, ste, binconcrete")
    train.add_argument("--zca", action="store_true", help="CIFAR: ZCA-whiten (fitted on the training set)")
    train.add_argument("--split", default=None, help="EMNIST split (default letters)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the interrupted run in RUN_DIR from its checkpoint, with the configuration "
        "in RUN_DIR/config.json (other options must agree with it; --data-dir and "
        "--no-progress may change)",
    )
    train.add_argument(
        "--record",
        action="store_true",
        help="record weight histograms and statistics, mean gradients and the last hidden "
        "layer's input percentiles into RUN_DIR/record (see `nsm analyze`)",
    )
    train.add_argument(
        "--record-every",
        type=int,
        default=None,
        metavar="N",
        help="with --record: record every N optimizer steps (default: after every epoch)",
    )
    train.add_argument(
        "--compare-grad",
        default=None,
        metavar="MODEL[,MODEL]",
        help="with --record: at each record point, the cosine between this model's weight "
        "gradients and those of MODEL given the same weights and probe batch "
        "(e.g. bnsm-binconcrete,sigmoid; the model itself, e.g. bnsm, gives the "
        "agreement of two independent noise draws: the noise floor)",
    )
    train.add_argument(
        "--record-draws",
        type=int,
        default=None,
        metavar="K",
        help="with --compare-grad: stochastic passes averaged per gradient (default 4)",
    )

    fetch = sub.add_parser(
        "fetch",
        help="download a dataset into the data directory",
        description="Download a dataset from its official location into the data "
        "directory (md5-checked; existing files are never overwritten). "
        "DVS Gesture has no direct download: its loader's error says "
        "what to download and where to put it.",
    )
    fetch.add_argument("dataset", choices=["mnist", "fashion-mnist", "emnist", "nmnist", "cifar10", "cifar100"])
    fetch.add_argument("--split", default=None, help="emnist only: the split (default letters)")
    fetch.add_argument("--data-dir", default=None, help="default $NSM_DATA_DIR or ~/.cache/nsm/data")

    sub.add_parser("models", help="list the registered models")

    ev = sub.add_parser(
        "evaluate",
        help="uncertainty, rotation, OOD detection and device robustness of trained runs",
        description="Evaluate trained run directories on their test set: uncertainty from S Monte-Carlo "
        "passes (NLL, Brier, ECE, entropy, mutual information, accuracy vs S), rotated test "
        "images (0-180 degrees), out-of-distribution detection (MNIST <-> Fashion-MNIST: AUROC "
        "of entropy and mutual information) and accuracy under device non-idealities "
        "(quantized weights, spread of the blank-out probability, read noise). Writes "
        "evaluation.json, evaluation.md and PNG figures to --out.",
    )
    ev.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (with checkpoint.pt)")
    ev.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    ev.add_argument("--samples", type=int, default=100, help="Monte-Carlo passes per image (default 100)")
    ev.add_argument(
        "--shift-subset", type=int, default=1000, help="test images used for rotation and OOD detection (default 1000)"
    )
    ev.add_argument("--angles", default=None, help="comma-separated rotation angles in degrees (default 0,15,...,180)")
    ev.add_argument(
        "--ood", default="auto", help="OOD dataset: auto (MNIST <-> Fashion-MNIST), a dataset name, or none"
    )
    ev.add_argument("--no-devices", action="store_true", help="skip the device non-ideality sweeps")
    ev.add_argument("--device-subset", type=int, default=2000, help="test images for the device sweeps")
    ev.add_argument("--device-samples", type=int, default=20, help="passes per image in the device sweeps")
    ev.add_argument("--test-subset", type=int, default=None, help="use the first N test images only")
    ev.add_argument(
        "--data-dir",
        default=None,
        help="default: the run's data folder if the data is there (read only, never downloaded into), else "
        "$NSM_DATA_DIR or ~/.cache/nsm/data",
    )
    ev.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the evaluation's noise")

    ana = sub.add_parser(
        "analyze",
        help="figures of the paper's analyses (SI 4.5, 4.11) from run directories",
        description="Read run directories (trained with `nsm train`, with --record for everything but the "
        "convergence plot) and write PNG figures and analysis.json: convergence (test error vs "
        "epoch), the evolution, mean and std drift of one layer's weights (SI Fig. 4), weight "
        "histograms, mean weights, mean gradients and gradient cosines per layer (SI Figs. 5-8), "
        "and the percentiles of the last hidden layer's input.",
    )
    ana.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    ana.add_argument("--out", default="analysis", help="folder for the figures (default ./analysis)")
    ana.add_argument(
        "--layer",
        default="W3",
        help="layer of the weight-evolution figure (default W3, the paper's: the third weight layer)",
    )

    summ = sub.add_parser(
        "summarize",
        help="recompute finished runs' summary.json from their metrics by the current reporting rule",
        description="Recompute each finished run's reported numbers (the final error, the mean of the last 5 "
        "evaluations at the full S, the best) from its metrics.jsonl and config.json, and rewrite summary.json "
        "where they differ: for runs summarized under an older rule (before 2026-12-01 a deterministic network's "
        "cheap --eval-samples evaluations were counted). Prints each change.",
    )
    summ.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    summ.add_argument("--check", action="store_true", help="print what would change; write nothing (exit 1 if any)")

    onl = sub.add_parser(
        "online",
        help="online learning: models trained on a stream, one example per step",
        description="Train each model with batch size 1 on one pass over the first --examples training "
        "images (same order for all), Adam; after the counts in --eval-at, the MC test error "
        "and NLL. Writes OUT/online.json and OUT/online.png. Batch-normalized models fail at "
        "the first step (batch statistics of one example): recorded as failed.",
    )
    onl.add_argument("models", help="comma-separated registered model names, e.g. bnsm,dcnn,dcnn-bn")
    onl.add_argument("--dataset", default="mnist", help="dataset name (default mnist)")
    onl.add_argument("--examples", type=int, default=10000, help="length of the stream (default 10000)")
    onl.add_argument(
        "--eval-at",
        default=None,
        help="comma-separated example counts at which to test "
        "(default 0,100,300,1000,3000,10000,30000,60000 below --examples, then --examples)",
    )
    onl.add_argument("--samples", type=int, default=20, help="MC samples per test image (default 20)")
    onl.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    onl.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default 0)")
    onl.add_argument("--test-subset", type=int, default=None, help="test on the first N test images only")
    onl.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (one example per step: 1 is often fastest)"
    )
    onl.add_argument("--seed", type=int, default=0, help="seed of initialization and noise (default 0)")
    onl.add_argument("--out", default="online", help="output folder (default ./online)")
    onl.add_argument("--data-dir", default=None, help="default $NSM_DATA_DIR or ~/.cache/nsm/data")
    onl.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    onl.add_argument("--no-progress", action="store_true", help="no progress bars")

    rep = sub.add_parser(
        "reproduce",
        help="train every model x dataset x seed of a paper table and write the table",
        description="Train every run of a table (skipping runs already finished in --out), then write "
        "OUT/table.md and OUT/table.csv: test error mean +- std over seeds (each seed: mean "
        "of its last 5 evaluations at the full S; the cheaper ones of --eval-samples do not count) "
        "beside the paper's number. Interrupted runs are resumed; "
        "several processes or machines may run the same command on one --out: each claims the runs "
        "it trains (OUT/runs/NAME.claim) and skips those another live worker holds.",
    )
    rep.add_argument("table", nargs="?", help="table name (see --list)")
    rep.add_argument("--list", action="store_true", help="list the tables and exit")
    rep.add_argument(
        "--status",
        action="store_true",
        help="show where each run of the table stands in --out (finished, running, interrupted at "
        "which epoch, or to be started again and why, time so far) and exit; trains and writes nothing",
    )
    rep.add_argument(
        "--table-only",
        action="store_true",
        help="write OUT/table.md, table.csv and curves.png from the runs already finished in --out "
        "and exit; trains nothing",
    )
    rep.add_argument("--out", default=None, help="output folder (default reproduce/TABLE)")
    rep.add_argument("--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default 2)")
    rep.add_argument("--seed-list", default=None, help="explicit comma-separated distinct seeds, e.g. 0,3,7")
    rep.add_argument(
        "--models", default=None, help="comma-separated subset of the table's models, each once (default: all)"
    )
    rep.add_argument(
        "--datasets", default=None, help="comma-separated subset of the table's datasets, each once (default: all)"
    )
    for flag, dest, typ, help_ in _TRAIN_OPTIONS:
        if dest in _REPRODUCE_FIELDS:
            rep.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    rep.add_argument("--no-compile", action="store_true", help="run eagerly (the same as --compile off)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    rep.add_argument(
        "--worker",
        default=None,
        metavar="K/N",
        help="train only every N-th run of the table, from the K-th (1 <= K <= N): a fixed split "
        "over N workers; without it, workers sharing --out share the runs through claims",
    )
    rep.add_argument(
        "--steal-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="take over a run whose claim (OUT/runs/NAME.claim) has had no heartbeat for this "
        "long, whichever host made it; at least 60 (default: only claims of dead processes on this host)",
    )
    return parser


def _resolve_compile(args) -> None:
    """--no-compile is --compile off; with another --compile it is refused, not overridden."""
    if args.no_compile:
        if args.compile not in (None, "off"):
            raise ValueError(f"--no-compile means --compile off; --compile {args.compile} was given too")
        args.compile = "off"


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated ints, got {text!r}") from None
