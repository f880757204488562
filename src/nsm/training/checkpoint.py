"""Resumable runs: the run directory's lock, its checkpoint, and every random state in it.

A run directory is written by one process at a time. :class:`RunLock` holds an exclusive
``flock`` on ``RUN_DIR/.lock`` (the file names the holder's pid and host); the kernel
drops the lock when its process dies, even by SIGKILL, so a lock file left behind by a
killed run is stale by construction and the next process simply takes it.

``checkpoint.pt`` (written atomically, :func:`nsm.utils.io.save_torch`) is the run's state after
a whole epoch, or after ``checkpoint_every`` optimizer steps inside one::

    model, model_state, in_shape, num_classes, config   what nsm.studies.evaluate.load_trained reads
    optimizer_state, scheduler_state
    epoch        epochs finished
    in_epoch     None, or the epoch under way: its number, the permutation of the training
                 set, batches done, running loss sum / wrong / seen, seconds so far
    history      the metrics rows so far (metrics.jsonl is rewritten from them)
    rng          torch's global generator (CPU, and CUDA or MPS when used) and the data generator
                 (shuffling and augmentation)
    recorder     with --record: the recorder's rows and accumulators
    finished     True once the last epoch is in
    world_size   only from a run of several processes (torchrun, :mod:`nsm.training.distributed`):
                 their number; ``rng`` is then rank 0's and ``rng_ranks`` holds every rank's

Restoring all of it continues the same random stream: a resumed run ends bit for bit where
the uninterrupted run would (on the same device and thread count).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from typing import BinaryIO, Optional

import torch
from torch import Tensor

from ..data.files import DataError, open_regular
from ..utils.io import read_json, save_torch
from .config import TrainConfig

__all__ = [
    "RunLock",
    "CHECKPOINT",
    "FREE_FIELDS",
    "read_checkpoint",
    "open_own_file",
    "load_run_config",
    "rng_state",
    "set_rng_state",
    "data_fingerprint",
    "config_differences",
    "save_checkpoint",
    "load_checkpoint",
    "restore",
]

CHECKPOINT = "checkpoint.pt"
FORMAT = 2
# config fields a resumed run may change: they do not change what is computed
FREE_FIELDS = ("progress", "data_dir")
_KEYS = {
    "format",
    "model",
    "model_state",
    "optimizer_state",
    "scheduler_state",
    "epoch",
    "in_epoch",
    "history",
    "rng",
    "config",
    "data",
    "finished",
    "wall_seconds",
}
# the types of the plain (non-tensor) entries a checkpoint is read for
_TYPES = {
    "config": (dict,),
    "history": (list,),
    "epoch": (int,),
    "in_epoch": (dict, type(None)),
    "data": (dict,),
    "finished": (bool,),
    "wall_seconds": (int, float),
    "model": (str,),
    "world_size": (int,),
}


class RunLock:
    """Exclusive lock on a run directory for the life of a ``with`` block (or until
    :meth:`release`); raises ``RuntimeError`` naming the directory and the holder if another
    process holds it."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        import fcntl

        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        while True:
            fd = open_own_file(self.path, "lock")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RuntimeError(
                    f"run directory {self.run_dir} is being written by {holder} "
                    f"(lock {self.path}); wait for that process to end or stop it"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # the holder we waited on may have removed the file before we locked it: lock the new one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        text = os.pread(fd, 300, 0).decode(errors="replace").strip()
        if text and not _LOCK_LINE.fullmatch(text):  # never truncate a file nsm did not write
            os.close(fd)
            raise RuntimeError(
                f"{self.path} is not a lock file nsm wrote (it reads {text[:60]!r}); "
                f"nsm will not overwrite it: move it away and run again"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        self.fd: Optional[int] = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            mine = os.fstat(self.fd)
            there = os.lstat(self.path)
            if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):  # a file put in its place is not ours
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_LOCK_LINE = re.compile(r"pid \d+ on host \S+")


def open_own_file(path: Path, what: str) -> int:
    """Open (creating it if need be) a file nsm keeps for itself, such as a lock or a claim, for
    reading and writing, without following a symbolic link and only if it is a regular file
    with no other name (a hard link to someone's file); otherwise ``RuntimeError`` naming it."""
    import errno
    import stat

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise RuntimeError(
                f"{what} file {path} is a symbolic link; nsm never writes through a link it "
                f"did not make: remove the link and run again"
            ) from None
        if exc.errno == errno.EISDIR:
            raise RuntimeError(f"{what} file {path} is a directory; remove it and run again") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        kind = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"a file with {st.st_nlink} names (hard links)"
        raise RuntimeError(f"{what} file {path} is {kind}; nsm will not write into it: remove it and run again")
    return fd


def _check_stored(fh: BinaryIO, path: Path) -> None:
    """A torch checkpoint is a zip whose members are stored, not compressed: its contents are
    then no larger than the file. A compressed member could expand without bound (a 1 MB file
    to gigabytes) before anything is checked, so it is refused; so is a member larger than
    the file, and members larger than the file together (stored members that overlap). (The
    legacy, non-zip format cannot expand either.) ``fh`` is the open file, left at its start."""
    import zipfile

    try:
        if not zipfile.is_zipfile(fh):
            return
        with zipfile.ZipFile(fh) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # torch.load says what is wrong with it
    finally:
        fh.seek(0)
    size = os.fstat(fh.fileno()).st_size
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED or m.file_size > size:
            how = "compressed" if m.compress_type != zipfile.ZIP_STORED else f"of {m.file_size:,} bytes"
            raise ValueError(
                f"refused to load {path}: its member {m.filename[:80]!r} is {how}, which torch.save "
                f"never writes and which could expand beyond the file's {size:,} bytes"
            )
    total = sum(m.file_size for m in members)
    if total > size:  # stored members that overlap: each fits, together they multiply the file
        raise ValueError(
            f"refused to load {path}: its {len(members)} members declare {total:,} bytes in all, more than "
            f"the file's {size:,} (members that share their bytes, which torch.save never writes)"
        )


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """``torch.load`` of a checkpoint with ``weights_only=True``: tensors and plain Python data
    only, so a file that carries code (a pickled object with a ``__reduce__``) is refused before
    anything in it runs. The file is opened once, without blocking
    (:func:`nsm.data.files.open_regular`): a FIFO, a device or a directory in its place is
    refused, never waited on. Every problem is a ``ValueError`` naming the file."""
    path = Path(path)
    try:
        fh = open_regular(path)
    except FileNotFoundError:
        raise ValueError(f"cannot read checkpoint {path}: there is no such file") from None
    except DataError as exc:  # not a regular file, or unopenable: its message begins with the path
        raise ValueError(f"cannot read checkpoint {exc}") from None
    with fh:
        _check_stored(fh, path)
        return _load_open(fh, path, map_location)


def _load_open(fh: BinaryIO, path: Path, map_location) -> dict:
    """:func:`read_checkpoint`'s ``torch.load`` of the open file ``fh``."""
    import pickle

    try:
        ckpt = torch.load(fh, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message wraps the reason in advice about weights_only=False: keep the reason only
        text = str(exc)
        found = re.search(r"WeightsUnpickler error:\s*(\S.*?)(?:\. Please|\n\s*\n|$)", text, re.S) or re.search(
            r"(Trying to load unsupported GLOBAL[^\n]*)", text
        )
        reason = " ".join(found.group(1).split()) if found else type(exc).__name__
        if "unsupported global" in text.lower():
            raise ValueError(
                f"refused to load {path}: it holds objects other than tensors and plain data "
                f"({reason[:200]}); loading it could run code. nsm checkpoints never do: "
                f"do not use this file"
            ) from None
        raise ValueError(f"cannot read checkpoint {path} (truncated or corrupt?): {reason[:300]}") from None
    except Exception as exc:  # truncated, corrupt, or not a torch file at all
        raise ValueError(f"cannot read checkpoint {path} (truncated or corrupt?): {exc}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not an nsm checkpoint (it holds a {type(ckpt).__name__})")
    return ckpt


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The configuration saved in ``RUN_DIR/config.json`` (validated like any other)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not an nsm run directory")
    saved = read_json(path, "the run's configuration")
    if not isinstance(saved, dict):
        raise ValueError(f"{path} does not hold a configuration object")
    saved.pop("_environment", None)
    return TrainConfig.from_dict(saved)


def config_differences(saved: dict, config: TrainConfig) -> list[str]:
    """``field: saved there, given here`` for each field that differs (FREE_FIELDS aside)."""
    want = config.to_dict()
    default = TrainConfig.saved_defaults()  # a field an older run did not save had this value then
    return [
        f"{f}: {saved.get(f, default[f])!r} there, {want[f]!r} here"
        for f in want
        if f not in FREE_FIELDS and saved.get(f, default[f]) != want[f]
    ]


def rng_state(device: torch.device, data_gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": data_gen.get_state(), "cuda": None}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    if device.type == "mps":  # the noise of an MPS run is drawn by the MPS generator
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict, device: torch.device, data_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    data_gen.set_state(state["data"])
    if device.type == "cuda":
        if state.get("cuda") is None:
            raise ValueError("the checkpoint was written by a CPU run; resume it with --device cpu")
        torch.cuda.set_rng_state_all(state["cuda"])
    if device.type == "mps":
        if not isinstance(state.get("mps"), torch.Tensor):
            raise ValueError("the checkpoint was not written by an MPS run; resume it on the device it ran on")
        torch.mps.set_rng_state(state["mps"])


def data_fingerprint(train_x: Tensor, train_y: Tensor, test_y: Tensor) -> dict:
    """Sizes and a hash of the labels: enough to tell another dataset or subset."""
    h = hashlib.sha256()
    for t in (train_y, test_y):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {
        "n_train": int(train_x.shape[0]),
        "n_test": int(test_y.shape[0]),
        "in_shape": list(train_x.shape[1:]),
        "labels_sha256": h.hexdigest(),
    }


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically, refusing a model whose parameters are not all finite
    (``FloatingPointError``): a bad state never replaces the last good checkpoint."""
    bad = [
        name for name, t in state["model_state"].items() if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise FloatingPointError(f"parameter {bad[0]!r} is no longer finite")
    save_torch(path, {"format": FORMAT, **state})


def load_checkpoint(path: Path, config: TrainConfig, data: dict) -> dict:
    """Read a checkpoint to resume ``config`` on data with fingerprint ``data``; every
    problem (unreadable, truncated, foreign, another run's) is a ``ValueError`` saying so."""
    try:
        ckpt = read_checkpoint(path)
    except ValueError as exc:
        raise ValueError(f"{exc}. Remove it to train the run again from the start") from None
    if not _KEYS <= set(ckpt):
        missing = sorted(_KEYS - set(ckpt)) if isinstance(ckpt, dict) else "everything"
        raise ValueError(f"{path} is not a resumable nsm checkpoint (missing {missing})")
    if ckpt["format"] != FORMAT:
        raise ValueError(f"{path} has checkpoint format {ckpt['format']!r}; this nsm reads {FORMAT}")
    wrong = [
        f"{key} is a {type(ckpt[key]).__name__}"
        for key, types in _TYPES.items()
        if key in ckpt and (not isinstance(ckpt[key], types) or isinstance(ckpt[key], bool) and bool not in types)
    ]
    if wrong:
        raise ValueError(f"{path} is not a resumable nsm checkpoint ({'; '.join(wrong)})")
    diff = config_differences(ckpt["config"], config)
    if diff:
        raise ValueError(f"checkpoint {path} belongs to another run ({'; '.join(diff)})")
    if ckpt["data"] != data:
        raise ValueError(f"checkpoint {path} was trained on other data ({ckpt['data']} there, {data} here)")
    return ckpt


def restore(
    ckpt: dict,
    path: Path,
    *,
    network: str,
    model,
    optimizer,
    scheduler,
    data_gen: torch.Generator,
    device: torch.device,
    recorder=None,
) -> None:
    """Load a checkpoint read by :func:`load_checkpoint` into the run's objects (``network``:
    the name of the run's network)."""
    try:
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
    except (RuntimeError, ValueError, KeyError) as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines())
        raise ValueError(
            f"checkpoint {path} (network {ckpt['model']!r}) does not fit this run's network {network!r}: {detail[:300]}"
        ) from None
    scheduler.load_state_dict(ckpt["scheduler_state"])
    if recorder is not None:
        if ckpt.get("recorder") is None:
            raise ValueError(f"checkpoint {path} has no recorder state although the run records")
        recorder.load_state_dict(ckpt["recorder"])
    set_rng_state(ckpt["rng"], device, data_gen)
