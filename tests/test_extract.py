"""extract_features.py and video inputs of attn_deploy.py, with a stand-in FeatureExtraction (tests/fake_openface.py)
that writes a real OpenFace 2.2 CSV. The real OpenFace program is not run here."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REAL, ROOT, one_line_error, our_checkpoint, run_script, write_openface
from extract_features import Shard, Video
from openface import TRAITS
from openface_program import VERSION_FILE

REAL_SOURCE = REAL / "unity_smyle_openface" / "SMYLE_AD_GGLM_GG_1_test.csv"  # 705 frames, 252 without a face


@pytest.fixture
def openface(tmp_path, monkeypatch):
    """A FeatureExtraction program on PATH (the stand-in), and its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "FeatureExtraction"
    program.write_text(f"#!{sys.executable}\nimport os, runpy, sys\n"
                       "with open(os.environ['FAKE_OPENFACE_LOG'] + '.programs', 'a') as log:\n"
                       "    log.write(os.path.basename(__file__) + '\\n')\n"
                       f"sys.argv[0] = {str(ROOT / 'tests' / 'fake_openface.py')!r}\n"
                       "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    source = REAL_SOURCE
    if not source.exists():
        source = tmp_path / "source.csv"
        write_openface(source, 120)
    log = tmp_path / "openface.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_OPENFACE_SOURCE", str(source))
    monkeypatch.setenv("FAKE_OPENFACE_LOG", str(log))
    monkeypatch.delenv("OPENFACE_BIN", raising=False)
    monkeypatch.setenv("OPENFACE_CACHE", str(tmp_path / "no-build"))  # never the real build of make openface
    return program, log, source


def calls(log: Path) -> list[list[str]]:
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


def videos(folder: Path, scripts: dict[str, str]) -> Path:
    """Dummy video files whose text steers the stand-in ('' is an ordinary video)."""
    for name, script in scripts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(script or "video")
    return folder


