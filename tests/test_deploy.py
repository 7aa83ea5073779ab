"""attn_deploy.py: both layouts, statuses, resume, torchrun, the paper's preprocessing, real OpenFace files, and
everything a hostile user might try (its outputs must never overwrite, mix, lose or invent a row)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from cli import output_lock
from conftest import (REAL, ROOT, needs_real, one_line_error, our_checkpoint, process_env, run_process, run_script,
                      set_cell, tree_digest, write_openface)
from openface import AU_COLUMNS, FEATURE_SETS, TRAITS, clip_key
from test_model import random_paper_state, reference_paper_forward


CLIP_TABLE = ["clip_id", "File", "n_frames", "n_dropped", "status", "reason", *TRAITS, "clamped", "out_of_range"]


@pytest.fixture(scope="module")
def hybrid_weights(tiny_corpus, tmp_path_factory):
    return our_checkpoint(tmp_path_factory.mktemp("w") / "hybrid.pt", tiny_corpus)


def deploy(*args):
    return run_script("attn_deploy.py", *args)


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
    assert list(ta.columns) == CLIP_TABLE
    ta.index, tb.index = ta["File"].map(clip_key), tb["File"].map(clip_key)
    tb = tb.loc[ta.index]
    assert len(ta) == 24 and (ta["status"] == "ok").all() and ta["reason"].isna().all()
    np.testing.assert_array_equal(ta["n_frames"], tb["n_frames"])
    np.testing.assert_allclose(ta[list(TRAITS)].to_numpy(), tb[list(TRAITS)].to_numpy(), atol=1e-6)
    assert tb["n_dropped"].sum() > 0 and ta["n_dropped"].sum() == 0
    assert not (tmp_path / "a.csv.parts").exists() and not (tmp_path / "a.csv.lock").exists()
    sidecar = json.loads((tmp_path / "b.csv.json").read_text())
    assert sidecar["weights"] == "hybrid.pt" and sidecar["clips"] == 24 and sidecar["statuses"] == {"ok": 24}
    assert sidecar["inputs"][0][0] == tb["File"].sort_values().iloc[0] and str(tmp_path) not in json.dumps(sidecar)


def test_every_status_appears_with_its_reason_and_relative_names(tiny_corpus, hybrid_weights, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    write_openface(folder / "good.csv", 80)
    write_openface(folder / "short.csv", 20)
    write_openface(folder / "faceless.csv", 60, success=np.zeros(60, int))
    write_openface(folder / "nogaze.csv", 60, columns=["frame", "face_id", "timestamp", "confidence", "success",
                                                       *AU_COLUMNS, "pose_Rx", "pose_Ry", "pose_Rz"])
    write_openface(folder / "sub" / "huge.csv", 60)
    set_cell(folder / "sub" / "huge.csv", 9, "AU06_r", "1e39")
    write_openface(folder / "sub" / "dup.csv", 60, columns=["frame", "success", *FEATURE_SETS["all"], "AU01_r"])
    (folder / "sub" / "empty.csv").write_text("")
    result = deploy(folder, "--weights", hybrid_weights, "-o", tmp_path / "clips.csv",
                    "--frames-output", tmp_path / "frames.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "clips.csv", keep_default_na=False).set_index("clip_id")
    assert table["File"].to_dict() == {"faceless": "faceless.csv", "good": "good.csv", "nogaze": "nogaze.csv",
                                       "short": "short.csv", "dup": "sub/dup.csv", "empty": "sub/empty.csv",
                                       "huge": "sub/huge.csv"}
    assert table["status"].to_dict() == {"faceless": "no_face", "good": "ok", "nogaze": "unreadable",
                                         "short": "too_short", "dup": "unreadable", "empty": "unreadable",
                                         "huge": "unreadable"}
    assert table.loc["nogaze", "reason"] == ("missing gaze_angle_x, gaze_angle_y (this file can serve feature sets: "
                                             "au, au_head: use a checkpoint trained on one of them, e.g. "
                                             "attn_regression.py --features au)")
    assert table.loc["huge", "reason"] == "line 9, column AU06_r: value overflows 32-bit floats; fix or remove the frame"
    assert table.loc["dup", "reason"] == "column 'AU01_r' appears 2 times in the header; rename or remove the copies"
    assert table.loc["empty", "reason"] == "empty file"
    assert table.loc["short", "reason"] == "20 usable frame(s), fewer than --min-frames 41"
    assert table.loc["faceless", "reason"] == "no usable frame in 60 (60 no face found (success == 0))"
    assert (table["reason"][table["status"] != "ok"] != "").all()
    assert (table.loc["good", list(TRAITS)] != "").all() and (table.loc["short", list(TRAITS)] == "").all()
    frames = pd.read_csv(tmp_path / "frames.csv")
    assert frames.groupby("clip_id").size().to_dict() == {"good": 80, "short": 20, "faceless": 60}
    assert frames.loc[frames["clip_id"] == "good", "openness"].nunique() == 1
    assert "ok 1" in result.stdout and "too_short 1" in result.stdout and "unreadable 4" in result.stdout


def test_a_bad_cell_or_label_in_a_combined_table_marks_only_its_clip(tiny_corpus, hybrid_weights, tmp_path):
    table = tmp_path / "t.csv"
    table.write_bytes((tiny_corpus / "frames.csv").read_bytes())
    set_cell(table, 200, "AU12_r", "abc")
    set_cell(table, 2, "openness", "7")  # a label deploy does not use
    result = deploy(table, "--weights", hybrid_weights, "-o", tmp_path / "c.csv", "--frames-output",
                    tmp_path / "f.csv")
    assert result.returncode == 0, result.stderr
    clips = pd.read_csv(tmp_path / "c.csv", dtype={"clip_id": str})
    bad = clips[clips["status"] != "ok"]
    assert len(clips) == 24 and len(bad) == 1 and bad["reason"].iloc[0] == "line 200, column AU12_r: 'abc' is not a number"
    frames = pd.read_csv(tmp_path / "f.csv")
    assert len(frames) == len(pd.read_csv(tiny_corpus / "frames.csv"))  # every input row, predictions in trait columns
    assert frames.loc[frames["ID"] == int(bad["clip_id"].iloc[0]), "openness"].isna().all()


def test_outputs_never_overwrite_an_input(tiny_corpus, hybrid_weights, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(tiny_corpus / "openface", folder)
    table = tmp_path / "t.csv"
    table.write_bytes((tiny_corpus / "frames.csv").read_bytes())
    weights = tmp_path / "w.pt"
    weights.write_bytes(hybrid_weights.read_bytes())
    (tmp_path / "hard.csv").hardlink_to(table)
    (tmp_path / "soft.csv").symlink_to(table)
    before = tree_digest(tmp_path)
    one_of_them = sorted(folder.iterdir())[3]
    cases = [([table, "-o", table], "refusing to overwrite"),
             ([table, "-o", tmp_path / "c.csv", "--frames-output", table], "refusing to overwrite"),
             ([folder, "-o", one_of_them], "refusing to overwrite"),
             ([table, "-o", tmp_path / "hard.csv"], "refusing to overwrite"),
             ([table, "-o", tmp_path / "soft.csv"], "refusing to overwrite"),
             ([table, "-o", weights], "refusing to overwrite"),
             ([table, "-o", tmp_path / "x.csv", "--frames-output", tmp_path / "x.csv"], "is named for two outputs")]
    for args, message in cases:
        one_line_error(deploy(*args, "--weights", weights), message)
    assert tree_digest(tmp_path) == before


def test_unwritable_outputs_are_refused_before_any_work(tiny_corpus, hybrid_weights, tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    for out, message in ((tmp_path / "a_file" / "x.csv", "is a file"), (tmp_path / "a_folder", "is a folder"),
                         ("/proc/x.csv", "cannot write here")):
        one_line_error(deploy(tiny_corpus / "frames.csv", "--weights", hybrid_weights, "-o", out), message)
        one_line_error(deploy(tiny_corpus / "frames.csv", "--weights", hybrid_weights, "-o", tmp_path / "ok.csv",
                              "--frames-output", out), message)
    assert not list(tmp_path.glob("*.parts")) and not (tmp_path / "ok.csv").exists()


def test_output_inside_the_input_folder_is_never_read_back(tiny_corpus, hybrid_weights, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(tiny_corpus / "openface", folder)
    out = folder / "labels.csv"
    first = deploy(folder, "--weights", hybrid_weights, "-o", out, "--chunk-size", "5", "--limit", "8")
    assert first.returncode == 0 and "16 clip(s) left" in first.stdout
    second = deploy(folder, "--weights", hybrid_weights, "-o", out, "--chunk-size", "7", "--resume")
    assert second.returncode == 0, second.stderr
    again = deploy(folder, "--weights", hybrid_weights, "-o", out)  # the finished labels.csv sits in the folder now
    assert again.returncode == 0, again.stderr
    table = pd.read_csv(out)
    assert len(table) == 24 and (table["status"] == "ok").all() and table["clip_id"].is_unique


def test_resume_refuses_another_run_and_never_duplicates(tiny_corpus, hybrid_weights, tmp_path):
    other = our_checkpoint(tmp_path / "other.pt", tiny_corpus, seed=1)
    out = tmp_path / "c.csv"
    assert deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--chunk-size", "5",
                  "--limit", "10").returncode == 0
    one_line_error(deploy(tiny_corpus / "openface", "--weights", other, "-o", out, "--resume"),
                   "cannot resume: that run used another checkpoint")
    one_line_error(deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--resume",
                          "--min-frames", "60"), "another min_frames (41 then, 60 now)")
    one_line_error(deploy(tiny_corpus / "frames.csv", "--weights", hybrid_weights, "-o", out, "--resume"),
                   "other inputs")
    spelled = os.path.relpath(tiny_corpus / "openface", ROOT) + os.sep  # another spelling of the same folder
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        resumed = deploy(spelled, "--weights", hybrid_weights, "-o", out, "--resume", "--chunk-size", "3")
    finally:
        os.chdir(cwd)
    assert resumed.returncode == 0, resumed.stderr
    table = pd.read_csv(out)
    assert len(table) == 24 and table["clip_id"].is_unique
    assert deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", tmp_path / "whole.csv").returncode == 0
    assert_same_table(out, tmp_path / "whole.csv")


def test_a_second_run_on_the_same_output_refuses(tiny_corpus, hybrid_weights, tmp_path):
    out = tmp_path / "c.csv"
    with output_lock(out):
        result = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out)
    one_line_error(result, "c.csv: another run is writing it (pid ", "wait for it to finish")
    assert not out.exists()
    assert deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out).returncode == 0


def test_the_merge_refuses_rows_that_do_not_match_the_inputs(tiny_corpus, hybrid_weights, tmp_path):
    out = tmp_path / "c.csv"
    assert deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--chunk-size", "5",
                  "--limit", "23").returncode == 0
    parts = tmp_path / "c.csv.parts"
    first = sorted(parts.glob("*.clips.parquet"))[0]
    shutil.copy(first, parts / "999999999999.clips.parquet")  # a chunk twice: rows would be duplicated
    result = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--resume")
    one_line_error(result, "the chunks hold 29 rows for 24 of 24 input slots (5 written twice); nothing was written")
    assert not out.exists()


def test_an_unreadable_table_is_refused_before_anything_is_written(tiny_corpus, hybrid_weights, tmp_path):
    header_only = tmp_path / "t.csv"
    header_only.write_text("ID,File," + ",".join(FEATURE_SETS["all"]) + "\n")
    one_line_error(deploy(header_only, "--weights", hybrid_weights, "-o", tmp_path / "c.csv"), "t.csv: no frames")
    lines = (tiny_corpus / "frames.csv").read_text().split("\n")
    duplicated = tmp_path / "d.csv"
    duplicated.write_text("\n".join([lines[0].replace("AU12_r", "AU06_r")] + lines[1:]))
    one_line_error(deploy(duplicated, "--weights", hybrid_weights, "-o", tmp_path / "c.csv"),
                   "d.csv: column 'AU06_r' appears 2 times")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "t.csv"]  # no output, no OUTPUT.parts/


def test_a_run_refused_midway_leaves_no_parts_but_a_refused_resume_keeps_them(tiny_corpus, hybrid_weights, tmp_path):
    """A table that turns out unusable only when its turn comes (after other files were labelled): the fresh
    run's chunks are removed with the refusal; the chunks of an earlier run survive a refused --resume."""
    folder = tmp_path / "in"
    shutil.copytree(tiny_corpus / "openface", folder)
    (folder / "zz_old.csv").write_text("ID,File,AU01_r\n1,a.mp4,0.5\n")
    one_line_error(deploy(folder, "--weights", hybrid_weights, "-o", tmp_path / "c.csv", "--chunk-size", "5"),
                   "zz_old.csv: missing AU02_r", "can serve no feature set")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert deploy(folder, "--weights", hybrid_weights, "-o", tmp_path / "c.csv", "--chunk-size", "5", "--limit",
                  "10").returncode == 0
    chunks = sorted(p.name for p in (tmp_path / "c.csv.parts").iterdir())
    one_line_error(deploy(folder, "--weights", hybrid_weights, "-o", tmp_path / "c.csv", "--chunk-size", "5",
                          "--resume"), "zz_old.csv: missing AU02_r")
    kept = sorted(p.name for p in (tmp_path / "c.csv.parts").iterdir())
    assert len(chunks) == 3 and set(chunks) < set(kept)  # the earlier chunks, and the ones this resume added


