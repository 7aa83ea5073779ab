"""The fit of the default network's linear paths and the per-trait gates that weigh them and the branches.

Before training, the statistics path is fitted to the labels by ridge regression (the ridge baseline, left at the
training mean for a trait it does not predict), then each gated path (featurizers.GATED_PATHS) to the labels
together with the clip statistics, and the gated paths are stacked over the statistics path by their held-out
predictions; all are then fixed. After training, the gates are set on the validation clips. Cost: one ridge fit
per gated path (C of them), and per trait a gate search of GATE_STEPS weights per path, then of at most
GATE_STEPS ** C combinations of those that earned a place, before training (15,625 for the six paths today), and of
GATE_STEPS ** (C + 1) with the branches after it (78,125)."""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch
from scipy.stats import norm

from dataset import INFERENCE_BATCH, Scaler, bucketed_batches, collate, labels_of
from featurizers import HINGE_QUANTILES, STATS_PATH, LinearPath
from model import HybridNet, ModelConfig
from openface import Clip
from ridge import RidgeFit, ridge_fit, screened_ridge_fit, video_codes

GATE_STEPS = 5  # gates are chosen from 0, 0.25, ..., 1
GRID_CELLS = 2 ** 22  # at most this many (clip, weights) errors of a gate search are held at once
GATE_Z = 1.64  # gates leave their default for a trait only when that beats it by this many standard errors; a
# contribution alone among C, by the z of a one-sided level C times smaller (earned_contributions)


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
        return {path.key: model.path_inputs(path, x, lengths, raw=True).double()
                for path in model.cfg.linear_paths}
    return batched(model, clips, scaler, device, compute)


def set_levels(model: HybridNet, train: Sequence[Clip], scaler: Scaler, device: torch.device) -> None:
    """Set the levels of each linear path that has them from one inference batch of training clips, drawn with a
    fixed seed."""
    leveled = [path for path in model.cfg.linear_paths if path.levels is not None]
    if not leveled:
        return
    generator = torch.Generator().manual_seed(0)
    sample = torch.randperm(len(train), generator=generator)[:INFERENCE_BATCH].sort().values.numpy()
    batch = collate(train, sample, scaler)
    for path in leveled:
        levels = path.fit_levels(batch.x.to(device), batch.lengths.to(device), generator)
        getattr(model, path.levels).copy_(levels)


