"""Training a model from a configuration: :func:`fit` sets a run up, then trains it.

``fit(config)`` refuses what it cannot do before any work (:mod:`nsm.training.preflight`), sets
the device, threads and denormal mode, loads the data, builds the model, its optimizer and
learning-rate schedule, makes the run directory (:mod:`nsm.training.run_dir` lists its files) and
the recorder, then trains the run's epochs (:mod:`nsm.training.run`). ``fit(config,
resume=RUN_DIR)`` continues an interrupted run from its checkpoint.

One step, one epoch and one evaluation are :mod:`nsm.training.epoch`; ``train_step``,
``new_epoch``, ``train_one_epoch``, ``make_scheduler`` and ``evaluate`` are still importable
from here, as are ``RunInterrupted`` (:mod:`nsm.training.run`) and ``RUN_FILES`` and
``RECORD_FILES`` (:mod:`nsm.training.run_dir`).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
from pathlib import Path
from typing import Optional

import torch

from ..data import DataError, Dataset, load_dataset
from ..models import build_model
from ..utils.floats import flush_denormals
from ..utils.io import read_json_object, write_json
from .checkpoint import RunLock, config_differences, load_run_config
from .config import TrainConfig, model_for_dataset
from .distributed import device_for, from_env, noise_seed, process_group
from .epoch import evaluate, make_scheduler, new_epoch, train_one_epoch, train_step
from .preflight import check_batch_norm, check_distributed, check_model_options, check_thread_modes
from .recorder import make_recorder
from .run import RunInterrupted, train_run
from .run_dir import RECORD_FILES, RUN_FILES, make_run_dir  # noqa: F401 (RUN_FILES, RECORD_FILES: their old home)

__all__ = [
    "fit",
    "resolve_device",
    "make_run_dir",
    "RunInterrupted",  # its home is nsm.training.run
    # their home is nsm.training.epoch; kept here for older imports
    "train_step",
    "new_epoch",
    "train_one_epoch",
    "make_scheduler",
    "evaluate",
]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return dev


def fit(
    config: TrainConfig,
    *,
    dataset: Optional[Dataset] = None,
    log=print,
    resume: Optional[str | os.PathLike] = None,
    read_only_data: bool = False,
) -> dict:
    """Train ``config.model`` on ``config.dataset``; returns the summary (also saved).

    ``checkpoint.pt`` is written after every epoch and every ``config.checkpoint_every``
    optimizer steps (:mod:`nsm.training.checkpoint`). ``resume``: a run directory of this same
    configuration (:func:`nsm.training.checkpoint.load_run_config`) to continue from its checkpoint,
    or from the start if it has none; the result is bit for bit that of the uninterrupted run on the
    same device and thread count (another thread count is said in the log: sums round differently).
    The run directory is locked (:class:`nsm.training.checkpoint.RunLock`) while it is written.
    ``dataset``: the data to train and test on, used as given; the config's data fields
    (``data_dir``, ``train_subset``, ``test_subset``, ``dataset_options``) then take no part,
    and ``config.json`` records the sizes actually used (``_environment``: ``n_train``, ``n_test``).
    ``read_only_data``: ``config.data_dir`` came from a run's files, not from the user (``nsm
    train --resume``): it is read only, never written into (no download, no cache), and when
    its data cannot be read there the default folder is used (said in the log).
    A model with batch normalization is refused, before any work, a batch of one example (the
    last of an epoch included), which it cannot train on.

    Launched by ``torchrun`` with several processes, every process calls ``fit`` and they
    train one DDP model together (:mod:`nsm.training.distributed`); rank 0 alone writes and logs.
    What DDP would not train as one process does is refused: ``--record``, the S2M, models with
    batch normalization.
    Such a run resumes under ``torchrun`` with as many processes (each gets back its own
    random state), and only so: another number is refused.
    """
    check_model_options(config, None if dataset is None else dataset.in_shape)
    group = from_env()
    if not group.main:
        log = _silent
    with contextlib.ExitStack() as stack:
        device = device_for(group, config.device) if group.active else resolve_device(config.device)
        if group.active:
            check_distributed(config, group)
            stack.enter_context(process_group(group, device))
        saved_environment: dict = {}  # what config.json recorded about a resumed run
        if resume is not None:
            run_dir = Path(resume)

            def check_resume() -> None:
                if not (run_dir / "config.json").is_file():
                    raise FileNotFoundError(
                        f"{run_dir / 'config.json'} not found: {run_dir} is not an nsm run directory"
                    )
                stack.enter_context(RunLock(run_dir))
                saved = load_run_config(run_dir).to_dict()
                diff = config_differences(saved, config)
                if diff:
                    raise ValueError(f"{run_dir} was run with another configuration ({'; '.join(diff)})")
                if (run_dir / "summary.json").exists():
                    raise ValueError(f"{run_dir} is a finished run (it has summary.json): nothing to resume")
                environment = read_json_object(run_dir / "config.json", "the run's configuration").get("_environment")
                if not isinstance(environment, dict):
                    environment = {}  # (a config.json written by hand: nothing recorded about the run)
                saved_environment.update(environment)
                ran = environment.get("world_size", 1)
                if ran != group.world_size:  # also before its first checkpoint: the same run needs as many
                    raise ValueError(
                        f"{run_dir} was trained by {ran} process(es) (config.json); resume it with "
                        f"as many, e.g. torchrun --nproc_per_node {ran} (this run has {group.world_size})"
                    )

            group.on_main(check_resume)
        if config.threads is not None:
            cores = os.cpu_count() or 1
            if config.threads > cores and group.main:
                print(
                    f"nsm: warning: --threads {config.threads} is more than this machine's {cores} cores; "
                    f"oversubscribed threads make training much slower",
                    file=sys.stderr,
                )
            torch.set_num_threads(config.threads)
        was = saved_environment.get("threads")
        if isinstance(was, int) and was != torch.get_num_threads():
            log(
                f"note: this run was trained with {was} thread(s) and resumes with {torch.get_num_threads()}: it goes "
                f"on correctly, but not bit for bit as it would have (sums split over threads round differently); "
                f"--threads {was} resumes it exactly"
            )
        stack.enter_context(flush_denormals(config.flush_denormal))
        if group.main:
            check_thread_modes(config.flush_denormal)
        model_name = model_for_dataset(config.model, config.dataset)  # e.g. bnsm on cifar10: bnsm-allconv
        if dataset is None:
            dataset = _load_data(config, read_only_data, log)
        torch.manual_seed(config.seed)
        model = build_model(model_name, dataset.in_shape, dataset.num_classes, **config.model_options).to(device)
        if group.active:
            check_distributed(config, group, model=model, n_train=dataset.train_x.shape[0])
            torch.manual_seed(noise_seed(config.seed, group.rank))  # the same weights, other noise per rank
        check_batch_norm(config, model, dataset.train_x.shape[0])
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = make_scheduler(optimizer, config)
        data_gen = torch.Generator().manual_seed(config.seed)
        if resume is None:

            def new_run_dir() -> Path:
                path = make_run_dir(config.out, config.run_name or f"{config.model}-{config.dataset}-seed{config.seed}")
                stack.enter_context(RunLock(path))
                environment = {
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "argv": sys.argv,
                    "network": model_name,
                    "n_train": int(dataset.train_x.shape[0]),
                    "n_test": int(dataset.test_x.shape[0]),
                }
                if group.active:
                    environment["world_size"] = group.world_size
                write_json(path / "config.json", {**config.to_dict(), "_environment": environment})
                return path

            run_dir = group.on_main(new_run_dir)
        log(f"run directory: {run_dir}")
        recorder = None
        if config.record:
            recorder = make_recorder(
                model,
                run_dir,
                train_x=dataset.train_x,
                train_y=dataset.train_y,
                device=device,
                steps_per_epoch=math.ceil(dataset.train_x.shape[0] / config.batch_size),
                every=config.record_every,
                probe=config.record_probe,
                companions=config.record_compare,
                # a companion is the network its name is on this dataset (bnsm on cifar10: bnsm-allconv), and
                # the run's own network is built with the run's model options (--compare-grad's noise floor)
                build=lambda name: build_model(
                    model_for_dataset(name, config.dataset),
                    dataset.in_shape,
                    dataset.num_classes,
                    **(config.model_options if model_for_dataset(name, config.dataset) == model_name else {}),
                ),
                seed=config.seed,
                draws=config.record_draws,
            )
        return train_run(
            config,
            run_dir,
            model_name,
            model,
            optimizer,
            scheduler,
            data_gen,
            device,
            dataset,
            recorder,
            resume is not None,
            log,
            group,
        )


def _load_data(config: TrainConfig, read_only: bool, log) -> Dataset:
    """The run's data; with ``read_only``, ``config.data_dir`` is only read, and the default
    folder is used when the data cannot be read there."""
    kwargs = dict(train_subset=config.train_subset, test_subset=config.test_subset, **config.dataset_options)
    if read_only and config.data_dir is not None:
        try:
            return load_dataset(config.dataset, config.data_dir, read_only=True, **kwargs)
        except (FileNotFoundError, DataError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log(
                f"{config.dataset} could not be read from the run's data folder {config.data_dir} ({first}); "
                "using the default folder"
            )
        return load_dataset(config.dataset, None, **kwargs)
    return load_dataset(config.dataset, config.data_dir, **kwargs)


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0."""
