"""Regression metrics per trait: MSE, MAE, R^2, 1 - MAE (ChaLearn's mean accuracy), Pearson r and Lin's CCC,
with group-bootstrap confidence intervals."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from openface import TRAITS

METRICS: tuple[str, ...] = ("mse", "mae", "r2", "acc", "pearson", "ccc")  # acc = 1 - MAE


def _r2(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    ss_res = ((y - p) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.nan)


def _pearson(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    yc, pc = y - y.mean(axis=0), p - p.mean(axis=0)
    denom = np.sqrt((yc**2).sum(axis=0) * (pc**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (yc * pc).sum(axis=0) / denom, np.nan)


def _ccc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Lin's concordance correlation: 2 cov / (var_y + var_p + (mean_y - mean_p)^2), population moments."""
    my, mp = y.mean(axis=0), p.mean(axis=0)
    cov = ((y - my) * (p - mp)).mean(axis=0)
    denom = y.var(axis=0) + p.var(axis=0) + (my - mp) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 2 * cov / denom, np.nan)


def metric_arrays(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric per trait column of (N, K) truth `y` and predictions `p`."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    mae = np.abs(y - p).mean(axis=0)
    return {"mse": ((y - p) ** 2).mean(axis=0), "mae": mae, "r2": _r2(y, p), "acc": 1 - mae,
            "pearson": _pearson(y, p), "ccc": _ccc(y, p)}


def regression_table(y: np.ndarray, p: np.ndarray, traits: Sequence[str] = TRAITS) -> pd.DataFrame:
    """Rows: traits plus 'mean' (the average over traits); columns: METRICS."""
    arrays = metric_arrays(y, p)
    table = pd.DataFrame(arrays, index=list(traits))[list(METRICS)]
    table.loc["mean"] = table.mean(axis=0)
    return table


def group_members(groups: Sequence[str] | None, n: int) -> list[np.ndarray]:
    """The row indices of each group (source video) in order of first appearance; each row alone without groups."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    codes, _ = pd.factorize(pd.Series(list(groups)))
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes))[:-1])


def bootstrap_samples(y: np.ndarray, p: np.ndarray, groups: Sequence[str] | None, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Each metric per trait column on n_boot resamples of whole groups (source videos) when given: {metric:
    (n_boot, K)}. The resamples depend only on the seed and the groups, so two predictions' samples are paired."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    rng = np.random.default_rng(seed)
    members = group_members(groups, len(y))
    samples = {m: np.empty((n_boot, y.shape[1])) for m in METRICS}
    for b in range(n_boot):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        for m, values in metric_arrays(y[rows], p[rows]).items():
            samples[m][b] = values
    return samples


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, ...) bootstrap samples -> the percentile interval's (low, high), NaN samples left out."""
    alpha = (1 - level) / 2
    with warnings.catch_warnings():  # undefined metrics (e.g. r of a constant predictor) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(samples, alpha, axis=0), np.nanquantile(samples, 1 - alpha, axis=0)


def bootstrap_intervals(y: np.ndarray, p: np.ndarray, groups: Sequence[str] | None, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95, traits: Sequence[str] = TRAITS) -> dict[str, pd.DataFrame]:
    """Percentile intervals for every metric, resampling whole groups (source videos) when given.

    Returns {'low': table, 'high': table} shaped like regression_table.
    """
    samples = bootstrap_samples(y, p, groups, n_boot, seed)
    bounds = {m: percentile_interval(np.concatenate([v, v.mean(axis=1, keepdims=True)], axis=1), level)
              for m, v in samples.items()}
    index = list(traits) + ["mean"]
    return {side: pd.DataFrame({m: bounds[m][k] for m in METRICS}, index=index)
            for k, side in enumerate(("low", "high"))}
