"""The real OpenFace 2.2 (built by `make openface` from ../shared/openface/) on OpenFace's own sample videos,
against what the same build wrote for them (../shared/openface/reference/). Skipped, with the reason, where
it is not built; .ci/run builds it when ../shared/openface/ is there.

Tolerance: the build gives the reference byte for byte when OpenBLAS runs the reference's kernel (Haswell; see
test_the_build_gives_the_reference_byte_for_byte). With another kernel the floating-point sums differ: on the
three single-face videos frames, faces and confidences stay identical, AU intensities (0-5) differ by at most
0.25 and gaze and head angles by at most 0.015 rad on one AVX-512 machine, 0.021 rad (a gaze angle, one frame of
2015-10-15-15-14.avi) on another (OpenBLAS's Cooperlake kernel), so AU_TOLERANCE and ANGLE_TOLERANCE hold with a
little room."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, our_checkpoint, process_env, run_script
from openface import AU_COLUMNS, GAZE_COLUMNS, HEAD_COLUMNS, TRAITS
from openface_program import BIN_ENV, built_program

SHARED = ROOT.parent / "shared" / "openface"
VIDEOS, REFERENCE = SHARED / "videos", SHARED / "reference"
SINGLE_FACE_VIDEOS = ("default.wmv", "changeLighting.wmv", "2015-10-15-15-14.avi")
AU_TOLERANCE, ANGLE_TOLERANCE = 0.3, 0.03
SHARE_TOLERANCE = 0.02  # multi-face: each face's share of frames found, against the reference's
PROGRAM = os.environ.get(BIN_ENV) or built_program()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not VIDEOS.is_dir(), reason="../shared/openface/videos is absent"),
    pytest.mark.skipif(PROGRAM is None, reason="the real OpenFace is not built: run `make openface`"),
]
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (makes test videos)")


def openface_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, skipinitialspace=True)


def statuses(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "extraction_status.csv", keep_default_na=False).set_index("video")


def face_shares(frames: pd.DataFrame) -> dict[int, float]:
    """Each face's share of the video's frames in which OpenFace found it."""
    found = frames[frames["success"] == 1].groupby("face_id")["frame"].nunique()
    return (found / frames["frame"].nunique()).to_dict()


def linked_videos(folder: Path, names: dict[str, str]) -> Path:
    """A folder of sample videos under new names (symbolic links: no copy of the files)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, sample in names.items():
        (folder / name).symlink_to(VIDEOS / sample)
    return folder


