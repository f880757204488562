"""``nsm evaluate``: uncertainty, distribution shift, OOD detection and device robustness of
trained runs (beyond the paper; the follow-up of Dutta et al., Nat. Commun. 2022).

For each run directory (its ``checkpoint.pt`` and ``config.json``), on its dataset's test set:

- **uncertainty** from S Monte-Carlo passes (:mod:`nsm.studies.uncertainty`): accuracy, NLL, Brier,
  ECE (15 equal-width confidence bins), mean predictive entropy, expected entropy and mutual
  information (nats), a reliability diagram, and accuracy against S = 1, 2, 5, ... 100;
- **rotation**: the first ``shift_subset`` test images rotated by 0, 15, ... 180 degrees
  (bilinear, zero fill): accuracy, mean predictive entropy and mutual information per angle;
- **out-of-distribution detection**: ``shift_subset`` test images of another dataset of the
  same shape (MNIST <-> Fashion-MNIST by default) against as many in-distribution test
  images: AUROC of the predictive entropy and of the mutual information as OOD scores;
- **devices** (:mod:`nsm.studies.devices`): accuracy on the first ``device_subset`` test images
  with ``device_samples`` passes under weight quantization (levels spanning +-max |w|, also
  on a nonlinear potentiation curve, and spanning +-min(max |w|, 2 rms(w)), rms(w) =
  sqrt(mean(w^2)) of each layer), device-to-device spread of the blank-out probability
  (Bernoulli NSM layers only) and read noise on the weights (one read per pass).

Several runs with the same label (the configuration's model name, e.g. two seeds of one
model) are told apart by their run folder's name: "dcnn (dcnn-mnist-seed1)".

A deterministic network (no stochastic layer) is evaluated with one pass: its mutual
information is 0 by construction, and its "accuracy against S" is a single point.
``evaluate_runs`` writes ``evaluation.json`` (every number), ``evaluation.md`` (the main
table) and the figures, atomically.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..models import build_model
from ..nn.layers import noisy_layers
from ..nn.mc import mc_sample_probs
from ..training.checkpoint import read_checkpoint
from ..utils.checks import check_int, is_int
from ..utils.io import atomic_write, check_new_outputs, save_figure, write_json
from . import uncertainty as U

__all__ = [
    "load_trained",
    "evaluate_run",
    "evaluate_runs",
    "DEFAULT_ANGLES",
    "OOD_PAIRS",
    "LEVELS",
    "CLIP_STD",
    "P_SPREADS",
    "READ_NOISES",
]

DEFAULT_ANGLES = tuple(range(0, 181, 15))
OOD_PAIRS = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}
LEVELS = (2, 3, 4, 8, 16, 32)  # conductance levels swept (plus full precision)
NONLINEAR = 3.0  # nonlinearity of the second quantization curve
CLIP_STD = 2.0  # range +-min(max |w|, CLIP_STD * rms(w)) of the third quantization sweep
P_SPREADS = (0.0, 0.05, 0.1, 0.2, 0.3)  # std of the per-synapse blank-out probability
READ_NOISES = (0.0, 0.02, 0.05, 0.1, 0.2)  # read-noise std, fraction of max |w| per layer


# what evaluate_runs may write into its folder
EVALUATE_FILES = (
    "evaluation.json",
    "evaluation.md",
    "reliability.png",
    "accuracy_vs_samples.png",
    "rotation.png",
    "ood.png",
    "devices.png",
)
MAX_CLASSES = 10_000  # the most classes a checkpoint may declare (the paper's datasets: 10-100)


def load_trained(run_dir, device="cpu") -> tuple[nn.Module, dict]:
    """The trained model of a run directory and its saved configuration."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path} not found: {run_dir} is not a finished nsm run directory")
    ckpt = read_checkpoint(ckpt_path, map_location=device)  # weights_only: a hostile file runs nothing
    if not {"model", "model_state", "in_shape", "num_classes"} <= set(ckpt):
        raise ValueError(f"{ckpt_path} is not an nsm checkpoint (missing model/model_state/in_shape)")
    config = ckpt.get("config", {})
    in_shape, num_classes = ckpt["in_shape"], ckpt["num_classes"]
    # what the checkpoint says the network is: checked before anything is built from it
    problems = []
    if not isinstance(ckpt["model"], str):
        problems.append(f"model is a {type(ckpt['model']).__name__}")
    if not (
        isinstance(in_shape, (tuple, list))
        and 1 <= len(in_shape) <= 4
        and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 4096 for d in in_shape)
        and math.prod(in_shape) <= 2**24
    ):
        problems.append(f"in_shape {str(in_shape)[:60]} is not an input shape (1-4 sizes of 1-4096)")
    if not (isinstance(num_classes, int) and not isinstance(num_classes, bool) and 1 <= num_classes <= MAX_CLASSES):
        problems.append(f"num_classes {str(num_classes)[:30]} is not in 1..{MAX_CLASSES}")
    if not isinstance(config, dict) or not isinstance(config.get("model_options", {}), dict):
        problems.append("its config is not a configuration object")
    else:  # the fields evaluation reads from it: a wrong type is named here, not a TypeError later
        for key, kinds, want in (
            ("dataset_options", dict, "an object"),
            ("dataset", str, "a name"),
            ("model", str, "a name"),
            ("data_dir", (str, type(None)), "a path or null"),
        ):
            if key in config and not isinstance(config[key], kinds):
                problems.append(f"config {key} is a {type(config[key]).__name__}, not {want}")
    if not is_int(ckpt.get("epoch", 0)):
        problems.append(f"epoch {str(ckpt.get('epoch'))[:30]} is not an epoch number")
    if problems:
        raise ValueError(f"{ckpt_path} is not an nsm checkpoint ({'; '.join(problems)})")
    if ckpt.get("finished") is False:  # older checkpoints, written only at the end, have no flag
        raise ValueError(
            f"{ckpt_path} is from an unfinished run (stopped in epoch {ckpt.get('epoch', 0) + 1} of "
            f"{config.get('epochs')}); finish it with `nsm train --resume {run_dir}`"
        )
    model = build_model(ckpt["model"], tuple(in_shape), num_classes, **config.get("model_options", {})).to(device)
    try:
        model.load_state_dict(ckpt["model_state"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"{ckpt_path}: its weights do not fit network {ckpt['model']!r}: {detail[:300]}") from None
    model.eval()
    return model, {**config, "network": ckpt["model"]}


def _samples_for(model: nn.Module, samples: int) -> int:
    """``samples`` for a network with noise, 1 for one without (layers fixed in a noise-free
    mode, as the BN baseline's, have none)."""
    return samples if noisy_layers(model) else 1


def _probs(model: nn.Module, x: Tensor, samples: int, batch_size: int, device) -> Tensor:
    """(S, N, C) softmax of every pass, computed in batches of ``batch_size`` images."""
    parts = [
        mc_sample_probs(model, x[i : i + batch_size].to(device), samples).cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(parts, dim=1)


def _rotation(model, x, y, angles, samples, batch_size, device) -> dict:
    rows = {"angle": [], "accuracy": [], "entropy": [], "mutual_information": []}
    for a in angles:
        p = _probs(model, U.rotate_images(x, a), samples, batch_size, device)
        rows["angle"].append(a)
        rows["accuracy"].append((p.mean(0).argmax(-1) == y).float().mean().item())
        rows["entropy"].append(U.predictive_entropy(p).mean().item())
        rows["mutual_information"].append(U.mutual_information(p).mean().item())
    return rows


def _ood(model, x_in, x_out, samples, batch_size, device) -> dict:
    p_in = _probs(model, x_in, samples, batch_size, device)
    p_out = _probs(model, x_out, samples, batch_size, device)
    res = {"n_in": int(x_in.shape[0]), "n_out": int(x_out.shape[0])}
    for name, score in (("entropy", U.predictive_entropy), ("mutual_information", U.mutual_information)):
        s_in, s_out = score(p_in), score(p_out)
        res[name] = {
            "auroc": U.auroc(s_in, s_out),
            "mean_in": s_in.mean().item(),
            "mean_out": s_out.mean().item(),
            "scores_in": s_in.tolist(),
            "scores_out": s_out.tolist(),
        }
    return res


def _devices(model, x, y, samples, device, seed) -> dict:
    from ..nn.layers import NSMLayer
    from .devices import DeviceModel, accuracy_under

    gen = torch.Generator().manual_seed(seed)
    sweeps: dict[str, dict] = {}

    def run(name: str, settings: dict):
        acc = accuracy_under(model, x.to(device), y.to(device), settings, samples=samples, generator=gen)
        sweeps[name] = {str(k): v for k, v in acc.items()}

    run("levels", {**{L: DeviceModel(levels=L) for L in LEVELS}, "full": DeviceModel()})
    run(f"levels_nonlinear_{NONLINEAR:g}", {L: DeviceModel(levels=L, nonlinearity=NONLINEAR) for L in LEVELS})
    run(f"levels_clip_{CLIP_STD:g}std", {L: DeviceModel(levels=L, clip_std=CLIP_STD) for L in LEVELS})
    bernoulli = any(isinstance(m, NSMLayer) and getattr(m.noise, "name", "") == "bernoulli" for m in model.modules())
    if bernoulli:
        run("p_spread", {s: DeviceModel(p_spread=s) for s in P_SPREADS})
    run("read_noise", {r: DeviceModel(read_noise=r) for r in READ_NOISES})
    return sweeps


def as_preprocessed_like(x: Tensor, own: dict, model_info: dict, name: str, model_dataset: str) -> Tensor:
    """Out-of-distribution images ``x`` as the model's own dataset would have preprocessed them.

    A dataset standardized with its own training statistics (CIFAR) gives images that differ
    from the model's in their preprocessing, which is what a detector would then score: they
    are mapped back to [0, 1] with their own statistics and standardized with the model's.
    ZCA whitening is not undone here (its matrix is not kept): refused. Datasets without
    fitted statistics (the [0, 1] images of MNIST, Fashion-MNIST, EMNIST) pass unchanged."""
    own_pre, model_pre = own.get("preprocessing", ""), model_info.get("preprocessing", "")
    if own_pre.startswith("ZCA") or model_pre.startswith("ZCA"):
        raise ValueError(
            f"OOD detection between {model_dataset} and {name} with ZCA whitening: the images would "
            f"not share one whitening; evaluate a run trained without zca=True, or pass ood='none'"
        )
    if not own_pre and not model_pre:
        return x
    if "mean" not in own or "mean" not in model_info:
        raise ValueError(
            f"OOD detection between {model_dataset} ({model_pre or 'images in [0, 1]'}) and {name} "
            f"({own_pre or 'images in [0, 1]'}): their preprocessing differs, and the detector would score "
            f"that; pass ood='none'"
        )
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean_o, std_o = (torch.tensor(own[k], dtype=torch.float64).view(shape) for k in ("mean", "std"))
    mean_m, std_m = (torch.tensor(model_info[k], dtype=torch.float64).view(shape) for k in ("mean", "std"))
    raw = x.to(torch.float64) * std_o + mean_o
    return ((raw - mean_m) / std_m).to(x.dtype)


def _check_shift_options(angles: Sequence[float], ood: Optional[str]) -> None:
    """Refuse bad rotation angles and OOD names before any work (not after minutes of it)."""
    from ..data import DATASETS

    bad = [a for a in angles if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a)]
    if bad or not len(angles):
        raise ValueError(f"angles must be finite numbers (degrees), got {list(angles)!r}")
    if ood not in (None, "auto", "none") and ood not in DATASETS:
        raise ValueError(f"ood must be 'auto', 'none' or a dataset name ({', '.join(DATASETS.names())}), got {ood!r}")


def _load_data(name: str, data_dir, config: dict, log: Callable[[str], None], **options):
    """Dataset ``name`` for a run: from ``data_dir`` when given (downloaded there if missing);
    else read from the folder the run's checkpoint names, never written into (no download,
    no cache: a checkpoint is a file someone handed over, and its folder may be anyone's),
    falling back to the default folder ($NSM_DATA_DIR or ~/.cache/nsm/data, downloaded there
    if missing) when the data cannot be read there."""
    from ..data import DataError, load_dataset

    recorded = config.get("data_dir")
    if data_dir is None and recorded is not None:
        try:
            return load_dataset(name, recorded, read_only=True, **options)
        except (FileNotFoundError, DataError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log(f"{name} could not be read from the run's data folder {recorded} ({first}); using the default folder")
    return load_dataset(name, data_dir, **options)


def evaluate_run(
    run_dir,
    *,
    samples: int = 100,
    shift_subset: int = 1000,
    angles: Sequence[float] = DEFAULT_ANGLES,
    ood: Optional[str] = "auto",
    devices: bool = True,
    device_subset: int = 2000,
    device_samples: int = 20,
    data_dir=None,
    test_subset: Optional[int] = None,
    batch_size: int = 500,
    device="cpu",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Every number of ``nsm evaluate`` for one run directory (see the module docstring)."""

    samples, shift_subset, device_subset, device_samples, batch_size = (
        check_int(name, v)
        for name, v in (
            ("samples", samples),
            ("shift_subset", shift_subset),
            ("device_subset", device_subset),
            ("device_samples", device_samples),
            ("batch_size", batch_size),
        )
    )
    _check_shift_options(angles, ood)
    ood = None if ood == "none" else ood
    model, config = load_trained(run_dir, device)
    label = config.get("model", config["network"])
    dataset_name = config.get("dataset", "mnist")
    ds = _load_data(dataset_name, data_dir, config, log, test_subset=test_subset, **config.get("dataset_options", {}))
    x, y = ds.test_x, ds.test_y
    S = _samples_for(model, samples)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    result: dict = {
        "run_dir": str(run_dir),
        "label": label,
        "network": config["network"],
        "dataset": dataset_name,
        "samples": S,
        "n_test": int(x.shape[0]),
    }

    log(f"{label}: uncertainty on {x.shape[0]} test images, S={S}")
    probs = _probs(model, x, S, batch_size, device)
    result["uncertainty"] = U.summarize(probs, y)
    result["reliability"] = U.reliability(probs.mean(0), y)
    counts = [k for k in (1, 2, 5, 10, 20, 50, 100) if k < S] + [S]  # the curve ends at the reported S
    result["accuracy_vs_samples"] = {str(k): v for k, v in U.accuracy_vs_samples(probs, y, counts).items()}
    del probs

    n_shift = min(shift_subset, x.shape[0])
    log(f"{label}: rotations {list(angles)} on {n_shift} images")
    result["rotation"] = _rotation(model, x[:n_shift], y[:n_shift], list(angles), S, batch_size, device)

    ood_name = OOD_PAIRS.get(dataset_name) if ood == "auto" else ood
    if ood_name:
        other = _load_data(ood_name, data_dir, config, log)
        if tuple(other.in_shape) != tuple(ds.in_shape):
            raise ValueError(
                f"OOD dataset {ood_name!r} has images of shape {other.in_shape}, the model takes {ds.in_shape}"
            )
        n_ood = min(n_shift, other.test_x.shape[0])
        log(f"{label}: OOD detection, {n_shift} {dataset_name} vs {n_ood} {ood_name} test images")
        ood_x = as_preprocessed_like(other.test_x[:n_ood], other.info, ds.info, ood_name, dataset_name)
        result["ood"] = {"dataset": ood_name, **_ood(model, x[:n_shift], ood_x, S, batch_size, device)}
    if devices:
        n_dev = min(device_subset, x.shape[0])
        S_dev = _samples_for(model, device_samples)
        log(f"{label}: device non-idealities on {n_dev} images, S={S_dev}")
        result["devices"] = {"n": n_dev, "samples": S_dev, **_devices(model, x[:n_dev], y[:n_dev], S_dev, device, seed)}
    result["seconds"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------- output


def _figure(ncols: int, width: float = 4.2, height: float = 3.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height))
    axes = [fig.add_subplot(1, ncols, k + 1) for k in range(ncols)]
    return fig, axes


def _write_figures(results: list[dict], out: Path) -> dict[str, Path]:
    from .figures import plot_accuracy_vs_samples, plot_ood_histograms, plot_reliability, plot_robustness, plot_rotation

    written = {}
    fig, axes = _figure(len(results))
    for ax, r in zip(axes, results):
        plot_reliability(r["reliability"], ax=ax)
        ax.set_title(f"{r['label']}: ECE {100 * r['uncertainty']['ece']:.2f}%")
    written["reliability"] = save_figure(out / "reliability.png", fig, new=True)

    fig, (ax,) = _figure(1, 5.5)
    plot_accuracy_vs_samples(
        {r["label"]: {int(k): v for k, v in r["accuracy_vs_samples"].items()} for r in results}, ax=ax
    )
    written["accuracy_vs_samples"] = save_figure(out / "accuracy_vs_samples.png", fig, new=True)

    fig, axes = _figure(2, 5.0)
    series = {r["label"]: r["rotation"] for r in results}
    plot_rotation(results[0]["rotation"]["angle"], series, axes=axes)
    written["rotation"] = save_figure(out / "rotation.png", fig, new=True)

    with_ood = [r for r in results if "ood" in r]
    if with_ood:
        fig, axes = _figure(len(with_ood))
        for ax, r in zip(axes, with_ood):
            o = r["ood"]
            plot_ood_histograms(
                o["entropy"]["scores_in"],
                o["entropy"]["scores_out"],
                ax=ax,
                label=f"{r['label']}: predictive entropy, {r['dataset']} vs {o['dataset']}",
            )
        written["ood"] = save_figure(out / "ood.png", fig, new=True)

    with_dev = [r for r in results if "devices" in r]
    if with_dev:
        sweeps = [
            ("levels", "conductance levels (linear)"),
            (f"levels_nonlinear_{NONLINEAR:g}", f"conductance levels (nonlinearity {NONLINEAR:g})"),
            (f"levels_clip_{CLIP_STD:g}std", f"conductance levels (linear, range +-{CLIP_STD:g} rms(w))"),
            ("p_spread", "std of per-synapse blank-out p"),
            ("read_noise", "read noise std / max |w|"),
        ]
        sweeps = [(k, t) for k, t in sweeps if any(k in r["devices"] for r in with_dev)]
        fig, axes = _figure(len(sweeps))
        for ax, (key, xlabel) in zip(axes, sweeps):
            curves = {
                r["label"]: {float(k): v for k, v in r["devices"][key].items() if k != "full"}
                for r in with_dev
                if key in r["devices"]
            }
            plot_robustness(curves, ax=ax, xlabel=xlabel)
            if key.startswith("levels"):
                ax.set_xscale("log", base=2)
        written["devices"] = save_figure(out / "devices.png", fig, new=True)
    return written


def _unique_labels(results: list[dict]) -> list[str]:
    """The runs' labels, a repeated one followed by its run folder's name ("dcnn (dcnn-s1)"), as
    the analysis figures do; then by the whole path, and a number, while two are still equal
    (figures and tables are keyed by label: a repeated one would hide a run)."""
    labels = [str(r["label"]) for r in results]
    for describe in (lambda r: Path(r["run_dir"]).name, lambda r: str(r["run_dir"])):
        counts = {lab: labels.count(lab) for lab in labels}
        labels = [f"{r['label']} ({describe(r)})" if counts[lab] > 1 else lab for r, lab in zip(results, labels)]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


def format_markdown(results: list[dict]) -> str:
    head = (
        "| model | S | error % | NLL | Brier | ECE % | entropy | MI | OOD AUROC (entropy) | "
        "OOD AUROC (MI) |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        u, o = r["uncertainty"], r.get("ood", {})
        auc = [f"{o[k]['auroc']:.3f}" if k in o else "—" for k in ("entropy", "mutual_information")]
        rows.append(
            f"| {r['label']} | {r['samples']} | {100 * u['error']:.2f} | {u['nll']:.4f} | "
            f"{u['brier']:.4f} | {100 * u['ece']:.2f} | {u['predictive_entropy']:.4f} | "
            f"{u['mutual_information']:.4f} | {auc[0]} | {auc[1]} |"
        )
    return head + "\n".join(rows) + "\n"


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def evaluate_runs(
    run_dirs: Sequence, out, *, command: str = "", log: Callable[[str], None] = print, **options
) -> dict[str, Path]:
    """:func:`evaluate_run` on each run; writes evaluation.json, evaluation.md and the PNGs."""
    if not run_dirs:
        raise ValueError("give at least one run directory")
    out = check_new_outputs(out, EVALUATE_FILES)  # found now, not after the evaluation
    _check_shift_options(options.get("angles", DEFAULT_ANGLES), options.get("ood", "auto"))
    for d in run_dirs:
        if not (Path(d) / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"{Path(d) / 'checkpoint.pt'} not found: {d} is not a finished nsm run directory")
    results = [evaluate_run(d, log=log, **options) for d in run_dirs]
    for r, label in zip(results, _unique_labels(results)):
        r["label"] = label
    out.mkdir(parents=True, exist_ok=True)
    written = _write_figures(results, out)
    written["json"] = write_json(out / "evaluation.json", _json_safe({"command": command, "runs": results}), new=True)
    md = (f"# nsm evaluate\n\n`{command}`\n\n" if command else "") + format_markdown(results)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(md)

    written["markdown"] = atomic_write(out / "evaluation.md", write, new=True)
    log(md)
    return written
