"""One run's epochs: train each, evaluate where the schedule says, checkpoint, then the results.

:func:`train_run` carries out what :func:`nsm.training.loop.fit` has set up: from the start, or
from the run directory's checkpoint (the epoch, and the step within it, where it stopped). After
every epoch (and every ``checkpoint_every`` steps) it writes ``checkpoint.pt`` and then
``metrics.jsonl``; after the last, ``curves.png`` and then ``summary.json``
(:mod:`nsm.training.run_dir`). A failure keeps the last good checkpoint and says so; Ctrl-C
raises :class:`RunInterrupted`.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..data import Dataset
from ..models import is_stochastic
from ..utils.io import DiskFull, write_json
from .checkpoint import CHECKPOINT, data_fingerprint, load_checkpoint, restore, rng_state, save_checkpoint
from .compiled import Compiled, decide
from .config import TrainConfig
from .distributed import Group, wrap
from .epoch import evaluate, train_one_epoch
from .run_dir import plot_curves, remove_stale_temporaries, write_metrics
from .summary import reported_numbers

__all__ = ["train_run", "RunInterrupted"]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run: which run, and what its checkpoint holds."""

    def __init__(self, run_dir: Path, kept: str) -> None:
        super().__init__(f"{run_dir}: interrupted; its checkpoint ({kept}) is kept")
        self.run_dir, self.kept = run_dir, kept


def train_run(
    config, run_dir, model_name, model, optimizer, scheduler, data_gen, device, dataset, recorder, resuming, log, group
) -> dict:
    """The epochs of :func:`nsm.training.loop.fit`, from the start or from ``run_dir``'s checkpoint."""
    run = _Run(
        config, run_dir, model_name, model, optimizer, scheduler, data_gen, device, dataset, recorder, log, group
    )
    done, in_epoch = run.begin(resuming)
    for epoch in range(done + 1, config.epochs + 1):
        run.epoch(epoch, in_epoch if in_epoch is not None and in_epoch["epoch"] == epoch else None)
    return run.finish()


