"""The default network's pieces: the ridge-fitted linear paths, the per-trait gates, ensembles, and compare.py end
to end."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GroupKFold

from baselines import ridge_on_statistics
from checkpoint import load_checkpoint
from conftest import ROOT, TINY_MODEL, one_line_error, run_script
from dataset import Normalization, Scaler, labels_of, predict
from errors import DataError
from featurizers import (GATED_PATHS, HINGE_QUANTILES, INTERVAL_DEPTH, INTERVAL_QUANTILES, INTERVAL_STATISTICS,
                         KERNEL_DILATIONS, KERNELS, KERNELS_PER_DILATION, co_moments, interval_quantiles,
                         kernel_levels, kernel_shares, level_quantiles, z_scored)
from layers import valid_mask
from model import HybridNet, ModelConfig, build_model
from openface import FEATURE_COLUMNS, TRAITS, Clip
from ridge import RIDGE_ALPHAS, cross_validation_folds, ridge_fit, screened_ridge_fit
from stacking import (calibrate_gates, choose_gates, column_means, fit_linear_paths, honest_gain_is_significant,
                      path_contributions, weights_varying)


def clips_with_mean_signal(n: int, seed: int) -> list[Clip]:
    """Labels that are a linear function of each clip's mean AU12 (extroversion) or pure noise (the others)."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        frames = rng.normal(0, 1, (int(rng.integers(50, 90)), 22)).astype(np.float32)
        frames[:, 8] += rng.normal(0, 1)
        label = np.r_[0.5 + 0.1 * frames[:, 8].mean(), rng.uniform(0.3, 0.7, 4)].astype(np.float32)
        clips.append(Clip(f"c{i}", f"c{i}.000.mp4", f"c{i}", frames, label))
    return clips


def paths_only(*keys: str) -> dict[str, bool]:
    """ModelConfig options that keep the gated paths with these keys and turn every other one off."""
    return {path.enabled_by: path.key in keys for path in GATED_PATHS}


def small_network(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(conv_channels=(8,), conv_kernels=(3,), conv_dilations=(1,), head_hidden=(8,),
                                   embed_dim=8, lstm_hidden=8, attn_dim=8, attn_hops=2, **options))


def test_the_statistics_path_is_the_ridge_baseline_where_it_predicts_and_the_mean_where_it_does_not():
    clips = clips_with_mean_signal(120, 0)
    scaler = Normalization.fit("standard", clips, FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())
    model = small_network(temporal_path=False)
    fit_linear_paths(model, clips, scaler, torch.device("cpu"))
    parts = path_contributions(model, clips, scaler, torch.device("cpu"))
    linear, residual = parts["stats"], parts["branches"]
    assert np.abs(residual).max() == 0  # the head starts at zero: the untrained network is the ridge fit
    y = np.stack([c.label for c in clips])
    truth_r2 = 1 - ((linear[:, 0] - y[:, 0]) ** 2).sum() / ((y[:, 0] - y[:, 0].mean()) ** 2).sum()
    assert truth_r2 > 0.95
    # the same fit as attn_test's ridge baseline (raw instead of normalised statistics: equal up to float error)
    np.testing.assert_allclose(np.clip(linear[:, 0], 0, 1), ridge_on_statistics(clips, clips)[:, 0], atol=2e-3)
    np.testing.assert_allclose(linear[:, 1:], np.broadcast_to(y[:, 1:].mean(axis=0), (120, 4)), atol=1e-6)
    assert (model.stats.weight[1:] == 0).all()  # noise: ridge's held-out predictions do not beat the mean


