"""Ridge regression for many features and few clips, with penalties and feature counts chosen by cross-validation
over folds of whole source videos (clips of one person on both sides would reward memorising the person). The
ridge baseline and the network's linear paths are fitted here."""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import numpy as np

RIDGE_ALPHAS = np.logspace(-2, 6, 25)  # penalties ridge_fit chooses from, per trait, on standardised features
RIDGE_FOLDS = 5
SCREEN_SIZES = (1, 2, 4, 8, 16, 32, 64)  # how many features screened_ridge_fit may keep for a trait
CONSTANT_STD = 1e-8  # a feature whose std over the training clips is below this is constant there: no weight


def ridge_basis(z: np.ndarray, y: np.ndarray, gram: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For centred z (N, P) and y (N, T): basis (P, K), eigenvalues (K,) and projections (K, T) such that the ridge
    coefficients for penalty a are basis @ (projections / (eigenvalues + a)); from the smaller of the two Gram
    matrices (z @ z.T given as `gram` where it is known), so thousands of lagged correlations cost no more than
    their clips."""
    if z.shape[1] <= z.shape[0]:
        eigenvalues, v = np.linalg.eigh(z.T @ z)  # (P,), (P, P)
        return v, np.clip(eigenvalues, 0, None), v.T @ (z.T @ y)
    q, eigenvalues, proj = dual_basis(z @ z.T if gram is None else gram, y)
    return z.T @ q, eigenvalues, proj


def dual_basis(gram: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the Gram matrix (N, N) of centred features and centred y (N, T): its eigenvectors (N, N), eigenvalues
    (N,) and the projections of y on them (N, T)."""
    eigenvalues, q = np.linalg.eigh(gram)
    return q, np.clip(eigenvalues, 0, None), q.T @ y


def centred_fold_grams(gram: np.ndarray, train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From gram = z @ z.T (N, N), the Gram matrices of z less its mean over the `train` rows: among the training
    rows (n, n) and of the validation rows against them (m, n), without touching z's columns again."""
    within, across = gram[np.ix_(train, train)], gram[np.ix_(val, train)]
    row_means = within.mean(axis=1)  # (n,) each training row against the training mean
    overall = row_means.mean()
    return (within - row_means[:, None] - row_means[None, :] + overall,
            across - across.mean(axis=1, keepdims=True) - row_means[None, :] + overall)


def video_codes(groups: Sequence[str]) -> np.ndarray:
    """(N,) an integer code per clip, one per source video, numbered from 0."""
    return np.unique(np.asarray(groups), return_inverse=True)[1]


def cross_validation_folds(groups: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to RIDGE_FOLDS (train, validation) index pairs that never split a source video; with one video, its
    clips are the groups. The same groups give the same folds, computed once (a fit of the linear paths asks
    thousands of times)."""
    return list(folds_of_codes(tuple(video_codes(groups).tolist())))


@functools.lru_cache(maxsize=256)
def folds_of_codes(codes: tuple[int, ...]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    from sklearn.model_selection import GroupKFold

    units = np.asarray(codes) if max(codes, default=0) > 0 else np.arange(len(codes))
    n_folds = min(RIDGE_FOLDS, units.max(initial=-1) + 1)
    if n_folds < 2:
        return ()
    return tuple((train, val) for train, val in GroupKFold(n_splits=n_folds).split(units, groups=units))


class RidgeFit(NamedTuple):
    """A ridge fit for the raw features: weight (T, P), bias (T,), and each training clip's prediction from the
    cross-validation fold that held its source video out (N, T), at the choice (penalty, feature count) the other
    folds make: what the fit is worth on people it has not seen, choice included."""

    weight: np.ndarray
    bias: np.ndarray
    held_out: np.ndarray


def fold_errors(trials: np.ndarray, y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(C, K, T) the squared error of each candidate's held-out predictions trials (C, N, T) on each fold's
    validation clips."""
    return np.stack([((trials[:, val] - y[val]) ** 2).sum(axis=1) for _, val in folds], axis=1)


def chosen_by_other_folds(trials: np.ndarray, errors: np.ndarray,
                          folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(N, T) held-out predictions with each fold's clips scored by the candidate (of trials (C, N, T), with
    fold_errors (C, K, T)) that the other folds' errors choose: the candidate best on all folds is best partly by
    chance on each, so its own held-out predictions flatter it, and a gate that weighs them would open on that."""
    out = np.zeros(trials.shape[1:])
    for k, (_, val) in enumerate(folds):
        choice = (errors.sum(axis=1) - errors[:, k]).argmin(axis=0)  # (T,)
        out[val] = trials[choice, val[:, None], np.arange(trials.shape[2])]
    return out


def ridge_alphas(z: np.ndarray, y: np.ndarray, groups: Sequence[str], gram: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(T,) the penalty of RIDGE_ALPHAS with the lowest squared error per trait over folds of whole source videos
    (clips of one person in training and validation would reward memorising the person), and (N, T) each clip's
    held-out prediction at the penalty the other folds choose (chosen_by_other_folds; without folds: the largest
    penalty and the mean label). Given gram = z @ z.T (features wider than clips), each fold is solved from it in
    the clips' space."""
    folds = cross_validation_folds(groups)
    if not folds:
        return np.full(y.shape[1], RIDGE_ALPHAS[-1]), np.broadcast_to(y.mean(axis=0), y.shape).copy()
    held_out = np.zeros((len(RIDGE_ALPHAS),) + y.shape)  # (A, N, T)
    for train, val in folds:
        y_mean = y[train].mean(axis=0)
        if gram is None:
            z_mean = z[train].mean(axis=0)
            basis, eigenvalues, proj = ridge_basis(z[train] - z_mean, y[train] - y_mean)
            scores = (z[val] - z_mean) @ basis  # (N_val, K)
        else:
            within, across = centred_fold_grams(gram, train, val)
            q, eigenvalues, proj = dual_basis(within, y[train] - y_mean)
            scores = across @ q  # (N_val, N_train)
        shrunk = proj[None] / (eigenvalues[None, :, None] + RIDGE_ALPHAS[:, None, None])  # (A, K, T)
        held_out[:, val] = y_mean + np.einsum("nk,akt->ant", scores, shrunk)  # (A, N_val, T)
    errors = fold_errors(held_out, y, folds)  # (A, K, T)
    return RIDGE_ALPHAS[errors.sum(axis=1).argmin(axis=0)], chosen_by_other_folds(held_out, errors, folds)


def ridge_fit(features: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> RidgeFit:
    """Ridge regression on standardised features with a penalty per trait chosen by ridge_alphas (a trait without
    signal gets a flat fit)."""
    features, y = np.asarray(features, np.float64), np.asarray(y, np.float64)
    mean, std = features.mean(axis=0), features.std(axis=0)
    scale = np.where(std > CONSTANT_STD, std, 1.0)  # a constant column gets no weight, wherever it varies later
    z = (features - mean) / scale  # (N, P), centred
    y_mean = y.mean(axis=0)
    gram = z @ z.T if z.shape[1] > z.shape[0] else None  # (N, N), for features wider than clips
    basis, eigenvalues, proj = ridge_basis(z, y - y_mean, gram)
    alphas, held_out = ridge_alphas(z, y, groups, gram)
    coef = basis @ (proj / (eigenvalues[:, None] + alphas[None, :]))  # (P, T)
    weight = coef.T / scale[None, :]
    return RidgeFit(weight, y_mean - weight @ mean, held_out)


def strongest_features(features: np.ndarray, targets: np.ndarray, count: int) -> np.ndarray:
    """(T, count): for each column of targets (N, T), the indices of the `count` columns of features (N, P) most
    correlated with it, either sign, strongest first."""
    std = features.std(axis=0)
    z = (features - features.mean(axis=0)) / np.where(std > CONSTANT_STD, std, np.inf)  # a constant column scores 0
    return np.argsort(-np.abs(z.T @ (targets - targets.mean(axis=0))), axis=0, kind="stable")[:count].T


def screened_ridge_fit(features: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> RidgeFit:
    """Per trait, ridge_fit on the few features most correlated with it, for many candidate features of which few
    matter (ridge on all of them spreads its weight thin), or on all of them where the signal is spread over many
    (ridge_fit; a ratio of two rhythms, read by many kernels a little each). How many (SCREEN_SIZES, or all) is
    chosen per trait by cross-validation over source videos, screening inside each fold, so the held-out
    predictions are honest (each fold's at the count the other folds choose); the other features get weight 0."""
    features, y = np.asarray(features, np.float64), np.asarray(y, np.float64)
    groups = np.asarray(groups)
    weight = np.zeros((y.shape[1], features.shape[1]))
    bias, held_out = y.mean(axis=0), np.broadcast_to(y.mean(axis=0), y.shape).copy()
    folds = cross_validation_folds(groups)
    if not folds:
        return RidgeFit(weight, bias, held_out)
    sizes = [size for size in SCREEN_SIZES if size <= features.shape[1]]
    trials = np.zeros((len(sizes) + 1,) + y.shape)  # (S + 1, N, T) held-out predictions per size, then dense
    for train, val in folds:
        ranked = strongest_features(features[train], y[train], sizes[-1])  # (T, largest size)
        for t in range(y.shape[1]):
            kept_train, kept_val = features[np.ix_(train, ranked[t])], features[np.ix_(val, ranked[t])]
            for s, size in enumerate(sizes):
                fit = ridge_fit(kept_train[:, :size], y[train, t:t + 1], groups[train])
                trials[s, val, t] = kept_val[:, :size] @ fit.weight[0] + fit.bias[0]
    dense = ridge_fit(features, y, groups)
    trials[-1] = dense.held_out
    errors = fold_errors(trials, y, folds)  # (S + 1, K, T)
    best = errors.sum(axis=1).argmin(axis=0)  # (T,)
    ranked = strongest_features(features, y, sizes[-1])  # (T, largest size)
    for t in range(y.shape[1]):
        if best[t] == len(sizes):
            weight[t], bias[t] = dense.weight[t], dense.bias[t]
            continue
        columns = ranked[t, :sizes[best[t]]]
        fit = ridge_fit(features[:, columns], y[:, t:t + 1], groups)
        weight[t, columns], bias[t] = fit.weight[0], fit.bias[0]
    return RidgeFit(weight, bias, chosen_by_other_folds(trials, errors, folds))
