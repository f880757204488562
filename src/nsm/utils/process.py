"""Which process is which, across pid reuse and restarts (Linux's /proc; None elsewhere).

A pid alone does not name a process: it is handed out again once its process ends, and after
a restart. The kernel's boot id and a process's start time (clock ticks since boot) make it
unique; claims on runs (:mod:`nsm.studies.claim`) and the temporary files of downloads
(:mod:`nsm.data.files`) record them, so that what a process that is gone left can be told
from what a live one holds.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["boot_id", "start_time", "identity"]


def boot_id() -> Optional[str]:
    """This boot's id (/proc/sys/kernel/random/boot_id, a UUID); None where /proc lacks it."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            boot = f.read(64).strip().decode("ascii", "replace")
    except OSError:
        return None
    return boot or None


def start_time(pid: int) -> Optional[str]:
    """The start time of the running process ``pid`` (field 22 of /proc/PID/stat, clock ticks
    since boot; a pid handed out again has another); None if it is not running or /proc does not
    tell (not Linux, or hidden)."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[-1].split()  # after the command name (may hold spaces)
    except (OSError, ValueError):
        return None
    return fields[19].decode() if len(fields) > 19 and fields[19].isdigit() else None


def identity(pid: int) -> Optional[str]:
    """``BOOT:START`` for a running process of this machine; None where either is unknown."""
    boot, start = boot_id(), start_time(pid)
    return f"{boot}:{start}" if boot and start else None