def sklearn_grouped_ridge(x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                          folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The reference: per trait, the RIDGE_ALPHAS penalty with the lowest GroupKFold error, refitted on all clips;
    returns the in-sample predictions and the held-out predictions of each fold at the penalty with the lowest
    error on the other folds."""
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    pred, held_out = np.zeros_like(y), np.zeros_like(y)
    splits = list(GroupKFold(folds).split(z, groups=groups))
    for t in range(y.shape[1]):
        by_alpha = np.zeros((len(RIDGE_ALPHAS), len(y)))
        for a, alpha in enumerate(RIDGE_ALPHAS):
            for tr, va in splits:
                by_alpha[a, va] = Ridge(alpha=alpha).fit(z[tr], y[tr, t]).predict(z[va])
        squared = (by_alpha - y[:, t]) ** 2  # (A, N)
        pred[:, t] = Ridge(alpha=RIDGE_ALPHAS[int(np.argmin(squared.sum(axis=1)))]).fit(z, y[:, t]).predict(z)
        for tr, va in splits:
            held_out[va, t] = by_alpha[int(np.argmin(squared[:, tr].sum(axis=1))), va]
    return pred, held_out


@pytest.mark.parametrize("n_clips,n_features", [(120, 10), (60, 150)])  # more clips than features, and fewer
def test_ridge_fit_matches_sklearn_over_folds_of_source_videos(n_clips, n_features):
    rng = np.random.default_rng(n_features)
    x = rng.normal(0, 1, (n_clips, n_features)) * rng.uniform(0.1, 10, n_features)
    signal = x[:, :3] @ rng.normal(0, 1, 3)
    y = np.stack([signal, 0.3 * signal + rng.normal(0, 3, n_clips), rng.normal(0, 1, n_clips)], axis=1)
    groups = np.array([f"v{i // 4}" for i in range(n_clips)])
    weight, bias, held_out = ridge_fit(x, y, groups)
    pred, reference_held_out = sklearn_grouped_ridge(x, y, groups)
    np.testing.assert_allclose(x @ weight.T + bias, pred, atol=1e-6)
    np.testing.assert_allclose(held_out, reference_held_out, atol=1e-6)


def test_ridge_fit_does_not_memorise_people():
    """Four near-identical clips per person and a label that is the person's, unrelated to the features: folds of
    single clips reward memorising each person (a small penalty); folds of whole people see it does not generalise."""
    rng = np.random.default_rng(3)
    people, new_people = rng.normal(0, 1, (60, 30)), rng.normal(0, 1, (200, 30))
    x = np.repeat(people, 4, axis=0) + rng.normal(0, 0.05, (240, 30))
    y = np.repeat(rng.normal(0, 1, (60, 1)), 4, axis=0)
    weight, bias, _ = ridge_fit(x, y, [f"p{i // 4}" for i in range(240)])
    new_y = rng.normal(0, 1, (200, 1))

    def r2(pred: np.ndarray) -> float:
        return float(1 - ((pred - new_y) ** 2).sum() / ((new_y - new_y.mean()) ** 2).sum())

    mean, scale = x.mean(axis=0), x.std(axis=0)
    one_clip_out = RidgeCV(alphas=RIDGE_ALPHAS).fit((x - mean) / scale, y)
    assert r2(one_clip_out.predict((new_people - mean) / scale)) < -0.1  # leave-one-clip-out is fooled
    assert np.abs(new_people @ weight.T).std() < 0.05 * y.std()  # a flat fit
    assert r2(new_people @ weight.T + bias) > -0.05


def test_screened_ridge_fit_keeps_every_feature_only_where_the_signal_is_spread_over_many():
    """One trait follows the sum of 300 features, each of which says little; another follows one feature. Cross-
    validation keeps all of them for the first (64 of 300 would leave most of it out) and few for the second."""
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, (400, 400))
    spread, single = x[:, :300].sum(axis=1) / np.sqrt(300), x[:, 300]
    y = np.stack([spread + rng.normal(0, 0.3, 400), single + rng.normal(0, 0.3, 400)], axis=1)
    weight, _, held_out = screened_ridge_fit(x, y, [f"p{i // 2}" for i in range(400)])
    assert (weight[0] != 0).sum() == 400 and (weight[1] != 0).sum() <= 64
    assert np.corrcoef(held_out[:, 0], spread)[0, 1] > 0.75 and np.corrcoef(held_out[:, 1], single)[0, 1] > 0.95


def test_screened_held_out_predictions_do_not_flatter_a_fit_to_noise():
    """Labels unrelated to 300 features, 120 clips: the feature count and penalty best over all folds fit each fold
    partly by chance (their held-out predictions beat the folds' training means on over half of the traits, by
    +0.02 R² on average); scored at the choice of the other folds, they do not."""
    gains = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(0, 1, (120, 300)), rng.normal(0, 1, (120, 5))
        groups = [f"p{i // 2}" for i in range(120)]
        mean_of_training = np.zeros_like(y)
        for train, val in cross_validation_folds(groups):
            mean_of_training[val] = y[train].mean(axis=0)
        held_out = screened_ridge_fit(x, y, groups).held_out
        gains.append((((mean_of_training - y) ** 2).sum(axis=0) - ((held_out - y) ** 2).sum(axis=0))
                     / ((y - y.mean(axis=0)) ** 2).sum(axis=0))
    assert np.mean(gains) < 0 and (np.array(gains) > 0).mean() < 0.35


@pytest.mark.parametrize("fit", [ridge_fit, screened_ridge_fit])
def test_a_column_constant_in_training_gets_no_weight(fit):
    """A latency that is the cap on every training clip, or an input that never moved there, says nothing; a new
    clip where it varies must not get a large prediction from it."""
    rng = np.random.default_rng(6)
    x = np.c_[rng.normal(0, 1, (200, 40)), np.full((200, 3), 180.0)]
    y = x[:, :1] * 0.1 + rng.normal(0, 0.05, (200, 1))
    weight, bias, held_out = fit(x, y, [f"p{i // 2}" for i in range(200)])
    assert (weight[:, 40:] == 0).all() and abs(weight[0, 0] - 0.1) < 0.02
    assert np.corrcoef(held_out[:, 0], y[:, 0])[0, 1] > 0.8


def test_the_temporal_path_sees_which_movement_follows_which():
    """Labels that depend only on whether AU12 rises 10 frames after pose_Rx or 10 frames before it: clip means and
    spreads are the same either way, the lagged correlations are not."""
    rng = np.random.default_rng(4)
    clips = []
    for i in range(400):
        frames = rng.normal(0, 0.3, (120, 22)).astype(np.float32)
        follows = i % 2 == 0
        for start in (10, 50, 90):
            frames[start: start + 6, 18] += 2.0  # pose_Rx (a nod)
            at = start + 10 if follows else start - 10
            frames[max(0, at): at + 6, 8] += 2.0  # AU12 (a smile), after or before it
        clips.append(Clip(f"c{i}", "", f"c{i}", frames, np.array([0.5, 0.5, 0.7 if follows else 0.3, 0.5, 0.5],
                                                                   np.float32)))
    scaler = Normalization.fit("standard", clips, FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())
    model = small_network(temporal_lags=(5, 10, 20), **paths_only("temporal"))
    truth = np.stack([c.label for c in clips[300:]])[:, 2]
    weights = fit_linear_paths(model, clips[:300], scaler, torch.device("cpu"))
    parts = path_contributions(model, clips[300:], scaler, torch.device("cpu"))
    stats, temporal = parts["stats"], parts["temporal"]
    assert np.corrcoef(stats[:, 2] + temporal[:, 2], truth)[0, 1] > 0.8
    np.testing.assert_array_equal(weights, [[0, 0, 1, 0, 0]])  # held out, it helps the order trait, only there
    assert np.ptp(stats[:, 2]) < 1e-6  # clip statistics cannot see the order: the statistics path gives its mean


@pytest.mark.parametrize("differences", [False, True])
def test_the_temporal_path_reads_fast_movements_going_together_through_the_inputs_differences(differences):
    """Labels that follow whether two head angles' frame-to-frame jolts go together or against each other while
    each drifts slowly on its own, the drift 9 times the jolts' variance: over 160 frames two independent drifts
    correlate by chance far more than the jolts do. The differences' correlations read the label almost exactly;
    the inputs' own (lags 0 and 1) only in part."""
    rng = np.random.default_rng(8)
    pitch, yaw = FEATURE_COLUMNS.index("pose_Rx"), FEATURE_COLUMNS.index("pose_Ry")
    clips = []
    for i in range(400):
        rho = 0.9 if i % 2 else -0.9
        frames = rng.normal(0, 0.05, (160, 22)).astype(np.float32)
        jolts = rng.standard_normal((160, 2)) @ np.linalg.cholesky([[1, rho], [rho, 1]]).T / 3
        drifts = np.cumsum(rng.standard_normal((160, 2)), axis=0) / np.sqrt(160 / 2)
        frames[:, [pitch, yaw]] += (drifts + jolts).astype(np.float32)
        clips.append(Clip(f"c{i}", "", f"c{i}", frames, np.array([0.5, 0.5, 0.5 + rho / 4, 0.5, 0.5], np.float32)))
    scaler = Normalization.fit("standard", clips, FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())
    model = small_network(temporal_lags=(0, 1), temporal_differences=differences, **paths_only("temporal"))
    fit_linear_paths(model, clips[:300], scaler, torch.device("cpu"))
    parts = path_contributions(model, clips[300:], scaler, torch.device("cpu"))
    truth = np.stack([c.label for c in clips[300:]])[:, 2]
    r = np.corrcoef(parts["stats"][:, 2] + parts["temporal"][:, 2], truth)[0, 1]
    assert r > 0.95 if differences else r < 0.8


def temporal_path_r(clips: list[Clip], trait: int, **options) -> float:
    """The correlation, on the last 100 clips, of a trait's label with the statistics and temporal paths fitted on
    the others."""
    scaler = Normalization.fit("standard", clips, FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())
    model = small_network(**options, **paths_only("temporal"))
    fit_linear_paths(model, clips[:-100], scaler, torch.device("cpu"))
    parts = path_contributions(model, clips[-100:], scaler, torch.device("cpu"))
    truth = np.stack([c.label for c in clips[-100:]])[:, trait]
    return float(np.corrcoef(parts["stats"][:, trait] + parts["temporal"][:, trait], truth)[0, 1])


def clips_with_a_share(seed: int, trait: int, plant) -> list[Clip]:
    """400 clips of 160 frames of low noise, each with a share drawn from 0-1 that plant(rng, frames, share) writes
    into its frames, and a trait's label 0.3 + 0.4 * share (the others 0.5)."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(400):
        share = rng.uniform(0, 1)
        frames = rng.normal(0, 0.05, (160, 22)).astype(np.float32)
        plant(rng, frames, share)
        label = np.full(5, 0.5, np.float32)
        label[trait] = 0.3 + 0.4 * share
        clips.append(Clip(f"c{i}", "", f"c{i}", frames, label))
    return clips


def slow_wander(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """n frames of white noise smoothed over `width` frames, at unit std."""
    wander = np.convolve(rng.standard_normal(n), np.ones(width) / width, mode="same")
    return wander / wander.std()


@pytest.mark.parametrize("sizes", [False, True])
def test_the_temporal_path_reads_how_closely_one_movement_follows_another_whichever_way(sizes):
    """Labels that follow the share of yaw's slow movement that follows pitch's 6 frames later, the same way in half
    the clips and mirrored in the others (at random): the signed correlations average the two ways out, their largest
    squares over the lags do not."""
    pitch, yaw = FEATURE_COLUMNS.index("pose_Rx"), FEATURE_COLUMNS.index("pose_Ry")

    def plant(rng, frames, share):
        lead, other = slow_wander(rng, 166, 8), slow_wander(rng, 160, 8)
        frames[:, pitch] += lead[6:]
        frames[:, yaw] += np.sqrt(share) * rng.choice((-1, 1)) * lead[:160] + np.sqrt(1 - share) * other

    clips = clips_with_a_share(9, 2, plant)
    r = temporal_path_r(clips, 2, temporal_lags=(0, 4, 8), temporal_sizes=sizes, temporal_co_moments=False)
    assert r > 0.75 if sizes else r < 0.3


@pytest.mark.parametrize("products", [False, True])
def test_the_temporal_path_reads_an_expression_that_shows_when_the_head_turns_either_way(products):
    """Labels that follow how much AU12's slow course follows how far the head is turned, either way: no
    correlation of the two says it, the mean product of AU12's z-scores with the square of yaw's does."""
    yaw, smile = FEATURE_COLUMNS.index("pose_Ry"), FEATURE_COLUMNS.index("AU12_r")

    def plant(rng, frames, share):
        turn, other = slow_wander(rng, 160, 10), slow_wander(rng, 160, 10)
        frames[:, yaw] += turn
        course = np.sqrt(share) * np.abs(turn) / np.abs(turn).std() + np.sqrt(1 - share) * np.abs(other) / np.abs(
            other).std()
        frames[:, smile] += (course - course.mean()) / course.std()

    clips = clips_with_a_share(10, 0, plant)
    r = temporal_path_r(clips, 0, temporal_lags=(0, 4), temporal_differences=False, temporal_sizes=False,
                        temporal_co_moments=products)
    assert r > 0.65 if products else r < 0.35


def test_co_moments_are_the_mean_products_of_three_inputs_z_scores_over_each_clips_frames():
    rng = np.random.default_rng(11)
    x = torch.tensor(rng.normal(0, 1, (2, 30, 4)))
    lengths = torch.tensor([30, 17])
    values = co_moments(z_scored(x, valid_mask(lengths, 30)), lengths)  # (2, C(6, 3))
    for b, n in enumerate(lengths.tolist()):
        frames = x[b, :n].numpy()
        z = (frames - frames.mean(axis=0)) / (frames.std(axis=0) + 1e-3)
        expected = [np.mean(z[:, i] * z[:, j] * z[:, k]) for i, j, k in itertools.combinations_with_replacement(range(4), 3)]
        np.testing.assert_allclose(values[b].numpy(), expected, atol=1e-4)


def clips_with_a_delay() -> tuple[list[Clip], Scaler]:
    """400 clips whose openness is the delay (10-40 frames, one per clip) from each nod (a pitch dip) to a lid raise;
    in one clip in ten the lids never move (delay 25, the mean: label 0.5). Clip means and spreads are the same
    whatever the delay."""
    rng = np.random.default_rng(5)
    bump = np.hanning(9).astype(np.float32) * 2.0
    clips = []
    for i in range(400):
        frames = rng.normal(0, 0.2, (200, 22)).astype(np.float32)
        delay = int(rng.integers(10, 41)) if i % 10 else 25
        for nod in (10, 70, 130):
            frames[nod: nod + 9, FEATURE_COLUMNS.index("pose_Rx")] -= bump
            frames[nod + delay: nod + delay + 9, FEATURE_COLUMNS.index("AU05_r")] += bump
        if i % 10 == 0:
            frames[:, FEATURE_COLUMNS.index("AU05_r")] = 0.0
        label = np.array([0.5, 0.5, 0.5, 0.5, 0.3 + 0.4 * (delay - 10) / 30], np.float32)
        clips.append(Clip(f"c{i}", "", f"c{i}", frames, label))
    return clips, Normalization.fit("standard", clips, FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())


@pytest.mark.parametrize("temporal_path", [False, True])
def test_the_event_path_reads_how_long_after_one_movement_another_comes(temporal_path):
    """Clip statistics cannot see the delay; the event path reads it off the frames, also when the temporal path,
    which sees part of it, is fitted beside it. Where the lids never move, the latency is the training clips'
    mean, so the clip gets the mean delay (its label)."""
    clips, scaler = clips_with_a_delay()
    model = small_network(**paths_only("events", *(["temporal"] if temporal_path else [])))
    weights = fit_linear_paths(model, clips[:300], scaler, torch.device("cpu"))
    parts = path_contributions(model, clips[300:], scaler, torch.device("cpu"))
    stats, events = parts["stats"], parts["events"]
    truth = np.stack([c.label for c in clips[300:]])[:, 4]
    gate = weights[[path.key for path in model.cfg.gated_paths].index("events")]
    assert (gate[:4] == 0).all() and gate[4] > 0  # held out, it helps the delay trait, only there
    assert np.corrcoef(stats[:, 4] + events[:, 4], truth)[0, 1] > 0.95
    assert np.ptp(stats[:, 4]) < 1e-6  # clip statistics cannot see the delay: the statistics path gives its mean
    assert (model.events.weight[:4] == 0).all() and 0 < (model.events.weight[4] != 0).sum() <= 64  # a few latencies
    silent = np.arange(300, 400) % 10 == 0
    np.testing.assert_allclose(stats[silent, 4] + events[silent, 4], 0.5, atol=0.05)  # the mean delay's label
    n = len(FEATURE_COLUMNS)
    pair = (n + FEATURE_COLUMNS.index("pose_Rx")) * n + FEATURE_COLUMNS.index("AU05_r")  # pitch dips, lid rises
    assert 22 < float(model.event_fill[pair]) < 28  # the mean nod -> lid raise delay of the clips that have one


def held_out_r2(model: HybridNet, clips: list[Clip], scaler: Scaler, trait: int) -> float:
    """R² of the linear paths' gated prediction of one trait on clips the fit did not see."""
    pred = predict(model, clips, scaler)[:, trait]
    truth = labels_of(clips)[:, trait]
    return float(1 - ((pred - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())


def linear_paths_alone(model: HybridNet, train: list[Clip], scaler: Scaler) -> np.ndarray:
    """Fit the linear paths on the training clips and use them alone: the gated paths at the weights the fit
    returns (returned too, (paths, 5)), the branches closed."""
    weights = fit_linear_paths(model, train, scaler, torch.device("cpu"))
    with torch.no_grad():
        model.branch_gates.zero_()
        for path, row in zip(model.cfg.gated_paths, weights):
            model.gates_of(path).copy_(torch.as_tensor(row))
    return weights


def linear_paths_compared(clips: list[Clip], trait: int, variants: dict[str, tuple[str, ...]]
                          ) -> tuple[dict[str, float], HybridNet, np.ndarray, Scaler]:
    """For each variant (the keys of the gated paths it keeps), the linear paths alone fitted on the first 300
    clips and one trait's R² on the others; the last variant's network and weights, and the scaler."""
    scaler = Normalization.fit("standard", clips[:300], FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())
    scores = {}
    for name, keys in variants.items():
        model = small_network(**paths_only(*keys))
        weights = linear_paths_alone(model, clips[:300], scaler)
        scores[name] = held_out_r2(model, clips[300:], scaler, trait)
    return scores, model, weights, scaler


def test_with_both_paths_a_trait_does_as_well_as_with_the_path_that_reads_it_best():
    """The temporal and event paths both read the delay; stacked by their held-out predictions, they share it
    rather than count it twice, so openness does as well with both as with the better one alone, and the traits
    without a signal get nothing from either."""
    clips, scaler = clips_with_a_delay()
    train, test = clips[:300], clips[300:]
    scores = {}
    for name, options in {"both": paths_only("temporal", "events"), "events alone": paths_only("events"),
                          "temporal alone": paths_only("temporal")}.items():
        model = small_network(**options)
        weights = linear_paths_alone(model, train, scaler)
        scores[name] = held_out_r2(model, test, scaler, 4)
        if name == "both":
            np.testing.assert_array_equal(weights[:, :4], 0)  # no path for the traits without a signal
    assert scores["events alone"] > 0.9
    assert scores["both"] >= max(scores["events alone"], scores["temporal alone"]) - 0.01, scores


EVENT_PATH = next(path for path in GATED_PATHS if path.fill is not None)


def test_missing_event_timings_are_filled_with_the_mean_of_the_clips_that_have_them():
    timings = np.array([[1.0, np.nan, np.nan], [3.0, 4.0, np.nan], [np.nan, 6.0, np.nan]])
    np.testing.assert_array_equal(column_means(timings), [2.0, 5.0, 0.0])  # a timing no clip has: 0, a constant
    model = small_network()
    fill = torch.arange(float(EVENT_PATH.width(model.cfg)))
    model.event_fill.copy_(fill)
    raw = torch.full((2, len(fill)), math.nan)
    raw[0, 7] = -1.0
    moments = torch.randn(2, 2 * model.cfg.n_features)
    filled = model.finished_inputs(EVENT_PATH, raw, moments)
    assert filled[0, 7] == -1.0 and torch.equal(filled[1, :len(fill)], fill) and filled[0, 8] == 8.0
    assert torch.equal(filled[:, len(fill):], moments)  # the clip statistics follow, as the layer reads them
    assert filled.shape[1] == EVENT_PATH.layer_width(model.cfg)


def clips_with_a_threshold(n: int, seed: int) -> list[Clip]:
    """Conscientiousness is 0.3 plus how far a clip's mean AU12 is above 1 (0 below it); the others are noise."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        frames = rng.normal(0, 0.3, (int(rng.integers(50, 90)), 22)).astype(np.float32)
        frames[:, 8] += rng.uniform(0, 2)
        label = rng.uniform(0.3, 0.7, 5).astype(np.float32)
        label[3] = 0.3 + 0.4 * max(0.0, frames[:, 8].mean() - 1.0)
        clips.append(Clip(f"c{i}", f"c{i}.000.mp4", f"c{i // 2}", frames, label))
    return clips


def test_the_curves_path_bends_where_a_level_starts_to_matter():
    """A label that is flat below a level and rises above it: a straight line through clip means misses the bend;
    the curves path's hinges at the training quantiles of the means follow it."""
    clips = clips_with_a_threshold(400, 0)
    scores, model, weights, scaler = linear_paths_compared(clips, 3, {"straight": (), "curves": ("curves",)})
    assert scores["straight"] < 0.9 < scores["curves"], scores
    knots = model.curve_knots[:, 8]  # the knots of AU12's mean (normalised): its training quantiles
    means = np.array([scaler.transform(c.frames)[:, 8].mean() for c in clips[:300]])
    np.testing.assert_allclose(knots.numpy(), np.quantile(means, HINGE_QUANTILES), atol=1e-5)
    assert (weights[0, [0, 1, 2, 4]] == 0).all()  # no curve for the traits without a signal


def test_a_path_fitted_with_the_clip_statistics_takes_over_a_bend_they_read_as_a_straight_line():
    """From 60 training clips the statistics path reads the threshold as a line; fitted on what that line misses,
    the curves path finds little left, while fitted to the labels together with the clip statistics it replaces the
    line where held-out clips say so."""
    clips = clips_with_a_threshold(360, 0)
    train, test = clips[:60], clips[60:]
    scaler = Normalization.fit("standard", train, FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())
    scores = {}
    for joint in (False, True):
        model = small_network(**paths_only("curves"), paths_with_statistics=joint)
        linear_paths_alone(model, train, scaler)
        scores[joint] = held_out_r2(model, test, scaler, 3)
    assert scores[False] < 0.8 and scores[True] > 0.95, scores


def test_a_kernel_share_is_the_share_of_frames_where_a_dilated_kernel_passes_its_level():
    """One kernel feature by hand: numpy's correlation of an input with the kernel's taps, `dilation` frames apart,
    over the frames where it fits in the clip; the share of those above the level. Levels are the training
    responses' quantiles, and a dilation that does not fit a clip gives NaN."""
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(3, 80, 22)))
    lengths = torch.tensor([80, 50, 12])
    levels = kernel_levels(x, lengths, torch.Generator().manual_seed(0))
    shares = kernel_shares(x, lengths, levels + 1e-6)  # a level off the responses, where rounding can't tie them
    per_dilation = len(FEATURE_COLUMNS) * KERNELS_PER_DILATION
    d, channel, k = 2, 5, 3  # the third dilation (4 frames), input 5, that dilation's fourth kernel
    column = d * per_dilation + channel * KERNELS_PER_DILATION + k
    taps = KERNELS[d::len(KERNEL_DILATIONS)][k].numpy()
    dilated = np.zeros(8 * KERNEL_DILATIONS[d] + 1)
    dilated[::KERNEL_DILATIONS[d]] = taps
    responses = [np.correlate(x[i, :n, channel].numpy(), dilated, "valid") if n >= len(dilated) else np.zeros(0)
                 for i, n in enumerate(lengths.tolist())]
    assert len(responses[2]) == 0 and math.isnan(shares[2, column])
    pooled = np.sort(np.concatenate(responses))
    q = float(level_quantiles(len(levels))[column])
    assert float(levels[column]) == pytest.approx(pooled[round(q * (len(pooled) - 1))])
    for i in (0, 1):
        assert float(shares[i, column]) == pytest.approx((responses[i] > float(levels[column]) + 1e-6).mean())


def clips_with_bunched_movement(n: int, seed: int) -> list[Clip]:
    """Neuroticism is how much of AU12's fast movement is bunched into one active stretch of the clip, at one
    variance: clip means and stds cannot read it."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        frames = rng.normal(0, 0.3, (200, 22)).astype(np.float32)
        share = rng.uniform(0, 1)
        amplitude = np.where(np.arange(200) < 100, 1 + share, 1 - share * 0.9)
        movement = amplitude * rng.normal(size=200)
        frames[:, 8] += (movement / movement.std()).astype(np.float32)
        label = rng.uniform(0.3, 0.7, 5).astype(np.float32)
        label[4] = 0.3 + 0.4 * share
        clips.append(Clip(f"c{i}", f"c{i}.000.mp4", f"c{i // 2}", frames, label))
    return clips


@pytest.mark.parametrize("key", ["kernels", "intervals"])
def test_the_kernel_and_interval_paths_read_where_in_a_clip_an_input_moves(key):
    """Movement bunched into half the clip against spread over all of it, at one variance: the statistics path
    gives the mean, the kernel path alone reads it, and so does the interval path."""
    clips = clips_with_bunched_movement(400, 0)
    scores, _, weights, _ = linear_paths_compared(clips, 4, {"statistics": (), key: (key,)})
    assert scores["statistics"] < 0.1 < 0.6 < scores[key], scores
    assert (weights[0, :4] == 0).all()  # nothing for the traits without a signal


def by_hand_interval_quantiles(series: np.ndarray) -> list[float]:
    """numpy's nearest-rank INTERVAL_QUANTILES of a series in its whole, halves, quarters and eighths (frame t of n
    in part floor(t * parts / n)); NaN for an empty part."""
    out = []
    for depth in range(INTERVAL_DEPTH):
        part = np.arange(len(series)) * 2 ** depth // max(len(series), 1)
        for j in range(2 ** depth):
            values = np.sort(series[part == j])
            out += [values[round(q * (len(values) - 1))] if len(values) else np.nan for q in INTERVAL_QUANTILES]
    return out


def test_interval_quantiles_are_each_intervals_quantiles_of_an_input_and_of_its_differences():
    """Per input, the quantiles in each dyadic interval of the valid frames, then those of the first differences;
    an interval without frames (a clip of 5 frames has empty eighths, one of 1 frame no differences) gives NaN, and
    the frames beyond a clip's length do not count."""
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(4, 40, 22)))
    lengths = torch.tensor([40, 23, 5, 1])
    values = interval_quantiles(x, lengths)
    assert values.shape == (4, INTERVAL_STATISTICS * 22)
    for clip, n in enumerate(lengths.tolist()):
        for channel in (0, 8, 21):
            series = x[clip, :n, channel].numpy()
            expected = by_hand_interval_quantiles(series) + by_hand_interval_quantiles(np.diff(series))
            got = values[clip, channel * INTERVAL_STATISTICS:(channel + 1) * INTERVAL_STATISTICS].numpy()
            np.testing.assert_array_equal(got, expected)
    assert values[2].isnan().any() and values[3, INTERVAL_STATISTICS // 2:INTERVAL_STATISTICS].isnan().all()
    garbage = x.clone()
    garbage[1, 23:] = 1e6
    torch.testing.assert_close(interval_quantiles(garbage, lengths), values, equal_nan=True)


def test_the_gain_of_the_best_of_many_candidates_is_judged_on_units_that_did_not_choose_it():
    """500 candidate weightings that are all as good as the default, by chance better or worse on each of 40
    source videos: the best of them on all videos beats the default by two standard errors; scored on each
    video by the one the other videos choose, it does not."""
    rng = np.random.default_rng(0)
    default_errors, errors = np.ones(40), 1 + rng.normal(0, 0.3, (40, 500))
    gain = default_errors - errors[:, errors.sum(axis=0).argmin()]
    assert gain.mean() > 2 * gain.std(ddof=1) / np.sqrt(40)  # in-sample, the best candidate looks significant
    assert not honest_gain_is_significant(default_errors, errors, 1.64)
    errors[:, 7] -= 0.3  # one candidate really is better on every video
    assert honest_gain_is_significant(default_errors, errors, 1.64)


def test_weights_vary_on_a_grid_for_the_contributions_named_and_stay_at_their_default_for_the_others():
    grid = weights_varying(np.array([0.25, 0.5, 1.0]), [0, 2], np.array([0.0, 1.0]))
    np.testing.assert_array_equal(grid, [[0, 0.5, 0], [0, 0.5, 1], [1, 0.5, 0], [1, 0.5, 1]])


def test_gates_keep_the_branches_only_where_they_help_significantly():
    rng = np.random.default_rng(1)
    n = 200
    y = rng.uniform(0.2, 0.8, (n, 5))
    linear = np.full((n, 5), 0.5)
    missing = y - linear
    residual = np.c_[missing[:, 0], 0.5 * missing[:, 1], rng.normal(0, 0.1, n), -missing[:, 3],
                     missing[:, 4] + rng.normal(0, 0.2, n)]
    gates = choose_gates(linear, [residual], y)[0]
    assert gates[0] == 1.0  # the branches have exactly what is missing
    assert gates[1] == 1.0  # half of it: the most a gate of at most 1 can use
    assert gates[2] == 0.0 and gates[3] == 0.0  # noise, and the opposite of what is missing
    assert 0 <= gates[4] < 1.0  # what is missing, buried in noise: used partly, if at all
    halves = [0.5 * missing + rng.normal(0, 0.05, (n, 5)), 0.5 * missing + rng.normal(0, 0.05, (n, 5))]
    both = choose_gates(linear, halves, y)  # two half-right estimators: both are used
    assert both.shape == (2, 5) and (both > 0).all()


def test_gates_leave_a_default_only_for_a_significant_gain():
    rng = np.random.default_rng(2)
    n = 200
    y = rng.uniform(0.2, 0.8, (n, 5))
    missing = y - 0.5
    linear = np.full((n, 5), 0.5)
    default = np.ones((1, 5))  # a contribution in use unless the clips say otherwise
    contribution = np.c_[missing[:, 0] + rng.normal(0, 0.01, n), -missing[:, 1], rng.normal(0, 0.02, (n, 3))]
    gates = choose_gates(linear, [contribution], y, default)[0]
    assert gates[0] == 1.0  # the best is the default
    assert gates[1] == 0.0  # the default hurts, significantly: dropped
    assert (gates[2:] == 1.0).all()  # noise so small that dropping it gains nothing significant: kept
    assert (choose_gates(linear, [contribution], y)[0][2:] == 0).all()  # from nothing, the noise is not taken up


def test_a_contribution_two_standard_errors_better_joins_beside_five_that_carry_nothing():
    """No contribution earns a place alone at the Bonferroni level over six (2.39 standard errors), but one honest
    test over all their weights (pooled_test, as before training) lets in the one that reads the trait: a gain of
    about two standard errors is taken, the five noise contributions are not."""
    rng = np.random.default_rng(5)
    n = 200
    signal = rng.normal(0, 0.05, (n, 5))
    y = 0.5 + signal + rng.normal(0, 0.15, (n, 5))
    linear = np.full((n, 5), 0.5)
    gain = (y - linear) ** 2 - (y - linear - signal) ** 2  # (N, 5) per clip, taking the signal whole
    z = gain.mean(axis=0) / (gain.std(axis=0, ddof=1) / np.sqrt(n))
    contributions = [signal] + [rng.normal(0, 0.03, (n, 5)) for _ in range(5)]
    gates = choose_gates(linear, contributions, y, pooled_test=True)
    assert ((z > 2.1) & (z < 2.39))[:3].all() and z[3] < 1
    np.testing.assert_array_equal(gates[0], [1, 1, 1, 0, 1])
    assert (gates[1:] == 0).all()
    assert (choose_gates(linear, contributions, y)[:, :3] == 0).all()  # each alone, at the Bonferroni level


def test_gates_take_up_contributions_that_carry_nothing_rarely():
    """Forty corpora of pure-noise labels and six noise contributions (partly shared, small and large), 200 traits
    in all: a gate opens on few of them, as a one-sided test at GATE_Z would."""
    rng = np.random.default_rng(6)
    opened = 0
    for corpus in range(40):
        y = rng.uniform(0.2, 0.8, (120, 5))
        shared = rng.normal(0, 0.02, (120, 5))
        noise = [0.7 * shared + rng.normal(0, sd, (120, 5)) for sd in (0.005, 0.01, 0.02, 0.02, 0.05, 0.1)]
        opened += (choose_gates(np.broadcast_to(y.mean(axis=0), y.shape), noise, y, pooled_test=True) > 0
                   ).any(axis=0).sum()
    assert opened <= 0.08 * 200


def test_gates_over_source_videos_count_each_video_once():
    """A contribution that helps 30 clips of one video and nothing else: significant over clips, not over videos."""
    rng = np.random.default_rng(5)
    y = np.full((130, 5), 0.5) + rng.normal(0, 0.01, (130, 5))
    y[:30] += 0.2
    linear = np.full_like(y, 0.5)
    contribution = np.zeros_like(y)
    contribution[:30] = 0.2
    groups = ["one"] * 30 + [f"v{i}" for i in range(100)]
    assert (choose_gates(linear, [contribution], y)[0] == 1).all()
    assert (choose_gates(linear, [contribution], y, groups=groups)[0] == 0).all()


def test_the_gates_after_training_count_source_videos_not_clips():
    """Validation labels that the branches explain: 40 clips of 40 people open the branches' gates; the same 40
    clips from one person are one observation, and leave them closed."""
    clips = clips_with_mean_signal(40, 3)
    scaler = Normalization.fit("standard", clips, FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())
    model = small_network(**{path.enabled_by: False for path in GATED_PATHS})
    fit_linear_paths(model, clips, scaler, torch.device("cpu"))
    with torch.no_grad():
        for p in model.members.parameters():
            p.normal_(0, 0.3)
        spread = float(path_contributions(model, clips, scaler, torch.device("cpu"))["branches"].std())
        model.members[0].head[-1].weight.mul_(0.05 / spread)  # branch outputs of about 0.05
        model.members[0].head[-1].bias.zero_()
    parts = path_contributions(model, clips, scaler, torch.device("cpu"))
    for clip, stats, branches in zip(clips, parts["stats"], parts["branches"]):
        clip.label = (stats + branches).astype(np.float32)
    assert (calibrate_gates(model, clips, scaler, torch.device("cpu"), np.zeros((0, 5)))[-1] > 0).all()
    one_person = [Clip(c.clip_id, c.file, "one", c.frames, c.label) for c in clips]
    assert (calibrate_gates(model, one_person, scaler, torch.device("cpu"), np.zeros((0, 5)))[-1] == 0).all()


def test_an_ensemble_trains_its_members_apart_and_averages_them(tiny_corpus, tmp_path):
    result = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", tmp_path / "e.pt", "--split",
                        tmp_path / "s.csv", "--epochs", "2", "--batch-size", "4", "--ensemble", "3", *TINY_MODEL)
    assert result.returncode == 0, result.stderr
    ckpt = load_checkpoint(tmp_path / "e.pt")
    assert isinstance(ckpt.model, HybridNet) and len(ckpt.model.members) == 3 and ckpt.config.members == 3
    members = ckpt.model.members
    assert not torch.equal(members[0].head[0].weight, members[1].head[0].weight)  # other initialisations
    assert not any(key.startswith("members.") and ".stats." in key for key in ckpt.model.state_dict())  # one fit
    x, lengths = torch.randn(2, 80, 22), torch.tensor([80, 50])
    x[1, 50:] = 0.0
    with torch.no_grad():
        net = ckpt.model
        each = [(net.linear(x, lengths) + net.branch_gates * m(x, lengths)).clamp(0, 1) for m in members]
        torch.testing.assert_close(net(x, lengths), torch.stack(each).mean(dim=0))
        ckpt.model.train()
        assert ckpt.model(x, lengths).shape == (3, 2, 5)


