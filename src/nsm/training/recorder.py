"""The paper's analyses (SI 4.5, 4.11; docs/design.md §8): statistics recorded during training.

:class:`Recorder` is what ``nsm train --record`` attaches to a run. At each record point
(before training, then after every epoch, or every ``every`` optimizer steps) it stores,
per weight layer ``W1, W2, ...`` (every module with a ``weight`` matrix or filter bank, in
network order, the readout included):

- the histogram of the weights on fixed edges (``span`` initial standard deviations either
  side of zero; values outside fall into the end bins);
- the weights' mean and std, and both relative to their initial values (mean - initial
  mean, std / initial std);
- the mean gradient and the mean absolute gradient of the weights, averaged over the
  optimizer steps since the previous record point;
- the 15th/50th/85th percentiles of the *input of the last hidden layer's units* over a
  fixed probe batch of training images (all units and images pooled). For an NSM layer the
  input is its drive t = E[u] / sqrt(2 Var[u]), the argument of the erf in P(z = +1) =
  (1 + erf t) / 2; for any other layer it is the u of sigmoid(u), ReLU(u), ...: the layer's
  output, or the output of the batch normalization that follows it (in training mode, with
  the probe batch's statistics);
- optionally, the gradient agreement with *companion* models (:func:`gradient_agreement`):
  the companion is given this run's current weights (:func:`copy_weights`: batch
  normalization included), both compute the gradient of the cross-entropy on the probe
  batch, and the cosine similarity of the two weight gradients is stored per layer.

Everything the recorder draws (noise in the probe passes) comes from a forked random state,
and what its passes in training mode change in the models' buffers (the running statistics
of batch normalization) is put back after them (:func:`kept_buffers`), so a run with
``--record`` trains exactly as the same run without it. The files, rewritten
atomically at each record point, are in ``RUN_DIR/record/``; :mod:`nsm.studies.figures` reads them::

    layers.json       the layers (name, module path, type, shape, initial mean and std), the
                      probed quantity, the probe batch's size and the companions
    stats.csv         step, epoch, layer, w_mean, w_std, w_mean_drift, w_std_ratio, w_abs_max,
                      g_mean, g_abs_mean, g_steps
    histograms.npz    steps, epochs, and per layer L: L_edges, L_counts (records x bins)
    percentiles.csv   step, epoch, layer, p15, p50, p85, mean, std
    grad_cosine.csv   step, epoch, layer, companion, cosine
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import stat
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.layers import NSMLayer
from ..utils.io import atomic_write, write_json

__all__ = [
    "Recorder",
    "weight_layers",
    "weight_stats",
    "histogram_edges",
    "histogram_counts",
    "cosine_similarity",
    "percentiles",
    "unit_input",
    "copy_weights",
    "norm_layers",
    "layer_gradients",
    "gradient_agreement",
    "kept_buffers",
    "make_recorder",
    "PERCENTILES",
]

PERCENTILES = (15, 50, 85)
STATS_COLUMNS = [  # stats.csv, as nsm.studies.figures reads it
    "step",
    "epoch",
    "layer",
    "w_mean",
    "w_std",
    "w_mean_drift",
    "w_std_ratio",
    "w_abs_max",
    "g_mean",
    "g_abs_mean",
    "g_steps",
]


# ---------------------------------------------------------------------------- statistics


def weight_layers(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """``(name, module path, module)`` of every layer with a weight matrix or filter bank
    (a ``weight`` parameter with 2 or more dimensions), in network order, named W1, W2, ..."""
    found = []
    for path, module in model.named_modules():
        w = module._parameters.get("weight")
        if isinstance(w, nn.Parameter) and w.dim() >= 2:
            found.append((f"W{len(found) + 1}", path, module))
    return found


def weight_stats(w: Tensor, init_mean: float, init_std: float) -> dict:
    """Mean, std (unbiased), their drift from the initial values and the largest |w|."""
    w = w.detach().double()
    mean, std = w.mean().item(), w.std().item() if w.numel() > 1 else 0.0
    return {
        "w_mean": mean,
        "w_std": std,
        "w_mean_drift": mean - init_mean,
        "w_std_ratio": std / init_std if init_std > 0 else math.nan,
        "w_abs_max": w.abs().max().item(),
    }


def histogram_edges(init_std: float, *, bins: int = 100, span: float = 10.0) -> np.ndarray:
    """``bins + 1`` equal-width edges over [-span * init_std, +span * init_std]."""
    if bins < 1 or not span > 0:
        raise ValueError(f"need bins >= 1 and span > 0, got bins={bins}, span={span}")
    half = span * (init_std if init_std > 0 else 1.0)
    return np.linspace(-half, half, bins + 1)


def histogram_counts(w: Tensor, edges: np.ndarray) -> np.ndarray:
    """Counts of ``w`` in the bins ``[e_k, e_k+1)`` (the last one closed); values outside the
    edges are counted in the end bins, so the counts sum to ``w.numel()``."""
    values = w.detach().flatten().double().cpu()
    inner = torch.as_tensor(edges[1:-1], dtype=torch.float64)
    index = torch.bucketize(values, inner, right=True)  # 0 .. bins-1, end bins open-ended
    return torch.bincount(index, minlength=len(edges) - 1).numpy().astype(np.int64)


def cosine_similarity(a: Tensor, b: Tensor) -> float:
    """cos(a, b) of the flattened tensors; NaN if either is the zero vector."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    if a.shape != b.shape:
        raise ValueError(f"cosine of tensors with different sizes: {a.numel()} and {b.numel()}")
    na, nb = a.norm().item(), b.norm().item()
    if na == 0 or nb == 0:
        return math.nan
    return float((a @ b).item() / (na * nb))


