"""Online learning: one pass over a stream of examples, one Adam step per example.

Batch size 1 and a single pass, as on a device that learns while it runs. An NSM needs no
batch statistics, so it trains on single examples as it does on mini-batches; a network
with batch normalization cannot: PyTorch's ``BatchNorm1d`` in training mode refuses a batch
of one (``ValueError: Expected more than 1 value per channel when training``). The
comparison records that failure (``"failed"``) instead of hiding it, e.g. by switching the
network to evaluation mode.

- :func:`train_online`: one model on one stream; test error at chosen counts of examples seen.
- :func:`online_comparison`: several models on the same stream.
- :func:`plot_online`: test error (%) against examples seen, one line per model.
- :func:`run_online`: registered models on a dataset by name; writes ``online.json`` and
  ``online.png``.

Each example is seen once as it is (no augmentation). The test error is that of the
Monte-Carlo mean over ``samples`` stochastic passes (:func:`nsm.training.epoch.evaluate`); a model
without stochastic layers is evaluated with one pass.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..data import Dataset, load_dataset
from ..models import build_model
from ..nn.layers import noisy_layers
from ..training.config import MAX_THREADS, model_for_dataset
from ..training.epoch import evaluate, train_step
from ..training.loop import resolve_device
from ..utils.checks import check_int, is_int
from ..utils.io import check_new_outputs, save_figure, write_json

__all__ = ["EVAL_POINTS", "default_eval_at", "train_online", "online_comparison", "plot_online", "run_online"]

# Roughly log-spaced counts of examples seen at which the test error is measured.
EVAL_POINTS = (0, 100, 300, 1000, 3000, 10000, 30000, 60000)


def default_eval_at(examples: int) -> list[int]:
    """:data:`EVAL_POINTS` below ``examples``, then ``examples`` itself."""
    examples = check_int("examples", examples)
    return [p for p in EVAL_POINTS if p < examples] + [examples]


def _check_eval_at(eval_at, n: int) -> list[int]:
    points = list(eval_at)
    if not points:
        raise ValueError("eval_at must list at least one count of examples")
    bad = [p for p in points if not is_int(p)]
    if bad:
        raise ValueError(f"eval_at must hold ints, got {bad[0]!r}")
    points = [int(p) for p in points]
    if points[0] < 0:
        raise ValueError(f"eval_at must be non-negative, got {points[0]}")
    if any(b <= a for a, b in zip(points, points[1:])):
        raise ValueError(f"eval_at must be strictly increasing, got {points}")
    if points[-1] > n:
        raise ValueError(f"eval_at must not exceed the {n} examples of the stream, got {points[-1]}")
    return points


def _is_real(v) -> bool:
    """A finite int or float (not a bool)."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _check_examples(x_name: str, x, y_name: str, y) -> tuple[Tensor, Tensor]:
    """(x, y) checked: a tensor of N >= 1 examples (N, ...) and a 1-D tensor of N integer
    class labels, returned as int64 (what the cross-entropy takes)."""
    if not isinstance(x, Tensor) or x.dim() < 2:
        got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{x_name} must be a torch.Tensor of examples (N, ...), got {got}")
    if not isinstance(y, Tensor) or y.dim() != 1:
        got = f"shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{y_name} must be a 1-D torch.Tensor of N class labels, got {got}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{y_name} must hold integer class labels, got dtype {y.dtype}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"{x_name} and {y_name} must hold the same, non-zero number of examples, got {x.shape[0]} and {y.shape[0]}"
        )
    return x, y.long()