def test_the_default_network_is_the_statistics_path_where_its_branches_do_not_help(tiny_corpus, tmp_path):
    result = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", tmp_path / "m.pt", "--split",
                        tmp_path / "s.csv", "--epochs", "2", "--batch-size", "4", *TINY_MODEL)
    assert result.returncode == 0, result.stderr
    assert "weights per trait over the statistics path (0: not used): temporal path E" in result.stdout
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert isinstance(ckpt.model, HybridNet) and ckpt.config.stats_path
    gates = ckpt.model.branch_gates.numpy()
    assert ((gates >= 0) & (gates <= 1)).all() and (gates == 0).any()  # 24 clips: nothing is significant


@pytest.mark.slow
def test_compare_runs_end_to_end(tmp_path):
    result = run_script("compare.py", "--recipes", "standard", "short-gap", "--sizes", "48", "--seeds", "0",
                        "--test-clips", "40", "--epochs", "2", "--bootstrap", "20", "--previous", "-o", tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert list(table["method"]) == ["network", "previous demo network", "train-mean", "ridge", "minirocket", "quant",
                                     "best achievable"] * 2
    assert table.loc[table["method"].str.contains("network"), "train_seconds"].gt(0).all()
    noise = table[(table["recipe"] == "short-gap") & (table["method"] == "best achievable")]["r2_openness"].iloc[0]
    assert abs(noise) < 0.05  # openness is pure noise in that recipe: nothing to achieve
    assert table.loc[table["method"] == "best achievable", "share_of_best"].eq(1).all()
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 10_000
    assert "| standard | 48 | network |" in (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| ridge | MiniRocket | QUANT | network - best baseline, lowest trait [95% CI] |" in \
        (tmp_path / "cmp" / "comparison.md").read_text()
    (tmp_path / "file").write_text("x")
    one_line_error(run_script("compare.py", "-o", tmp_path / "file"), "is a file")

    saved = tmp_path / "cmp" / "comparison.csv"
    assert run_script("compare.py", "--tables", saved, "-o", tmp_path / "merged").returncode == 0
    merged = pd.read_csv(tmp_path / "merged" / "comparison.csv")
    pd.testing.assert_frame_equal(merged, table)
    assert (tmp_path / "merged" / "comparison.md").read_text() == (tmp_path / "cmp" / "comparison.md").read_text()
    one_line_error(run_script("compare.py", "--tables", saved, tmp_path / "merged" / "comparison.csv", "-o",
                              tmp_path / "twice"), "standard, 48 clips, seed 0 is in more than one")
    one_line_error(run_script("compare.py", "--tables", saved, "-o", tmp_path / "cmp"), "is an input of this run")
    one_line_error(run_script("compare.py", "--tables", tmp_path / "cmp" / "comparison.md", "-o", tmp_path / "x"),
                   "comparison.md", "comparison table")


def test_retraining_trains_the_branches_whatever_their_earlier_gates(tiny_corpus, tmp_path):
    assert run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", tmp_path / "m.pt", "--split",
                      tmp_path / "s.csv", "--epochs", "1", "--batch-size", "4", *TINY_MODEL).returncode == 0
    ckpt = load_checkpoint(tmp_path / "m.pt")
    ckpt.model.branch_gates.zero_()  # the branches were not used for any trait
    from checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "closed.pt", ckpt)
    result = run_script("attn_retrain.py", tiny_corpus / "frames.csv", "--weights", tmp_path / "closed.pt", "-o",
                        tmp_path / "re.pt", "--epochs", "2", "--lr", "1e-2", "--batch-size", "4", "--weight-decay", "0")
    assert result.returncode == 0, result.stderr
    before, after = ckpt.model, load_checkpoint(tmp_path / "re.pt").model
    assert not torch.equal(before.members[0].head[0].weight, after.members[0].head[0].weight)