def set_linear(layer: torch.nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def column_means(values: np.ndarray) -> np.ndarray:
    """(P,) each column's mean over the rows (clips) where it is not NaN; 0 for a column that is NaN in every row
    (a constant, which then gets no weight)."""
    present = ~np.isnan(values)
    return np.nansum(values, axis=0) / np.maximum(present.sum(axis=0), 1)


def knots_of(values: np.ndarray) -> np.ndarray:
    """(len(HINGE_QUANTILES), P): each column's HINGE_QUANTILES over the training clips (rows)."""
    return np.quantile(values, HINGE_QUANTILES, axis=0)


def statistics_fit(features: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> RidgeFit:
    """The statistics path's fit: ridge_fit, shrunk per trait toward the training mean by the weight (0, 0.25, ...,
    1) that choose_gates gives its held-out predictions over the mean: 0 where they do not beat the mean
    significantly, so a trait that clip statistics cannot predict starts from its mean, not from a fit to noise. Its
    held-out predictions are shrunk alike."""
    fit = ridge_fit(features, y, groups)
    mean = y.mean(axis=0)
    share = choose_gates(np.broadcast_to(mean, y.shape), [fit.held_out - mean], y, groups=groups)[0]  # (5,)
    return RidgeFit(fit.weight * share[:, None], share * fit.bias + (1 - share) * mean,
                    share * fit.held_out + (1 - share) * mean)


def gated_path_fit(path: LinearPath, cfg: ModelConfig, values: np.ndarray, y: np.ndarray, groups: Sequence[str],
                   stats: RidgeFit, base: np.ndarray) -> RidgeFit:
    """One gated path's fit as its layer holds it (values: its finished inputs, (N, layer width)), with held-out
    predictions of the contribution it adds to `base` (N, 5), the statistics path's predictions the gates weigh it
    against. Read with the clip statistics (path.reads_statistics), it is fitted to the labels together with them
    and holds the difference from the statistics path (so it can take over a trait the statistics read in the wrong
    form), base being their held-out predictions; else it is fitted to what the statistics path misses, base being
    its fit on the training clips."""
    fitter = screened_ridge_fit if path.screened else ridge_fit
    if not path.reads_statistics(cfg):
        return fitter(values, y - base, groups)
    fit = fitter(values, y, groups)
    own = values.shape[1] - stats.weight.shape[1]
    weight = fit.weight - np.pad(stats.weight, ((0, 0), (own, 0)))  # (5, layer width)
    return RidgeFit(weight, fit.bias - stats.bias, fit.held_out - base)


def fit_linear_paths(model: HybridNet, train: Sequence[Clip], scaler: Scaler, device: torch.device) -> np.ndarray:
    """Fit the statistics path to the training labels (statistics_fit: ridge, closed form, penalties by
    cross-validation over source videos, kept per trait only where it predicts), then each gated path (after setting
    its fill and knots; gated_path_fit: ridge_fit, or screened_ridge_fit for a path of many inputs few of which
    matter), and stack them: the gated paths' weights per trait are those their held-out predictions (from the folds
    that held each clip's source video out) support over the statistics path's (choose_gates over source videos:
    each path earns its place alone, or where none does the best of them by one test over all, then those that did
    are weighed together; calibrate_gates, on the few validation clips, has no such pooled test), so two paths that
    read one signal share it rather than count it twice. Returns those weights, (len(cfg.gated_paths), 5):
    calibrate_gates departs from them only where the validation clips say so significantly."""
    set_levels(model, train, scaler, device)
    inputs = path_inputs(model, train, scaler, device)
    y, groups = labels_of(train), [c.group for c in train]
    moments = inputs[STATS_PATH.key]
    stats = statistics_fit(moments, y, groups)
    paths, cfg = model.cfg.gated_paths, model.cfg
    base = stats.held_out if cfg.paths_with_statistics else moments @ stats.weight.T + stats.bias  # (N, 5)
    with torch.no_grad():
        set_linear(model.stats, stats.weight, stats.bias)
        fits = []
        for path in paths:
            if path.fill is not None:
                getattr(model, path.fill).copy_(torch.as_tensor(column_means(inputs[path.key])))
            if path.knots is not None:
                getattr(model, path.knots).copy_(torch.as_tensor(knots_of(inputs[path.key])))
            values = model.finished_inputs(path, torch.as_tensor(inputs[path.key]), torch.as_tensor(moments)).numpy()
            fit = gated_path_fit(path, cfg, values, y, groups, stats, base)
            set_linear(getattr(model, path.key), fit.weight, fit.bias)
            fits.append(fit)
    if not fits:
        return np.zeros((0, y.shape[1]))
    return choose_gates(base, [fit.held_out for fit in fits], y, groups=groups, pooled_test=True)


def unit_sums(values: np.ndarray, units: np.ndarray) -> np.ndarray:
    """(N, ...) values summed over the rows of each unit code 0 .. U - 1: (U, ...)."""
    out = np.zeros((units.max(initial=-1) + 1,) + values.shape[1:])
    np.add.at(out, units, values)
    return out


def choose_gates(base: np.ndarray, contributions: Sequence[np.ndarray], y: np.ndarray,
                 default: np.ndarray | None = None, groups: Sequence[str] | None = None,
                 pooled_test: bool = False) -> np.ndarray:
    """Per-trait weights of contributions added to a base prediction (all (N, 5)), each from 0, 1/(GATE_STEPS - 1),
    ..., 1, departing from the default weights ((len(contributions), 5); all 0 unless given) only where that is a
    significant gain, so nothing adds noise to a trait it does not help. Two stages per trait: first the
    contributions earn a place (earned_contributions; pooled_test: also by one test over all of them where none
    does alone), then the weights of those that did are chosen together, the rest at their default. Returns
    (len(contributions), 5)."""
    steps = np.linspace(0, 1, GATE_STEPS)
    start = np.zeros((len(contributions), y.shape[1])) if default is None else np.asarray(default)  # (C, 5)
    units = video_codes(groups) if groups is not None else np.arange(len(y))
    gates = start.astype(np.float32)
    for t in range(y.shape[1]):
        parts = np.stack([c[:, t] for c in contributions], axis=1)  # (N, C)

        def unit_errors(grid: np.ndarray) -> np.ndarray:  # (G, C) weights -> (U, G) squared errors per unit
            chunks = np.array_split(grid, max(1, len(grid) * len(y) // GRID_CELLS))  # (N, G) a chunk at a time
            return np.concatenate([unit_sums((np.clip(base[:, t, None] + parts @ chunk.T, 0, 1) - y[:, t, None]) ** 2,
                                             units) for chunk in chunks], axis=1)

        default_errors = unit_errors(start[None, :, t])[:, 0]  # (U,)
        alone = [unit_errors(weights_varying(start[:, t], [c], steps)) for c in range(len(contributions))]
        earned = earned_contributions(default_errors, alone, pooled_test)
        if earned:
            grid = weights_varying(start[:, t], earned, steps)  # (G, C)
            gates[:, t] = grid[int(np.argmin(unit_errors(grid).sum(axis=0)))]
    return gates


def earned_contributions(default_errors: np.ndarray, alone: Sequence[np.ndarray], pooled_test: bool) -> list[int]:
    """The contributions that earn a place, given the errors per unit of the default (U,) and of each contribution's
    weights varied alone ((U, GATE_STEPS) each): those whose gain is significant alone at a family-wise level over
    the contributions (honest_gain_is_significant at GATE_Z, Bonferroni); with pooled_test, where none is, the one
    chosen among all their weights together when that choice is significant at GATE_Z (one honest test over all of
    them, so a trait that one contribution reads is not left at its default for want of a Bonferroni margin)."""
    z = float(norm.ppf(1 - norm.sf(GATE_Z) / len(alone)))
    earned = [c for c, errors in enumerate(alone) if honest_gain_is_significant(default_errors, errors, z)]
    if earned or not pooled_test:
        return earned
    every = np.concatenate(alone, axis=1)  # (U, C * GATE_STEPS)
    if not honest_gain_is_significant(default_errors, every, GATE_Z):
        return []
    return [int(np.argmin(every.sum(axis=0))) // alone[0].shape[1]]


def weights_varying(default: np.ndarray, varying: Sequence[int], steps: np.ndarray) -> np.ndarray:
    """(len(steps) ** len(varying), C): every combination of steps for the contributions `varying`, the others
    at their default (C,)."""
    grid = np.repeat(default[None, :], len(steps) ** len(varying), axis=0)
    grid[:, list(varying)] = np.array(list(itertools.product(steps, repeat=len(varying))))
    return grid


def honest_gain_is_significant(default_errors: np.ndarray, errors: np.ndarray, z: float) -> bool:
    """Whether choosing among candidate weights (errors (U, G) per unit: a clip or a source video) beats the
    default (default_errors (U,)) by more than z standard errors, one-sided and paired over units, each unit scored
    by the candidate the other units choose: the best of several candidates on the units that chose it would beat
    the default by chance."""
    chosen_by_others = np.argmin(errors.sum(axis=0)[None, :] - errors, axis=1)  # (U,)
    gain = default_errors - errors[np.arange(len(errors)), chosen_by_others]  # (U,)
    return len(gain) > 1 and gain.mean() > z * gain.std(ddof=1) / np.sqrt(len(gain))


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
