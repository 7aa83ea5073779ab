"""au_analysis.py: correlations and p-values against scipy, FDR control, planted effects, figures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from au_analysis import (benjamini_hochberg, clip_statistics_table, constant_over_clips, correlate, correlation_matrix,
                         correlation_pvalues, permutation_pvalues, rank_columns)
from conftest import TINY_MODEL, one_line_error, our_checkpoint, run_script, set_cell
from data.synthetic import prepare
from openface import Clip


def test_correlations_and_pvalues_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    x[:, 2] = np.round(x[:, 2])  # ties
    y = x[:, :3] @ rng.normal(size=(3, 2)) + rng.normal(size=(40, 2))
    r = correlation_matrix(x, y)
    p = correlation_pvalues(r, 40)
    rs = correlation_matrix(rank_columns(x), rank_columns(y))
    ps = correlation_pvalues(rs, 40)
    for i in range(6):
        for j in range(2):
            ref = stats.pearsonr(x[:, i], y[:, j])
            assert r[i, j] == pytest.approx(ref.statistic, abs=1e-12) and p[i, j] == pytest.approx(ref.pvalue, rel=1e-8)
            ref = stats.spearmanr(x[:, i], y[:, j])
            assert rs[i, j] == pytest.approx(ref.statistic, abs=1e-12) and ps[i, j] == pytest.approx(ref.pvalue, rel=1e-8)


def test_small_samples_get_exact_permutation_p_values_as_scipy_computes_them():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4))
    y = np.c_[x[:, 0] + 0.3 * rng.normal(size=6), rng.normal(size=6)]
    r = correlation_matrix(x, y)
    p, how = permutation_pvalues(x, y, r, np.random.default_rng(0))
    assert how == "exact permutation (720 orders)"
    for i in range(4):
        for j in range(2):
            exact = stats.pearsonr(x[:, i], y[:, j], method=stats.PermutationMethod()).pvalue  # all 720 orders
            assert p[i, j] == pytest.approx(exact, abs=1e-12)
    perfect = np.arange(5.0)[:, None]
    p, _ = permutation_pvalues(perfect, perfect, correlation_matrix(perfect, perfect), np.random.default_rng(0))
    assert p[0, 0] == pytest.approx(2 / 120)  # identity and reverse of 5! orders: the smallest p at n = 5


def test_the_p_values_of_three_perfect_clips_are_one_third_not_zero():
    x = np.array([[1.0], [2.0], [3.0]])
    p, _ = permutation_pvalues(x, x, correlation_matrix(x, x), np.random.default_rng(0))
    assert p[0, 0] == pytest.approx(1 / 3)  # the asymptotic formula says 0


def test_between_7_and_30_clips_shuffles_approximate_the_exact_p_and_30_use_the_t_approximation():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 3))
    y = np.c_[x[:, 0] + rng.normal(size=12), rng.normal(size=12)]
    r = correlation_matrix(x, y)
    p, how = permutation_pvalues(x, y, r, np.random.default_rng(0))
    assert how == "permutation (9,999 shuffles)"
    reference = stats.pearsonr(x[:, 0], y[:, 0], method=stats.PermutationMethod(n_resamples=99_999, rng=1)).pvalue
    assert p[0, 0] == pytest.approx(reference, abs=0.01)
    clips = pd.Index([f"c{k}" for k in range(30)], name="clip")
    features = pd.DataFrame(rng.normal(size=(30, 2)), index=clips,
                            columns=pd.MultiIndex.from_product([["mean", "std"], ["AU01_r"]]))
    traits = pd.DataFrame(rng.uniform(size=(30, 5)), index=clips, columns=["extroversion", "neuroticism",
                                                                       "agreeableness", "conscientiousness", "openness"])
    table = correlate(features, traits, "pearson")
    assert set(table["p_method"]) == {"t approximation"} and (table["n"] == 30).all()
    expected = stats.pearsonr(features[("mean", "AU01_r")], traits["openness"]).pvalue
    got = table.set_index(["stat", "trait"]).loc[("mean", "openness"), "p"]
    assert got == pytest.approx(expected, rel=1e-8)
    small = correlate(features.iloc[:8], traits.iloc[:8], "spearman", seed=3)
    assert set(small["p_method"]) == {"permutation (9,999 shuffles)"} and (small["n"] == 8).all()
    pd.testing.assert_frame_equal(small, correlate(features.iloc[:8], traits.iloc[:8], "spearman", seed=3))


def test_constant_column_gives_nan():
    x = np.c_[np.ones(10), np.arange(10.0)]
    r = correlation_matrix(x, np.arange(10.0)[:, None])
    assert np.isnan(r[0, 0]) and r[1, 0] == pytest.approx(1)


def test_a_constant_trait_is_named_as_what_leaves_r_undefined_not_the_features():
    """Six clips whose openness is one value and whose AU02_r is 0.5 throughout: the console names those two, and
    only their correlations are undefined."""
    rng = np.random.default_rng(0)
    clips = []
    for i in range(6):
        frames = rng.uniform(0, 1, (50, 3)).astype(np.float32)
        frames[:, 1] = 0.5
        clips.append(Clip(f"c{i}", f"c{i}.csv", f"c{i}", frames, np.array([*rng.uniform(0, 1, 4), 0.3], np.float32)))
    table, traits = clip_statistics_table(clips, ["AU01_r", "AU02_r", "AU04_r"])
    assert constant_over_clips(table, traits) == ["AU02_r mean", "AU02_r std", "openness (trait)"]
    results = correlate(table, traits, "spearman", seed=0)
    undefined = results["r"].isna()
    assert undefined.equals((results["trait"] == "openness") | (results["feature"] == "AU02_r"))
    assert undefined.sum() == 6 + 2 * 4


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(2).uniform(0, 0.2, (22, 5))
    p[3, 1] = np.nan
    q = benjamini_hochberg(p)
    finite = np.isfinite(p)
    np.testing.assert_allclose(q[finite], stats.false_discovery_control(p[finite]), rtol=1e-12)
    assert np.isnan(q[3, 1])


def test_false_discoveries_stay_near_the_fdr_level():
    """10 true effects among 110 tests, 300 simulated studies: the mean false discovery proportion <= ~5 %."""
    rng = np.random.default_rng(0)
    fdp = []
    for _ in range(300):
        x = rng.normal(size=(80, 22))
        y = rng.normal(size=(80, 5))
        y[:, 0] += 0.5 * x[:, :10].sum(axis=1) / np.sqrt(10)
        q = benjamini_hochberg(correlation_pvalues(correlation_matrix(x, y), 80))
        found = q < 0.05
        truth = np.zeros_like(found)
        truth[:10, 0] = True
        fdp.append((found & ~truth).sum() / max(found.sum(), 1))
    assert np.mean(fdp) < 0.065


@pytest.mark.slow
def test_planted_relationships_are_found(tmp_path):
    clips, truth = prepare.generate(160, 4, seed=3)
    prepare.write_corpus(tmp_path, clips, truth, 3, ("table",))
    result = run_script("au_analysis.py", tmp_path / "frames.csv", "-o", tmp_path / "fig", "--method", "both",
                        "--figure-formats", "png", "pdf")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "fig" / "correlations_spearman.csv").set_index(["stat", "feature", "trait"])
    for key, sign in ((("mean", "AU12_r", "extroversion"), 1), (("mean", "AU04_r", "conscientiousness"), -1),
                      (("std", "pose_Ry", "neuroticism"), -1), (("std", "AU02_r", "openness"), 1)):
        assert np.sign(table.loc[key, "r"]) == sign and table.loc[key, "q"] < 0.05
    assert table.loc[("mean", "AU12_r", "extroversion"), "n"] == 160
    for name in ("spearman_mean", "spearman_std", "pearson_mean", "pearson_std"):
        assert (tmp_path / "fig" / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / "fig" / f"{name}.pdf").stat().st_size > 5_000


@pytest.mark.slow
def test_permutation_importance_and_bad_inputs(tiny_corpus, tmp_path):
    out = tmp_path / "m.pt"
    assert run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", out, "--split", tmp_path / "s.csv",
                      "--epochs", "1", *TINY_MODEL).returncode == 0
    result = run_script("au_analysis.py", tiny_corpus / "frames.csv", "-o", tmp_path / "fig", "--weights", out,
                        "--data", tiny_corpus / "frames.csv", "--repeats", "2")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "fig" / "permutation_importance.csv")
    assert set(table["unit"]) == {"au", "gaze", "head", *pd.read_csv(tiny_corpus / "frames.csv", nrows=1).columns[2:24]}
    assert len(table) == (3 + 22) * 5 and table["drop_mean"].abs().sum() > 0
    assert (tmp_path / "fig" / "permutation_importance.png").stat().st_size > 10_000
    frames = pd.read_csv(tiny_corpus / "frames.csv")
    frames[frames["ID"] <= 2].to_csv(tmp_path / "two.csv", index=False)
    one_line_error(run_script("au_analysis.py", tmp_path / "two.csv", "-o", tmp_path / "f2"),
                   "only 2 labelled usable clip(s); with fewer than 5 no correlation can be significant")
    frames.drop(columns=["openness"]).to_csv(tmp_path / "notrait.csv", index=False)
    one_line_error(run_script("au_analysis.py", tmp_path / "notrait.csv", "-o", tmp_path / "f3"),
                   "missing trait columns openness")
    frames.assign(AU09_r=1.0).to_csv(tmp_path / "const.csv", index=False)
    result = run_script("au_analysis.py", tmp_path / "const.csv", "-o", tmp_path / "f4")
    assert result.returncode == 0 and "r is undefined (constant over clips) for AU09_r" in result.stdout
    (tmp_path / "a_file").write_text("x")
    one_line_error(run_script("au_analysis.py", tiny_corpus / "frames.csv", "-o", tmp_path / "a_file"),
                   "a_file: cannot be created: ", "is a file")


@pytest.mark.parametrize("column, line, text, message", [
    ("openness", 2, "1.7", "line 2, column openness: trait value 1.7 is outside [0, 1]"),
    ("openness", 30, "0.01", "clip ID 1 has two different labels (lines 2 and 30)"),
    ("AU12_r", 30, "nan", "line 30, column AU12_r: value is empty or NaN"),
    ("AU12_r", 30, "inf", "line 30, column AU12_r: value overflows 32-bit floats"),
    ("AU12_r", 30, "abc", "line 30, column AU12_r: 'abc' is not a number"),
])
def test_analysis_checks_its_input_like_every_script(tiny_corpus, tmp_path, column, line, text, message):
    table = tmp_path / "frames.csv"
    table.write_bytes((tiny_corpus / "frames.csv").read_bytes())
    set_cell(table, line, column, text)
    one_line_error(run_script("au_analysis.py", table, "-o", tmp_path / "fig"), "frames.csv", message)


def test_analysis_reads_deploys_frame_output_with_the_same_hygiene(tiny_corpus, tmp_path):
    weights = our_checkpoint(tmp_path / "w.pt", tiny_corpus)
    assert run_script("attn_deploy.py", tiny_corpus / "openface", "--weights", weights, "-o", tmp_path / "clips.csv",
                      "--frames-output", tmp_path / "frames.parquet").returncode == 0
    result = run_script("au_analysis.py", tmp_path / "frames.parquet", "-o", tmp_path / "fig")
    assert result.returncode == 0, result.stderr
    assert "24 labelled clips, 22 features" in result.stdout and "no face found (success == 0)" in result.stdout
    corr = pd.read_csv(tmp_path / "fig" / "correlations_spearman.csv")
    assert (corr["n"] == 24).all()


def test_a_small_table_is_analysed_with_exact_p_values_and_n_beside_every_result(tiny_corpus, tmp_path):
    frames = pd.read_csv(tiny_corpus / "frames.csv")
    frames[frames["ID"] <= 6].to_csv(tmp_path / "six.csv", index=False)
    result = run_script("au_analysis.py", tmp_path / "six.csv", "-o", tmp_path / "fig", "--method", "both")
    assert result.returncode == 0, result.stderr
    assert "n = 6 clips, fewer than 30: p-values from permutations" in result.stdout
    assert "spearman (n = 6 clips, p by exact permutation (720 orders)):" in result.stdout
    table = pd.read_csv(tmp_path / "fig" / "correlations_spearman.csv")
    assert (table["n"] == 6).all() and (table["p_method"] == "exact permutation (720 orders)").all()
    assert table["p"].min() >= 2 / 720 - 1e-12 and (table["q"] >= table["p"] - 1e-12).all()
    frames[frames["ID"] <= 4].to_csv(tmp_path / "four.csv", index=False)
    one_line_error(run_script("au_analysis.py", tmp_path / "four.csv", "-o", tmp_path / "f4"),
                   "only 4 labelled usable clip(s); with fewer than 5 no correlation can be significant")
