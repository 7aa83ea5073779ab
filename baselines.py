"""The baselines every evaluation shows beside the networks, fitted on the training split only, one Baseline each
in BASELINES (attn_test.py and compare.py iterate over it):

  train-mean   the mean training label (R^2 ~ 0; on First Impressions 1 - MAE ~ 0.88 already);
  ridge        ridge regression on each clip's mean and std of every feature (alpha per trait by cross-validation
               over source videos: ridge_fit, which the network's linear paths use too);
  minirocket   aeon's MiniRocket transform of the standardised frames, zero-padded (or cut) to the longest
               training clip, then RidgeCV: the standard strong method for time-series regression;
  quant        aeon's QUANT transform (quantiles over dyadic intervals of the series, its first and second
               differences and its periodogram; Dempster et al. 2024) of the same series, then extra trees (200,
               a tenth of the features per split, QUANT's own settings), one forest for the five traits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from dataset import Normalization, clip_statistics, labels_of
from openface import Clip
from ridge import ridge_fit

MINIROCKET_ALPHAS = np.logspace(-1, 5, 13)
QUANT_TREES = 200
QUANT_FEATURE_SHARE = 0.1


def train_mean(train: Sequence[Clip], test: Sequence[Clip], features: Sequence[str], seed: int) -> np.ndarray:
    return np.repeat(labels_of(train).mean(axis=0, keepdims=True), len(test), axis=0)


def ridge_on_statistics(train: Sequence[Clip], test: Sequence[Clip], features: Sequence[str] = (),
                        seed: int = 0) -> np.ndarray:
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


def aeon_series(train: Sequence[Clip], test: Sequence[Clip], features: Sequence[str]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Both splits as aeon collections (N, F, T): standardised on the training frames, zero-padded or cut to the
    longest training clip."""
    normalization = Normalization.fit("standard", train, features)
    length = max(c.n_frames for c in train)
    return (padded_series(train, normalization, features, length),
            padded_series(test, normalization, features, length))


def minirocket(train: Sequence[Clip], test: Sequence[Clip], features: Sequence[str], seed: int) -> np.ndarray | None:
    """MiniRocket + RidgeCV predictions, or None when aeon is not installed."""
    try:
        from aeon.transformations.collection.convolution_based import MiniRocket
    except ImportError:
        return None
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, test_x = aeon_series(train, test, features)
    transform = MiniRocket(random_state=seed, n_jobs=1).fit(train_x)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=MINIROCKET_ALPHAS))
    model.fit(transform.transform(train_x), labels_of(train))
    return np.clip(model.predict(transform.transform(test_x)), 0, 1)


def quant(train: Sequence[Clip], test: Sequence[Clip], features: Sequence[str], seed: int) -> np.ndarray | None:
    """QUANT + extra trees predictions, or None when aeon is not installed."""
    try:
        from aeon.transformations.collection.interval_based import QUANTTransformer
    except ImportError:
        return None
    from sklearn.ensemble import ExtraTreesRegressor

    train_x, test_x = aeon_series(train, test, features)
    transform = QUANTTransformer().fit(train_x)
    forest = ExtraTreesRegressor(n_estimators=QUANT_TREES, max_features=QUANT_FEATURE_SHARE, random_state=seed,
                                 n_jobs=-1)
    forest.fit(transform.transform(train_x), labels_of(train))
    return np.clip(forest.predict(transform.transform(test_x)), 0, 1)


@dataclass(frozen=True)
class Baseline:
    """One baseline: predict(train clips, test clips, feature names, seed) -> (N_test, 5), or None when the
    package it needs is not installed."""

    name: str  # as tables and file names say it
    title: str  # as headers say it
    predict: Callable[[Sequence[Clip], Sequence[Clip], Sequence[str], int], np.ndarray | None]
    peer: bool = True  # a method the network is judged against (the training mean is the floor, not a peer)


BASELINES: tuple[Baseline, ...] = (
    Baseline("train-mean", "train-mean", train_mean, peer=False),
    Baseline("ridge", "ridge", ridge_on_statistics),
    Baseline("minirocket", "MiniRocket", minirocket),
    Baseline("quant", "QUANT", quant),
)
PEERS: tuple[str, ...] = tuple(b.name for b in BASELINES if b.peer)


def baseline_predictions(train: Sequence[Clip], test: Sequence[Clip], features: Sequence[str],
                         seed: int) -> dict[str, np.ndarray | None]:
    """Each baseline's (N_test, 5) predictions; None for one that cannot run here (aeon not installed)."""
    return {b.name: b.predict(train, test, features, seed) for b in BASELINES}
