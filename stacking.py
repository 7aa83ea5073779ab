"""The fit of the default network's linear paths and the per-trait gates that weigh them and the branches.

Before training, the statistics path is fitted to the labels by ridge regression (it is the ridge baseline), then
each gated path (featurizers.GATED_PATHS) on what it misses, and the gated paths are stacked by their held-out
predictions; all are then fixed. After training, the gates are set on the validation clips. Cost: one ridge fit
per gated path (C of them), and a gate search of GATE_STEPS ** C weight combinations per trait before training
(125 for the three paths today) and GATE_STEPS ** (C + 1) after it (625)."""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch

from dataset import INFERENCE_BATCH, Scaler, bucketed_batches, collate, labels_of
from featurizers import STATS_PATH
from model import HybridNet
from openface import Clip
from ridge import ridge_fit, screened_ridge_fit, video_codes

GATE_STEPS = 5  # gates are chosen from 0, 0.25, ..., 1
GATE_Z = 1.64  # gates leave their default for a trait only when that beats it by this many standard errors


def batched(model: HybridNet, clips: Sequence[Clip], scaler: Scaler, device: torch.device, compute
            ) -> dict[str, np.ndarray]:
    """compute(x, lengths) -> {name: (B, P) tensor} over the clips in inference batches: {name: (N, P) array}."""
    model.eval()
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for index in bucketed_batches([c.n_frames for c in clips], INFERENCE_BATCH, seed=0, epoch=0, shuffle=False):
            batch = collate(clips, index, scaler)
            for name, values in compute(batch.x.to(device), batch.lengths.to(device)).items():
                values = values.cpu().numpy()
                out.setdefault(name, np.zeros((len(clips), values.shape[1]), values.dtype))[index] = values
    return out


def path_contributions(model: HybridNet, clips: Sequence[Clip], scaler: Scaler,
                       device: torch.device) -> dict[str, np.ndarray]:
    """Each linear path's contribution before its gates, by key, and the branches' ('branches'): (N, 5) each."""
    return batched(model, clips, scaler, device, model.contributions)


def path_inputs(model: HybridNet, clips: Sequence[Clip], scaler: Scaler, device: torch.device) -> dict[str, np.ndarray]:
    """Each linear path's featurizer over the clips, by key: (N, width), NaN where a clip lacks an input."""
    def compute(x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:  # x: zero beyond each length
        return {path.key: model.path_inputs(path, x, lengths, filled=False).double()
                for path in model.cfg.linear_paths}
    return batched(model, clips, scaler, device, compute)


def set_linear(layer: torch.nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def missing_filled(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, P) with each NaN replaced by its column's mean over the clips that have it (0 for a column no
    clip has, which then gets no weight), and those means (P,)."""
    present = ~np.isnan(values)
    fill = np.nansum(values, axis=0) / np.maximum(present.sum(axis=0), 1)  # (P,)
    return np.where(present, values, fill), fill


def fit_linear_paths(model: HybridNet, train: Sequence[Clip], scaler: Scaler, device: torch.device) -> np.ndarray:
    """Fit the statistics path to the training labels (ridge_fit: closed form, penalties by cross-validation over
    source videos), then each gated path to what it misses (ridge_fit, or screened_ridge_fit for a path of many
    inputs few of which matter), and stack them: the gated paths' weights per trait are those their held-out
    predictions (from the folds that held each clip's source video out) support together (choose_gates over
    source videos), so two paths that read one signal share it rather than count it twice. Returns those weights,
    (len(cfg.gated_paths), 5): calibrate_gates departs from them only where the validation clips say so
    significantly."""
    inputs = path_inputs(model, train, scaler, device)
    y, groups = labels_of(train), [c.group for c in train]
    weight, bias, _ = ridge_fit(inputs[STATS_PATH.key], y, groups)
    base = inputs[STATS_PATH.key] @ weight.T + bias  # (N, 5)
    paths = model.cfg.gated_paths
    with torch.no_grad():
        set_linear(model.stats, weight, bias)
        fits = []
        for path in paths:
            if path.fill is not None:
                inputs[path.key], fill = missing_filled(inputs[path.key])
                getattr(model, path.fill).copy_(torch.as_tensor(fill, dtype=torch.float32))
            fit = (screened_ridge_fit if path.screened else ridge_fit)(inputs[path.key], y - base, groups)
            set_linear(getattr(model, path.key), fit.weight, fit.bias)
            fits.append(fit)
    if not fits:
        return np.zeros((0, y.shape[1]))
    return choose_gates(base, [fit.held_out for fit in fits], y, groups=groups)


def choose_gates(base: np.ndarray, contributions: Sequence[np.ndarray], y: np.ndarray,
                 default: np.ndarray | None = None, groups: Sequence[str] | None = None) -> np.ndarray:
    """Per-trait weights of contributions added to a base prediction (all (N, 5)): for each trait the combination
    of weights in 0, 1/(GATE_STEPS - 1), ..., 1 with the lowest error, kept only when its gain over the default
    weights ((len(contributions), 5); all 0 unless given) is significant (one-sided paired test, GATE_Z standard
    errors, over clips or, with groups, over the summed gains of each source video); else the default, so
    nothing adds noise to a trait it does not help. Returns (len(contributions), 5)."""
    grid = np.array(list(itertools.product(np.linspace(0, 1, GATE_STEPS), repeat=len(contributions))))  # (G, C)
    start = np.zeros((len(contributions), y.shape[1])) if default is None else np.asarray(default)  # (C, 5)
    units = video_codes(groups) if groups is not None else np.arange(len(y))
    gates = start.astype(np.float32)
    for t in range(y.shape[1]):
        parts = np.stack([c[:, t] for c in contributions], axis=1)  # (N, C)
        errors = (np.clip(base[:, t, None] + parts @ grid.T, 0, 1) - y[:, t, None]) ** 2  # (N, G)
        start_errors = (np.clip(base[:, t] + parts @ start[:, t], 0, 1) - y[:, t]) ** 2  # (N,)
        best = int(np.argmin(errors.mean(axis=0)))
        gain = np.bincount(units, weights=start_errors - errors[:, best])  # (units,) gain over the default
        if len(gain) > 1 and gain.mean() > GATE_Z * gain.std(ddof=1) / np.sqrt(len(gain)):
            gates[:, t] = grid[best]
    return gates


def open_branches_only(model: HybridNet) -> None:
    """The gates while the branches train: the branches' open, the gated paths' closed."""
    model.branch_gates.fill_(1.0)
    for path in model.cfg.gated_paths:
        model.gates_of(path).fill_(0.0)


def calibrate_gates(model: HybridNet, clips: Sequence[Clip], scaler: Scaler, device: torch.device,
                    defaults: np.ndarray) -> np.ndarray:
    """Set the weights of the gated linear paths and of the branches from validation clips (choose_gates over
    their source videos, departing from the paths at `defaults` (fit_linear_paths) and the branches unused);
    returns them, (len(cfg.gated_paths) + 1, 5), the branches last."""
    contribution = path_contributions(model, clips, scaler, device)
    y = labels_of(clips)
    paths = model.cfg.gated_paths
    start = np.zeros((len(paths) + 1, y.shape[1]))
    start[:-1] = defaults
    weighed = [contribution[p.key] for p in paths] + [contribution["branches"]]
    gates = choose_gates(contribution[STATS_PATH.key], weighed, y, start, groups=[c.group for c in clips])
    with torch.no_grad():
        for path, row in zip(paths, gates):
            model.gates_of(path).copy_(torch.as_tensor(row))
        model.branch_gates.copy_(torch.as_tensor(gates[-1]))
    return gates