@pytest.fixture(scope="module")
def single_face(tmp_path_factory) -> Path:
    """The three single-face sample videos through extract_features.py with default options."""
    out = tmp_path_factory.mktemp("real") / "of"
    folder = linked_videos(out.parent / "videos", {name: name for name in SINGLE_FACE_VIDEOS})
    result = run_script("extract_features.py", folder, "-o", out, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def multi_face(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real-multi") / "of"
    result = run_script("extract_features.py", VIDEOS / "multi_face.avi", "-o", out, "--multi-face")
    assert result.returncode == 0, result.stderr
    return out


def test_each_sample_video_gives_the_reference_csv(single_face):
    table = statuses(single_face)
    for name in SINGLE_FACE_VIDEOS:
        got, reference = openface_csv(single_face / Path(name).with_suffix(".csv")), openface_csv(
            REFERENCE / Path(name).with_suffix(".csv").name)
        assert list(got.columns) == list(reference.columns) and len(got) == len(reference)
        for column in ("frame", "face_id", "success", "confidence"):
            np.testing.assert_array_equal(got[column], reference[column], err_msg=f"{name} {column}")
        assert (got[list(AU_COLUMNS)] - reference[list(AU_COLUMNS)]).abs().to_numpy().max() <= AU_TOLERANCE
        angles = list(GAZE_COLUMNS + HEAD_COLUMNS)
        assert (got[angles] - reference[angles]).abs().to_numpy().max() <= ANGLE_TOLERANCE
        row = table.loc[name]
        assert (row["status"], row["reason"], row["frames"]) == ("ok", "", len(reference))
        assert (row["openface_version"], row["openface_program"], row["landmark_model"]) == (
            "2.2.0", "FeatureExtraction", "CLNF")
        assert row["openface_flags"].endswith("model/main_clnf_general.txt -aus -gaze -pose")


@pytest.mark.skipif("avx2" not in Path("/proc/cpuinfo").read_text() or "OPENBLAS_CORETYPE" in os.environ,
                    reason="needs an AVX2 processor and OPENBLAS_CORETYPE unset, to run the reference's kernel")
def test_the_build_gives_the_reference_byte_for_byte(tmp_path):
    env = {**os.environ, "OPENBLAS_CORETYPE": "HASWELL"}  # the kernel that wrote the reference, for OpenFace only
    model = Path(PROGRAM).parent / "model" / "main_clnf_general.txt"
    done = subprocess.run([PROGRAM, "-f", VIDEOS / "changeLighting.wmv", "-out_dir", tmp_path, "-mloc", model,
                           "-aus", "-gaze", "-pose"], capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert (tmp_path / "changeLighting.csv").read_bytes() == (REFERENCE / "changeLighting.csv").read_bytes()


def test_the_smile_of_default_wmv_shows_and_its_clip_is_labelled(single_face, tiny_corpus, tmp_path):
    frames = openface_csv(single_face / "default.csv").set_index("frame")
    for au in ("AU12_r", "AU06_r"):  # lip corner puller and cheek raiser: the smile around frame 239
        assert frames.loc[225:255, au].max() > frames.loc[1:200, au].mean() + 1.0, au
    weights = our_checkpoint(tmp_path / "w.pt", tiny_corpus)
    out = tmp_path / "clips.csv"
    result = run_script("attn_deploy.py", single_face, "--weights", weights, "-o", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, keep_default_na=False).set_index("clip_id")
    assert table["status"].to_dict() == {"2015-10-15-15-14": "ok", "changeLighting": "ok", "default": "ok"}
    assert all(0 <= float(table.loc["default", t]) <= 1 for t in TRAITS)
    made = pd.read_json(out.with_name("clips.csv.json"), typ="series")["openface"]
    assert [(m["openface_version"], m["landmark_model"]) for m in made] == [("2.2.0", "CLNF")]


def test_every_face_of_multi_face_avi_is_its_own_labelled_clip(multi_face, tiny_corpus, tmp_path):
    got, reference = openface_csv(multi_face / "multi_face.csv"), openface_csv(REFERENCE / "multi_face.csv")
    assert list(got.columns) == list(reference.columns)
    shares, expected = face_shares(got), face_shares(reference)
    assert sorted(shares) == sorted(expected) == [0, 1, 2, 3]
    assert all(abs(shares[f] - expected[f]) <= SHARE_TOLERANCE for f in expected), (shares, expected)
    assert statuses(multi_face).loc["multi_face.avi", "openface_program"] == "FaceLandmarkVidMulti"
    weights = our_checkpoint(tmp_path / "w.pt", tiny_corpus)
    out = tmp_path / "clips.csv"
    assert run_script("attn_deploy.py", multi_face, "--weights", weights, "-o", out).returncode == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table["clip_id"].tolist() == [f"multi_face#face{f}" for f in range(4)]
    assert (table["status"] == "ok").all() and (table["File"] == "multi_face.csv").all()
    one = run_script("attn_deploy.py", multi_face, "--weights", weights, "-o", tmp_path / "one.csv", "--face-id", "2")
    assert one.returncode == 0
    picked = pd.read_csv(tmp_path / "one.csv")
    assert picked["clip_id"].tolist() == ["multi_face"]
    np.testing.assert_allclose(picked[list(TRAITS)].to_numpy(), table[list(TRAITS)].to_numpy()[2:3], atol=1e-6)


@needs_ffmpeg
def test_broken_empty_and_faceless_videos_get_their_status_and_no_csv(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "empty.mp4").write_bytes(b"")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:s=320x240:r=25:d=2", "-vf",
                    "noise=alls=100:allf=t", "-c:v", "mpeg4", folder / "noise.avi"], check=True, timeout=120)
    out = tmp_path / "of"
    result = run_script("extract_features.py", folder, "-o", out)
    assert result.returncode == 0, result.stderr
    table = statuses(out)
    assert table["status"].to_dict() == {"broken.mp4": "failed", "empty.mp4": "failed", "noise.avi": "no_face"}
    for name in ("broken.mp4", "empty.mp4"):
        assert f"Failed to open the video file at location: {(folder / name).resolve()}" in table.loc[name, "reason"]
    assert table.loc["noise.avi", "reason"] == "no face in any frame" and table.loc["noise.avi", "frames"] == 50
    assert sorted(p.name for p in out.iterdir()) == ["extraction_status.csv", "noise.csv"]


def openface_pids(marker: str) -> list[int]:
    """Running OpenFace processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and command and command[0].endswith(b"FeatureExtraction") and \
                any(marker.encode() in part for part in command):
            found.append(int(entry.name))
    return found


def wait_for(condition, seconds: float = 120.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_an_openface_killed_mid_video_leaves_no_csv_and_the_rerun_finishes_it(tmp_path):
    folder = linked_videos(tmp_path / "videos", {"first.wmv": "changeLighting.wmv", "victim.wmv": "changeLighting.wmv"})
    out = tmp_path / "of"
    run = subprocess.Popen([sys.executable, ROOT / "extract_features.py", folder, "-o", out, "--jobs", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=process_env())
    os.kill(wait_for(lambda: openface_pids("victim.wmv"))[0], signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    table = statuses(out)
    assert table.loc["victim.wmv", "status"] == "failed" and "killed by SIGKILL" in table.loc["victim.wmv", "reason"]
    assert table.loc["first.wmv", "status"] == "ok" and not (out / "victim.csv").exists()
    assert not list(out.glob(".openface-*"))
    first = (out / "first.csv").stat().st_mtime_ns
    again = run_script("extract_features.py", folder, "-o", out)
    assert again.returncode == 0 and statuses(out)["status"].tolist() == ["ok", "ok"]
    assert (out / "first.csv").stat().st_mtime_ns == first  # kept, not run again
    assert (out / "victim.csv").read_bytes() == (out / "first.csv").read_bytes()


def test_shards_run_as_separate_processes_give_one_unsharded_run_byte_for_byte(tmp_path):
    names = {f"clip{k}.wmv": "changeLighting.wmv" for k in range(4)}
    folder = linked_videos(tmp_path / "videos", names)
    whole = tmp_path / "whole"
    assert run_script("extract_features.py", folder, "-o", whole, "--jobs", "2").returncode == 0
    sharded = tmp_path / "sharded"
    runs = [subprocess.Popen([sys.executable, ROOT / "extract_features.py", folder, "-o", sharded, "--jobs", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**process_env(), "SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_COUNT": "2"})
            for k in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()[-1000:]
    assert all(len(pd.read_csv(sharded / f"extraction_status.shard-{k}-of-2.csv")) for k in range(2))
    assert run_script("extract_features.py", folder, "-o", sharded, "--check").returncode == 0
    for name in names:
        csv = Path(name).with_suffix(".csv")
        assert (sharded / csv).read_bytes() == (whole / csv).read_bytes()
    pd.testing.assert_frame_equal(statuses(sharded).drop(columns="seconds"), statuses(whole).drop(columns="seconds"))


def test_deploy_from_videos_killed_mid_extraction_then_resumed(tiny_corpus, tmp_path):
    names = {f"person{k}.wmv": "changeLighting.wmv" for k in range(3)}
    folder = linked_videos(tmp_path / "videos", names)
    weights = our_checkpoint(tmp_path / "w.pt", tiny_corpus)
    out = tmp_path / "labels" / "clips.csv"
    cache = out.with_name("clips.csv.openface")
    run = subprocess.Popen([sys.executable, ROOT / "attn_deploy.py", folder, "--weights", weights, "-o", out,
                            "--jobs", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=process_env(),
                           start_new_session=True)
    wait_for(lambda: list(cache.glob("person*.csv")))
    os.killpg(run.pid, signal.SIGKILL)  # the deploy and its OpenFace, as a cluster's scheduler stops a job
    run.wait(timeout=60)
    done = [p.name for p in cache.glob("person*.csv")]
    assert 1 <= len(done) < 3 and not out.exists()
    kept = {name: (cache / name).stat().st_mtime_ns for name in done}
    result = run_script("attn_deploy.py", folder, "--weights", weights, "-o", out, "--jobs", "1", "--resume")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, keep_default_na=False)
    assert table["clip_id"].tolist() == ["person0", "person1", "person2"] and (table["status"] == "ok").all()
    assert {name: (cache / name).stat().st_mtime_ns for name in done} == kept  # not extracted twice
    values = table[list(TRAITS)].to_numpy(float)
    np.testing.assert_array_equal(values, np.repeat(values[:1], 3, axis=0))  # one video under three names
    assert not list(cache.glob(".openface-*")) and not out.with_name("clips.csv.parts").exists()