def test_extraction_runs_openface_per_video_and_writes_its_csvs(openface, tmp_path):
    program, log, source = openface
    folder = videos(tmp_path / "videos", {"a.000.mp4": "", "sub/b.avi": "", "notes.txt": "", "sub/c.mov": "noface"})
    result = run_script("extract_features.py", folder, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    made = calls(log)
    assert len(made) == 3
    for call in made:
        argv = call[2:]
        assert argv[argv.index("-f") + 1].startswith(str(folder.resolve())) and Path(argv[argv.index("-f") + 1]).is_absolute()
        assert {"-aus", "-gaze", "-pose"} <= set(argv) and "-out_dir" in argv
    expected = pd.read_csv(source, skipinitialspace=True)
    got = pd.read_csv(tmp_path / "out" / "a.000.csv", skipinitialspace=True)
    pd.testing.assert_frame_equal(got, expected)
    assert (tmp_path / "out" / "sub" / "b.csv").exists() and not list((tmp_path / "out").rglob("*_of_details.txt"))
    status = pd.read_csv(tmp_path / "out" / "extraction_status.csv", keep_default_na=False).set_index("video")
    assert status["status"].to_dict() == {"a.000.mp4": "ok", "sub/b.avi": "ok", "sub/c.mov": "no_face"}
    assert status.loc["a.000.mp4", "csv"] == "a.000.csv" and status.loc["a.000.mp4", "frames"] == len(expected)
    assert "3 video(s): 2 ok, 1 without a face, 0 failed" in result.stdout
    assert not list((tmp_path / "out").rglob(".openface-*")) and not list((tmp_path / "out").glob("*.lock"))


def test_failures_leave_no_csv_and_never_stop_the_others_and_a_rerun_resumes(openface, tmp_path):
    _, log, _ = openface
    folder = videos(tmp_path / "videos", {"bad.mp4": "fail", "empty.mp4": "nocsv", "good.mp4": "", "late.mp4": ""})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".openface-late.1.deadbeef").mkdir()  # left by a run that was killed
    result = run_script("extract_features.py", folder, "-o", tmp_path / "out", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    status = pd.read_csv(tmp_path / "out" / "extraction_status.csv", keep_default_na=False).set_index("video")
    assert status.loc["bad.mp4", "status"] == "failed"
    assert status.loc["bad.mp4", "reason"] == "OpenFace exited with status 1: Could not open the video file"
    assert status.loc["empty.mp4", "reason"].startswith("OpenFace wrote no CSV")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["extraction_status.csv", "good.csv", "late.csv"]
    before = len(calls(log))
    again = run_script("extract_features.py", folder, "-o", tmp_path / "out")
    assert again.returncode == 0 and len(calls(log)) == before + 2  # only the two failed videos are tried again
    status = pd.read_csv(tmp_path / "out" / "extraction_status.csv", keep_default_na=False)
    assert list(status["status"]) == ["failed", "failed", "ok", "ok"]


def test_videos_run_in_parallel_up_to_jobs(openface, tmp_path):
    _, log, _ = openface
    folder = videos(tmp_path / "videos", {f"v{k}.mp4": "slow 0.6" for k in range(4)})

    def most_at_once() -> int:
        spans = [(float(c[0]), float(c[1])) for c in calls(log)]
        return max(sum(a <= t < b for a, b in spans) for t, _ in spans)

    assert run_script("extract_features.py", folder, "-o", tmp_path / "one", "--jobs", "1").returncode == 0
    assert most_at_once() == 1
    log.unlink()
    assert run_script("extract_features.py", folder, "-o", tmp_path / "four", "--jobs", "4").returncode == 0
    assert most_at_once() >= 2


def test_missing_openface_says_how_to_get_it_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.delenv("OPENFACE_BIN", raising=False)
    monkeypatch.setenv("OPENFACE_CACHE", str(tmp_path / "no-build"))
    folder = videos(tmp_path / "videos", {"a.mp4": ""})
    line = one_line_error(run_script("extract_features.py", folder, "-o", tmp_path / "out"),
                          "OpenFace's FeatureExtraction was not found", "make openface", "algebr/openface",
                          "OPENFACE_BIN")
    assert "docker run" in line and not (tmp_path / "out").exists()
    one_line_error(run_script("extract_features.py", folder, "-o", tmp_path / "out", "--openface", tmp_path / "no"),
                   "was not found")
    one_line_error(run_script("extract_features.py", tmp_path / "nowhere", "-o", tmp_path / "out"),
                   "nowhere: no such file or folder")
    (tmp_path / "novideo").mkdir()
    one_line_error(run_script("extract_features.py", tmp_path / "novideo", "-o", tmp_path / "out"), "no videos found")


def test_openface_as_a_command_with_arguments(openface, tmp_path, monkeypatch):
    _, log, _ = openface
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # only the command given is used
    folder = videos(tmp_path / "videos", {"a.mp4": ""})
    command = f"{sys.executable} {ROOT / 'tests' / 'fake_openface.py'}"
    result = run_script("extract_features.py", folder, "-o", tmp_path / "out", "--openface", command)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "a.csv").exists() and calls(log)[0][2] == "-f"


def test_deploy_labels_videos_through_openface_and_reuses_the_cache(openface, tiny_corpus, tmp_path):
    _, log, source = openface
    weights = our_checkpoint(tmp_path / "w.pt", tiny_corpus)
    folder = videos(tmp_path / "videos", {"x.000.mp4": "", "y.000.mp4": "fail", "sub/z.001.webm": "noface"})
    out = tmp_path / "labels" / "clips.csv"
    result = run_script("attn_deploy.py", folder, "--weights", weights, "-o", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, keep_default_na=False).set_index("clip_id")
    assert table["File"].to_dict() == {"x.000": "x.000.mp4", "y.000": "y.000.mp4", "z.001": "sub/z.001.webm"}
    assert table["status"].to_dict() == {"x.000": "ok", "y.000": "unreadable", "z.001": "no_face"}
    assert table.loc["y.000", "reason"] == "OpenFace failed: OpenFace exited with status 1: Could not open the video file"
    frames = pd.read_csv(source, skipinitialspace=True)
    usable = int(((frames["success"] == 1) & (frames["confidence"] >= 0.75)).sum())
    assert table.loc["x.000", "n_frames"] == usable and all(table.loc["x.000", t] != "" for t in TRAITS)
    assert (out.parent / "clips.csv.openface" / "x.000.csv").exists()
    before = len(calls(log))
    again = run_script("attn_deploy.py", folder, "--weights", weights, "-o", out)
    assert again.returncode == 0 and len(calls(log)) == before + 1  # only the failed video is tried again
    mixed = run_script("attn_deploy.py", folder, tiny_corpus / "frames.csv", "--weights", weights, "-o",
                       tmp_path / "m.csv")
    one_line_error(mixed, "videos and OpenFace tables in one run")
    np.testing.assert_array_equal(pd.read_csv(out)["n_frames"], table["n_frames"].to_numpy())


