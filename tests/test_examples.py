"""The scripts in examples/ run as a user would run them, and print what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_nsm_layer_in_your_model():
    out = _run("nsm_layer_in_your_model.py")
    err = float(out.split("test error with 50 samples: ")[1].split("%")[0])
    assert err < 20  # two spirals: far better than chance (50 %)
    assert "NSMLinear(in_features=64, out_features=256" in out


@pytest.mark.slow
def test_rotated_digits(mnist_dir):
    rows = [line.split() for line in _run("rotated_digits.py", str(mnist_dir)).splitlines()[1:]]
    angles = [int(r[0]) for r in rows]
    errors = [float(r[1]) for r in rows]
    entropy = [float(r[2]) for r in rows]
    assert angles == [0, 30, 60, 90]
    assert errors[0] < 20 and errors[-1] > errors[0] and entropy[-1] > entropy[0]


@pytest.mark.slow
def test_device_study(mnist_dir):
    lines = _run("device_study.py", str(mnist_dir)).splitlines()
    acc = {line.split(":")[0].strip(): float(line.split("accuracy ")[1].rstrip("%")) for line in lines}
    assert set(acc) == {"ideal", "8 levels", "3 levels", "p spread 0.1", "read noise 0.1"}
    assert acc["ideal"] > 70