def comparison_rows(seed: int, network: list[float], ridge: list[float], minirocket: list[float]) -> list[dict]:
    """compare.py's rows for one short-gap corpus of 300 clips, from R² per trait (openness carries no signal)."""
    best = [0.8, 0.7, 0.7, 0.6, -0.002]
    return [{"recipe": "short-gap", "clips": 300, "seed": seed, "method": method, "train_seconds": np.nan,
             **{f"r2_{t}": v for t, v in zip(TRAITS, values)}, "r2_predictable": np.mean(values[:4]),
             "r2_low": np.nan, "r2_high": np.nan, "share_of_best": share}
            for method, values, share in [("network", network, 0.9), ("ridge", ridge, 0.6),
                                          ("minirocket", minirocket, 0.7), ("best achievable", best, 1.0)]]


def two_seed_comparison() -> pd.DataFrame:
    return pd.DataFrame(comparison_rows(0, [0.78, 0.69, 0.40, 0.59, -0.01], [0.79, 0.68, -0.1, 0.58, -0.1],
                                        [0.3, 0.6, 0.45, 0.5, -0.2])
                        + comparison_rows(1, [0.78, 0.69, 0.60, 0.59, -0.03], [0.77, 0.68, -0.1, 0.58, -0.1],
                                          [0.3, 0.6, 0.50, 0.5, -0.2]))


