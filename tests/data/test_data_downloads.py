"""Downloads of the archives (CIFAR, EMNIST, N-MNIST), offline: a server that sends too much is cut
off at the archive's size, and what a killed fetch leaves is removed by the next one."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from nsm.data import cifar as cifar_mod
from nsm.data import emnist as emnist_mod
from nsm.data import files
from nsm.data import nmnist as nmnist_mod
from nsm.data.idx import DataError

LINUX = os.path.exists("/proc/self/stat") and os.path.exists("/proc/sys/kernel/random/boot_id")
BOUND = (2 << 20) + 3  # a small stand-in for an archive's size
CHUNK = 1 << 20  # what _download reads at a time


class Stream:
    """A server's response of ``size`` zero bytes (a broken or hostile one: more than the archive)."""

    headers: dict = {}

    def __init__(self, size: int) -> None:
        self.left, self.sent = size, 0

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        self.sent += n
        return bytes(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_official_archive_sizes():
    """The bounds are the official archives' sizes (N-MNIST's: upper bounds a little above)."""
    assert cifar_mod.CIFAR[10]["bytes"] == 170498071
    assert cifar_mod.CIFAR[100]["bytes"] == 169001437
    assert emnist_mod.EMNIST_BYTES == 561753746
    assert 1_000_000_000 < nmnist_mod.NMNIST_ARCHIVE_BYTES["Train"] < 1_300_000_000
    assert 170_000_000 < nmnist_mod.NMNIST_ARCHIVE_BYTES["Test"] < 220_000_000


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "emnist", "nmnist"])
def test_a_download_longer_than_the_archive_is_cut_off(dataset, monkeypatch, tmp_path):
    """CIFAR, EMNIST and N-MNIST downloaded without a bound: a server streaming forever filled
    the disk before the md5 was checked. Now the download stops at the archive's size, with an
    error naming the file and the bound, and the partial file is removed."""
    stream = Stream(BOUND + 3 * CHUNK)  # the old code read it all, then found the md5 wrong
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: stream)
    if dataset.startswith("cifar"):
        k = int(dataset[5:])
        monkeypatch.setitem(cifar_mod.CIFAR, k, dict(cifar_mod.CIFAR[k], bytes=BOUND))
        fetch, name = (lambda: cifar_mod.fetch_cifar(k, tmp_path, progress=False)), f"cifar-{k}-python.tar.gz"
    elif dataset == "emnist":
        monkeypatch.setattr(emnist_mod, "EMNIST_BYTES", BOUND, raising=False)
        fetch, name = (lambda: emnist_mod.fetch_emnist(tmp_path, progress=False)), "gzip.zip"
    else:
        monkeypatch.setattr(nmnist_mod, "NMNIST_ARCHIVE_BYTES", {"Train": BOUND, "Test": BOUND}, raising=False)
        fetch, name = (lambda: nmnist_mod.fetch_nmnist(tmp_path, progress=False)), "Train.zip"
    with pytest.raises(DataError, match=f"more than {BOUND} bytes") as err:
        fetch()
    assert name in str(err.value), str(err.value)
    assert stream.sent <= BOUND + CHUNK  # cut off, not read to the end
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []  # no partial file left


KILLED_FETCH = textwrap.dedent(
    """
    import hashlib, sys, threading, time, urllib.request
    from pathlib import Path
    import nsm.data.cifar as cifar, nsm.data.nmnist as nmnist

    class Slow:
        headers = {}
        def read(self, n=-1):
            time.sleep(0.05)
            return bytes(min(n, 1 << 16))
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            pass

    def hang(zip_path, work, split):  # an extraction begun, never finished
        (work / split / "0").mkdir(parents=True)
        (work / split / "0" / "00000.bin").write_bytes(bytes(5))
        time.sleep(3600)

    data = Path(sys.argv[1])
    urllib.request.urlopen = lambda url, timeout=None: Slow()  # CIFAR: a slow download
    nmnist._download = lambda url, dest, t, p, max_bytes=None: dest.write(b"zip")
    nmnist.NMNIST_ARCHIVES = {"Train": ("https://example.invalid/Train.zip", hashlib.md5(b"zip").hexdigest())}
    nmnist._unzip = hang
    threading.Thread(target=nmnist.fetch_nmnist, args=(data,), kwargs={"progress": False}, daemon=True).start()
    cifar.fetch_cifar(10, data, progress=False)
    """
)


def _leftovers(data: Path) -> list[str]:
    """The hidden temporary entries in the CIFAR-10 and N-MNIST folders."""
    return sorted(
        f"{folder.name}/{p.name}"
        for folder in (data / "cifar10", data / "nmnist")
        if folder.is_dir()
        for p in folder.iterdir()
        if p.name.startswith(".")
    )


def _fetch_again(data: Path, monkeypatch) -> None:
    """Fetch CIFAR-10 and N-MNIST into ``data`` from a server that cannot be reached."""

    def unreachable(url, dest, timeout, progress, max_bytes=None):
        raise OSError("Name or service not known")

    monkeypatch.setattr(cifar_mod, "_download", unreachable)
    monkeypatch.setattr(nmnist_mod, "_download", unreachable)
    with pytest.raises(FileNotFoundError, match="Name or service not known"):
        cifar_mod.fetch_cifar(10, data, progress=False)
    with pytest.raises(RuntimeError, match="Name or service not known"):
        nmnist_mod.fetch_nmnist(data, progress=False)


