"""The baselines every evaluation shows beside the networks, fitted on the training split only:

  train-mean   the mean training label (R^2 ~ 0; on First Impressions 1 - MAE ~ 0.88 already);
  ridge        ridge regression on each clip's mean and std of every feature (alpha per trait by cross-validation
               over source videos: ridge_fit, which the network's linear paths use too);
  minirocket   aeon's MiniRocket transform of the standardised frames, zero-padded (or cut) to the longest
               training clip, then RidgeCV: the standard strong method for time-series regression.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from dataset import Normalization, clip_statistics
from openface import Clip

RIDGE_ALPHAS = np.logspace(-2, 6, 25)  # penalties ridge_fit chooses from, per trait, on standardised features
RIDGE_FOLDS = 5
SCREEN_SIZES = (1, 2, 4, 8, 16, 32, 64)  # how many features screened_ridge_fit may keep for a trait
MINIROCKET_ALPHAS = np.logspace(-1, 5, 13)


def labels_of(clips: Sequence[Clip]) -> np.ndarray:
    return np.stack([c.label for c in clips])  # (N, 5)


def train_mean(train: Sequence[Clip], test: Sequence[Clip]) -> np.ndarray:
    return np.repeat(labels_of(train).mean(axis=0, keepdims=True), len(test), axis=0)


def ridge_basis(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For centred z (N, P) and y (N, T): basis (P, K), eigenvalues (K,) and projections (K, T) such that the ridge
    coefficients for penalty a are basis @ (projections / (eigenvalues + a)); from the smaller of the two Gram
    matrices, so thousands of lagged correlations cost no more than their clips."""
    if z.shape[1] <= z.shape[0]:
        eigenvalues, v = np.linalg.eigh(z.T @ z)  # (P,), (P, P)
        return v, np.clip(eigenvalues, 0, None), v.T @ (z.T @ y)
    eigenvalues, q = np.linalg.eigh(z @ z.T)  # (N,), (N, N)
    return z.T @ q, np.clip(eigenvalues, 0, None), q.T @ y


def video_codes(groups: Sequence[str]) -> np.ndarray:
    """(N,) an integer code per clip, one per source video, numbered from 0."""
    return np.unique(np.asarray(groups), return_inverse=True)[1]