def test_the_verdict_names_the_worst_trait_over_seeds_and_the_noise_trait():
    """Without QUANT's rows (aeon's QUANT not run), the best peer is the better of ridge and MiniRocket."""
    from compare import verdicts

    verdict = verdicts(two_seed_comparison()).iloc[0]
    assert verdict["lowest_margin"] == pytest.approx(-0.05) and verdict["margin_trait"] == "agreeableness"
    assert verdict["lowest_noise_r2"] == pytest.approx(-0.03)
    assert verdict["share_network"] == pytest.approx(0.9) and verdict["share_minirocket"] == pytest.approx(0.7)


def test_the_kind_table_gives_each_zoo_kind_its_methods_and_the_margin_over_the_best_peer():
    from compare import HELD_OUT, RECIPES, kind_markdown

    kinds = RECIPES[HELD_OUT[0]]["kinds"]
    r2 = {"network": [0.6, 0.5, 0.4, 0.3, 0.2], "ridge": [0.0] * 5, "minirocket": [0.7, 0.1, 0.1, 0.1, 0.1],
          "quant": [0.1, 0.6, 0.1, 0.1, np.nan], "best achievable": [0.7] * 5}
    rows = [{"recipe": HELD_OUT[0], "clips": 300, "seed": 0, "method": method,
             **{f"r2_{t}": v for t, v in zip(TRAITS, values)}} for method, values in r2.items()]
    text = kind_markdown(pd.DataFrame(rows + [{**rows[0], "recipe": "standard"}]))
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert set(lines) == set(kinds)  # one row per kind; the standard recipe has none
    assert lines[kinds[0]].endswith("| -0.100 |") and lines[kinds[1]].endswith("| -0.100 |")
    assert lines[kinds[4]].endswith("| +0.100 |")  # QUANT did not run there: the best of the others
    assert "| no | strong | 300 |" in lines[kinds[2]]


