"""The baselines every evaluation shows beside the networks, fitted on the training split only:

  train-mean   the mean training label (R^2 ~ 0; on First Impressions 1 - MAE ~ 0.88 already);
  ridge        ridge regression on each clip's mean and std of every feature (alpha per trait by cross-validation
               over source videos: ridge_fit, which the network's linear paths use too);
  minirocket   aeon's MiniRocket transform of the standardised frames, zero-padded (or cut) to the longest
               training clip, then RidgeCV: the standard strong method for time-series regression.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dataset import Normalization, clip_statistics
from openface import Clip
from ridge import ridge_fit

MINIROCKET_ALPHAS = np.logspace(-1, 5, 13)


def labels_of(clips: Sequence[Clip]) -> np.ndarray:
    return np.stack([c.label for c in clips])  # (N, 5)


def train_mean(train: Sequence[Clip], test: Sequence[Clip]) -> np.ndarray:
    return np.repeat(labels_of(train).mean(axis=0, keepdims=True), len(test), axis=0)


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