def _raising_module(exc: BaseException) -> Optional[str]:
    """The class name of the innermost module whose code raised ``exc`` (None if none)."""
    name, tb = None, exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module):
            name = type(owner).__name__
        tb = tb.tb_next
    return name


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def train_online(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    lr: float = 3e-4,
    eval_at: Optional[Sequence[int]] = None,
    samples: int = 20,
    generator: Optional[torch.Generator] = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    weight_decay: float = 0.0,
    desc: str = "online",
) -> dict:
    """Train ``model`` on the stream (x, y), one example per Adam step, in a single pass.

    The stream is taken in the given order, or shuffled once with ``generator``. After
    ``eval_at[i]`` examples (0: before training) the test error is measured; training
    stops at the last of them (default :func:`default_eval_at` of ``len(x)``: the whole
    stream). Each step is :func:`nsm.training.epoch.train_step` (so model hooks such as BNN weight
    clipping run).

    Returns ``{"examples", "test_error", "test_nll", "train_error_running", "samples",
    "seconds", "failed", "failed_at"}``: the lists are aligned with the evaluation points
    reached; ``train_error_running[i]`` is the error of the training passes on the examples
    since the previous point (None at 0). If a step raises ``ValueError`` or
    ``RuntimeError`` (BatchNorm1d with a batch of one), or the loss becomes non-finite,
    training stops: ``failed`` is a one-line message (exception type, text, examples seen)
    and ``failed_at`` the number of examples seen; otherwise both are None.
    """
    x, y = _check_examples("x", x, "y", y)
    test_x, test_y = _check_examples("test_x", test_x, "test_y", test_y)
    if test_x.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"test_x must hold examples of the shape of x's, {tuple(x.shape[1:])}, got {tuple(test_x.shape[1:])}"
        )
    samples = check_int("samples", samples)
    if not _is_real(lr) or not lr > 0:
        raise ValueError(f"lr must be a finite number > 0, got lr={lr!r}")
    if not _is_real(weight_decay) or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, got weight_decay={weight_decay!r}")
    n = x.shape[0]
    points = default_eval_at(n) if eval_at is None else _check_eval_at(eval_at, n)
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model.to(device)
    samples = samples if noisy_layers(model) else 1
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)

    result: dict = {
        "examples": [],
        "test_error": [],
        "test_nll": [],
        "train_error_running": [],
        "samples": samples,
        "seconds": 0.0,
        "failed": None,
        "failed_at": None,
    }
    start = time.perf_counter()
    seen, wrong_since = 0, 0
    bar = _bar(points[-1], desc, progress)

    def measure() -> None:
        nonlocal wrong_since
        ev = evaluate(model, test_x, test_y, samples=samples, device=device)
        since = seen - (result["examples"][-1] if result["examples"] else 0)
        result["examples"].append(seen)
        result["test_error"].append(ev["test_error"])
        result["test_nll"].append(ev["test_nll"])
        result["train_error_running"].append(wrong_since / since if since else None)
        wrong_since = 0
        model.train()
        if bar is not None:
            bar.set_postfix(test_err=f"{100 * ev['test_error']:.2f}%")

    try:
        model.train()
        for target in points:
            while seen < target:
                i = order[seen]
                xb = x[i].unsqueeze(0).to(device, non_blocking=True)
                yb = y[i].unsqueeze(0).to(device, non_blocking=True)
                try:
                    loss, n_wrong = train_step(model, optimizer, xb, yb)
                except (ValueError, RuntimeError) as exc:
                    text = " ".join(str(exc).split())
                    where = _raising_module(exc)
                    result["failed"] = (
                        f"{type(exc).__name__} on the training step of example {seen + 1} "
                        f"(after {seen} examples seen)"
                        f"{f' in {where}' if where else ''}: {text}"
                    )
                    result["failed_at"] = seen
                    return result
                if not math.isfinite(loss):
                    result["failed"] = (
                        f"FloatingPointError: training loss became {loss} on example "
                        f"{seen + 1} (after {seen} examples seen); lower the learning rate"
                    )
                    result["failed_at"] = seen
                    return result
                seen += 1
                wrong_since += n_wrong
                if bar is not None:
                    bar.update(1)
            measure()
        return result
    finally:
        result["seconds"] = time.perf_counter() - start
        if bar is not None:
            bar.close()


