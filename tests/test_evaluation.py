"""metrics.py and attn_test.py: hand-computed metrics, baselines, intervals, leakage warning, outputs."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from checkpoint import load_checkpoint, save_checkpoint
from conftest import TINY_MODEL, one_line_error, our_checkpoint, run_script
from dataset import SplitRecord
from metrics import bootstrap_intervals, bootstrap_samples, metric_arrays, percentile_interval, regression_table
from model import paper_config
from openface import TRAITS
from paper_net import PaperNet
from test_model import random_paper_state


def test_metrics_against_hand_computed_values():
    y = np.array([[0.2], [0.4], [0.6], [0.8]])
    p = np.array([[0.3], [0.4], [0.5], [0.9]])
    m = {k: v[0] for k, v in metric_arrays(y, p).items()}
    assert m["mse"] == pytest.approx(0.0075)  # (0.01 + 0 + 0.01 + 0.01) / 4
    assert m["mae"] == pytest.approx(0.075) and m["acc"] == pytest.approx(0.925)
    assert m["r2"] == pytest.approx(1 - 0.03 / 0.2)
    assert m["pearson"] == pytest.approx(np.corrcoef(y[:, 0], p[:, 0])[0, 1])
    cov = np.mean((y - y.mean()) * (p - p.mean()))
    assert m["ccc"] == pytest.approx(2 * cov / (y.var() + p.var() + (y.mean() - p.mean()) ** 2))


def test_perfect_and_mean_predictors():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.2, 0.8, (200, 5))
    perfect = regression_table(y, y)
    assert np.allclose(perfect["r2"], 1) and np.allclose(perfect["ccc"], 1) and np.allclose(perfect["mae"], 0)
    mean = regression_table(y, np.repeat(y.mean(axis=0, keepdims=True), 200, axis=0))
    assert np.allclose(mean["r2"], 0, atol=1e-12) and np.allclose(mean["ccc"], 0)
    assert list(mean.index) == ["extroversion", "neuroticism", "agreeableness", "conscientiousness", "openness", "mean"]


def test_bootstrap_intervals_cover_the_point_estimate_and_resample_groups():
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 1, (120, 5))
    p = np.clip(y + rng.normal(0, 0.1, y.shape), 0, 1)
    point = regression_table(y, p)
    groups = np.repeat(np.arange(30), 4).astype(str)
    ci = bootstrap_intervals(y, p, groups, n_boot=300, seed=0)
    assert (ci["low"]["r2"] <= point["r2"]).all() and (point["r2"] <= ci["high"]["r2"]).all()
    assert (ci["high"]["mae"] - ci["low"]["mae"] > 0).all()
    again = bootstrap_intervals(y, p, groups, n_boot=300, seed=0)
    pd.testing.assert_frame_equal(ci["low"], again["low"])


def test_bootstrap_samples_of_two_predictions_are_paired():
    """One prediction's errors 1.5 times the other's on every clip: it is worse on every common resample, though
    the two intervals overlap."""
    rng = np.random.default_rng(2)
    y = rng.uniform(0, 1, (80, 5))
    good = y + rng.normal(0, 0.15, y.shape)
    bad = y + 1.5 * (good - y)
    groups = np.repeat(np.arange(20), 4).astype(str)
    r2_good = bootstrap_samples(y, good, groups, n_boot=200, seed=3)["r2"]  # (200, 5)
    r2_bad = bootstrap_samples(y, bad, groups, n_boot=200, seed=3)["r2"]
    assert r2_good.shape == (200, 5) and (r2_good > r2_bad).all()
    assert (percentile_interval(r2_bad)[1] > percentile_interval(r2_good)[0]).any()
    other = bootstrap_samples(y, good, groups, n_boot=200, seed=4)["r2"]
    assert not np.allclose(other, r2_good)
    whole = metric_arrays(y, good)["r2"]
    assert (np.abs(np.median(r2_good, axis=0) - whole) < 0.05).all()


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    result = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", folder / "hybrid.pt", "--split",
                        folder / "split.csv", "--epochs", "2", "--batch-size", "4", *TINY_MODEL)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.slow
def test_attn_test_compares_checkpoints_with_baselines(tiny_corpus, trained, tmp_path):
    torch.manual_seed(0)
    torch.save(PaperNet(paper_config(22)).state_dict(), tmp_path / "paper.pt")
    result = run_script("attn_test.py", tiny_corpus / "frames.csv", "--weights", trained / "hybrid.pt",
                        tmp_path / "paper.pt", "-o", tmp_path / "res", "--bootstrap", "200")
    assert result.returncode == 0, result.stderr
    for row in ("| hybrid |", "| train-mean |", "| ridge |", "| minirocket |", "| quant |"):
        assert row in result.stdout
    frame = pd.read_csv(tmp_path / "res" / "comparison.csv")
    assert list(frame["model"]) == ["hybrid", "paper", "train-mean", "ridge", "minirocket", "quant"]
    assert frame.set_index("model").loc[["minirocket", "quant"], ["r2", "mae"]].notna().all().all()
    assert (tmp_path / "res" / "predictions_quant.csv").exists()
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    test_clips = results["test_set"]["clips"]
    split = pd.read_csv(trained / "split.csv")
    assert results["test_set"]["groups"] == int((split["split"] == "test").sum())
    preds = pd.read_csv(tmp_path / "res" / "predictions_hybrid.csv")
    assert len(preds) == test_clips and set(preds["group"]) == set(split.loc[split["split"] == "test", "group"])
    y = preds[[c for c in preds if c.startswith("true_")]].to_numpy()
    p = preds[[c for c in preds if c.startswith("pred_")]].to_numpy()
    assert results["models"]["hybrid"]["metrics"]["mean"]["r2"] == pytest.approx(regression_table(y, p).loc["mean", "r2"])
    for name in ("r2_by_trait.png", "pred_vs_true_hybrid.png", "residuals_paper.png", "metrics.csv"):
        assert (tmp_path / "res" / name).stat().st_size > 1000
    assert "WARNING" not in result.stderr
    mean_row = frame.set_index("model").loc["train-mean"]
    assert mean_row["r2_low"] <= mean_row["r2"] <= mean_row["r2_high"]


@pytest.mark.slow
def test_leakage_warning_fires_when_test_clips_were_trained_on(tiny_corpus, trained, tmp_path):
    ckpt = load_checkpoint(trained / "hybrid.pt")
    ckpt.split = SplitRecord(ckpt.split.path, ckpt.split.sha256, {g: "train" for g in ckpt.split.assignment})
    save_checkpoint(tmp_path / "leaky.pt", ckpt)
    result = run_script("attn_test.py", tiny_corpus / "frames.csv", "--weights", tmp_path / "leaky.pt", "--split",
                        trained / "split.csv", "-o", tmp_path / "res", "--bootstrap", "50")
    assert result.returncode == 0, result.stderr
    assert "WARNING: 4 of 4 test clips (1 source videos) were in this checkpoint's training" in result.stderr
    notes = json.loads((tmp_path / "res" / "results.json").read_text())["models"]["leaky"]["notes"]
    assert notes and notes[0].startswith("WARNING")


def test_attn_test_bad_inputs(tiny_corpus, trained, tmp_path):
    au_only = tmp_path / "au.csv"
    pd.read_csv(tiny_corpus / "frames.csv").drop(columns=["pose_Rx"]).to_csv(au_only, index=False)
    result = run_script("attn_test.py", au_only, "--weights", trained / "hybrid.pt", "-o", tmp_path / "r")
    one_line_error(result, "missing pose_Rx")
    unlabelled = tmp_path / "nolabels.csv"
    pd.read_csv(tiny_corpus / "frames.csv").drop(columns=["openness", "extroversion", "neuroticism", "agreeableness",
                                                            "conscientiousness"]).to_csv(unlabelled, index=False)
    result = run_script("attn_test.py", unlabelled, "--weights", trained / "hybrid.pt", "-o", tmp_path / "r")
    one_line_error(result, "24 clip(s) have no label")
    empty = tmp_path / "split.csv"
    groups = pd.read_csv(trained / "split.csv")
    groups.assign(split="train").to_csv(empty, index=False)
    result = run_script("attn_test.py", tiny_corpus / "frames.csv", "--weights", trained / "hybrid.pt", "--split", empty,
                        "-o", tmp_path / "r")
    one_line_error(result, "the test split holds none of these clips")
    (tmp_path / "taken").write_text("x")
    result = run_script("attn_test.py", tiny_corpus / "frames.csv", "--weights", trained / "hybrid.pt", "-o",
                        tmp_path / "taken")
    one_line_error(result, "taken: cannot be created: ", "is a file")
    result = run_script("attn_test.py", tiny_corpus / "frames.csv", "--weights", trained / "hybrid.pt", "-o",
                        trained, "--whole")  # predictions_hybrid.csv there would be new; the checkpoint is untouched
    assert result.returncode == 0 and (trained / "hybrid.pt").exists()


@pytest.mark.parametrize("weights", ["ours", "paper17", "paper22"])
def test_test_deploy_and_analysis_give_a_checkpoint_the_same_inputs(tiny_corpus, tmp_path, weights):
    """One input transform per (checkpoint, data): attn_test's predictions equal attn_deploy's scores."""
    path = tmp_path / "w.pt"
    if weights == "ours":
        our_checkpoint(path, tiny_corpus)
    else:
        torch.save(random_paper_state(17 if weights == "paper17" else 22, seed=5), path)
    tested = run_script("attn_test.py", tiny_corpus / "frames.csv", "--weights", path, "--whole", "-o",
                        tmp_path / "res", "--bootstrap", "20")
    deployed = run_script("attn_deploy.py", tiny_corpus / "frames.csv", "--weights", path, "-o", tmp_path / "c.csv")
    assert tested.returncode == 0 and deployed.returncode == 0, tested.stderr + deployed.stderr
    pred = pd.read_csv(tmp_path / "res" / "predictions_w.csv", dtype={"clip_id": str}).set_index("clip_id")
    clips = pd.read_csv(tmp_path / "c.csv", dtype={"clip_id": str}).set_index("clip_id").loc[pred.index]
    assert len(pred) == 24
    np.testing.assert_allclose(pred[[f"pred_{t}" for t in TRAITS]].to_numpy(), clips[list(TRAITS)].to_numpy(),
                               atol=1e-6, rtol=0)
    spread = clips[list(TRAITS)].to_numpy().std(axis=0).max()
    assert spread > 1e-4  # the scores differ between clips, so equal tables mean equal inputs


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["ours", "paper22"])
def test_analysis_scores_held_out_clips_as_attn_test_does(tiny_corpus, tmp_path, weights):
    from dataset import assign_splits, save_split
    from metrics import metric_arrays
    from openface import FEATURE_COLUMNS, read_clips

    path = tmp_path / "w.pt"
    if weights == "ours":
        our_checkpoint(path, tiny_corpus)
    else:
        torch.save(random_paper_state(22, seed=5), path)
    clips, _ = read_clips([tiny_corpus / "frames.csv"], FEATURE_COLUMNS)
    split = tmp_path / "s.csv"
    save_split(split, assign_splits([c.group for c in clips], seed=3, fractions=(0.5, 0.17, 0.33)))
    tested = run_script("attn_test.py", tiny_corpus / "frames.csv", "--weights", path, "--split", split, "-o",
                        tmp_path / "res", "--bootstrap", "20", "--table-format", "parquet")
    analysed = run_script("au_analysis.py", tiny_corpus / "frames.csv", "-o", tmp_path / "fig", "--weights", path,
                          "--data", tiny_corpus / "frames.csv", "--split", split, "--repeats", "1")
    assert tested.returncode == 0 and analysed.returncode == 0, tested.stderr + analysed.stderr
    pred = pd.read_parquet(tmp_path / "res" / "predictions_w.parquet")
    r2 = metric_arrays(pred[[f"true_{t}" for t in TRAITS]].to_numpy(), pred[[f"pred_{t}" for t in TRAITS]].to_numpy())["r2"]
    base = pd.read_csv(tmp_path / "fig" / "permutation_importance.csv").groupby("trait")["base_r2"].first()
    np.testing.assert_allclose(base[list(TRAITS)].to_numpy(), r2, atol=1e-9)


def test_the_aeon_rows_say_not_installed_without_aeon(tiny_corpus, trained, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "aeon.transformations.collection.convolution_based", None)
    monkeypatch.setitem(sys.modules, "aeon.transformations.collection.interval_based", None)
    result = run_script("attn_test.py", tiny_corpus / "frames.csv", "--weights", trained / "hybrid.pt", "-o",
                        tmp_path / "res", "--bootstrap", "20")
    assert result.returncode == 0, result.stderr
    for name in ("minirocket", "quant"):
        assert f"| {name} | not installed (pip install aeon) |" in result.stdout
        assert not (tmp_path / "res" / f"predictions_{name}.csv").exists()
    assert {"minirocket", "quant"} <= set(pd.read_csv(tmp_path / "res" / "comparison.csv")["model"])
