"""extract_features.py and video inputs of attn_deploy.py, with a stand-in FeatureExtraction (tests/fake_openface.py)
that writes a real OpenFace 2.2 CSV. The real OpenFace program is not run here."""
from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REAL, ROOT, one_line_error, our_checkpoint, run_script, write_openface
from openface import TRAITS

REAL_SOURCE = REAL / "unity_smyle_openface" / "SMYLE_AD_GGLM_GG_1_test.csv"  # 705 frames, 252 without a face


@pytest.fixture
def openface(tmp_path, monkeypatch):
    """A FeatureExtraction program on PATH (the stand-in), and its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "FeatureExtraction"
    program.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {str(ROOT / 'tests' / 'fake_openface.py')!r}\n"
                       f"runpy.run_path(sys.argv[0], run_name='__main__')\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    source = REAL_SOURCE
    if not source.exists():
        source = tmp_path / "source.csv"
        write_openface(source, 120)
    log = tmp_path / "openface.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_OPENFACE_SOURCE", str(source))
    monkeypatch.setenv("FAKE_OPENFACE_LOG", str(log))
    monkeypatch.delenv("OPENFACE_BIN", raising=False)
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
    (tmp_path / "out" / ".openface-late-1-dead").mkdir()  # left by a run that was killed
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
    folder = videos(tmp_path / "videos", {"a.mp4": ""})
    line = one_line_error(run_script("extract_features.py", folder, "-o", tmp_path / "out"),
                          "OpenFace's FeatureExtraction was not found", "algebr/openface", "OPENFACE_BIN")
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