def percentiles(x: Tensor, qs: Sequence[float] = PERCENTILES) -> list[float]:
    """Percentiles of all entries of ``x`` (linear interpolation between order statistics)."""
    values = x.detach().flatten().double().cpu().numpy()
    if values.size == 0:
        raise ValueError("percentiles of an empty tensor")
    return [float(v) for v in np.percentile(values, list(qs))]


def unit_input(layer: nn.Module, x: Tensor) -> Tensor:
    """What the units of ``layer`` threshold or squash, given the layer's input ``x``:
    the drive t of an NSM layer (P(z = +1) = (1 + erf t) / 2), else the layer's output."""
    with torch.no_grad():
        return layer.drive(x) if isinstance(layer, NSMLayer) else layer(x)


def norm_layers(model: nn.Module) -> dict[tuple[str, int], nn.Module]:
    """Every batch normalization (of any dimension) of ``model``, keyed by where it stands: the
    name of the weight layer before it in network order (:func:`weight_layers`; ``""`` before
    the first) and its rank among those after that layer, e.g. ``("W1", 0)``."""
    found: dict[tuple[str, int], nn.Module] = {}
    last, count, rank = "", 0, 0
    for _, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            found[(last, rank)] = module
            rank += 1
            continue
        w = module._parameters.get("weight")
        if isinstance(w, nn.Parameter) and w.dim() >= 2:
            count += 1
            last, rank = f"W{count}", 0
    return found