def test_deploy_refuses_before_running_openface(openface, tiny_corpus, tmp_path):
    _, log, _ = openface
    folder = videos(tmp_path / "videos", {"a.mp4": "", "b.mp4": ""})
    one_line_error(run_script("attn_deploy.py", folder, "--weights", tmp_path / "none.pt", "-o", tmp_path / "c.csv"),
                   "none.pt: no such checkpoint file")
    weights = our_checkpoint(tmp_path / "w.pt", tiny_corpus)
    one_line_error(run_script("attn_deploy.py", folder, "--weights", weights, "-o", "/proc/c.csv"), "cannot write here")
    with pytest.MonkeyPatch.context() as torchrun:  # one of two processes started by torchrun
        torchrun.setenv("RANK", "0")
        torchrun.setenv("WORLD_SIZE", "2")
        one_line_error(run_script("attn_deploy.py", folder, "--weights", weights, "-o", tmp_path / "c.csv"),
                       "a.mp4: videos under torchrun: extract them first")
    assert calls(log) == [] and not (tmp_path / "c.csv.openface").exists()


def test_the_landmark_model_is_the_installed_one_and_every_status_row_says_what_made_it(openface, tmp_path):
    program, log, _ = openface
    folder = videos(tmp_path / "videos", {"a.mp4": ""})
    (program.parent / "model").mkdir()
    (program.parent / "model" / "main_clnf_general.txt").write_text("")
    (program.parent / VERSION_FILE).write_text("2.2.0\n")
    result = run_script("extract_features.py", folder, "-o", tmp_path / "clnf")
    assert result.returncode == 0, result.stderr
    assert "landmark model CLNF (CE-CLM's patch experts are not installed" in result.stdout
    argv = calls(log)[-1][2:]
    assert argv[argv.index("-mloc") + 1] == "model/main_clnf_general.txt"  # beside the program: no path of this machine
    status = pd.read_csv(tmp_path / "clnf" / "extraction_status.csv", keep_default_na=False).iloc[0]
    assert (status["openface_version"], status["openface_program"], status["landmark_model"]) == (
        "2.2.0", "FeatureExtraction", "CLNF")
    assert status["openface_flags"] == "-mloc model/main_clnf_general.txt -aus -gaze -pose"
    experts = program.parent / "model" / "patch_experts"
    experts.mkdir()
    (experts / "cen_patches_0.25_of.dat").write_text("")
    result = run_script("extract_features.py", folder, "-o", tmp_path / "ceclm")
    assert "landmark model CE-CLM (its patch experts are installed)" in result.stdout and "-mloc" not in calls(log)[-1]
    assert pd.read_csv(tmp_path / "ceclm" / "extraction_status.csv")["landmark_model"].tolist() == ["CE-CLM"]
    run_script("extract_features.py", folder, "-o", tmp_path / "forced", "--landmark-model", "clnf")
    assert "-mloc" in calls(log)[-1]
    experts.joinpath("cen_patches_0.25_of.dat").unlink()
    one_line_error(run_script("extract_features.py", folder, "-o", tmp_path / "x", "--landmark-model", "ce-clm"),
                   "CE-CLM's patch experts", "download_models.sh", "--landmark-model clnf")
    given = f"{program} -mloc model/my_model.txt"
    result = run_script("extract_features.py", folder, "-o", tmp_path / "given", "--openface", given)
    assert calls(log)[-1].count("-mloc") == 1 and "landmark model my_model.txt" in result.stdout
    again = run_script("extract_features.py", folder, "-o", tmp_path / "clnf")  # reused: what made it is kept
    assert again.returncode == 0
    assert pd.read_csv(tmp_path / "clnf" / "extraction_status.csv")["landmark_model"].tolist() == ["CLNF"]