def test_the_kind_tables_margin_over_seeds_is_the_mean_of_each_seeds_margin_over_its_best_peer():
    """MiniRocket leads on seed 0 and QUANT on seed 1, by 0.1 each: the network is 0.1 below the best peer on both
    seeds, though above both peers' means over seeds."""
    from compare import HELD_OUT, RECIPES, kind_markdown

    def rows(seed: int, minirocket: float, quant: float) -> list[dict]:
        r2 = {"network": 0.5, "ridge": 0.0, "minirocket": minirocket, "quant": quant, "best achievable": 0.7}
        return [{"recipe": HELD_OUT[0], "clips": 300, "seed": seed, "method": method,
                 **{f"r2_{t}": value for t in TRAITS}} for method, value in r2.items()]

    text = kind_markdown(pd.DataFrame(rows(0, 0.6, 0.1) + rows(1, 0.1, 0.6)))
    line = line_of(text, RECIPES[HELD_OUT[0]]["kinds"][0])
    assert line.endswith("| +0.500 | +0.000 | +0.350 | +0.350 | +0.700 | -0.100 |")


def test_held_out_recipes_plant_only_kinds_no_other_recipe_plants_and_each_has_its_fi_twin():
    from compare import HELD_OUT, RECIPES, SEEN_KINDS

    held = {kind for name in HELD_OUT for kind in RECIPES[name]["kinds"]}
    assert held and not held & set(SEEN_KINDS)
    for name in HELD_OUT:
        twin = name[:-3] if name.endswith("-fi") else f"{name}-fi"
        assert set(RECIPES[twin]["kinds"]) == set(RECIPES[name]["kinds"])
        assert RECIPES[name].get("snr", "strong") != RECIPES[twin].get("snr", "strong")


