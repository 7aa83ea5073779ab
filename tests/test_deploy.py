"""attn_deploy.py: both layouts, statuses, resume, torchrun, the paper's preprocessing, real OpenFace files."""
from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REAL, needs_real, run_script, write_openface
from dataset import Scaler
from model import ModelConfig, build_model, save_checkpoint
from openface import AU_COLUMNS, FEATURE_COLUMNS, FEATURE_SETS, TRAITS, clip_key, read_clips
from test_model import random_paper_state, reference_paper_forward


def our_checkpoint(path, corpus, features=FEATURE_COLUMNS):
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_features=len(features), embed_dim=16, lstm_hidden=16, attn_dim=16, attn_hops=4))
    clips, _ = read_clips([corpus / "frames.csv"], features)
    meta = {"features": list(features), "traits": list(TRAITS), "normalization": Scaler.fit(clips).to_dict()}
    save_checkpoint(path, model, meta)
    return path


@pytest.fixture(scope="module")
def hybrid_weights(tiny_corpus, tmp_path_factory):
    return our_checkpoint(tmp_path_factory.mktemp("w") / "hybrid.pt", tiny_corpus)


def deploy(*args, torchrun=None):
    return run_script("attn_deploy.py", *args, torchrun=torchrun)


def assert_same_table(path_a, path_b) -> None:
    """Same rows, order, ids, counts and statuses; scores equal up to float32 rounding (batches differ)."""
    a, b = pd.read_csv(path_a, low_memory=False), pd.read_csv(path_b, low_memory=False)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    other = [c for c in a.columns if c not in TRAITS]
    pd.testing.assert_frame_equal(a[other], b[other])
    np.testing.assert_allclose(a[list(TRAITS)].to_numpy(float), b[list(TRAITS)].to_numpy(float), atol=1e-6, rtol=0)


def test_both_layouts_give_identical_clip_results(tiny_corpus, hybrid_weights, tmp_path):
    a = deploy(tiny_corpus / "frames.csv", "--weights", hybrid_weights, "-o", tmp_path / "a.csv")
    b = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", tmp_path / "b.csv")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ta, tb = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert list(ta.columns) == ["clip_id", "File", "n_frames", "n_dropped", "status", *TRAITS]
    ta.index, tb.index = ta["File"].map(clip_key), tb["File"].map(clip_key)
    tb = tb.loc[ta.index]
    assert len(ta) == 24 and (ta["status"] == "ok").all()
    np.testing.assert_array_equal(ta["n_frames"], tb["n_frames"])
    np.testing.assert_allclose(ta[list(TRAITS)].to_numpy(), tb[list(TRAITS)].to_numpy(), atol=1e-6)
    assert tb["n_dropped"].sum() > 0 and ta["n_dropped"].sum() == 0
    assert not (tmp_path / "a.csv.parts").exists()


def test_every_status_appears(tiny_corpus, hybrid_weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_openface(folder / "good.csv", 80)
    write_openface(folder / "short.csv", 20)
    write_openface(folder / "faceless.csv", 60, success=np.zeros(60, int))
    write_openface(folder / "nogaze.csv", 60, columns=["frame", "face_id", "timestamp", "confidence", "success",
                                                       *AU_COLUMNS, "pose_Rx", "pose_Ry", "pose_Rz"])
    (folder / "sub").mkdir()
    (folder / "sub" / "empty.csv").write_text("")
    result = deploy(folder, "--weights", hybrid_weights, "-o", tmp_path / "clips.csv",
                    "--frames-output", tmp_path / "frames.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "clips.csv").set_index("clip_id")
    assert table["status"].to_dict() == {
        "faceless": "no_face", "good": "ok", "nogaze": "unreadable: missing gaze_angle_x, gaze_angle_y "
        "(this file can serve feature sets: au, au_head)", "short": "too_short", "empty": "unreadable: empty file"}
    assert table.loc["good", list(TRAITS)].notna().all() and table.loc["short", list(TRAITS)].isna().all()
    frames = pd.read_csv(tmp_path / "frames.csv")
    assert frames.groupby("clip_id").size().to_dict() == {"good": 80, "short": 20, "faceless": 60}
    assert frames.loc[frames["clip_id"] == "good", "openness"].nunique() == 1
    assert "ok 1" in result.stdout and "too_short 1" in result.stdout and "unreadable 2" in result.stdout


def test_resume_after_partial_run_gives_the_same_file(tiny_corpus, hybrid_weights, tmp_path):
    full = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", tmp_path / "full.csv",
                  "--frames-output", tmp_path / "full_frames.csv")
    assert full.returncode == 0
    out = tmp_path / "part.csv"
    first = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--frames-output",
                   tmp_path / "part_frames.csv", "--chunk-size", "5", "--limit", "11")
    assert first.returncode == 0 and "13 clip(s) left" in first.stdout
    assert not out.exists() and out.with_name("part.csv.parts").is_dir()
    second = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--frames-output",
                    tmp_path / "part_frames.csv", "--chunk-size", "5", "--resume")
    assert second.returncode == 0, second.stderr
    assert_same_table(out, tmp_path / "full.csv")
    assert_same_table(tmp_path / "part_frames.csv", tmp_path / "full_frames.csv")