@pytest.mark.skipif(not LINUX, reason="tells a gone process by /proc")
def test_what_a_killed_fetch_left_is_removed_by_the_next(monkeypatch, tmp_path):
    """A fetch killed by SIGKILL left its hidden partial download (CIFAR: up to 170 MB each time)
    and N-MNIST's half-unpacked ``.Train.extract-*`` folder, and no later fetch removed them.
    While the fetch runs another one leaves them alone; once it is gone the next removes them."""
    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_FETCH, str(data)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (
            any(p.endswith(".part") and (data / p).stat().st_size for p in _leftovers(data) if p.startswith("cifar10/"))
            and any(".Train.extract-" in p and any((data / p).rglob("*.bin")) for p in _leftovers(data))
        ):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"the fetch made no temporary files: {_leftovers(data)}"
            time.sleep(0.1)
        running = _leftovers(data)
        _fetch_again(data, monkeypatch)
        assert _leftovers(data) == running  # a running fetch's files are kept
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    left = _leftovers(data)
    assert any(p.startswith("cifar10/.cifar-10-python.tar.gz.") for p in left), left
    assert any(p.startswith("nmnist/.Train.extract-") for p in left), left
    assert any(p.startswith("nmnist/.Train.") and p.endswith(".zip.part") for p in left), left
    _fetch_again(data, monkeypatch)
    assert _leftovers(data) == []
    assert sorted(os.listdir(data / "cifar10")) == ["cifar-10-batches-py"]


@pytest.mark.skipif(not LINUX, reason="tells a gone process by /proc")
def test_only_a_gone_process_leftovers_are_removed(tmp_path):
    """remove_leftovers removes exactly the regular files and folders named as nsm names its
    temporary ones by a process of this host that is gone: not a live process's, not another
    host's, not a symlink (nor what it leads to), not an entry of the wrong kind, not a name
    nsm does not make."""
    folder = tmp_path / "d"
    folder.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.bin").write_bytes(b"user data")
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()  # its pid runs no process now
    owner = files._owner()
    assert owner is not None
    _, machine, boot, pid, start = owner.split("-")
    gone = f"nsm-{machine}-{boot}-{dead.pid}-{start}"
    reused = f"nsm-{machine}-{boot}-{pid}-{int(start) + 1}"  # this pid, another start time
    rebooted = f"nsm-{machine}-{'0' * 8 if boot != '0' * 8 else '1' * 8}-{pid}-{start}"
    other_host = f"nsm-{'0' * 8 if machine != '0' * 8 else '1' * 8}-{boot}-{dead.pid}-{start}"

    def make(name: str, kind: str = "file") -> Path:
        p = folder / name
        if kind == "file":
            p.write_bytes(b"partial")
        elif kind == "dir":
            (p / "Train" / "0").mkdir(parents=True)
            (p / "Train" / "0" / "00000.bin").write_bytes(bytes(5))
            (p / "Train" / "link").symlink_to(outside)  # removed as a link, never followed
        elif kind == "fifo":
            os.mkfifo(p)
        else:
            p.symlink_to(outside / "keep.bin" if kind == "link" else outside)
        return p

    fd, live = files.new_part(folder, ".test_batch.", ".part")  # this process's: running
    os.close(fd)
    live_folder = files.new_part_folder(folder, "Test")
    removed = {
        make(f".cifar-10-python.tar.gz.{gone}-abc_1234.part"),
        make(f".train-images-idx3-ubyte.{reused}-abcd1234.gz.part"),
        make(f".gzip.zip.{rebooted}-abcd1234.part"),
        make(f".Train.extract-{gone}-abcd1234", "dir"),
        make(f".Test.{gone}-abcd1234.zip.part"),
    }
    kept = {
        live,
        live_folder,
        make(f".x.{other_host}-abcd1234.part"),  # another host's: cannot tell
        make(f".y.{gone}-abcd1234.part", "link"),
        make(f".Train.extract-{gone}-abcd1235", "dirlink"),
        make(f".z.{gone}-abcd1234.part", "dir"),  # a folder named as a file
        make(f".Train.extract-{gone}-abcd1236"),  # a file named as a folder
        make(f".w.{gone}-abcd1234.part", "fifo"),
        make(".cifar-10-python.tar.gz.abcd1234.part"),  # no owner in the name
        make(f".v.{gone}-abcd123.part"),  # not tempfile's 8 characters
        make(f"v.{gone}-abcd1234.part"),  # not hidden
        make(f".v.{gone}-abcd1234.part.tmp"),
        make("notes.part"),
    }
    assert sorted(files.remove_leftovers(folder)) == sorted(removed)
    assert sorted(folder.iterdir()) == sorted(kept)
    assert (outside / "keep.bin").read_bytes() == b"user data" and os.listdir(outside) == ["keep.bin"]
    assert stat.S_ISFIFO(os.lstat(folder / f".w.{gone}-abcd1234.part").st_mode)
    assert files.remove_leftovers(tmp_path / "missing") == []
    assert live.name.startswith(f".test_batch.{owner}-") and live_folder.name.startswith(f".Test.extract-{owner}-")
