"""The ``nsm`` command: ``nsm train``, ``nsm reproduce``, ``nsm analyze``, ``nsm evaluate``,
``nsm online``, ``nsm fetch``, ``nsm models``.

Run ``nsm COMMAND --help`` for the options. Every option of ``nsm train`` overrides one
field of :class:`nsm.training.config.TrainConfig`; the resolved configuration is saved in the run
directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

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


def _reproduce(args) -> int:
    from .studies.catalog import TABLES
    from .studies.reproduce import (
        _check_steal_after,
        format_status,
        rebuild_table,
        run_table,
        table_status,
    )
    from .studies.tables import format_markdown

    if args.list:
        for name in TABLES.names():
            t = TABLES.get(name)
            print(f"{name}: {t.description}\n    models: {', '.join(t.models)}\n    datasets: {', '.join(t.datasets)}")
        return 0
    if not args.table:
        raise ValueError(
            f"name the table to reproduce: one of {', '.join(TABLES.names())} (nsm reproduce --list describes them)"
        )
    table = TABLES.get(args.table)
    _resolve_compile(args)
    if args.seed_list is not None and args.seeds is not None:
        raise ValueError("give --seeds or --seed-list, not both")
    if args.seed_list is not None:
        seeds = _int_list(args.seed_list, "--seed-list")
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"--seed-list must name distinct non-negative ints, e.g. 0,3,7; got {args.seed_list!r}")
    else:
        n = 2 if args.seeds is None else args.seeds
        if n < 1:
            raise ValueError(f"--seeds must be >= 1, got {n}")
        seeds = list(range(n))
    if args.steal_after is not None:
        _check_steal_after(args.steal_after, "--steal-after")
    overrides = {f: getattr(args, f) for f in _REPRODUCE_FIELDS if getattr(args, f) is not None}
    overrides["progress"] = not args.no_progress
    worker = None
    if args.worker is not None:
        parts = args.worker.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not 1 <= int(parts[0]) <= int(parts[1]):
            raise ValueError(f"--worker must read K/N with 1 <= K <= N (e.g. 1/3), got {args.worker!r}")
        worker = (int(parts[0]), int(parts[1]))
    out = Path(args.out or f"reproduce/{table.name}")
    common = dict(
        out=out,
        seeds=seeds,
        models=_name_list(args.models, "--models"),
        datasets=_name_list(args.datasets, "--datasets"),
        overrides=overrides,
        steal_after=args.steal_after,
    )
    if args.status and args.table_only:
        raise ValueError("give --status or --table-only, not both")
    if args.status or args.table_only:  # they train nothing: a worker's options would be ignored
        mode = "--status" if args.status else "--table-only"
        given = [o for o, v in (("--worker", args.worker), ("--steal-after", args.steal_after)) if v is not None]
        if given and not (args.status and given == ["--steal-after"]):  # --status reads claims with it
            raise ValueError(f"{mode} trains nothing: {' and '.join(given)} would mean nothing with it")
    if args.status:
        status = format_status(table_status(table, **common))  # refuses a bad request before printing anything
        print(f"nsm reproduce {table.name} in {out}:\n")
        print(status)
        return 0
    title = table.title
    # the command that trains the table, whichever of the two wrote it
    command = "nsm " + " ".join(str(a) for a in args.argv if a != "--table-only")
    if args.table_only:
        del common["steal_after"]
        rows = rebuild_table(table, title=title, command=command, **common)
    else:
        rows = run_table(table, worker=worker, title=title, command=command, **common)
    print(format_markdown(rows, title, command))
    print(f"wrote {out / 'table.md'} and {out / 'table.csv'}")
    return 0


def _name_list(text: Optional[str], flag: str) -> Optional[list[str]]:
    """The names of a comma-separated option; None when it was not given (all of them)."""
    if text is None:
        return None
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:  # an empty shell variable must not select the whole table
        raise ValueError(f"{flag} names nothing (got {text!r}); leave {flag} out for all of the table's")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{flag} names {', '.join(repeated)} more than once (got {text!r}); name each once")
    return names


def _resolve_compile(args) -> None:
    """--no-compile is --compile off; with another --compile it is refused, not overridden."""
    if args.no_compile:
        if args.compile not in (None, "off"):
            raise ValueError(f"--no-compile means --compile off; --compile {args.compile} was given too")
        args.compile = "off"


def _train(args) -> int:
    from .training.config import TrainConfig
    from .training.distributed import from_env
    from .training.loop import fit

    _resolve_compile(args)
    fields = {dest: getattr(args, dest) for _, dest, _, _ in _TRAIN_OPTIONS if getattr(args, dest) is not None}
    options = {k: getattr(args, k) for k in ("sampler", "estimator") if getattr(args, k) is not None}
    data_options = {"zca": True} if args.zca else {}
    if args.split is not None:
        data_options["split"] = args.split
    if args.record:
        fields["record"] = True
    if args.record_every is not None:
        fields["record_every"] = args.record_every
    if args.record_draws is not None:
        if args.compare_grad is None and args.resume is None:  # (a resumed run may have its companions)
            raise ValueError(
                "--record-draws sets the passes per gradient of --compare-grad; without it, it does nothing"
            )
        fields["record_draws"] = args.record_draws
    if args.compare_grad is not None:
        fields["record_compare"] = [m.strip() for m in args.compare_grad.split(",") if m.strip()]
    if args.resume is not None:
        config = _resume_config(
            args.resume, {**fields, "model_options": options, "dataset_options": data_options}, args.no_progress
        )
    else:
        config = TrainConfig.for_dataset(
            fields.pop("dataset", "mnist"),
            **fields,
            model_options=options,
            dataset_options=data_options,
            progress=not args.no_progress,
        )
    if args.resume is not None:
        source = f"{args.resume}/config.json"
    else:
        source = "--lr-schedule" if "lr_schedule" in fields else f"{config.dataset}'s protocol"
    _check_schedule_options(config, fields, source)
    # a resumed run's recorded data folder may be anyone's: read only (--data-dir is the user's)
    summary = fit(config, resume=args.resume, read_only_data=args.resume is not None and args.data_dir is None)
    if not from_env().main:  # under torchrun, rank 0 reports
        return 0
    how = "one pass" if summary["samples"] == 1 else f"MC mean of softmax, S={summary['samples']}"
    print(
        f"test error ({how}): "
        f"{100 * summary['final_test_error']:.2f}% after {summary['epochs']} epoch(s) "
        f"in {summary['wall_seconds']:.0f} s"
    )
    print(f"run directory: {summary['run_dir']}")
    return 0


def _check_schedule_options(config, fields: dict, source: str) -> None:
    """An option of the schedule the run does not use (the schedule from ``source``) would be
    ignored: refuse it."""
    for flag, field, schedule in (("--lr-step", "lr_step", "step"), ("--lr-decay-start", "lr_decay_start", "linear")):
        if field in fields and config.lr_schedule != schedule:
            other = "" if source.endswith("config.json") else f", or give --lr-schedule {schedule}"
            raise ValueError(
                f"{flag} belongs to the {schedule} schedule, and the run's is {config.lr_schedule} ({source}): "
                f"it would be ignored; leave it out{other}"
            )


def _resume_config(run_dir: str, given: dict, no_progress: bool):
    """The configuration of ``run_dir``; an option given with another value than the run's is
    refused (only ``data_dir`` and ``progress`` may change: they do not change the numbers)."""
    from .training.checkpoint import load_run_config

    config = load_run_config(run_dir)
    saved = config.to_dict()
    given = {k: v for k, v in given.items() if v or k not in ("model_options", "dataset_options")}
    if "dataset_options" in given:  # --zca / --split add to the run's options
        given["dataset_options"] = {**saved["dataset_options"], **given["dataset_options"]}
    if "model_options" in given:
        given["model_options"] = {**saved["model_options"], **given["model_options"]}
    conflicts = [f"{k}={v!r} (the run has {saved[k]!r})" for k, v in given.items() if k != "data_dir" and v != saved[k]]
    if conflicts:
        raise ValueError(
            f"--resume {run_dir} continues the run as configured in {run_dir}/config.json; "
            f"conflicting option(s): {', '.join(conflicts)}"
        )
    changes = {"progress": saved["progress"] and not no_progress}
    if "data_dir" in given:
        changes["data_dir"] = given["data_dir"]
    return config.replace(**changes)


def _fetch(args) -> int:
    from .data import fetch_mnist
    from .data.cifar import fetch_cifar
    from .data.emnist import fetch_emnist
    from .data.fashion import fetch_fashion_mnist
    from .data.nmnist import fetch_nmnist

    if args.split is not None and args.dataset != "emnist":
        raise ValueError(f"--split chooses an EMNIST split; {args.dataset} has none")
    fetchers = {
        "mnist": lambda: fetch_mnist(args.data_dir),
        "fashion-mnist": lambda: fetch_fashion_mnist(args.data_dir),
        "emnist": lambda: fetch_emnist(args.data_dir, args.split or "letters"),
        "nmnist": lambda: fetch_nmnist(args.data_dir),
        "cifar10": lambda: fetch_cifar(10, args.data_dir),
        "cifar100": lambda: fetch_cifar(100, args.data_dir),
    }
    folder = fetchers[args.dataset]()
    print(f"{args.dataset} is in {folder}")
    return 0


def _models(args) -> int:
    from .models import MODELS

    width = max(len(n) for n in MODELS.names())
    for name in MODELS.names():
        print(f"{name:<{width}}  {MODELS.get(name).description}")
    return 0


def _evaluate(args) -> int:
    from .studies.evaluate import DEFAULT_ANGLES, evaluate_runs
    from .training.loop import resolve_device

    angles = DEFAULT_ANGLES
    if args.angles is not None:
        try:
            angles = [float(a) for a in args.angles.split(",") if a.strip()]
        except ValueError:
            raise ValueError(f"--angles must be comma-separated numbers, got {args.angles!r}") from None
    written = evaluate_runs(
        args.runs,
        args.out,
        command="nsm " + " ".join(map(str, args.argv)),
        samples=args.samples,
        shift_subset=args.shift_subset,
        angles=angles,
        ood=None if args.ood == "none" else args.ood,
        devices=not args.no_devices,
        device_subset=args.device_subset,
        device_samples=args.device_samples,
        data_dir=args.data_dir,
        test_subset=args.test_subset,
        device=resolve_device(args.device),
        seed=args.seed,
    )
    for path in written.values():
        print(f"wrote {path}")
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated ints, got {text!r}") from None


def _online(args) -> int:
    from .studies.online import run_online

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    eval_at = None if args.eval_at is None else _int_list(args.eval_at, "--eval-at")
    run_online(
        models,
        args.dataset,
        examples=args.examples,
        eval_at=eval_at,
        samples=args.samples,
        lr=args.lr,
        seed=args.seed,
        out=args.out,
        data_dir=args.data_dir,
        device=args.device,
        progress=not args.no_progress,
        test_subset=args.test_subset,
        weight_decay=args.weight_decay,
        threads=args.threads,
    )  # prints each model's result
    return 0


def _analyze(args) -> int:
    from .studies.figures import analyze

    written = analyze(args.runs, args.out, layer=args.layer)
    for path in written.values():
        print(f"wrote {path}")
    return 0


def _summarize(args) -> int:
    from .training.summary import resummarize

    changed, failed = 0, 0
    for run in args.runs:
        try:
            changes = resummarize(run, write=not args.check)
        except (ValueError, TypeError, OSError) as exc:  # say which run, and go on with the others
            print(f"{run}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        changed += bool(changes)
        what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()) or "unchanged"
        print(f"{run}: {what}")
    if not args.check:
        print(f"rewrote {changed} of {len(args.runs)} summaries" + (f"; {failed} could not be read" if failed else ""))
    return 2 if failed else (1 if args.check and changed else 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler = {
        "train": _train,
        "fetch": _fetch,
        "models": _models,
        "reproduce": _reproduce,
        "analyze": _analyze,
        "evaluate": _evaluate,
        "online": _online,
        "summarize": _summarize,
    }[args.command]
    try:
        if args.command in ("train", "reproduce"):
            _set_denormal_mode(args)  # before torch starts its threads
        return handler(args)
    except KeyboardInterrupt as exc:  # Ctrl-C: one line that says what was kept and how to go on
        print(f"nsm {args.command}: {_interrupted(exc, args)}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, FloatingPointError) as exc:
        print(f"nsm {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _set_denormal_mode(args) -> None:
    """Set the CPU's denormal mode before torch starts its intra-op threads, which take it from
    this thread only when they start (nsm.utils.floats); each run then sets its own mode in the
    thread that drives it. A resumed run keeps the mode it began with."""
    import torch

    from .training.config import TrainConfig
    from .utils.io import read_json

    flush = args.flush_denormal
    if flush is None and getattr(args, "resume", None) is not None:
        try:
            saved = read_json(Path(args.resume) / "config.json", "the run's configuration")
            flush = saved.get("flush_denormal", TrainConfig.saved_defaults()["flush_denormal"])
        except (OSError, ValueError, AttributeError):
            flush = None  # the command says what is wrong with the run directory
    torch.set_flush_denormal(TrainConfig().flush_denormal if flush is None else bool(flush))


def _interrupted(exc: KeyboardInterrupt, args) -> str:
    from .training.run import RunInterrupted

    if not isinstance(exc, RunInterrupted):
        return "interrupted (nothing was written that needs resuming)"
    if exc.kept == "none written yet":
        exc.kept = "none yet: it starts from the beginning"
    if args.command == "reproduce":
        return (
            f"interrupted; {exc.run_dir} keeps its checkpoint ({exc.kept}); the same command resumes it: "
            f"nsm {' '.join(map(str, args.argv))}"
        )
    return (
        f"interrupted; {exc.run_dir} keeps its checkpoint ({exc.kept}); resume with: nsm train --resume {exc.run_dir}"
    )


if __name__ == "__main__":
    sys.exit(main())