def test_torchrun_two_processes_give_the_same_file(tiny_corpus, hybrid_weights, tmp_path):
    one = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", tmp_path / "one.csv")
    two = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", tmp_path / "two.csv", torchrun=2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert_same_table(tmp_path / "one.csv", tmp_path / "two.csv")


def original_deploy_reference(table: pd.DataFrame, sd: dict, features) -> dict:
    """The original deploy: min-max the gaze/pose columns over the whole file, then the paper forward per clip."""
    x = table[list(features)].to_numpy(np.float64)
    for j, col in enumerate(features):
        if col in ("gaze_angle_x", "gaze_angle_y", "pose_Rx", "pose_Ry", "pose_Rz"):
            x[:, j] = (x[:, j] - x[:, j].min()) / (x[:, j].max() - x[:, j].min())
    out = {}
    for clip_id, rows in table.groupby("ID", sort=False).indices.items():
        if 41 <= len(rows) <= 699:
            out[str(clip_id)] = reference_paper_forward(sd, x[rows].astype(np.float32))
    return out


@pytest.mark.parametrize("n_features", [22, 17])
def test_paper_weights_use_the_original_preprocessing(tiny_corpus, tmp_path, n_features):
    sd = random_paper_state(n_features, seed=7)
    torch.save(sd, tmp_path / "paper.pt")
    result = deploy(tiny_corpus / "frames.csv", "--weights", tmp_path / "paper.pt", "-o", tmp_path / "clips.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tiny_corpus / "frames.csv")
    expected = original_deploy_reference(table, sd, FEATURE_SETS["all" if n_features == 22 else "au"])
    got = pd.read_csv(tmp_path / "clips.csv", dtype={"clip_id": str}).set_index("clip_id")
    assert len(expected) == 24
    for clip_id, values in expected.items():
        np.testing.assert_allclose(got.loc[clip_id, list(TRAITS)].to_numpy(float), values, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")
def test_parquet_output(tiny_corpus, hybrid_weights, tmp_path):
    result = deploy(tiny_corpus / "frames.csv", "--weights", hybrid_weights, "-o", tmp_path / "c.parquet")
    assert result.returncode == 0 and len(pd.read_parquet(tmp_path / "c.parquet")) == 24


def test_parquet_without_pyarrow_is_a_clear_error(tiny_corpus, hybrid_weights, tmp_path):
    if importlib.util.find_spec("pyarrow") is not None:
        pytest.skip("pyarrow is installed")
    result = deploy(tiny_corpus / "frames.csv", "--weights", hybrid_weights, "-o", tmp_path / "c.parquet")
    assert result.returncode == 1 and "writing Parquet needs pyarrow" in result.stderr


@needs_real
def test_real_unity_folder(tiny_corpus, hybrid_weights, tmp_path):
    result = deploy(REAL / "unity_smyle_openface", "--weights", hybrid_weights, "-o", tmp_path / "u.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "u.csv")
    assert len(table) == 22 and set(table["status"]) <= {"ok", "too_short"}
    assert "Squence 03" in set(table["clip_id"])
    worst = table.loc[table["n_dropped"].idxmax()]
    assert worst["n_dropped"] == 252 and worst["status"] == "ok"
    ok = table[table["status"] == "ok"]
    assert ok[list(TRAITS)].notna().all().all() and (ok["n_frames"] >= 41).all()


@needs_real
def test_real_files_without_gaze(tiny_corpus, hybrid_weights, tmp_path):
    inputs = [REAL / "pyfeat_openface", REAL / "emoinfer_openface_samples"]
    result = deploy(*inputs, "--weights", hybrid_weights, "-o", tmp_path / "all.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "all.csv")
    assert len(table) == 3
    assert table["status"].str.startswith("unreadable: missing gaze_angle_x, gaze_angle_y").all()
    au_weights = our_checkpoint(tmp_path / "au.pt", tiny_corpus, FEATURE_SETS["au"])
    result = deploy(*inputs, "--weights", au_weights, "-o", tmp_path / "au.csv", "--min-frames", "20")
    table = pd.read_csv(tmp_path / "au.csv")
    assert result.returncode == 0 and (table["status"] == "ok").all()
    assert table[list(TRAITS)].notna().all().all()


def test_deploy_bad_inputs(hybrid_weights, tmp_path):
    result = deploy(tmp_path / "missing", "--weights", hybrid_weights, "-o", tmp_path / "x.csv")
    assert result.returncode == 1 and "missing: no such file or folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = deploy(tmp_path / "empty", "--weights", hybrid_weights, "-o", tmp_path / "x.csv")
    assert result.returncode == 1 and "no CSV files found" in result.stderr
    result = deploy(tmp_path / "empty", "--weights", tmp_path / "none.pt", "-o", tmp_path / "x.csv")
    assert result.returncode == 1 and "none.pt: no such checkpoint file" in result.stderr
