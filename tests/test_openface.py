"""Readers, frame hygiene and bad-input messages for the three input layouts, on fixtures and real files."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REAL, five, needs_real, read_faces, read_one, set_cell, write_openface
from errors import DataError
from openface import (AU_COLUMNS, FEATURE_COLUMNS, FEATURE_SETS, TRAITS, Status, attach_labels, clip_key,
                      count_table_clips, feature_columns, input_files, iter_clips, iter_frame_table, read_clips,
                      read_labels, source_group)


def test_schema_feature_sets_in_canonical_order():
    assert [len(FEATURE_SETS[k]) for k in ("au", "au_gaze", "au_head", "gaze_head", "all")] == [17, 19, 20, 5, 22]
    for cols in FEATURE_SETS.values():
        assert list(cols) == [c for c in FEATURE_COLUMNS if c in cols]
    assert TRAITS == ("extroversion", "neuroticism", "agreeableness", "conscientiousness", "openness")
    with pytest.raises(DataError, match="unknown feature set 'faces'"):
        feature_columns("faces")


def test_clip_keys_and_groups():
    assert clip_key("data/XQ3do4LDFv8.000.mp4") == "XQ3do4LDFv8.000"
    assert clip_key("XQ3do4LDFv8.000.csv") == "XQ3do4LDFv8.000"
    assert source_group("XQ3do4LDFv8.000") == "XQ3do4LDFv8"
    assert source_group("clip7") == "clip7"


@pytest.mark.parametrize("spaced", [True, False])
def test_openface_reader_header_styles_and_exact_values(tmp_path, spaced):
    path = tmp_path / "a.000.csv"
    values = write_openface(path, 60, spaced=spaced)
    clip = read_one(path)
    assert clip.status is Status.OK and clip.frames.shape == (60, 22) and clip.frames.dtype == np.float32
    np.testing.assert_allclose(clip.frames, values, atol=1e-6)
    assert clip.clip_id == "a.000" and clip.group == "a" and clip.file == "a.000.csv"


def test_openface_p_rx_is_not_taken_for_a_feature(tmp_path):
    path = tmp_path / "c.csv"
    values = write_openface(path, 50)
    clip = read_one(path, FEATURE_SETS["gaze_head"])
    np.testing.assert_allclose(clip.frames, values[:, 17:], atol=1e-6)


def test_hygiene_drops_failed_and_low_confidence_frames(tmp_path):
    path = tmp_path / "h.csv"
    success = np.ones(80, int)
    success[:10] = 0
    confidence = np.full(80, 0.95)
    confidence[10:15] = 0.5
    values = write_openface(path, 80, success=success, confidence=confidence)
    clip = read_one(path)
    assert clip.n_frames == 65 and clip.n_dropped == 15
    assert clip.drops == {"no face found (success == 0)": 10, "confidence < 0.75": 5}
    np.testing.assert_allclose(clip.frames, values[15:], atol=1e-6)
    assert read_one(path, min_confidence=0.4).n_frames == 70


def test_short_and_faceless_clips_get_a_status_with_the_reason_apart(tmp_path):
    write_openface(tmp_path / "short.csv", 30)
    write_openface(tmp_path / "noface.csv", 50, success=np.zeros(50, int))
    write_openface(tmp_path / "ok.csv", 50)
    (tmp_path / "empty.csv").write_text("")
    clips = {c.clip_id: c for c in iter_clips(input_files([tmp_path]), FEATURE_COLUMNS, strict=False)}
    assert {k: c.status for k, c in clips.items()} == {"short": Status.TOO_SHORT, "noface": Status.NO_FACE,
                                                       "ok": Status.OK, "empty": Status.UNREADABLE}
    assert clips["empty"].reason == "empty file" and clips["ok"].reason == ""
    (tmp_path / "empty.csv").unlink()
    usable, summary = read_clips([tmp_path], FEATURE_COLUMNS)
    assert [c.clip_id for c in usable] == ["ok"]
    text = summary.render()
    assert "read 3 clips from 3 file(s): 1 usable" in text
    assert "skipped 1 clip(s) [too_short], e.g. short" in text and "skipped 1 clip(s) [no_face]" in text
    assert "dropped 50 frame(s): no face found (success == 0)" in text


def test_a_faceless_clip_is_never_usable(tmp_path):
    write_openface(tmp_path / "noface.csv", 50, success=np.zeros(50, int))
    assert read_one(tmp_path / "noface.csv", min_frames=1).status is Status.NO_FACE


def test_each_face_of_a_multi_face_file_is_its_own_clip_or_one_is_picked(tmp_path):
    path = tmp_path / "multi.csv"
    faces = np.tile([0, 1], 60)
    values = write_openface(path, 120, face_ids=faces, extra={"frame": np.repeat(np.arange(1, 61), 2)})
    both = read_faces(path, AU_COLUMNS)
    assert [(c.clip_id, c.key, c.face, c.status) for c in both] == [
        ("multi#face0", "multi#face0", 0, Status.OK), ("multi#face1", "multi#face1", 1, Status.OK)]
    np.testing.assert_allclose(both[1].frames, values[faces == 1, :17], atol=1e-6)
    picked = read_one(path, AU_COLUMNS, face_id=1)
    assert (picked.clip_id, picked.face) == ("multi", None)
    np.testing.assert_allclose(picked.frames, values[faces == 1, :17], atol=1e-6)
    single = tmp_path / "single.csv"
    write_openface(single, 50, face_ids=np.full(50, 2))
    assert read_one(single, AU_COLUMNS, min_frames=1).clip_id == "single"  # one face: no suffix, whatever its id


def test_a_face_found_in_too_few_of_the_video_frames_is_too_short_with_the_reason(tmp_path):
    path = tmp_path / "passer.csv"
    frames = np.r_[np.arange(1, 101), np.arange(1, 101)]
    faces = np.r_[np.zeros(100, int), np.ones(100, int)]
    success = np.r_[np.ones(100, int), (np.arange(100) < 15).astype(int)]  # face 1 is there in 15 of 100 frames
    write_openface(path, 200, face_ids=faces, success=success, extra={"frame": frames})
    clips = read_faces(path, AU_COLUMNS, min_frames=10)
    assert [c.status for c in clips] == [Status.OK, Status.TOO_SHORT]
    assert clips[1].reason == "face 1 found in 15% of the video's 100 frames, less than --min-face-share 0.2"
    assert read_faces(path, AU_COLUMNS, min_frames=10, min_face_share=0.1)[1].status is Status.OK
    with pytest.raises(DataError, match=r"no rows with face_id 3 \(faces present: \[0, 1\]\)"):
        read_one(path, AU_COLUMNS, face_id=3)


def test_missing_columns_named_with_servable_sets(tmp_path):
    path = tmp_path / "au_only.csv"
    write_openface(path, 50, columns=["frame", "face_id", "timestamp", "confidence", "success", *AU_COLUMNS, "pose_Rx",
                                      "pose_Ry", "pose_Rz"])
    with pytest.raises(DataError) as err:
        read_one(path)
    assert str(err.value) == (f"{path}: missing gaze_angle_x, gaze_angle_y (this file can serve feature sets: au, "
                              "au_head: use a checkpoint trained on one of them, e.g. attn_regression.py --features au)")
    assert read_one(path, FEATURE_SETS["au_head"]).n_frames == 50


@pytest.mark.parametrize("text, message", [
    ("abc", "line 6, column AU12_r: 'abc' is not a number"),
    ("nan", "line 6, column AU12_r: value is empty or NaN; fix or remove the frame"),
    ("", "line 6, column AU12_r: value is empty or NaN"),
    ("1e39", "line 6, column AU12_r: value overflows 32-bit floats"),
    ("inf", "line 6, column AU12_r: value overflows 32-bit floats"),
    ("1e30", "line 6, column AU12_r: value 1e+30 is outside the possible range 0..5"),
    ("5.2", "line 6, column AU12_r: value 5.2 is outside the possible range 0..5"),
    ("-0.5", "line 6, column AU12_r: value -0.5 is outside the possible range 0..5"),
])
def test_impossible_values_are_located(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    write_openface(path, 50)
    set_cell(path, 6, "AU12_r", text)
    with pytest.raises(DataError) as err:
        read_one(path)
    assert str(err.value) == f"{path}: {message}" or str(err.value).startswith(f"{path}: {message}")


def test_angles_beyond_pi_and_bad_meta_are_refused(tmp_path):
    path = tmp_path / "angles.csv"
    write_openface(path, 50)
    set_cell(path, 4, "pose_Ry", "3.5")
    with pytest.raises(DataError, match=r"line 4, column pose_Ry: value 3.5 is outside the possible range -3.14159"):
        read_one(path)
    write_openface(path, 50)
    set_cell(path, 4, "confidence", "7")
    with pytest.raises(DataError, match="line 4, column confidence: must be a number from 0 to 1"):
        read_one(path)
    write_openface(path, 50)
    set_cell(path, 4, "AU12_r", "9")
    set_cell(path, 4, "success", "0")  # a value on a dropped (faceless) frame is never used, so never refused
    assert read_one(path).n_frames == 49


def test_duplicate_columns_are_refused_by_name(tmp_path):
    path = tmp_path / "dup.csv"
    write_openface(path, 50, columns=["frame", "success", *FEATURE_COLUMNS, "AU12_r"])
    with pytest.raises(DataError, match="dup.csv: column 'AU12_r' appears 2 times in the header"):
        read_one(path)


def test_binary_files_and_ragged_rows(tmp_path):
    png = tmp_path / "image.csv"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    with pytest.raises(DataError, match="image.csv: not a CSV text file"):
        read_one(png)
    ragged = tmp_path / "ragged.csv"
    write_openface(ragged, 50)
    lines = ragged.read_text().splitlines()
    lines[9] += ", 1.0"
    ragged.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="ragged.csv: line 10: .* fields where the header has"):
        read_one(ragged)


def test_empty_files(tmp_path):
    (tmp_path / "zero.csv").write_text("")
    with pytest.raises(DataError, match="zero.csv: empty file"):
        read_one(tmp_path / "zero.csv")
    (tmp_path / "header.csv").write_text(", ".join(["frame", "success", *FEATURE_COLUMNS]) + "\n")
    with pytest.raises(DataError, match="header.csv: no frames"):
        read_one(tmp_path / "header.csv")
    with pytest.raises(DataError, match="nowhere: no such file or folder"):
        read_clips([tmp_path / "nowhere"], FEATURE_COLUMNS)


def test_input_files_are_named_relative_and_exclude_outputs_and_parts(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "out.csv.parts").mkdir()
    for name in ("a.csv", "sub/b.csv", "out.csv.parts/000.clips.csv", "out.csv", "notes.txt"):
        (tmp_path / "in" / name).write_text("x\n")
    files = input_files([tmp_path / "in", tmp_path / "in" / "a.csv"], exclude=[tmp_path / "in" / "out.csv"])
    assert [f.name for f in input_files([tmp_path / "in" / "out.csv"], exclude=[tmp_path / "in" / "out.csv"])] == ["out.csv"]
    assert [f.name for f in files] == ["a.csv", "sub/b.csv"]  # a.csv given twice is one input
    assert [f.name for f in input_files([tmp_path / "in" / "sub" / "b.csv"])] == ["b.csv"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.csv").write_text("x\n")
    with pytest.raises(DataError, match="has the same name 'a.csv' as"):
        input_files([tmp_path / "in", tmp_path / "other"])


# ----------------------------------------------------------------------------------------------------------
# Layout A and labels


def write_table(path: Path, clips: dict, labels: dict | None = None, extra: bool = True) -> None:
    rows = []
    for clip_id, (file, n) in clips.items():
        for i in range(n):
            row = {"ID": clip_id, "File": file, "Word": "hello"}
            row.update({c: round((clip_id * 7 + i * 0.01 + j) % 5 if j < 17 else 0.1 * (j - 19), 3)
                        for j, c in enumerate(FEATURE_COLUMNS)})
            if labels is not None:
                row.update(labels[clip_id] if not callable(labels[clip_id]) else labels[clip_id](i))
            if extra:
                row.update({"vi_1": 0.1, "Happy": 0.2})
            rows.append(row)
    if path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_frame_table_reader_groups_by_id_and_accepts_extraversion(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    write_table(path, {1: ("aa.000.mp4", 50), 2: ("aa.001.mp4", 45), 3: ("bb.000.mp4", 60)},
                {1: five(0.2), 2: five(0.4), 3: five(0.6)})
    clips, summary = read_clips([path], FEATURE_COLUMNS)
    assert [(c.clip_id, c.n_frames, c.group) for c in clips] == [("1", 50, "aa"), ("2", 45, "aa"), ("3", 60, "bb")]
    np.testing.assert_allclose(clips[2].label, [0.6] * 5)
    assert summary.frames_kept == 155 and count_table_clips(path) == 3


def test_frame_table_streaming_across_blocks_equals_one_read(tmp_path, monkeypatch):
    import tables

    path = tmp_path / "t.csv"
    write_table(path, {i: (f"v{i}.000.mp4", 41 + i) for i in range(1, 40)}, {i: five(i / 40) for i in range(1, 40)})
    whole = list(iter_frame_table(path, FEATURE_COLUMNS))
    monkeypatch.setattr(tables, "BLOCK_BYTES", 4096)  # many blocks, clips cut across them
    blocks = list(iter_frame_table(path, FEATURE_COLUMNS))
    assert count_table_clips(path) == 39
    assert [c.clip_id for c in whole] == [c.clip_id for c in blocks] == [str(i) for i in range(1, 40)]
    for a, b in zip(whole, blocks):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.label, b.label)


def test_frame_table_bad_labels(tmp_path):
    path = tmp_path / "t.csv"
    write_table(path, {1: ("a.000.mp4", 50)}, {1: lambda i: five(0.3 if i < 20 else 0.4)})
    with pytest.raises(DataError, match=r"clip ID 1 has two different labels \(lines 2 and 22\)"):
        read_clips([path], FEATURE_COLUMNS)
    write_table(path, {1: ("a.000.mp4", 50)}, {1: five(1.5)})
    with pytest.raises(DataError, match=r"line 2, column extraversion: trait value 1.5 is outside \[0, 1\]"):
        read_clips([path], FEATURE_COLUMNS)


def test_lenient_reading_marks_only_the_bad_clip(tmp_path):
    path = tmp_path / "t.csv"
    write_table(path, {1: ("a.000.mp4", 50), 2: ("a.001.mp4", 50), 3: ("b.000.mp4", 50)},
                {1: five(0.2), 2: five(1.7), 3: five(0.6)})
    set_cell(path, 60, "AU12_r", "abc")  # clip 2
    with pytest.raises(DataError, match="line 60, column AU12_r: 'abc' is not a number"):
        list(iter_frame_table(path, FEATURE_COLUMNS))
    clips = list(iter_frame_table(path, FEATURE_COLUMNS, strict=False, labels=False))
    assert [(c.clip_id, c.status) for c in clips] == [("1", Status.OK), ("2", Status.UNREADABLE), ("3", Status.OK)]
    assert clips[1].reason == "line 60, column AU12_r: 'abc' is not a number"
    set_cell(path, 60, "AU12_r", "1e39")
    clips = list(iter_frame_table(path, FEATURE_COLUMNS, strict=False, labels=False))
    assert [c.status for c in clips] == [Status.OK, Status.UNREADABLE, Status.OK]
    assert "overflows 32-bit floats" in clips[1].reason
    clips = list(iter_frame_table(path, FEATURE_COLUMNS, strict=False, labels=True))  # the 1.7 label now counts
    assert clips[1].status is Status.UNREADABLE


def test_frame_table_non_contiguous_ids(tmp_path):
    path = tmp_path / "t.csv"
    write_table(path, {1: ("a.000.mp4", 45), 2: ("a.001.mp4", 45)})
    table = pd.read_csv(path)
    pd.concat([table.iloc[:10], table.iloc[45:], table.iloc[10:45]]).to_csv(path, index=False)
    with pytest.raises(DataError, match="line 57: rows of clip ID 1 are not contiguous"):
        read_clips([path], FEATURE_COLUMNS)


def test_label_csv_overrides_and_unlabelled_clips_are_listed(tmp_path):
    for name in ("a.000", "a.001", "b.000"):
        write_openface(tmp_path / f"{name}.csv", 50)
    labels = tmp_path / "labels.csv"
    pd.DataFrame([{"File": "a.000.mp4", **five(0.25)}, {"File": "b.000.mp4", **five(0.75)}]).to_csv(labels, index=False)
    clips, _ = read_clips([tmp_path / "a.000.csv", tmp_path / "a.001.csv", tmp_path / "b.000.csv"], FEATURE_COLUMNS)
    with pytest.raises(DataError, match=r"1 clip\(s\) have no label: a.001"):
        attach_labels(clips, read_labels([labels]), str(labels))
    attach_labels(clips, read_labels([labels]), str(labels), require=False)
    assert clips[0].label.tolist() == [0.25] * 5 and clips[1].label is None


def test_labels_with_no_match_conflicts_and_empty_files(tmp_path):
    write_openface(tmp_path / "x.000.csv", 50)
    clips, _ = read_clips([tmp_path / "x.000.csv"], FEATURE_COLUMNS)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    pd.DataFrame([{"clip_id": "zzz", **five(0.5)}]).to_csv(one, index=False)
    with pytest.raises(DataError, match="no label matches any clip"):
        attach_labels(clips, read_labels([one]), str(one))
    pd.DataFrame([{"clip_id": "zzz", **five(0.6)}]).to_csv(two, index=False)
    with pytest.raises(DataError, match="clip 'zzz' has two different labels"):
        read_labels([one, two])
    pd.DataFrame([{"File": "q", "extraversion": 0.5}]).to_csv(two, index=False)
    with pytest.raises(DataError, match="missing trait columns neuroticism, agreeableness"):
        read_labels([two])
    two.write_text("File,extraversion,neuroticism,agreeableness,conscientiousness,openness\n")
    with pytest.raises(DataError, match="two.csv: no labels \\(header only\\)"):
        read_labels([two])
    two.write_text("File,extraversion,neuroticism,agreeableness,conscientiousness,openness\nq,0.5,,0.5,0.5,0.5\n")
    with pytest.raises(DataError, match="line 2, column neuroticism: trait value is empty"):
        read_labels([two])


def test_annotation_pickle_restricted(tmp_path):
    good = tmp_path / "ann.pkl"
    data = {t: {"vid.000.mp4": np.float64(0.5), "vid.001.mp4": np.float64(0.25)}
            for t in ("extraversion", "neuroticism", "agreeableness", "conscientiousness", "openness", "interview")}
    good.write_bytes(pickle.dumps(data, protocol=4))
    labels = read_labels([good])
    assert labels.loc["vid.001", "extroversion"] == 0.25 and labels.shape == (2, 5)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"extraversion": Path("/etc")}))
    with pytest.raises(DataError, match="evil.pkl: unreadable annotation pickle: refusing to load pathlib"):
        read_labels([evil])
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(good.read_bytes()[:40])
    with pytest.raises(DataError, match="broken.pkl: unreadable annotation pickle"):
        read_labels([broken])
    for bad in ("high", [0.5], None):
        data["openness"]["vid.000.mp4"] = bad
        good.write_bytes(pickle.dumps(data, protocol=4))
        with pytest.raises(DataError, match=r"trait openness, clip 'vid.000.mp4': score .* is not a number"):
            read_labels([good])


# ----------------------------------------------------------------------------------------------------------
# Real files


REAL_OPENFACE = sorted(p for p in REAL.glob("*/*.csv") if "fi_annotations" not in str(p)) if REAL.is_dir() else []


@needs_real
@pytest.mark.parametrize("path", REAL_OPENFACE, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("feature_set", ["au", "all"])
def test_every_real_openface_file_is_read_or_refused_by_name(path, feature_set):
    features = FEATURE_SETS[feature_set]
    try:
        clips = read_faces(path, features, min_frames=1)
    except DataError as err:
        assert err.reason.startswith("missing ") and ("gaze_angle_x" in err.reason or "AU01_r" in err.reason)
        assert "feature sets" in err.reason
        return
    for clip in clips:
        assert clip.frames.shape[1] == len(features) and np.isfinite(clip.frames).all()
        assert clip.n_frames + clip.n_dropped > 0
        assert clip.status in (Status.OK, Status.NO_FACE) or "--min-face-share" in clip.reason


@needs_real
def test_real_unity_folder_hygiene_counts():
    clips = list(iter_clips(input_files([REAL / "unity_smyle_openface"]), FEATURE_COLUMNS, strict=False))
    assert len(clips) == 22
    by_id = {c.clip_id: c for c in clips}
    assert "Squence 03" in by_id and by_id["Squence 03"].file == "Squence 03.csv"
    assert max(c.drops.get("no face found (success == 0)", 0) for c in clips) == 252
    assert all(c.status in (Status.OK, Status.TOO_SHORT) for c in clips)


@needs_real
def test_real_multi_face_file():
    path = REAL / "act409_openface_multi" / "clip4.csv"
    faces = pd.read_csv(path, skipinitialspace=True, usecols=["face_id"])["face_id"]
    clip0 = read_one(path, AU_COLUMNS, face_id=0, min_frames=1)
    assert clip0.n_frames + clip0.n_dropped == int((faces == 0).sum())


@needs_real
def test_real_annotation_pickles():
    folder = REAL / "fi_annotations"
    labels = read_labels(sorted(folder.glob("annotation_*.pkl")))
    assert labels.shape == (10_000, 5)
    assert labels.index.str.match(r"^.+\.\d{3}$").all()
    means = labels.mean()
    assert ((means > 0.45) & (means < 0.6)).all()
    csv = pd.read_csv(folder / "fi_bigfive_all_splits.csv")
    from_csv = read_labels([folder / "fi_bigfive_all_splits.csv"])
    np.testing.assert_allclose(from_csv.loc[labels.index].to_numpy(), labels.to_numpy(), atol=1e-9)
    assert len(csv) == 10_000


def test_files_saved_with_a_byte_order_mark_read_the_same(tmp_path):
    table = tmp_path / "t.csv"
    write_table(table, {1: ("a.000.mp4", 50), 2: ("a.001.mp4", 45), 3: ("b.000.mp4", 60)},
                {1: five(0.2), 2: five(0.4), 3: five(0.6)})
    plain, _ = read_clips([table], FEATURE_COLUMNS)
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    marked, _ = read_clips([table], FEATURE_COLUMNS)
    assert [c.clip_id for c in marked] == [c.clip_id for c in plain] == ["1", "2", "3"]
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbf" + b"File,extraversion,neuroticism,agreeableness,conscientiousness,openness\n"
                       b"a.000.mp4,0.1,0.2,0.3,0.4,0.5\n")
    assert read_labels([labels]).loc["a.000", "openness"] == 0.5