def _copy_tensors(source: nn.Module, target: nn.Module) -> None:
    """Copy every parameter and buffer of ``source`` (its own, not its children's) that
    ``target`` has under the same name and shape."""
    own = dict(target.named_parameters(recurse=False)) | dict(target.named_buffers(recurse=False))
    for name, t in [*source.named_parameters(recurse=False), *source.named_buffers(recurse=False)]:
        q = own.get(name)
        if q is not None and q.shape == t.shape:
            q.copy_(t)


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Give ``target`` the current state of ``source``.

    Two networks of the same architecture (the same ``state_dict`` keys and shapes) get the
    whole state: every parameter and buffer. Otherwise the weight layers are matched one by
    one (:func:`weight_layers` order; their number and weight shapes must agree) and every
    parameter that both layers of a pair have under the same name and shape is copied (weight,
    bias, and the magnitude if both have one); so is every parameter and buffer (scale, shift,
    running statistics) of the batch normalizations that stand at the same place in both
    (:func:`norm_layers`). A batch normalization that only one of them has keeps its own."""
    src, dst = weight_layers(source), weight_layers(target)
    if len(src) != len(dst):
        raise ValueError(f"cannot match layers: {len(src)} weight layers against {len(dst)}")
    for (name, _, a), (_, _, b) in zip(src, dst):
        if a.weight.shape != b.weight.shape:
            raise ValueError(
                f"cannot match layer {name}: weight shapes {tuple(a.weight.shape)} and {tuple(b.weight.shape)}"
            )
    state, own = source.state_dict(), target.state_dict()
    with torch.no_grad():
        if state.keys() == own.keys() and all(state[k].shape == own[k].shape for k in state):
            for k, t in state.items():
                own[k].copy_(t)
            return
        for (_, _, a), (_, _, b) in zip(src, dst):
            for pname, p in a.named_parameters(recurse=False):
                q = b._parameters.get(pname)
                if isinstance(q, nn.Parameter) and q.shape == p.shape:
                    q.copy_(p)
        norms = norm_layers(target)
        for where, a in norm_layers(source).items():
            if where in norms:
                _copy_tensors(a, norms[where])


@contextlib.contextmanager
def kept_buffers(*modules: nn.Module):
    """The buffers of ``modules`` as they were before the block, put back after it (in place):
    a pass in training mode moves the running statistics of batch normalization
    (``running_mean``, ``running_var``, ``num_batches_tracked``), which a measurement must not."""
    saved = [(m, {name: b.detach().clone() for name, b in m.named_buffers()}) for m in modules]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for name, b in buffers.items():
                    m.get_buffer(name).copy_(b)


def layer_gradients(model: nn.Module, x: Tensor, y: Tensor, *, draws: int = 1) -> dict[str, Tensor]:
    """Per weight layer, the gradient of the cross-entropy on (x, y) w.r.t. its weight,
    averaged over ``draws`` stochastic passes in the model's mode (batch normalization in
    training mode: the statistics of (x, y)). ``.grad`` and the buffers (:func:`kept_buffers`)
    are left untouched."""
    params = [m.weight for _, _, m in weight_layers(model)]
    total = [torch.zeros_like(p) for p in params]
    with kept_buffers(model):
        for _ in range(draws):
            loss = F.cross_entropy(model(x), y)
            for t, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    t.add_(g)
    return {name: t / draws for (name, _, _), t in zip(weight_layers(model), total)}


def gradient_agreement(
    model: nn.Module, companion: nn.Module, x: Tensor, y: Tensor, *, draws: int = 1
) -> dict[str, float]:
    """Per layer, the cosine between the weight gradients of ``model`` and of ``companion``
    given ``model``'s current weights (:func:`copy_weights`), on the same batch."""
    copy_weights(model, companion)
    ga = layer_gradients(model, x, y, draws=draws)
    gb = layer_gradients(companion, x, y, draws=draws)
    return {name: cosine_similarity(ga[name], gb[name]) for name in ga}


# ---------------------------------------------------------------------------- the recorder


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(row[c]) for c in columns])
    text = buf.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


