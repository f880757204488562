"""The commands that report on what was trained: ``nsm evaluate`` (uncertainty, shift and
devices), ``nsm analyze`` (the figures of recorded runs), ``nsm online`` (models trained on a
stream) and ``nsm summarize`` (finished runs' numbers by the current reporting rule). Each
hands its options to one function of :mod:`nsm.studies` or :mod:`nsm.training.summary` and
prints what it wrote.
"""

from __future__ import annotations

import sys

from .parser import _int_list


def _evaluate(args) -> int:
    from ..studies.evaluate import DEFAULT_ANGLES, evaluate_runs
    from ..training.loop import resolve_device

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


def _online(args) -> int:
    from ..studies.online import run_online

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
    from ..studies.figures import analyze

    written = analyze(args.runs, args.out, layer=args.layer)
    for path in written.values():
        print(f"wrote {path}")
    return 0


def _summarize(args) -> int:
    from ..training.summary import resummarize

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