KILL_OUT = "c.csv"


@pytest.fixture(scope="module")
def deployed_whole(tiny_corpus, hybrid_weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy_whole")
    result = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", folder / KILL_OUT, "--frames-output",
                    folder / "f.csv")
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("parts_done", [0, 1, 3])
def test_kill_9_then_resume_gives_the_uninterrupted_result(tiny_corpus, hybrid_weights, deployed_whole, tmp_path,
                                                           parts_done):
    out = tmp_path / KILL_OUT
    args = [tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--frames-output", tmp_path / "f.csv",
            "--chunk-size", "4", "--workers", "1"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "attn_deploy.py"), *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=process_env())
    parts = tmp_path / f"{KILL_OUT}.parts"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.clips.parquet"))) >= parts_done and (parts / "manifest.json").exists():
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run must be killed before it finished"
    resumed = deploy(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_table(out, deployed_whole / KILL_OUT)
    assert_same_table(tmp_path / "f.csv", deployed_whole / "f.csv")


@pytest.mark.slow
def test_torchrun_two_processes_give_the_same_file(tiny_corpus, hybrid_weights, tmp_path):
    one = deploy(tiny_corpus / "openface", "--weights", hybrid_weights, "-o", tmp_path / "one.csv")
    two = run_process("attn_deploy.py", tiny_corpus / "openface", "--weights", hybrid_weights, "-o",
                      tmp_path / "two.csv", torchrun=2)
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


def test_parquet_outputs(tiny_corpus, hybrid_weights, tmp_path):
    result = deploy(tiny_corpus / "frames.csv", "--weights", hybrid_weights, "-o", tmp_path / "c.parquet",
                    "--frames-output", tmp_path / "f.parquet")
    assert result.returncode == 0, result.stderr
    clips, frames = pd.read_parquet(tmp_path / "c.parquet"), pd.read_parquet(tmp_path / "f.parquet")
    assert len(clips) == 24 and list(clips.columns) == CLIP_TABLE and str(clips["openness"].dtype) == "float32"
    assert len(frames) == len(pd.read_csv(tiny_corpus / "frames.csv"))


@needs_real
def test_real_unity_folder(tiny_corpus, hybrid_weights, tmp_path):
    result = deploy(REAL / "unity_smyle_openface", "--weights", hybrid_weights, "-o", tmp_path / "u.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "u.csv")
    assert len(table) == 22 and set(table["status"]) <= {"ok", "too_short"}
    assert "Squence 03" in set(table["clip_id"]) and "Squence 03.csv" in set(table["File"])
    assert not table["File"].str.contains(os.sep + "work" + os.sep).any()  # names, not this machine's paths
    worst = table.loc[table["n_dropped"].idxmax()]
    assert worst["n_dropped"] == 252 and worst["status"] == "ok"
    ok = table[table["status"] == "ok"]
    assert ok[list(TRAITS)].notna().all().all() and (ok["n_frames"] >= 41).all()


@needs_real
def test_real_files_without_gaze(tiny_corpus, hybrid_weights, tmp_path):
    inputs = [REAL / "pyfeat_openface", REAL / "emoinfer_openface_samples"]
    result = deploy(*inputs, "--weights", hybrid_weights, "-o", tmp_path / "all.csv")
    one_line_error(result, "all.csv: no clip could be labelled (unreadable 3); the reasons are above")
    assert "3 clip(s) unreadable, e.g. " in result.stdout and "use a checkpoint trained on one of them" in result.stdout
    table = pd.read_csv(tmp_path / "all.csv")  # written all the same: every clip's row with its reason
    assert len(table) == 3 and (table["status"] == "unreadable").all()
    assert table["reason"].str.startswith("missing gaze_angle_x, gaze_angle_y").all()
    au_weights = our_checkpoint(tmp_path / "au.pt", tiny_corpus, FEATURE_SETS["au"])
    result = deploy(*inputs, "--weights", au_weights, "-o", tmp_path / "au.csv", "--min-frames", "20")
    table = pd.read_csv(tmp_path / "au.csv")
    assert result.returncode == 0 and (table["status"] == "ok").all()
    assert table[list(TRAITS)].notna().all().all()


def test_deploy_bad_inputs(hybrid_weights, tmp_path):
    one_line_error(deploy(tmp_path / "missing", "--weights", hybrid_weights, "-o", tmp_path / "x.csv"),
                   "missing: no such file or folder")
    (tmp_path / "empty").mkdir()
    one_line_error(deploy(tmp_path / "empty", "--weights", hybrid_weights, "-o", tmp_path / "x.csv"),
                   "no CSV, Parquet or video files found")
    write_openface(tmp_path / "empty" / "a.csv", 50)
    one_line_error(deploy(tmp_path / "empty", "--weights", tmp_path / "none.pt", "-o", tmp_path / "x.csv"),
                   "none.pt: no such checkpoint file")
    (tmp_path / "png.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    one_line_error(deploy(tmp_path / "empty", "--weights", tmp_path / "png.pt", "-o", tmp_path / "x.csv"),
                   "png.pt: not a PyTorch checkpoint file")
    one_line_error(deploy(tmp_path / "empty", "--weights", hybrid_weights, "-o", tmp_path / "x.csv", "--min-frames",
                          "0"), "--min-frames", "must be at least 1")


# ----------------------------------------------------------------------------------------------------------
# Faults: the checkpoint replaced, files vanishing, a full disk, long names, Ctrl-C, kills at the end


def test_a_checkpoint_replaced_during_the_run_never_mixes_two_models(tiny_corpus, hybrid_weights, tmp_path,
                                                                     monkeypatch):
    """A training writing a new best to the same path while deploy runs: the run keeps the model it loaded and
    records that model's hash; a resume with the new file is another run."""
    import hashlib

    import attn_deploy

    weights = tmp_path / "w.pt"
    shutil.copy(hybrid_weights, weights)
    first = hashlib.sha256(weights.read_bytes()).hexdigest()
    other = our_checkpoint(tmp_path / "other.pt", tiny_corpus, seed=1)
    real_load = attn_deploy.load_checkpoint

    def load_then_replace(path, *args, **kwargs):
        ckpt = real_load(path, *args, **kwargs)
        shutil.copy(other, weights)  # the file changes right after it was read
        return ckpt

    monkeypatch.setattr(attn_deploy, "load_checkpoint", load_then_replace)
    out = tmp_path / "c.csv"
    assert deploy(tiny_corpus / "openface", "--weights", weights, "-o", out, "--limit", "8",
                  "--chunk-size", "4").returncode == 0
    assert json.loads((tmp_path / "c.csv.parts" / "manifest.json").read_text())["checkpoint_sha256"] == first
    monkeypatch.setattr(attn_deploy, "load_checkpoint", real_load)
    one_line_error(deploy(tiny_corpus / "openface", "--weights", weights, "-o", out, "--resume"),
                   "cannot resume: that run used another checkpoint")


def test_an_input_that_disappears_during_the_run_becomes_its_rows_reason(tiny_corpus, hybrid_weights, tmp_path,
                                                                          monkeypatch):
    import attn_deploy

    folder = tmp_path / "in"
    shutil.copytree(tiny_corpus / "openface", folder)
    victim = sorted(folder.rglob("*.csv"))[5]
    real_count = attn_deploy.count_slots

    def count_then_delete(files):
        slots = real_count(files)
        victim.unlink()  # after the run has listed and counted it
        return slots

    monkeypatch.setattr(attn_deploy, "count_slots", count_then_delete)
    result = deploy(folder, "--weights", hybrid_weights, "-o", tmp_path / "c.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "c.csv", keep_default_na=False).set_index("clip_id")
    assert len(table) == 24 and table.loc[victim.stem, "status"] == "unreadable"
    assert table.loc[victim.stem, "reason"] == "file disappeared during the run"
    assert (table.drop(index=victim.stem)["status"] == "ok").all()


def test_compressed_and_utf16_files_are_their_rows_reason_not_the_runs_end(hybrid_weights, tmp_path):
    import gzip

    folder = tmp_path / "in"
    folder.mkdir()
    write_openface(folder / "good.csv", 80)
    text = (folder / "good.csv").read_text()
    (folder / "packed.csv").write_bytes(gzip.compress(text.encode()))
    (folder / "wide.csv").write_bytes(text.encode("utf-16"))
    result = deploy(folder, "--weights", hybrid_weights, "-o", tmp_path / "c.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "c.csv", keep_default_na=False).set_index("clip_id")
    assert table["status"].to_dict() == {"good": "ok", "packed": "unreadable", "wide": "unreadable"}
    assert table.loc["packed", "reason"] == "not a CSV text file (gzip-compressed: unpack it first)"
    assert table.loc["wide", "reason"] == "not a CSV text file (UTF-16 text: save it as UTF-8)"


@pytest.mark.parametrize("script", ["attn_deploy.py", "attn_regression.py", "data_augmentation.py"])
def test_an_output_name_too_long_for_the_file_system_is_refused_before_any_work(tiny_corpus, hybrid_weights,
                                                                               tmp_path, script):
    name = "x" * 240 + ".csv"
    args = {"attn_deploy.py": [tiny_corpus / "openface", "--weights", hybrid_weights, "-o", tmp_path / name],
            "attn_regression.py": [tiny_corpus / "frames.csv", "-o", tmp_path / ("x" * 240 + ".pt"), "--split",
                                   tmp_path / "s.csv"],
            "data_augmentation.py": [tiny_corpus / "frames.csv", "-o", tmp_path / name]}[script]
    line = one_line_error(run_script(script, *args), "the file name is too long for this file system (24",
                          "bytes; at most 215 here")
    assert "x" * 240 in line and list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_keeps_nothing_half_written_and_the_resume_finishes(tiny_corpus, hybrid_weights,
                                                                                     small_disk):
    disk, remount = small_disk
    out = disk / "c.csv"
    args = [tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--frames-output", disk / "f.parquet",
            "--chunk-size", "4"]
    before = tree_digest(tiny_corpus / "openface")
    line = one_line_error(deploy(*args), "No space left on device (the disk is full)",
                          "kept in OUTPUT.parts/; run the same command with --resume")
    assert str(disk) in line
    left = sorted(p.name for p in disk.iterdir())
    assert left == ["c.csv.parts"], left  # no output, no manifest, no temporary, no lock
    assert not list((disk / "c.csv.parts").glob(".*.tmp"))
    remount("20m")
    resumed = deploy(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert len(pd.read_csv(out)) == 24 and (disk / "c.csv.json").exists()
    assert tree_digest(tiny_corpus / "openface") == before


def test_leftovers_of_a_kill_at_the_end_are_removed_and_a_finished_run_says_so(tiny_corpus, hybrid_weights,
                                                                                tmp_path):
    out = tmp_path / "c.csv"
    args = [tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out]
    assert deploy(*args, "--limit", "8").returncode == 0
    (tmp_path / ".c.csv.4242.0badf00d.tmp").write_text("half a merge")  # killed while merging
    (tmp_path / "..c.csv.4242.0badf00d.tmp.4242.1badf00d.tmp").write_text("and its writer's own temporary")
    (tmp_path / "c.csv.parts" / ".000000000099.clips.parquet.4242.2badf00d.tmp").write_text("half a chunk")
    (tmp_path / ".other.csv.4242.3badf00d.tmp").write_text("another output's: not ours to remove")
    assert deploy(*args, "--resume").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.csv.4242.3badf00d.tmp", "c.csv", "c.csv.json"]
    finished = json.loads((tmp_path / "c.csv.json").read_text())
    (tmp_path / "c.csv.parts").mkdir()  # killed while its chunks were being removed
    (tmp_path / "c.csv.parts" / "000000000000.clips.parquet").write_text("")
    (tmp_path / ".c.csv.parts.removing").mkdir()
    again = deploy(*args, "--resume")
    assert again.returncode == 0 and again.stderr == ""
    assert f"{out} is already finished (24 clips, {finished['finished']}; its manifest c.csv.json): nothing to " \
           "resume" in again.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.csv.4242.3badf00d.tmp", "c.csv", "c.csv.json"]
    other = our_checkpoint(tmp_path / "other.pt", tiny_corpus, seed=1)
    one_line_error(deploy(tiny_corpus / "openface", "--weights", other, "-o", out, "--resume"),
                   "cannot resume: it was finished with another checkpoint (hybrid.pt")
    one_line_error(deploy(*args, "--resume", "--min-frames", "60"),
                   "cannot resume: it was finished with another min_frames (41 then, 60 now)")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_is_one_line_saying_what_was_kept_and_the_resume_finishes(tiny_corpus, hybrid_weights,
                                                                                    deployed_whole, tmp_path, stop):
    out = tmp_path / KILL_OUT
    args = [tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--chunk-size", "1", "--workers", "1"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "attn_deploy.py"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=process_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal,
    parts = tmp_path / f"{KILL_OUT}.parts"  # even when these tests run in the background, where SIGINT is ignored
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(parts.glob("*.clips.parquet")):
        time.sleep(0.002)
    proc.send_signal(stop)  # after the first of 24 one-clip chunks, so the run cannot finish first on a busy machine
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[stop], stderr
    assert stderr.strip().splitlines() == [f"interrupted ({signal.Signals(stop).name}): the chunks labelled so far "
                                           "are kept in OUTPUT.parts/; run the same command with --resume to continue"]
    assert not out.exists() and not list(tmp_path.glob(".*.tmp")) and not (tmp_path / f"{KILL_OUT}.lock").exists()
    resumed = deploy(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_table(out, deployed_whole / KILL_OUT)


def test_a_fault_while_publishing_leaves_the_earlier_output_and_its_manifest_as_they_were(tiny_corpus, hybrid_weights,
                                                                                           tmp_path, monkeypatch):
    import errno

    import attn_deploy

    out = tmp_path / "c.csv"
    args = [tiny_corpus / "openface", "--weights", hybrid_weights, "-o", out, "--frames-output", tmp_path / "f.csv"]
    assert deploy(*args).returncode == 0
    before = tree_digest(tmp_path)
    real_merge = attn_deploy.merge

    def merge_then_fill_the_disk(parts, total, output, frames_output):
        real_merge(parts, total, output, frames_output)
        raise OSError(errno.ENOSPC, "No space left on device", str(output))

    monkeypatch.setattr(attn_deploy, "merge", merge_then_fill_the_disk)
    one_line_error(deploy(*args, "--min-frames", "50"), "No space left on device (the disk is full)")
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("c.csv.parts")} == before  # nothing else changed
    monkeypatch.setattr(attn_deploy, "merge", real_merge)
    assert deploy(*args, "--min-frames", "50", "--resume").returncode == 0
    assert json.loads((tmp_path / "c.csv.json").read_text())["options"]["min_frames"] == 50


def test_clamped_scores_and_clips_unlike_the_training_clips_are_reported(tiny_corpus, tmp_path):
    from checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from dataset import Normalization, TrainingRange
    from featurizers import GATED_PATHS
    from model import ModelConfig, build_model
    from openface import FEATURE_COLUMNS, read_clips

    clips, _ = read_clips([tiny_corpus / "frames.csv"], FEATURE_COLUMNS)
    torch.manual_seed(0)
    cfg = ModelConfig(n_features=22, embed_dim=16, lstm_hidden=16, attn_dim=16, attn_hops=4, conv_channels=(16,),
                      conv_kernels=(5,), conv_dilations=(1,), head_hidden=(16,),
                      **{path.enabled_by: False for path in GATED_PATHS})
    model = build_model(cfg)
    with torch.no_grad():
        model.stats.weight.zero_()
        model.stats.bias.copy_(torch.tensor([2.0, 0.5, 0.5, -1.0, 0.5]))  # extroversion above 1, conscientiousness below 0
    save_checkpoint(tmp_path / "w.pt", Checkpoint(model, cfg, FEATURE_COLUMNS,
                                                  normalization=Normalization.fit("standard", clips, FEATURE_COLUMNS),
                                                  training_range=TrainingRange.of(clips[:12])))
    assert load_checkpoint(tmp_path / "w.pt").training_range == TrainingRange.of(clips[:12])
    folder = tmp_path / "in"
    (folder / "far").mkdir(parents=True)
    shutil.copytree(tiny_corpus / "openface", folder / "near")
    far_values = write_openface(folder / "far" / "odd.000.csv", 120)  # uniform noise, unlike the corpus
    assert far_values.shape == (120, 22)
    result = deploy(folder, "--weights", tmp_path / "w.pt", "-o", tmp_path / "c.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "c.csv", keep_default_na=False).set_index("clip_id")
    assert (table["clamped"] == "extroversion,conscientiousness").all()
    assert (table[["extroversion", "conscientiousness"]].astype(float).to_numpy() == [1.0, 0.0]).all()
    share = table["out_of_range"].astype(float)
    assert share.loc["odd.000"] > 0.5 and share.drop(index="odd.000").max() < 0.5
    assert "note: 25 of 25 labelled clip(s) have a score clamped to 0 or 1" in result.stdout
    warning = next(line for line in result.stdout.splitlines() if line.startswith("warning: "))
    assert "labelled clip(s) lie outside what w.pt was trained on" in warning and "most: odd.000" in warning
    assert "their scores may mean nothing" in warning
