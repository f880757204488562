"""Claims on the runs of a sweep: which worker trains which run, when several ``nsm reproduce``
processes (on one machine or several sharing the output folder) work through one table.

A worker claims a run before training it with the file ``OUT/runs/NAME.claim``, which reads
``pid P on host H since T process BOOT:START`` (the last two words where /proc tells them):

1. the worker writes that line into a temporary file of its own and takes an exclusive
   ``flock`` on it;
2. it hard-links the temporary file to ``NAME.claim``: ``link`` fails if the name exists, in
   one step (also over NFS), so of two workers claiming the same run exactly one succeeds;
3. it keeps the ``flock`` while it trains and touches the file every ``HEARTBEAT_SECONDS``
   (its modification time is the claim's heartbeat);
4. it removes the claim when the run ends, finished or failed.

A claim that exists belongs to a live worker unless it is *stale*. Whoever wants the run
first tries the claim's ``flock``: if that is refused the holder is alive. If it is granted
(the kernel drops a dead process's ``flock``, even after SIGKILL), the claim is stale when

- it was made on this host and the process it names is gone: its line records the pid, the
  boot id and the process's start time, and a pid handed out again after a restart (to
  another process, or this one) has another start time (a live holder keeps the ``flock``; one
  that lost it without dying, as on an expired NFS lease, still runs and keeps its claim), or
- ``steal_after`` seconds were given and its heartbeat is older than that (the only way to
  take over the claim of a worker on another host, whose ``flock`` may not reach this one).

The worker that finds a claim stale takes it over (it already holds the ``flock``: no second
worker can judge the same claim stale at the same moment) and rewrites it with its own line.

Over NFS, ``flock`` is carried by the NFS locks (the lock manager with NFSv3, the protocol
itself with NFSv4); mounted with ``nolock`` or ``local_lock=all`` it only excludes processes of
the same machine, and then two workers on different machines could both judge one claim stale
at once. Creating the claim (``link``) is atomic either way.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Optional

from ..utils.process import identity

__all__ = ["RunClaim", "claim_run", "live_holder", "HEARTBEAT_SECONDS"]

HEARTBEAT_SECONDS = 30.0


def _line() -> bytes:
    line = f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
    me = identity(os.getpid())
    return (line + (f" process {me}" if me else "") + "\n").encode()


def _holder(text: str) -> tuple[Optional[int], Optional[str]]:
    """(pid, host) from a claim's line; (None, None) if it does not read as one."""
    words = text.split()
    if len(words) >= 5 and words[0] == "pid" and words[2:4] == ["on", "host"] and words[1].isdigit():
        return int(words[1]), words[4]
    return None, None


def _alive_here(text: str) -> bool:
    """Whether the process a claim of this host names still runs: its pid, with the boot id and
    start time the claim recorded (a claim without them, or where /proc cannot tell: no)."""
    pid, _ = _holder(text)
    words = text.split()
    recorded = words[8] if len(words) >= 9 and words[7] == "process" else None
    return pid is not None and recorded is not None and identity(pid) == recorded


class RunClaim:
    """A claim held by this process (from :func:`claim_run`): the open, ``flock``-ed claim file
    and the thread that touches it; :meth:`release` (or the end of a ``with`` block) removes it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"claim {path.name}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.fd)
            except OSError:  # the file system went away for a moment: the next beat tries again
                pass

    def release(self) -> None:
        if self.fd is None:
            return
        self._stop.set()
        self._beat.join()
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:  # still ours: not removed by hand
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> "RunClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _judge(path: Path, steal_after: Optional[float]) -> tuple[Optional[int], str]:
    """Look at the claim at ``path``: (fd holding its flock, '') if it is stale and now ours to
    take over; (None, holder) if a live worker holds it; (None, '') if it vanished meanwhile."""
    import fcntl

    try:
        fd = _open_claim(path)
    except FileNotFoundError:
        return None, ""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 300, 0).decode(errors="replace").strip()
            os.close(fd)
            return None, text or "a worker"
        text = os.pread(fd, 300, 0).decode(errors="replace").strip()
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:  # released and removed meanwhile
                os.close(fd)
                return None, ""
        except FileNotFoundError:
            os.close(fd)
            return None, ""
        _, host = _holder(text)
        age = time.time() - os.fstat(fd).st_mtime
        # a worker holds its claim's flock from before the claim exists until after it is
        # removed, so a claim of this host whose flock we were granted has no live holder,
        # unless the very process it names still runs (same pid, boot and start time: a lock
        # lost without its holder dying, as an expired NFS lease is); a pid handed out again
        # after a restart, to another process or this one, does not keep it alive
        dead_here = host == socket.gethostname() and not _alive_here(text)
        if dead_here or (steal_after is not None and age > steal_after):
            return fd, text
        os.close(fd)
        return None, text or "a worker"
    except BaseException:
        os.close(fd)
        raise


def _new_file(tmp: Path) -> int:
    """A new file of our own at ``tmp`` (a name only this process uses): whatever is there, a
    leftover or a planted link, is unlinked, never opened or truncated."""
    for _ in range(3):
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            os.unlink(tmp)
    raise RuntimeError(f"could not create {tmp}: something keeps putting a file there")


def _open_claim(path: Path) -> int:
    """Open an existing claim for reading and locking, never through a symbolic link, and only a
    regular file: anything else is a ``RuntimeError`` naming it (nsm made none of those)."""
    import errno
    import stat

    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RuntimeError(
                f"claim file {path} is a symbolic link; nsm never writes through a link it did "
                f"not make: remove the link and run again"
            ) from None
        if exc.errno == errno.EISDIR:
            raise RuntimeError(f"claim file {path} is a directory; remove it and run again") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RuntimeError(f"claim file {path} is not a regular file; remove it and run again")
    return fd


def claim_run(
    path: str | os.PathLike, *, steal_after: Optional[float] = None, log=print
) -> tuple[Optional[RunClaim], str]:
    """Claim the run whose claim file is ``path``: (the claim, '') if this process now holds it,
    taking over a stale one (saying so with ``log``); (None, holder's line) if a live worker
    holds it. ``steal_after``: seconds without heartbeat after which any claim is stale."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    for _ in range(100):  # each pass either claims, or finds a live holder, or saw a claim vanish
        fd = _new_file(tmp)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, _line())
            try:
                os.link(tmp, path)
                return RunClaim(path, fd), ""
            except FileExistsError:
                os.close(fd)
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(tmp)
        fd, holder = _judge(path, steal_after)
        if fd is not None:  # stale, and its flock is ours: put our own claim in its place
            try:
                mine = _new_file(tmp)
                fcntl.flock(mine, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(mine, _line())
                os.replace(tmp, path)  # a new file: the old one is never written into
            finally:
                os.close(fd)  # a worker that opened the old file sees it replaced and looks again
            log(f"took over the stale claim {path} ({holder})")
            return RunClaim(path, mine), ""
        if holder:
            return None, holder
    raise RuntimeError(f"could not claim {path}: it kept appearing and vanishing")


def live_holder(path: str | os.PathLike, *, steal_after: Optional[float] = None) -> str:
    """The line of the live worker that holds the claim ``path``, or '' if none does."""
    fd, holder = _judge(Path(path), steal_after)
    if fd is not None:
        os.close(fd)
        return ""
    return holder