def _stream(dataset: Dataset, examples: int, seed: int) -> tuple[Tensor, Tensor]:
    n = dataset.train_x.shape[0]
    if not is_int(examples) or not 1 <= examples <= n:
        raise ValueError(
            f"examples must be an int between 1 and {n} (the training set of {dataset.name}), got {examples!r}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:examples]
    return dataset.train_x[order], dataset.train_y[order]


def online_comparison(
    models: Mapping[str, nn.Module],
    dataset: Dataset,
    *,
    examples: int = 10000,
    eval_at: Optional[Sequence[int]] = None,
    samples: int = 20,
    lr: float = 3e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    weight_decay: float = 0.0,
    log: Callable[..., None] = lambda *a: None,
) -> dict:
    """:func:`train_online` for each model on the same stream; ``{name: result}``.

    The stream: the first ``examples`` training images after one shuffle with ``seed``,
    in that order for every model. The global RNG (the models' noise) is seeded with
    ``seed`` before each model, so a result does not depend on the other models.
    """
    if not models:
        raise ValueError("models must name at least one model")
    if not is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    x, y = _stream(dataset, examples, seed)
    points = default_eval_at(examples) if eval_at is None else _check_eval_at(eval_at, examples)
    results = {}
    for name, model in models.items():
        torch.manual_seed(seed)
        res = train_online(
            model,
            x,
            y,
            dataset.test_x,
            dataset.test_y,
            lr=lr,
            eval_at=points,
            samples=samples,
            device=device,
            progress=progress,
            weight_decay=weight_decay,
            desc=name,
        )
        results[name] = res
        if res["failed"]:
            log(f"{name}: failed: {res['failed']}")
        else:
            log(
                f"{name}: test error {100 * res['test_error'][-1]:.2f}% after {res['examples'][-1]} "
                f"examples (S={res['samples']}) [{res['seconds']:.0f}s]"
            )
    return results


def plot_online(results: Mapping[str, dict], ax=None, *, title: Optional[str] = None):
    """Test error (%) against examples seen, one line per model; returns the axes.

    The x axis is logarithmic (symmetric log, linear below the first positive point, so
    that 0 = before training shows). A model that failed keeps its measured points, has
    an ``x`` marker at the failure (at its last measured error, or at the top if none)
    and "(failed: ...)" in its legend label.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    positive = [e for r in results.values() for e in r["examples"] if e > 0]
    positive += [r["failed_at"] for r in results.values() if r.get("failed_at")]
    for name, res in results.items():
        errors = [100 * e for e in res["test_error"]]
        label = name
        failed = res.get("failed")
        if failed:
            kind = failed.split(":", 1)[0].split(" ", 1)[0]
            label = f"{name} (failed: {kind} after {res.get('failed_at')} examples)"
        (line,) = ax.plot(res["examples"], errors, "o-", ms=3, label=label)
        if failed:
            at = res.get("failed_at") or 0
            if errors:
                ax.plot([at], [errors[-1]], "x", color=line.get_color(), ms=10, mew=2, label="_nolegend_")
            else:
                ax.plot(
                    [at],
                    [0.97],
                    "x",
                    color=line.get_color(),
                    ms=10,
                    mew=2,
                    label="_nolegend_",
                    transform=ax.get_xaxis_transform(),
                )
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1)
    ax.set(xlabel="examples seen (batch size 1, one pass)", ylabel="test error (%)", title=title or "online learning")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def run_online(
    models: Sequence[str],
    dataset_name: str = "mnist",
    *,
    examples: int = 10000,
    eval_at: Optional[Sequence[int]] = None,
    samples: int = 20,
    lr: float = 3e-4,
    seed: int = 0,
    out: str | os.PathLike,
    data_dir=None,
    device: str = "cpu",
    progress: bool = True,
    test_subset: Optional[int] = None,
    weight_decay: float = 0.0,
    threads: Optional[int] = None,
    dataset: Optional[Dataset] = None,
    log: Callable[..., None] = print,
) -> dict:
    """Compare registered ``models`` learning online on a dataset; writes into ``out``.

    Each model is built with :func:`nsm.models.build_model` after ``torch.manual_seed(seed)``
    (on CIFAR a family name maps to its network as in :func:`nsm.training.loop.fit`). ``dataset``:
    a ready :class:`~nsm.data.Dataset` used instead of loading ``dataset_name``. ``threads``:
    CPU threads for torch (steps of one example are small: on a busy machine one thread
    can be much faster than several). Writes
    ``out/online.json`` (``{"config", "results"}``, returned) and ``out/online.png``.
    """
    names = list(models)
    if not names or not all(isinstance(m, str) for m in names):
        raise ValueError(f"models must be a non-empty list of registered model names, got {models!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"models must not repeat a name, got {names}")
    out = check_new_outputs(out, ("online.json", "online.png"))  # found before training, not after
    if threads is not None:
        if not is_int(threads) or not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads must be an int in [1, {MAX_THREADS}], got {threads!r}")
        if threads > (os.cpu_count() or 1):
            print(
                f"nsm: warning: --threads {threads} is more than this machine's {os.cpu_count()} cores; "
                f"oversubscribed threads make training much slower",
                file=sys.stderr,
            )
        torch.set_num_threads(threads)
    if dataset is None:
        dataset = load_dataset(dataset_name, data_dir, test_subset=test_subset)
    points = default_eval_at(examples) if eval_at is None else _check_eval_at(eval_at, examples)
    built = {}
    networks = {}
    for name in names:
        networks[name] = model_for_dataset(name, dataset.name)
        torch.manual_seed(seed)
        built[name] = build_model(networks[name], dataset.in_shape, dataset.num_classes)
    dev = resolve_device(device)
    results = online_comparison(
        built,
        dataset,
        examples=examples,
        eval_at=points,
        samples=samples,
        lr=lr,
        seed=seed,
        device=dev,
        progress=progress,
        weight_decay=weight_decay,
        log=log,
    )
    report = {
        "config": {
            "models": names,
            "networks": networks,
            "dataset": dataset.name,
            "examples": int(examples),
            "eval_at": points,
            "samples": int(samples),
            "lr": lr,
            "weight_decay": weight_decay,
            "seed": int(seed),
            "batch_size": 1,
            "optimizer": "adam",
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "data_dir": None if data_dir is None else str(data_dir),
            "test_subset": test_subset,
            "n_test": int(dataset.test_x.shape[0]),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "online.json", report, new=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    plot_online(results, ax, title=f"online learning on {dataset.name} (batch size 1, one pass)")
    fig.tight_layout()
    save_figure(out / "online.png", fig, new=True)
    plt.close(fig)
    log(f"wrote {out / 'online.json'} and {out / 'online.png'}")
    return report
