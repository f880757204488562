"""The scripts of benchmarks/ run at tiny sizes, eagerly, and print (and write) what they say they
do: the rows of their tables, the fields of their JSON, the ratios' bases at 1. Their figures
are not checked (they are timings of this machine); the GPU check's checks run on the CPU, and
its shell wrapper's exit status is checked with a stand-in python."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
NUMBER = r"[\d.]+"


@pytest.fixture
def bench(monkeypatch, one_thread):
    """Import a script of benchmarks/ (they import each other by name), at one thread."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module


def test_time_interleaved_rotates_the_order_of_the_variants(bench):
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    medians = bench("bench_speed").time_interleaved(fns, 4, torch.device("cpu"))
    assert set(medians) == set("abc")
    assert "".join(calls) == "aabbcc" + "abc" + "bca" + "cab" + "abc"  # two warm-up calls each, then rotated rounds


def test_bench_speed_prints_and_writes_every_variant(bench, capsys, tmp_path):
    out = tmp_path / "speed.json"
    args = "--batch 2 --repeats 1 --samples 2 --no-compile --models bnsm/neuron bnsm/synapse --json".split()
    report = bench("bench_speed").main([*args, str(out)])
    text = capsys.readouterr().out
    assert json.loads(out.read_text()) == report
    assert set(report) == {
        "torch",
        "device",
        "threads",
        "batch",
        "repeats",
        "mc_repeats",
        "samples",
        "models",
        "fresh_cache",
        "compile_warmup_s",
        "train",
        "mc",
    }
    assert report["models"] == ["dcnn", "bnsm/neuron", "bnsm/synapse"]  # the dCNN always, first
    assert (report["batch"], report["threads"], report["mc_repeats"]) == (2, 1, 3)  # max(3, repeats // 4)
    assert report["compile_warmup_s"] is None and report["fresh_cache"] is False
    assert list(report["train"]) == ["dcnn eager", "bnsm/neuron eager", "bnsm/synapse eager"]
    for row in report["train"].values():
        assert set(row) == {"ms", "x_dcnn_eager", "x_best_dcnn", "compile_s", "peak_mb", "x_mem_dcnn"}
        assert row["ms"] > 0 and row["peak_mb"] > 0 and row["compile_s"] is None
    base = report["train"]["dcnn eager"]
    assert base["x_dcnn_eager"] == base["x_best_dcnn"] == base["x_mem_dcnn"] == 1.0
    # the synapse sampler keeps a mask per synapse and example: more memory than the neuron sampler
    assert report["train"]["bnsm/synapse eager"]["peak_mb"] > report["train"]["bnsm/neuron eager"]["peak_mb"]
    assert set(report["mc"]) == {"mc_predict eager", "python loop eager"}
    assert report["mc"]["python loop eager"]["x_loop"] == 1.0
    assert re.search(rf"(?m)^dcnn eager +{NUMBER} +1\.00 +1\.00 +{NUMBER} +1\.00$", text)
    for k in ("bnsm/neuron eager", "bnsm/synapse eager"):
        assert re.search(rf"(?m)^{k} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$", text), k
    assert "median of 1" in text and "S=2 on a batch of 2, median of 3" in text
    assert re.search(rf"(?m)^python loop eager +{NUMBER} +1\.00$", text)
    assert re.search(rf"(?m)^mc_predict eager +{NUMBER} +{NUMBER}$", text)


