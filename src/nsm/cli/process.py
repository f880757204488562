"""What the ``nsm`` process does around a command: the CPU's denormal mode, set before torch
starts its threads, and the line Ctrl-C leaves (what was kept and how to go on)."""

from __future__ import annotations

from pathlib import Path


def _set_denormal_mode(args) -> None:
    """Set the CPU's denormal mode before torch starts its intra-op threads, which take it from
    this thread only when they start (nsm.utils.floats); each run then sets its own mode in the
    thread that drives it. A resumed run keeps the mode it began with."""
    import torch

    from ..training.config import TrainConfig
    from ..utils.io import read_json

    flush = args.flush_denormal
    if flush is None and getattr(args, "resume", None) is not None:
        try:
            saved = read_json(Path(args.resume) / "config.json", "the run's configuration")
            flush = saved.get("flush_denormal", TrainConfig.saved_defaults()["flush_denormal"])
        except (OSError, ValueError, AttributeError):
            flush = None  # the command says what is wrong with the run directory
    torch.set_flush_denormal(TrainConfig().flush_denormal if flush is None else bool(flush))


def _interrupted(exc: KeyboardInterrupt, args) -> str:
    from ..training.run import RunInterrupted

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