def test_compare_help_lists_every_recipe_once_and_calls_held_out_exactly_the_held_out_ones(capsys):
    from compare import HELD_OUT, RECIPES, main

    with pytest.raises(SystemExit):
        main(["--help"])
    listing = [line.split() for line in capsys.readouterr().out.splitlines()
               if line.startswith("  ") and line.split()[0] in RECIPES]
    assert [words[0] for words in listing] == list(RECIPES)
    assert {words[0] for words in listing if words[1:3] == ["held", "out:"]} == set(HELD_OUT)


def test_the_margin_interval_pairs_the_network_with_the_peer_that_leads_each_trait():
    from compare import margin_intervals
    from metrics import bootstrap_samples, metric_arrays, percentile_interval

    rng = np.random.default_rng(0)
    y = rng.uniform(0, 1, (60, 5))
    groups = np.repeat(np.arange(15), 4).astype(str)
    noise = rng.normal(0, 1, y.shape)
    scale = {"network": 0.10, "ridge": np.array([0.3, 0.05, 0.3, 0.3, 0.3]), "minirocket": 0.2}
    predictions = {m: y + s * noise for m, s in scale.items()} | {"quant": None}  # QUANT not installed
    ran = {m: p for m, p in predictions.items() if p is not None}
    samples = {m: bootstrap_samples(y, p, groups, n_boot=100, seed=1)["r2"] for m, p in ran.items()}
    margins = margin_intervals(samples, {m: metric_arrays(y, p)["r2"] for m, p in ran.items()}, "network")
    for k, trait in enumerate(TRAITS):
        leader = "ridge" if k == 1 else "minirocket"
        low, high = percentile_interval(samples["network"][:, k] - samples[leader][:, k])
        assert (margins[f"margin_low_{trait}"], margins[f"margin_high_{trait}"]) == (low, high)
    assert margins["margin_high_neuroticism"] < 0 < margins["margin_low_extroversion"]  # ridge is closer there