def cross_validation_folds(groups: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to RIDGE_FOLDS (train, validation) index pairs that never split a source video; with one video, its
    clips are the groups."""
    from sklearn.model_selection import GroupKFold

    codes = video_codes(groups)
    if codes.max(initial=0) == 0:
        codes = np.arange(len(codes))
    n_folds = min(RIDGE_FOLDS, codes.max(initial=-1) + 1)
    return list(GroupKFold(n_splits=n_folds).split(codes, groups=codes)) if n_folds >= 2 else []


class RidgeFit(NamedTuple):
    """A ridge fit for the raw features: weight (T, P), bias (T,), and each training clip's prediction from the
    cross-validation fold that held its source video out, at the chosen penalty (N, T): what the fit is worth on
    people it has not seen."""

    weight: np.ndarray
    bias: np.ndarray
    held_out: np.ndarray


def ridge_alphas(z: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(T,) the penalty of RIDGE_ALPHAS with the lowest squared error per trait over folds of whole source videos
    (clips of one person in training and validation would reward memorising the person), and (N, T) each clip's
    held-out prediction at that penalty (without folds: the largest penalty and the mean label)."""
    folds = cross_validation_folds(groups)
    if not folds:
        return np.full(y.shape[1], RIDGE_ALPHAS[-1]), np.broadcast_to(y.mean(axis=0), y.shape).copy()
    held_out = np.zeros((len(RIDGE_ALPHAS),) + y.shape)  # (A, N, T)
    for train, val in folds:
        z_mean, y_mean = z[train].mean(axis=0), y[train].mean(axis=0)
        basis, eigenvalues, proj = ridge_basis(z[train] - z_mean, y[train] - y_mean)
        shrunk = proj[None] / (eigenvalues[None, :, None] + RIDGE_ALPHAS[:, None, None])  # (A, K, T)
        held_out[:, val] = y_mean + np.einsum("nk,akt->ant", (z[val] - z_mean) @ basis, shrunk)  # (A, N_val, T)
    best = ((held_out - y) ** 2).sum(axis=1).argmin(axis=0)  # (T,)
    return RIDGE_ALPHAS[best], held_out[best, :, np.arange(y.shape[1])].T


def ridge_fit(features: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> RidgeFit:
    """Ridge regression on standardised features with a penalty per trait chosen by ridge_alphas (a trait without
    signal gets a flat fit)."""
    features, y = np.asarray(features, np.float64), np.asarray(y, np.float64)
    mean, std = features.mean(axis=0), features.std(axis=0)
    scale = np.where(std > 1e-8, std, 1.0)  # a constant column gets no weight, wherever it varies later
    z = (features - mean) / scale  # (N, P), centred
    y_mean = y.mean(axis=0)
    basis, eigenvalues, proj = ridge_basis(z, y - y_mean)
    alphas, held_out = ridge_alphas(z, y, groups)
    coef = basis @ (proj / (eigenvalues[:, None] + alphas[None, :]))  # (P, T)
    weight = coef.T / scale[None, :]
    return RidgeFit(weight, y_mean - weight @ mean, held_out)


def strongest_features(features: np.ndarray, target: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` columns of features (N, P) most correlated with target (N,), either sign."""
    std = features.std(axis=0)
    z = (features - features.mean(axis=0)) / np.where(std > 1e-8, std, np.inf)  # a constant column scores 0
    return np.argsort(-np.abs(z.T @ (target - target.mean())), kind="stable")[:count]


def screened_ridge_fit(features: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> RidgeFit:
    """Per trait, ridge_fit on the few features most correlated with it, for many candidate features of which few
    matter (ridge on all of them spreads its weight thin). How many (SCREEN_SIZES) is chosen by cross-validation
    over source videos, screening inside each fold, so the held-out predictions are honest; the other features
    get weight 0."""
    features, y = np.asarray(features, np.float64), np.asarray(y, np.float64)
    groups = np.asarray(groups)
    weight = np.zeros((y.shape[1], features.shape[1]))
    bias, held_out = y.mean(axis=0), np.broadcast_to(y.mean(axis=0), y.shape).copy()
    folds = cross_validation_folds(groups)
    if not folds:
        return RidgeFit(weight, bias, held_out)
    sizes = [size for size in SCREEN_SIZES if size <= features.shape[1]]
    for t in range(y.shape[1]):
        trials = np.zeros((len(sizes), len(y)))  # (S, N) held-out predictions per size
        for train, val in folds:
            ranked = strongest_features(features[train], y[train, t], sizes[-1])
            for s, size in enumerate(sizes):
                fit = ridge_fit(features[train][:, ranked[:size]], y[train, t:t + 1], groups[train])
                trials[s, val] = features[val][:, ranked[:size]] @ fit.weight[0] + fit.bias[0]
        best = int(((trials - y[:, t]) ** 2).sum(axis=1).argmin())
        columns = strongest_features(features, y[:, t], sizes[best])
        fit = ridge_fit(features[:, columns], y[:, t:t + 1], groups)
        weight[t, columns], bias[t], held_out[:, t] = fit.weight[0], fit.bias[0], trials[best]
    return RidgeFit(weight, bias, held_out)


def ridge_on_statistics(train: Sequence[Clip], test: Sequence[Clip]) -> np.ndarray:
    weight, bias, _ = ridge_fit(clip_statistics(train), labels_of(train), [c.group for c in train])
    return np.clip(clip_statistics(test) @ weight.T + bias, 0, 1)


def padded_series(clips: Sequence[Clip], normalization: Normalization, features: Sequence[str],
                  length: int) -> np.ndarray:
    """(N, F, length) standardised frames, zero-padded or cut to `length` (aeon's collection layout)."""
    scaler = normalization.scaler(features, ())
    out = np.zeros((len(clips), len(features), length), np.float32)
    for i, clip in enumerate(clips):
        frames = scaler.transform(clip.frames[:length])  # (T, F)
        out[i, :, : len(frames)] = frames.T
    return out


def minirocket(train: Sequence[Clip], test: Sequence[Clip], features: Sequence[str], seed: int) -> np.ndarray | None:
    """MiniRocket + RidgeCV predictions, or None when aeon is not installed."""
    try:
        from aeon.transformations.collection.convolution_based import MiniRocket
    except ImportError:
        return None
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    normalization = Normalization.fit("standard", train, features)
    length = max(c.n_frames for c in train)
    transform = MiniRocket(random_state=seed, n_jobs=1).fit(padded_series(train, normalization, features, length))
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=MINIROCKET_ALPHAS))
    model.fit(transform.transform(padded_series(train, normalization, features, length)), labels_of(train))
    test_features = transform.transform(padded_series(test, normalization, features, length))
    return np.clip(model.predict(test_features), 0, 1)


def baseline_predictions(train: Sequence[Clip], test: Sequence[Clip], features: Sequence[str],
                         seed: int) -> dict[str, np.ndarray | None]:
    """Each baseline's (N_test, 5) predictions; None for one that cannot run here (aeon not installed)."""
    return {"train-mean": train_mean(train, test), "ridge": ridge_on_statistics(train, test),
            "minirocket": minirocket(train, test, features, seed)}
