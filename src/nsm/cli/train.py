"""How ``nsm train`` turns its options into a run: the
:class:`~nsm.training.config.TrainConfig` it trains (from the dataset's protocol, or with
``--resume RUN_DIR`` the run's own configuration, which a conflicting option may not change),
the options refused because they would mean nothing, and the lines it prints.
"""

from __future__ import annotations

from .parser import _TRAIN_OPTIONS, _resolve_compile


def _train(args) -> int:
    from ..training.config import TrainConfig
    from ..training.distributed import from_env
    from ..training.loop import fit

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
    from ..training.checkpoint import load_run_config

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