class _Run:
    """The state of one run of :func:`nsm.training.loop.fit` in ``run_dir``: what it trains, the history of its
    evaluated epochs, when it started (``start``, less the time of the run it resumes) and
    where its last good checkpoint stands (``last_good``). Rank 0 alone writes
    (``group.on_main``); every rank trains, evaluates and builds the same history."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        model_name: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        data_gen: torch.Generator,
        device: torch.device,
        dataset: Dataset,
        recorder,
        log,
        group: Group,
    ) -> None:
        self.config, self.run_dir, self.model_name, self.model = config, run_dir, model_name, model
        self.optimizer, self.scheduler, self.data_gen, self.device = optimizer, scheduler, data_gen, device
        self.dataset, self.recorder, self.log, self.group = dataset, recorder, log, group
        self.trainee = wrap(model, group, device)  # DDP under torchrun; evaluated and saved: the model itself
        self.n_batches = math.ceil(dataset.train_x.shape[0] / config.batch_size)
        use, why = decide(
            config.compile,
            network=model_name,
            sampler=config.model_options.get("sampler"),
            steps=config.epochs * self.n_batches,
            record=config.record,
            distributed=group.active,
            own_update=hasattr(model, "contrastive_divergence"),
        )
        log(f"torch.compile: {'yes' if use else 'no'} ({why})")
        if config.lr_schedule == "linear" and config.lr_decay_start >= config.epochs - 1:
            log(
                f"note: the linear schedule starts its decay after epoch {config.lr_decay_start} "
                f"(--lr-decay-start) and this run has {config.epochs} epochs: every epoch trains at lr {config.lr:g}"
            )
        if use:  # the same parameters, traced; checkpoints and evaluation act on the model itself
            self.trainee = Compiled(self.trainee, log)  # training only: compiled MC passes were measured slower
        self.samples = config.samples if is_stochastic(model_name) else 1
        self.ckpt_path = run_dir / CHECKPOINT
        self.data = data_fingerprint(dataset.train_x, dataset.train_y, dataset.test_y)
        self.history: list[dict] = []
        self.last_good = "none written yet"
        self.start = 0.0  # set by begin

    def begin(self, resuming: bool) -> tuple[int, Optional[dict]]:
        """Restore the checkpoint if ``resuming`` and there is one (else record the initial
        weights), rewrite metrics.jsonl, start the clock; returns the number of epochs done and
        the state of the epoch interrupted (None: none)."""
        done, in_epoch, elapsed = 0, None, 0.0
        ckpt = self.group.on_main(self._read_checkpoint) if resuming else None  # rank 0 reads, every rank gets
        if ckpt is not None:
            if self.group.active:
                ckpt["rng"] = ckpt["rng_ranks"][self.group.rank]
            restore(
                ckpt,
                self.ckpt_path,
                network=self.model_name,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                data_gen=self.data_gen,
                device=self.device,
                recorder=self.recorder,
            )
            self.history, done, in_epoch = ckpt["history"], ckpt["epoch"], ckpt["in_epoch"]
            elapsed = ckpt["wall_seconds"]
            self.last_good = _where(done, in_epoch)
            self.log(f"resuming from {self.ckpt_path}: {self.last_good}")
            if self.recorder is not None:
                self.recorder.save()  # drop record points taken after the checkpoint
        elif self.recorder is not None:
            self.recorder.record()  # the initial weights
        self.group.on_main(self._save_metrics)
        self.start = time.perf_counter() - elapsed
        return done, in_epoch

    def _read_checkpoint(self) -> Optional[dict]:
        remove_stale_temporaries(self.run_dir)  # left by writes of nsm's that were killed
        if not self.ckpt_path.exists():
            return None
        ckpt = load_checkpoint(self.ckpt_path, self.config, self.data)
        if ckpt.get("world_size", 1) != self.group.world_size:
            raise ValueError(
                f"checkpoint {self.ckpt_path} was written by {ckpt.get('world_size', 1)} training "
                f"process(es); resume it with as many (this run has {self.group.world_size})"
            )
        return ckpt

    def _save_metrics(self) -> None:
        write_metrics(self.run_dir, self.history)

    def epoch(self, epoch: int, state: Optional[dict]) -> None:
        """Train epoch ``epoch`` (from ``state``, that of its interruption, if not None); a
        failure names the checkpoint that is kept, Ctrl-C raises :class:`RunInterrupted`."""
        try:
            self._train_epoch(epoch, state)
        except FloatingPointError as exc:  # a bad loss or bad weights: keep the last good checkpoint
            raise FloatingPointError(f"{exc}; the run stopped, {self.ckpt_path} ({self.last_good}) is kept") from None
        except DiskFull as exc:  # metrics.jsonl or another file: the checkpoint is whole
            if exc.advice:
                raise
            raise DiskFull(
                exc.path,
                f"the checkpoint ({self.last_good}) is kept; free space and resume with: "
                f"nsm train --resume {self.run_dir}",
            ) from None
        except KeyboardInterrupt:
            raise RunInterrupted(self.run_dir, self.last_good) from None

    def _train_epoch(self, epoch: int, state: Optional[dict]) -> None:
        config, history, group = self.config, self.history, self.group
        t0 = time.perf_counter() - (state["seconds"] if state else 0.0)
        row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
        row.update(
            train_one_epoch(
                self.trainee,
                self.optimizer,
                self.dataset.train_x,
                self.dataset.train_y,
                batch_size=config.batch_size,
                generator=self.data_gen,
                device=self.device,
                progress=config.progress,
                desc=f"epoch {epoch}/{config.epochs}",
                transform=self.dataset.train_transform,
                recorder=self.recorder,
                state=None if state is None else {**state},
                on_step=functools.partial(self._on_step, epoch, t0) if config.checkpoint_every else None,
                group=group,
            )
        )
        if self.recorder is not None:
            self.recorder.end_epoch()
        self.scheduler.step()
        row["train_seconds"] = time.perf_counter() - t0
        samples = config.samples_at(epoch, self.samples)
        if samples is not None:
            t1 = time.perf_counter()
            row["samples"] = samples
            row.update(
                evaluate(
                    self.model,
                    self.dataset.test_x,
                    self.dataset.test_y,
                    samples=row["samples"],
                    device=self.device,
                    progress=config.progress,
                    group=group,
                )
            )
            row["test_seconds"] = time.perf_counter() - t1
        history.append(row)
        self._save(epoch, None)  # before metrics.jsonl: a resumed run rewrites it from the checkpoint
        group.on_main(self._save_metrics)
        if "test_error" in row:
            self.log(
                f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  train err {100 * row['train_error']:.2f}%  "
                f"test err {100 * row['test_error']:.2f}% (S={row['samples']})  "
                f"[{row['train_seconds']:.0f}s + {row['test_seconds']:.0f}s]"
            )

    def _on_step(self, epoch: int, t0: float, state: dict) -> None:
        """After each step of ``epoch`` (begun at ``t0``): a checkpoint every ``checkpoint_every`` steps."""
        if ((epoch - 1) * self.n_batches + state["batch"]) % self.config.checkpoint_every == 0:
            self._save(epoch - 1, {**state, "epoch": epoch, "seconds": time.perf_counter() - t0})

    def _save(self, epoch_done: int, state: Optional[dict]) -> None:
        """Checkpoint after ``epoch_done`` epochs and, in the next, ``state`` (None: none)."""
        where = _where(epoch_done, state)
        rng = rng_state(self.device, self.data_gen)
        ranks = {"world_size": self.group.world_size, "rng_ranks": self.group.gather(rng)} if self.group.active else {}
        try:
            self.group.on_main(functools.partial(self._write_checkpoint, epoch_done, state, rng, ranks))
        except FloatingPointError as exc:
            raise FloatingPointError(f"{where}: {exc}") from None
        except DiskFull as exc:
            raise DiskFull(
                exc.path,
                f"the previous checkpoint ({self.last_good}) is kept; free space and resume "
                f"with: nsm train --resume {self.run_dir}",
            ) from None
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"could not write checkpoint {self.ckpt_path} at {where}: {exc.strerror}; "
                f"the run stopped, the previous checkpoint ({self.last_good}) is intact",
            ) from None
        self.last_good = where

    def _write_checkpoint(self, epoch_done: int, state: Optional[dict], rng: dict, ranks: dict) -> None:
        recorder, dataset = self.recorder, self.dataset
        save_checkpoint(
            self.ckpt_path,
            {
                "model": self.model_name,
                "model_state": self.model.state_dict(),
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler_state": self.scheduler.state_dict(),
                "epoch": epoch_done,
                "in_epoch": state,
                "history": self.history,
                "rng": rng,
                **ranks,
                "recorder": None if recorder is None else recorder.state_dict(),
                "config": self.config.to_dict(),
                "data": self.data,
                "in_shape": dataset.in_shape,
                "num_classes": dataset.num_classes,
                "wall_seconds": time.perf_counter() - self.start,
                "finished": epoch_done == self.config.epochs and state is None,
            },
        )

    def finish(self) -> dict:
        """Record the final weights, write curves.png then summary.json; returns the summary."""
        config, history, samples = self.config, self.history, self.samples
        if self.recorder is not None:
            self.recorder.record()  # the final weights, if not recorded yet
        summary = {
            "model": config.model,
            "network": self.model_name,
            "dataset": config.dataset,
            "seed": config.seed,
            "epochs": config.epochs,
            "samples": samples,
            # SI 4.7: the mean over the last 5 evaluations at the full S, the final, the best
            **reported_numbers(history, config, samples),
            "wall_seconds": time.perf_counter() - self.start,
            "run_dir": str(self.run_dir),
        }
        self.group.on_main(functools.partial(self._write_results, summary))
        return summary

    def _write_results(self, summary: dict) -> None:
        plot_curves(self.history, self.run_dir / "curves.png", f"{self.config.model} on {self.config.dataset}")
        write_json(self.run_dir / "summary.json", summary)  # last: its presence marks a finished run


def _where(epoch_done: int, state: Optional[dict]) -> str:
    if state is None:
        return f"after epoch {epoch_done}"
    return f"epoch {state['epoch']}, after step {state['batch']}"