class Recorder:
    """Records the statistics above during training into ``run_dir / "record"``.

    Call :meth:`after_backward` after every backward pass (before the optimizer step),
    :meth:`after_step` after every step and :meth:`end_epoch` after every epoch; or use
    ``fit(config)`` with ``config.record = True``, which does it.

    Args:
        model: the network being trained.
        run_dir: the run directory; files go to ``run_dir/record``.
        probe_x, probe_y: a fixed batch for the percentiles and the gradient agreement.
        steps_per_epoch: optimizer steps per epoch (for the fractional epoch column).
        every: record every ``every`` steps; 0 (default): after every epoch.
        companions: ``{name: module}`` of companion models for the gradient agreement.
        draws: stochastic passes averaged per gradient in the agreement.
        bins, span: histogram bins over +-span initial stds.
    """

    def __init__(
        self,
        model: nn.Module,
        run_dir,
        *,
        probe_x: Tensor,
        probe_y: Tensor,
        steps_per_epoch: int,
        every: int = 0,
        companions: Optional[dict] = None,
        draws: int = 4,
        bins: int = 100,
        span: float = 10.0,
    ) -> None:
        if every < 0 or steps_per_epoch < 1 or draws < 1:
            raise ValueError(
                f"need every >= 0, steps_per_epoch >= 1, draws >= 1; got {every}, {steps_per_epoch}, {draws}"
            )
        self.model, self.dir = model, Path(run_dir) / "record"
        self.probe_x, self.probe_y = probe_x, probe_y
        self.steps_per_epoch, self.every, self.draws = steps_per_epoch, every, draws
        self.companions = dict(companions or {})
        self.layers = weight_layers(model)
        if not self.layers:
            raise ValueError("the model has no weight layers to record")
        self.init = {
            name: (m.weight.detach().double().mean().item(), m.weight.detach().double().std().item())
            for name, _, m in self.layers
        }
        self.edges = {name: histogram_edges(s, bins=bins, span=span) for name, (_, s) in self.init.items()}
        # the last hidden layer: the weight layer before the readout
        self.hidden = self.layers[-2] if len(self.layers) >= 2 else None
        self.step = 0
        self.stats: list[dict] = []
        self.pct: list[dict] = []
        self.cos: list[dict] = []
        self.steps: list[int] = []
        self.counts: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in self.layers}
        self._reset_grads()

    def _reset_grads(self) -> None:
        self._g_sum = {name: None for name, _, _ in self.layers}
        self._g_steps = 0

    # -- hooks for the training loop
    def after_backward(self, model: Optional[nn.Module] = None) -> None:
        """Accumulate the mean and mean |.| of every weight gradient (no host sync)."""
        for name, _, m in self.layers:
            g = m.weight.grad
            if g is None:
                continue
            pair = torch.stack([g.mean(), g.abs().mean()]).detach()
            acc = self._g_sum[name]
            self._g_sum[name] = pair if acc is None else acc + pair
        self._g_steps += 1

    def after_step(self) -> None:
        self.step += 1
        if self.every and self.step % self.every == 0:
            self.record()

    def end_epoch(self) -> None:
        if not self.every:
            self.record()

    # -- resuming (nsm.training.checkpoint)
    def state_dict(self) -> dict:
        """Everything recorded so far and the gradient accumulators (tensors, no numpy)."""
        return {
            "step": self.step,
            "stats": self.stats,
            "pct": self.pct,
            "cos": self.cos,
            "steps": self.steps,
            "counts": {k: [torch.from_numpy(c) for c in v] for k, v in self.counts.items()},
            "g_sum": self._g_sum,
            "g_steps": self._g_steps,
            "init": self.init,
            "edges": {k: torch.from_numpy(np.asarray(e)) for k, e in self.edges.items()},
            "companions": {k: m.state_dict() for k, m in self.companions.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if sorted(state["counts"]) != sorted(self.counts) or sorted(state["companions"]) != sorted(self.companions):
            raise ValueError(
                f"recorder state of layers {sorted(state['counts'])} and companions "
                f"{sorted(state['companions'])} does not fit layers {sorted(self.counts)} "
                f"and companions {sorted(self.companions)}"
            )
        self.step, self.stats, self.pct, self.cos = state["step"], state["stats"], state["pct"], state["cos"]
        self.steps, self._g_steps = state["steps"], state["g_steps"]
        dev = self.probe_x.device  # a checkpoint is read onto the CPU
        self._g_sum = {k: None if g is None else g.to(dev) for k, g in state["g_sum"].items()}
        self.counts = {k: [c.numpy() for c in v] for k, v in state["counts"].items()}
        self.init = {k: tuple(v) for k, v in state["init"].items()}
        self.edges = {k: e.numpy() for k, e in state["edges"].items()}
        for k, m in self.companions.items():
            m.load_state_dict(state["companions"][k])

    # -- recording
    def record(self) -> None:
        """Take one record point now and rewrite the files."""
        if self.steps and self.steps[-1] == self.step:
            return
        epoch = self.step / self.steps_per_epoch
        key = {"step": self.step, "epoch": epoch}
        for name, _, m in self.layers:
            mean0, std0 = self.init[name]
            row = {**key, "layer": name, **weight_stats(m.weight, mean0, std0)}
            acc = self._g_sum[name]
            if acc is None or self._g_steps == 0:
                row.update(g_mean=math.nan, g_abs_mean=math.nan, g_steps=0)
            else:
                g_mean, g_abs = (acc / self._g_steps).tolist()
                row.update(g_mean=g_mean, g_abs_mean=g_abs, g_steps=self._g_steps)
            self.stats.append(row)
            self.counts[name].append(histogram_counts(m.weight, self.edges[name]))
        self._reset_grads()
        self.steps.append(self.step)
        was_training = self.model.training
        with torch.random.fork_rng(devices=self._rng_devices()):
            if self.hidden is not None:
                values = self._probe_unit_input()
                p = percentiles(values)
                self.pct.append(
                    {
                        **key,
                        "layer": self.hidden[0],
                        **dict(zip(("p15", "p50", "p85"), p)),
                        "mean": values.double().mean().item(),
                        "std": values.double().std().item(),
                    }
                )
            for cname, companion in self.companions.items():
                for layer, c in gradient_agreement(
                    self.model, companion, self.probe_x, self.probe_y, draws=self.draws
                ).items():
                    self.cos.append({**key, "layer": layer, "companion": cname, "cosine": c})
        self.model.train(was_training)
        self.save()

    def _rng_devices(self) -> list:
        dev = self.probe_x.device
        return [dev] if dev.type == "cuda" else []

    def _probed(self) -> nn.Module:
        """The module whose output is the last hidden layer's unit input: the layer itself (an
        NSM layer: its drive), or the batch normalization that follows it in its
        ``nn.Sequential`` (dcnn-bn, sigmoid-bn, bnn: the units squash BN(u), not u)."""
        layer = self.hidden[2]
        if isinstance(layer, NSMLayer):
            return layer
        parent_path, _, child = self.hidden[1].rpartition(".")
        parent = self.model.get_submodule(parent_path)
        if isinstance(parent, nn.Sequential):
            names = [name for name, _ in parent.named_children()]
            at = names.index(child) + 1
            if at < len(names) and isinstance(parent[at], nn.modules.batchnorm._BatchNorm):
                return parent[at]
        return layer

    def _probe_unit_input(self) -> Tensor:
        layer = self._probed()
        seen: list[Tensor] = []

        def hook(mod, args, out):  # NSM: the drive from the input; else the output itself
            seen.append(mod.drive(args[0]) if isinstance(mod, NSMLayer) else out)

        handle = layer.register_forward_hook(hook)
        try:
            self.model.train()  # the units as training sees them (batch normalization: batch statistics)
            with torch.no_grad(), kept_buffers(self.model):
                self.model(self.probe_x)
        finally:
            handle.remove()
        if not seen:
            raise RuntimeError(f"layer {self.hidden[0]} ({self.hidden[1]}) was not called by the model")
        return seen[0]

    def save(self) -> None:
        _own_folder(self.dir)
        write_json(
            self.dir / "layers.json",
            {
                "version": 1,
                "steps_per_epoch": self.steps_per_epoch,
                "record_every": self.every,
                "layers": [
                    {
                        "name": name,
                        "module": path,
                        "type": type(m).__name__,
                        "shape": list(m.weight.shape),
                        "init_mean": self.init[name][0],
                        "init_std": self.init[name][1],
                    }
                    for name, path, m in self.layers
                ],
                "hidden": None
                if self.hidden is None
                else {
                    "layer": self.hidden[0],
                    "quantity": (
                        "NSM drive t, P(z=+1) = (1 + erf t)/2"
                        if isinstance(self.hidden[2], NSMLayer)
                        else f"unit input u ({type(self._probed()).__name__} output)"
                    ),
                },
                "probe": int(self.probe_x.shape[0]),
                "companions": list(self.companions),
            },
        )
        _write_csv(self.dir / "stats.csv", STATS_COLUMNS, self.stats)
        _write_csv(
            self.dir / "percentiles.csv", ["step", "epoch", "layer", "p15", "p50", "p85", "mean", "std"], self.pct
        )
        _write_csv(self.dir / "grad_cosine.csv", ["step", "epoch", "layer", "companion", "cosine"], self.cos)
        arrays = {
            "steps": np.asarray(self.steps, dtype=np.int64),
            "epochs": np.asarray(self.steps, dtype=np.float64) / self.steps_per_epoch,
        }
        for name, _, _ in self.layers:
            arrays[f"{name}_edges"] = self.edges[name]
            arrays[f"{name}_counts"] = np.stack(self.counts[name])

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(self.dir / "histograms.npz", write)


def _own_folder(path: Path) -> None:
    """Make ``path`` (a run's ``record/``) if missing; refuse anything there that is not a plain
    folder, a symbolic link above all: nsm would write through it into a folder it did not make."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        found = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise ValueError(
            f"{path} is {found}; nsm writes a run's record only into a folder it made there "
            "(it does not write through links): move it away and run again"
        )


def make_recorder(
    model: nn.Module,
    run_dir,
    *,
    train_x: Tensor,
    train_y: Tensor,
    device,
    steps_per_epoch: int,
    every: int,
    probe: int,
    companions: Sequence[str],
    build: Callable[[str], nn.Module],
    seed: int,
    draws: int = 4,
) -> Recorder:
    """A :class:`Recorder` with a probe batch of ``probe`` training images (all of them if there
    are fewer; layers.json says how many) chosen with ``seed`` (its own generator) and the
    companion models built by ``build(name)``."""
    gen = torch.Generator().manual_seed(seed + 7919)
    idx = torch.randperm(train_x.shape[0], generator=gen)[:probe]
    with torch.random.fork_rng(devices=[]):  # building companions must not move the run's RNG
        comps = {name: build(name).to(device) for name in companions}
    for name, companion in comps.items():  # refuse a companion of another shape before training
        try:
            copy_weights(model, companion)
        except ValueError as exc:
            raise ValueError(f"companion model {name!r} does not fit this network: {exc}") from None
    return Recorder(
        model,
        run_dir,
        probe_x=train_x[idx].to(device),
        probe_y=train_y[idx].to(device),
        steps_per_epoch=steps_per_epoch,
        every=every,
        companions=comps,
        draws=draws,
    )