def test_a_mean_over_seeds_narrows_the_interval_by_their_number():
    from compare import mean_over_seeds_interval

    assert mean_over_seeds_interval([0.1], [0.3]) == pytest.approx((0.1, 0.3))
    half = math.sqrt(2) / 2
    assert mean_over_seeds_interval([0.0, 2.0], [2.0, 4.0]) == pytest.approx((2 - half, 2 + half))


def test_the_tables_give_the_intervals_a_comparison_holds_and_none_where_it_has_none():
    from compare import HELD_OUT, RECIPES, kind_markdown, verdict_markdown

    kinds = RECIPES[HELD_OUT[0]]["kinds"]
    r2 = {"network": [0.6, 0.5, 0.4, 0.3, 0.2], "minirocket": [0.7, 0.1, 0.1, 0.1, 0.1], "best achievable": [0.7] * 5}

    def rows(seed: int, low: float, high: float) -> list[dict]:
        return [{"recipe": HELD_OUT[0], "clips": 300, "seed": seed, "method": method, "share_of_best": 0.5,
                 **{f"r2_{t}": v for t, v in zip(TRAITS, values)},
                 **({f"margin_{side}_{t}": bound for t in TRAITS for side, bound in (("low", low), ("high", high))}
                    | {f"r2_{side}_{t}": v + d for t, v in zip(TRAITS, values) for side, d in
                       (("low", -0.1), ("high", 0.1))} if method == "network" else {})}
                for method, values in r2.items()]

    text = kind_markdown(pd.DataFrame(rows(0, -0.2, 0.0) + rows(1, 0.0, 0.2)))
    line = line_of(text, kinds[0])
    half = math.sqrt(2 * 0.1 ** 2) / 2
    assert f"| +0.600 [{0.6 - half:+.3f}, {0.6 + half:+.3f}] |" in line
    assert line.endswith(f"| -0.100 [{-half:+.3f}, {half:+.3f}] |")
    verdict = verdict_markdown(pd.DataFrame(rows(0, -0.2, 0.0)))
    assert "| -0.100 (E) [-0.200, +0.000] |" in verdict
    saved_without = [{k: v for k, v in row.items() if "margin" not in k and not k.startswith(("r2_low_", "r2_high_"))}
                     for row in rows(0, -0.2, 0.0)]
    assert line_of(kind_markdown(pd.DataFrame(saved_without)), kinds[0]).endswith(
        "| +0.600 | +0.700 | +0.700 | -0.100 |")


def test_a_saved_table_with_a_word_for_a_number_is_refused_naming_row_and_column(tmp_path):
    from compare import saved_rows

    table = two_seed_comparison().assign(margin_low_openness=np.nan).astype({"margin_low_openness": object})
    table.loc[2, "margin_low_openness"] = "abc"
    table.to_csv(tmp_path / "saved.csv", index=False)
    with pytest.raises(DataError, match="row 4, column margin_low_openness: 'abc' is not a number"):
        saved_rows([tmp_path / "saved.csv"])


def line_of(table: str, kind: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"| {kind} |"))


@pytest.mark.slow
def test_a_closed_pipe_on_stdout_ends_quietly_with_the_files_written(tmp_path):
    two_seed_comparison().to_csv(tmp_path / "saved.csv", index=False)
    process = subprocess.Popen([sys.executable, str(ROOT / "compare.py"), "--tables", str(tmp_path / "saved.csv"),
                                "-o", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `compare.py ... | head -1` does once head has its line
    assert process.wait() == 1 and process.stderr.read() == b""
    assert "| short-gap | 300 | 90 % |" in (tmp_path / "out" / "comparison.md").read_text()