def test_multi_face_runs_the_multi_face_program_beside_feature_extraction(openface, tmp_path, monkeypatch):
    program, log, _ = openface
    shutil.copy(program, program.parent / "FaceLandmarkVidMulti")
    monkeypatch.setenv("OPENFACE_BIN", str(program))
    folder = videos(tmp_path / "videos", {"a.mp4": ""})
    result = run_script("extract_features.py", folder, "-o", tmp_path / "out", "--multi-face")
    assert result.returncode == 0, result.stderr
    assert Path(str(log) + ".programs").read_text().split() == ["FaceLandmarkVidMulti"]
    status = pd.read_csv(tmp_path / "out" / "extraction_status.csv")
    assert status["openface_program"].tolist() == ["FaceLandmarkVidMulti"]
    (program.parent / "FaceLandmarkVidMulti").unlink()
    one_line_error(run_script("extract_features.py", folder, "-o", tmp_path / "o2", "--multi-face"),
                   "--multi-face needs FaceLandmarkVidMulti beside it")


def test_shards_split_the_videos_by_name_and_check_merges_them(openface, tmp_path, monkeypatch):
    _, log, _ = openface
    names = [f"v{k:02d}.mp4" for k in range(12)]
    folder = videos(tmp_path / "videos", {n: "" for n in names})
    out = tmp_path / "out"
    for k in range(3):
        result = run_script("extract_features.py", folder, "-o", out, "--shard", f"{k}/3")
        assert result.returncode == 0, result.stderr
    shards = [pd.read_csv(out / f"extraction_status.shard-{k}-of-3.csv")["video"].tolist() for k in range(3)]
    assert sorted(sum(shards, [])) == names and all(shards)  # each video in exactly one shard, none empty
    assert len(calls(log)) == 12 and not (out / "extraction_status.csv").exists()
    (folder / "new.mp4").write_text("video")  # a video added later: the others keep their shard
    assert [v for s in range(3) for v in shards[s] if not Shard(s, 3).holds(Video(folder / v, v))] == []
    (out / shards[1][0]).with_suffix(".csv").unlink()
    checked = run_script("extract_features.py", folder, "-o", out, "--check")
    assert checked.returncode == 1 and "have no CSV yet" in checked.stderr
    assert f"missing: {shards[1][0]}: no run has extracted it" in checked.stdout and "missing: new.mp4" in checked.stdout
    merged = pd.read_csv(out / "extraction_status.csv", keep_default_na=False).set_index("video")
    assert len(merged) == 13 and merged.loc["new.mp4", "status"] == "missing"
    assert (merged["status"] == "ok").sum() == 11
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")  # an array --array=1-3: task 2 is shard 1 of 3
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    rerun = run_script("extract_features.py", folder, "-o", out)
    assert rerun.returncode == 0 and "shard 1/3" in rerun.stdout
    assert run_script("extract_features.py", folder, "-o", out, "--check").returncode == 1  # new.mp4 (or its shard)
    for k in range(3):
        run_script("extract_features.py", folder, "-o", out, "--shard", f"{k}/3")
    done = run_script("extract_features.py", folder, "-o", out, "--check")
    assert done.returncode == 0 and "13 video(s): 13 ok" in done.stdout
    for bad in ("3/3", "1", "a/b", "-1/2"):
        one_line_error(run_script("extract_features.py", folder, "-o", out, f"--shard={bad}"), "give K/N with 0 <= K < N")


def test_a_shard_removes_only_its_own_leftovers(openface, tmp_path):
    folder = videos(tmp_path / "videos", {f"v{k}.mp4": "" for k in range(6)})
    out = tmp_path / "out"
    out.mkdir()
    mine = next(f"v{k}" for k in range(6) if Shard(0, 2).holds(Video(folder / f"v{k}.mp4", f"v{k}.mp4")))
    theirs = next(f"v{k}" for k in range(6) if not Shard(0, 2).holds(Video(folder / f"v{k}.mp4", f"v{k}.mp4")))
    for stem in (mine, theirs):
        (out / f".openface-{stem}.4242.0123abcd").mkdir()
    assert run_script("extract_features.py", folder, "-o", out, "--shard", "0/2").returncode == 0
    assert not (out / f".openface-{mine}.4242.0123abcd").exists() and (out / f".openface-{theirs}.4242.0123abcd").exists()


