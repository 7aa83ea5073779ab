"""Group split, batching, normalisation, augmentation and the synthetic corpus."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import spearmanr

from conftest import REAL, needs_real, one_line_error, run_script
from data.synthetic import prepare, zoo
from data_augmentation import augment_clips, augment_table
from dataset import (Normalization, Scaler, assign_splits, bucketed_batches, collate, load_split, prepare_split,
                     save_split, split_clips)
from errors import DataError
from openface import FEATURE_COLUMNS, TRAITS, Clip, read_clips, source_group


def make_clip(clip_id: str, n: int, group: str | None = None, value: float = 0.0) -> Clip:
    frames = (np.arange(n * 22, dtype=np.float32).reshape(n, 22) % 7) + value
    return Clip(clip_id, f"{clip_id}.mp4", group or clip_id, frames, np.full(5, 0.5, np.float32))


def test_split_is_deterministic_by_group_and_reused(tmp_path):
    groups = [f"v{i}" for i in range(40) for _ in range(3)]
    a, b = assign_splits(groups, seed=1), assign_splits(list(reversed(groups)), seed=1)
    assert a == b and assign_splits(groups, seed=2) != a
    assert sorted(pd.Series(a).value_counts().to_dict().items()) == [("test", 6), ("train", 28), ("val", 6)]
    clips = [make_clip(f"v{i}.{k:03d}", 50, f"v{i}") for i in range(40) for k in range(3)]
    path = tmp_path / "split.csv"
    record, created = prepare_split(clips, path, seed=1)
    assert created and record.assignment == a
    again, created2 = prepare_split(clips, path, seed=99)
    assert not created2 and again.assignment == a and again.sha256 == record.sha256
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    parts = split_clips(clips, again.assignment, path)
    for one, other in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not {c.group for c in parts[one]} & {c.group for c in parts[other]}


def test_split_errors(tmp_path):
    with pytest.raises(DataError, match="only 2 source video"):
        assign_splits(["a", "b", "a"], seed=0)
    path = tmp_path / "s.csv"
    save_split(path, {"a": "train", "b": "test", "c": "val"})
    with pytest.raises(DataError, match=r"1 source video\(s\) of the data are not in this split file \(e.g. zz\)"):
        split_clips([make_clip("zz", 50)], load_split(path)[0], path)
    path.write_text("group,split\na,holdout\n")
    with pytest.raises(DataError, match="line 2: unknown split 'holdout'"):
        load_split(path)
    path.write_text("")
    with pytest.raises(DataError, match="s.csv: not a split file"):
        load_split(path)
    path.write_text("group,split\n")
    with pytest.raises(DataError, match="s.csv: an empty split file"):
        load_split(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    with pytest.raises(DataError, match="s.csv: not a CSV text file"):
        load_split(path)


@needs_real
def test_real_first_impressions_split_keeps_video_ids_together():
    table = pd.read_csv(REAL / "fi_annotations" / "fi_bigfive_all_splits.csv")
    keys = table["video_name"].str.replace(".mp4", "", regex=False)
    groups = keys.map(source_group)
    assert groups.nunique() < len(groups)
    assignment = assign_splits(groups.tolist(), seed=0)
    per_group = pd.Series([assignment[g] for g in groups]).groupby(groups.to_numpy()).nunique()
    assert (per_group == 1).all()
    official = table.assign(group=groups).groupby("group")["split"].nunique()
    assert (official > 1).sum() > 0  # the official splits share video ids; ours never do


def test_bucketed_batches_cover_every_clip_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 700, 1000)
    batches = bucketed_batches(lengths, 16, seed=3, epoch=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < np.ptp(lengths) / 10
    assert bucketed_batches(lengths, 16, 3, 1) == batches and bucketed_batches(lengths, 16, 3, 2) != batches
    ranks = [bucketed_batches(lengths, 16, 3, 1, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    assert not set(np.concatenate(ranks[0])) & set(np.concatenate(ranks[1]))


def test_collate_pads_to_the_longest_clip_in_the_batch():
    clips = [make_clip("a", 10), make_clip("b", 25), make_clip("c", 7)]
    batch = collate(clips, [0, 2], Scaler.identity(22))
    assert batch.x.shape == (2, 32, 22) and batch.lengths.tolist() == [10, 7]  # rounded up to 32 frames
    assert (batch.x[1, 7:] == 0).all() and batch.y.shape == (2, 5)


def test_standard_normalisation_fits_training_frames():
    clips = [make_clip("a", 10, value=0.0), make_clip("b", 30, value=2.0)]
    norm = Normalization.fit("standard", clips, FEATURE_COLUMNS)
    scaler = norm.scaler(FEATURE_COLUMNS, ())
    all_frames = np.concatenate([c.frames for c in clips])
    np.testing.assert_allclose(scaler.offset, all_frames.mean(axis=0), rtol=1e-6)
    z = np.concatenate([scaler.transform(c.frames) for c in clips])
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)


def test_paper_minmax_scales_only_gaze_and_pose_over_the_clips_scored():
    clips = [make_clip("a", 10), make_clip("b", 30, value=3.0)]
    paper = Normalization("paper")
    scaler = paper.scaler(FEATURE_COLUMNS, iter(clips))
    scaled = np.concatenate([scaler.transform(c.frames) for c in clips])
    assert scaled[:, 17:].min() == 0 and scaled[:, 17:].max() == 1
    np.testing.assert_array_equal(scaled[:, :17], np.concatenate([c.frames for c in clips])[:, :17])
    other = paper.scaler(FEATURE_COLUMNS, [clips[0]])  # other data, other statistics
    assert not np.array_equal(other.scale, scaler.scale)
    fixed = paper.fixed_on(clips, FEATURE_COLUMNS)  # retraining stores the training split's statistics
    assert fixed.kind == "minmax"
    np.testing.assert_allclose(fixed.scaler(FEATURE_COLUMNS, [clips[0]]).scale, scaler.scale)
    assert Normalization("none").scaler(FEATURE_COLUMNS, ()).scale.tolist() == [1.0] * 22


# ----------------------------------------------------------------------------------------------------------
# Augmentation


def test_augmentation_counts_on_a_small_example():
    frame = pd.DataFrame({"ID": np.repeat([1, 2], [250, 99]).astype(str), "File": "x.000.mp4",
                          "AU01_r": np.arange(349.0)})
    out, counts = augment_table(pa.Table.from_pandas(frame, preserve_index=False))
    out = out.to_pandas()
    out["ID"], out["source_id"] = out["ID"].astype(int), out["source_id"].astype(int)
    # clip 1 (250 frames): 125 downsampled, 250 shifted, 2 windows of 100; clip 2 (99): 50, 99, no window
    assert dict(counts) == {"downsample": 2, "shift": 2, "window": 2}
    assert len(out) == 349 + 125 + 250 + 200 + 50 + 99
    sizes = out.groupby("ID", sort=False).size().tolist()
    assert sizes == [250, 99, 125, 250, 100, 100, 50, 99]
    assert out["ID"].nunique() == 8 and out["ID"].iloc[349] == 3
    shifted = out[(out["augmentation"] == "shift") & (out["source_id"] == 1)]["AU01_r"].to_numpy()
    np.testing.assert_array_equal(shifted[:6], [0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(shifted[5:10], [0, 1, 2, 3, 4])
    window2 = out[(out["augmentation"] == "window") & (out["source_id"] == 1)]["AU01_r"].to_numpy()[100:]
    np.testing.assert_array_equal(window2, np.arange(100, 200))
    assert (out[out["augmentation"] == "original"]["source_id"] == out[out["augmentation"] == "original"]["ID"]).all()


def test_augment_clips_matches_table_and_keeps_groups():
    clip = make_clip("v.000", 230, "v")
    out = augment_clips([clip])
    assert [(c.clip_id, c.n_frames, c.group, c.source_id) for c in out] == [
        ("v.000", 230, "v", None), ("v.000~downsample0", 115, "v", "v.000"), ("v.000~shift0", 230, "v", "v.000"),
        ("v.000~window0", 100, "v", "v.000"), ("v.000~window1", 100, "v", "v.000")]
    np.testing.assert_array_equal(out[3].frames, clip.frames[:100])


def test_augmentation_cli(tiny_corpus, tmp_path):
    source = tiny_corpus / "frames.csv"
    before = source.read_bytes()
    result = run_script("data_augmentation.py", source, "-o", tmp_path / "aug.csv")
    assert result.returncode == 0, result.stderr
    assert source.read_bytes() == before
    out = pd.read_csv(tmp_path / "aug.csv")
    original = pd.read_csv(source)
    expected_windows = sum(n // 100 for n in original.groupby("ID").size())
    assert out["augmentation"].value_counts().to_dict()["window"] == sum(
        100 * (n // 100) for n in original.groupby("ID").size())
    assert out.groupby("augmentation")["ID"].nunique().to_dict() == {
        "original": 24, "downsample": 24, "shift": 24, "window": expected_windows}
    refused = run_script("data_augmentation.py", source, "-o", source)
    one_line_error(refused, "is an input of this run", "refusing to overwrite it")
    assert source.read_bytes() == before
    again = run_script("data_augmentation.py", tmp_path / "aug.csv", "-o", tmp_path / "aug2.csv")
    one_line_error(again, "already has an augmentation column")
    parquet = run_script("data_augmentation.py", source, "-o", tmp_path / "aug.parquet")
    assert parquet.returncode == 0, parquet.stderr
    back = pd.read_parquet(tmp_path / "aug.parquet")
    assert len(back) == len(out) and back["ID"].astype(int).tolist() == out["ID"].tolist()
    np.testing.assert_array_equal(back["AU12_r"].to_numpy(), out["AU12_r"].to_numpy())


def test_augmentation_cli_refuses_bad_files_in_one_line(tmp_path):
    png = tmp_path / "image.csv"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    one_line_error(run_script("data_augmentation.py", png, "-o", tmp_path / "o.csv"), "image.csv", "not a CSV text")
    noise = tmp_path / "noise.csv"
    noise.write_bytes(np.random.default_rng(0).bytes(5000).replace(b"\0", b"x"))
    one_line_error(run_script("data_augmentation.py", noise, "-o", tmp_path / "o.csv"), "noise.csv")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("ID,File,AU01_r\n1,a.mp4,0.5\n1,a.mp4,0.5,7\n")
    one_line_error(run_script("data_augmentation.py", ragged, "-o", tmp_path / "o.csv"), "ragged.csv")
    assert not (tmp_path / "o.csv").exists()


def test_augmented_training_clips_never_cross_the_split(tiny_corpus):
    clips, _ = read_clips([tiny_corpus / "frames.csv"], FEATURE_COLUMNS)
    assignment = assign_splits([c.group for c in clips], seed=0)
    parts = split_clips(clips, assignment, "x")
    augmented = augment_clips(parts["train"])
    test_groups = {c.group for c in parts["test"]}
    assert len(augmented) > len(parts["train"]) and not {c.group for c in augmented} & test_groups


# ----------------------------------------------------------------------------------------------------------
# Synthetic corpus


def test_same_seed_same_corpus_bytes(tmp_path):
    for name in ("a", "b", "c"):
        seed = 5 if name != "c" else 6
        assert prepare.main(["--clips", "6", "--seconds", "2", "3", "--seed", str(seed), "-o", str(tmp_path / name)]) == 0
    digest = lambda folder: hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.csv")))).hexdigest()  # noqa: E731
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_corpus_layouts_agree_and_match_label_distribution(tiny_corpus):
    table, _ = read_clips([tiny_corpus / "frames.csv"], FEATURE_COLUMNS)
    raw, summary = read_clips([tiny_corpus / "openface"], FEATURE_COLUMNS)
    by_key = {c.key: c for c in raw}
    for clip in table:
        np.testing.assert_array_equal(by_key[clip.key].frames, clip.frames)
    clips, truth = prepare.generate(400, 4, 0)
    labels = np.array([[c["labels"][t] for t in truth["traits"]] for c in clips])
    assert ((labels.mean(axis=0) > 0.47) & (labels.mean(axis=0) < 0.58)).all()
    assert ((labels.std(axis=0) > 0.12) & (labels.std(axis=0) < 0.17)).all()
    assert all(0.6 < t["best_r2"] < 0.9 for t in truth["traits"].values())


def test_the_reaction_delay_can_be_read_off_the_frames():
    """--openness reaction documents the R² of the noise-free mean delay as the best achievable, so the frames
    must show it: every nod is a pitch dip, every reaction an AU05 rise, and a reaction comes before the next nod."""
    from scipy.signal import find_peaks

    rng = np.random.default_rng(3)
    read, planted = [], []
    for _ in range(60):
        person = prepare.person_params(rng, reaction=True)
        for _ in range(4):
            frames, _, delay = prepare.clip_frames(rng, person, (12, 16), reaction=True)
            pitch = frames[:, prepare.AU_INDEX["pose_Rx"]]
            lid = frames[:, prepare.AU_INDEX["AU05_r"]]
            nods, _ = find_peaks(np.median(pitch) - pitch, height=0.12, distance=30)
            lids, _ = find_peaks(np.convolve(lid, np.ones(5) / 5, "same") - np.median(lid), height=0.5, prominence=0.4)
            seen = [at - nods[nods < at][-1] for at in lids if (nods < at).any()]
            read.append(np.mean(seen) if seen else np.nan)
            planted.append(delay)
    read, planted = np.array(read), np.array(planted)
    np.testing.assert_array_equal(np.isnan(read), np.isnan(planted))  # no visible reaction exactly when none planted
    both = ~np.isnan(planted)
    assert 0.03 < 1 - both.mean() < 0.15 and np.corrcoef(read[both], planted[both])[0, 1] ** 2 > 0.95


def zoo_clips(kind: str, n: int = 120, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], tuple[int, ...]]:
    """n clips of 12 s carrying one signal kind at evenly spread latent values: values, frames, its channels."""
    rng = np.random.default_rng(seed)
    channels = zoo.assign_channels([kind])[0]
    values = np.linspace(0, 1, n)
    frames = [zoo.clip_frames(rng, zoo.person_levels(rng), 360, [kind], [channels], np.array([v]))[0]
              for v in values]
    return values, frames, channels


@pytest.mark.parametrize("kind", sorted(set(zoo.KINDS) - {"level", "spread", "inverted-u", "threshold", "rare-events",
                                                          "noise"}))
def test_a_zoo_kind_beyond_levels_leaves_clip_means_and_stds_blind(kind):
    """The kinds that are not a level, a spread or a count of spikes (which move the std) keep each channel's clip
    mean and std unrelated to the value (|r| < 0.35 over 120 clips): clip statistics cannot read them."""
    values, frames, channels = zoo_clips(kind)
    for channel in channels:
        for statistic in (np.mean, np.std):
            r = np.corrcoef(values, [statistic(f[:, channel]) for f in frames])[0, 1]
            assert abs(r) < 0.35, (kind, channel, statistic.__name__, r)


@pytest.mark.parametrize("kind", sorted(set(zoo.KINDS) - {"noise", "lead-lag"}))
def test_a_zoo_kind_follows_its_latent_value_within_a_few_clips_noise(kind):
    """The signal each kind returns rises with the clip's latent value (the U and the threshold: away from it; a
    count of rare spikes is Poisson, hence the margin)."""
    rng = np.random.default_rng(1)
    channels = zoo.assign_channels([kind])
    values = np.linspace(0, 1, 80)
    signals = np.array([zoo.clip_frames(rng, zoo.person_levels(rng), 360, [kind], channels, np.array([v]))[1][0]
                        for v in values])
    if kind == "inverted-u":
        values = -np.abs(values - 0.5)
    if kind == "threshold":
        values = np.maximum(values - 0.6, 0)
    assert spearmanr(values, signals, nan_policy="omit").statistic > 0.65


def test_zoo_corpora_stay_within_openface_ranges_and_document_their_kinds(tmp_path):
    kinds = ["co-occurrence", "jerkiness", "lead-lag", "rare-events", "noise"]
    assert prepare.main(["--clips", "12", "--seconds", "3", "4", "--kinds", *kinds, "-o", str(tmp_path)]) == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert [truth["kinds"][t]["kind"] for t in TRAITS] == kinds and truth["traits"]["openness"]["planted_r2"] == 0
    assert truth["kinds"]["neuroticism"]["channels"] == ["pose_Rx"]
    clips, summary = read_clips([tmp_path / "frames.csv"], FEATURE_COLUMNS)
    assert len(clips) == 12 and not summary.frames_dropped  # every frame within OpenFace's ranges


def test_zoo_kinds_that_ask_for_more_channels_than_there_are_are_refused_in_one_line(tmp_path, capsys):
    assert prepare.main(["--kinds", *["jerkiness"] * 4, "level", "-o", str(tmp_path / "z")]) == 1
    assert capsys.readouterr().err.strip() == "error: --kinds: these kinds need 4 head channels, and there are 3"
    assert not (tmp_path / "z").exists()
