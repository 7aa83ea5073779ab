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


def bootstrap_intervals(y: np.ndarray, p: np.ndarray, groups: Sequence[str] | None, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95, traits: Sequence[str] = TRAITS) -> dict[str, pd.DataFrame]:
    """Percentile intervals for every metric, resampling whole groups (source videos) when given.

    Returns {'low': table, 'high': table} shaped like regression_table.
    """
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(len(y))]
    else:
        codes, uniques = pd.factorize(pd.Series(list(groups)))
        order = np.argsort(codes, kind="stable")
        members = np.split(order, np.cumsum(np.bincount(codes))[:-1])
    samples = {m: np.empty((n_boot, len(traits) + 1)) for m in METRICS}
    for b in range(n_boot):
        pick = rng.integers(0, len(members), len(members))
        rows = np.concatenate([members[i] for i in pick])
        arrays = metric_arrays(y[rows], p[rows])
        for m in METRICS:
            samples[m][b, :-1] = arrays[m]
            samples[m][b, -1] = arrays[m].mean()
    alpha = (1 - level) / 2
    index = list(traits) + ["mean"]
    with warnings.catch_warnings():  # undefined metrics (e.g. r of a constant predictor) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low = pd.DataFrame({m: np.nanquantile(samples[m], alpha, axis=0) for m in METRICS}, index=index)
        high = pd.DataFrame({m: np.nanquantile(samples[m], 1 - alpha, axis=0) for m in METRICS}, index=index)
    return {"low": low, "high": high}