def test_an_openface_killed_by_a_signal_is_named(openface, tmp_path):
    folder = videos(tmp_path / "videos", {"a.mp4": "", "b.mp4": "killself"})
    result = run_script("extract_features.py", folder, "-o", tmp_path / "out")
    status = pd.read_csv(tmp_path / "out" / "extraction_status.csv", keep_default_na=False).set_index("video")
    assert result.returncode == 0 and status.loc["b.mp4", "status"] == "failed"
    assert status.loc["b.mp4", "reason"].startswith("OpenFace was killed by SIGKILL")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.csv", "extraction_status.csv"]


def test_the_build_script_says_where_the_build_is_and_exits_3_when_there_is_none(tmp_path):
    script = ROOT / "tools" / "build_openface.sh"
    done = subprocess.run(["bash", script, "--path"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OPENFACE_CACHE": str(tmp_path / "empty")})
    assert done.returncode == 3 and done.stdout == "" and not (tmp_path / "empty").exists()
    built = tmp_path / "cache" / "build" / "bin"
    built.mkdir(parents=True)
    (built / "FeatureExtraction").write_text("#!/bin/sh\n")
    (built / "FeatureExtraction").chmod(0o755)
    (tmp_path / "cache" / ".built").write_text("")
    again = subprocess.run(["bash", script], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "OPENFACE_CACHE": str(tmp_path / "cache")})
    assert again.returncode == 0 and again.stdout == f"{built / 'FeatureExtraction'}\n"  # built: nothing is done


def test_deploy_takes_a_video_named_directly(openface, tiny_corpus, tmp_path):
    weights = our_checkpoint(tmp_path / "w.pt", tiny_corpus)
    folder = videos(tmp_path / "videos", {"solo.000.wmv": ""})
    result = run_script("attn_deploy.py", folder / "solo.000.wmv", "--weights", weights, "-o", tmp_path / "c.csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "c.csv", keep_default_na=False)
    assert table[["clip_id", "File", "status"]].values.tolist() == [["solo.000", "solo.000.wmv", "ok"]]


@pytest.mark.slow
def test_sigterm_stops_before_the_next_video_and_keeps_the_records_of_the_done_ones(openface, tmp_path):
    _, log, _ = openface
    # the later videos take 4 s each: time for the signal to come before a third starts, on a loaded machine too
    folder = videos(tmp_path / "videos", {f"v{k}.mp4": "slow 1" if k == 0 else "slow 4" for k in range(4)})
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, ROOT / "extract_features.py", folder, "-o", out, "--jobs", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "v0.csv").exists():
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 143 and stderr.strip().splitlines() == [
        "interrupted (SIGTERM): the CSVs of finished videos are kept; run the same command again to extract the rest"]
    done = sorted(p.name for p in out.glob("v*.csv"))
    assert 1 <= len(done) <= 2 and len(calls(log)) == len(done)  # the one running finished; no other started
    status = pd.read_csv(out / "extraction_status.csv")
    assert sorted(status["csv"]) == done and (status["status"] == "ok").all() and not list(out.glob(".openface-*"))


def test_deploy_never_writes_over_the_status_table_it_reads(openface, tiny_corpus, tmp_path):
    weights = our_checkpoint(tmp_path / "w.pt", tiny_corpus)
    folder = videos(tmp_path / "videos", {"a.mp4": ""})
    assert run_script("extract_features.py", folder, "-o", tmp_path / "of").returncode == 0
    status = tmp_path / "of" / "extraction_status.csv"
    before = status.read_bytes()
    one_line_error(run_script("attn_deploy.py", tmp_path / "of", "--weights", weights, "-o", status),
                   "extraction_status.csv: is an input of this run")
    assert status.read_bytes() == before