def test_bench_speed_refuses_an_unknown_model(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench("bench_speed").main(["--no-compile", "--models", "nosuchnet"])
    assert exc.value.code == 2
    assert "--models nosuchnet" in capsys.readouterr().err


def test_bench_denormal(bench, capsys, tmp_path):
    out = tmp_path / "denormal.json"
    report = bench("bench_denormal").main(["--batch", "2", "--repeats", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert json.loads(out.read_text()) == report
    assert (report["batch"], report["repeats"], report["threads"]) == (2, 1, 1)
    assert list(report["networks"]) == ["fresh", "saturated"]  # no --checkpoint
    for kind, row in report["networks"].items():
        assert set(row) == {"band_share", "computed_ms", "flushed_ms", "ratio"}
        assert row["ratio"] == pytest.approx(row["computed_ms"] / row["flushed_ms"])
        assert re.search(rf"(?m)^{kind} +{NUMBER}% +{NUMBER} +{NUMBER} +{NUMBER}$", text), kind
    assert report["networks"]["saturated"]["band_share"] > 0  # magnitudes x 12 put drives in the band


def test_bench_padding(bench, capsys):
    bench("bench_padding").main(["--batch", "2", "--channels", "4", "--size", "6", "--repeats", "1"])
    text = capsys.readouterr().out
    for what in ("train step", "no-grad pass"):
        assert f"{what} (batch 2, 4 channels, 6x6, 1 threads):" in text
    assert len(re.findall(rf"(?m)^  full-norm +{NUMBER} ms +x1\.000$", text)) == 2
    for k in ("border-norm", "exact"):
        assert len(re.findall(rf"(?m)^  {k} +{NUMBER} ms +x{NUMBER}$", text)) == 2, k


def test_bench_record(bench, capsys):
    bench("bench_record").main(["--images", "100", "--repeats", "1", "--every", "1"])
    text = capsys.readouterr().out
    assert "bNSM, 100 images, batch 100, 1 interleaved repeats, 1 threads" in text
    assert re.search(rf"(?m)^  off +{NUMBER} s +1\.00x$", text)
    for k in ("per epoch", r"every 1 \+ cosine"):
        assert re.search(rf"(?m)^  {k} +{NUMBER} s +{NUMBER}x$", text), k


def test_bench_rng(bench, capsys):
    bench("bench_rng").main(["--numbers", "1000", "--repeats", "1", "--no-compile"])
    text = capsys.readouterr().out
    assert "1,000 numbers" in text and "median of 1" in text and "compiled" not in text
    for f in ("sign_gauss", "sign_uniform", "noise_randn", "noise_erfinv"):
        assert re.search(rf"(?m)^  {f}, eager +{NUMBER} ms$", text), f


def test_gpu_check_passes_its_eager_checks_on_the_cpu(bench, capsys, monkeypatch):
    gpu_check = bench("gpu_check")
    monkeypatch.setattr(gpu_check, "N", 2000)  # the tolerances follow N
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    assert gpu_check.main(["--device", "cpu", "--no-compile"]) == 0
    text = capsys.readouterr().out
    assert "10 passed, 0 failed" in text and "FAIL" not in text and "compiled" not in text
    for name in (
        "firing frequency, gaussian noise, synapse sampler",
        "padded convolution border law",
        "prob gradient, eager",
        "mc_predict against the exact expectation",
        "training and bit-for-bit resume: toy error",
    ):
        assert f"PASS  {name}" in text, name


def test_gpu_check_reports_every_check_and_fails_if_one_fails(bench, capsys, monkeypatch):
    gpu_check = bench("gpu_check")
    for f in ("frequency_check", "conv_border_check", "gradient_check", "training_check"):
        monkeypatch.setattr(gpu_check, f, lambda *a: "fine")

    def broken(device):
        raise AssertionError("off by a mile")

    monkeypatch.setattr(gpu_check, "mc_check", broken)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    assert gpu_check.main(["--device", "cpu"]) == 1
    text = capsys.readouterr().out
    assert "FAIL  mc_predict against the exact expectation: off by a mile" in text
    assert (
        "14 passed, 1 failed" in text
    )  # 10 frequencies (the synapse sampler not compiled), border, 2 gradients, MC, training
    assert "PASS  firing frequency, gaussian noise, probability sampler, compiled: fine" in text
    assert "PASS  prob gradient, compiled: fine" in text
    assert "synapse sampler, compiled" not in text


def test_gpu_check_settings_are_restored(bench):
    gpu_check = bench("gpu_check")
    before = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    with gpu_check.exact_float32():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    with gpu_check.deterministic():
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
    after = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    assert after == before


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
@pytest.mark.parametrize("failing", [None, "bench_speed.py --device cuda --batch 1000", "gpu_check.py"])
def test_gpu_check_sh_exits_non_zero_if_any_step_fails(tmp_path, failing):
    """gpu_check.sh with a stand-in python on PATH that exits 124 (as `timeout` does) for one step."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    calls = tmp_path / "calls.txt"
    python.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{calls}"\n'
        f'case "$*" in *"{failing or "never matched"}"*) echo "PASS  half done"; exit 124;; esac\n'
        'echo "PASS  fine"\n'
    )
    python.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(BENCH / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=60)
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert done.returncode == (0 if failing is None else 1), done.stdout + done.stderr
    assert f"== exit {0 if failing is None else 1}" in summary
    ran = calls.read_text().splitlines()
    assert len(ran) == 4 and all(c.startswith("-u ") for c in ran), ran  # unbuffered: a stopped step keeps its output
    assert "benchmarks/gpu_check.py --device cuda" in ran[1]
    assert all("--fresh-cache" in c for c in ran[2:])
    steps = summary.split("== steps\n")[1].split("==")[0].splitlines()
    assert len(steps) == 4, steps
    timed_out = [s for s in steps if s.endswith("exit 124 (timed out)")]
    assert len(timed_out) == (0 if failing is None else 1), steps
    if failing:
        assert "PASS  half done" in summary  # what the stopped step printed is kept
