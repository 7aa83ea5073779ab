"""Write the synthetic First-Impressions-like corpus, deterministically from a seed, in both input layouts.

    python data/synthetic/prepare.py                       # 400 clips into data/synthetic/
    python data/synthetic/prepare.py --clips 10000 -o /tmp/big

Outputs (in --out):
  frames.csv      layout A, the paper's combined frame table (ID, File, 22 features, 5 traits)
  openface/       layout B, one raw OpenFace 2.x CSV per clip (", " header, meta/gaze/pose/AU columns,
                  a few frames with success == 0 that layout A does not hold)
  labels.csv      File + the five traits (ChaLearn spells the first one 'extraversion')
  truth.json      the planted relationships, label noise and the best achievable R^2 per trait

Planted relationships (each trait = 0.5-ish mean + scaled, standardised signal + Gaussian label noise):
  extroversion       per-clip mean of AU12 (+ half the mean of AU06): smiling          [mean-driven]
  neuroticism        minus the std of head yaw pose_Ry: a steady head is "stable"      [spread-driven]
  agreeableness      share of nod -> smile pairs (an AU12 onset 2 s after a head nod) among nod/smile pairs;
                     the other pairs run smile -> nod. Per-clip means and stds are blind to the order, and
                     the events are 36+ frames apart, beyond the paper's conv branch (16 frames;
                     the default network's reaches 125)                                [temporal]
  conscientiousness  minus the per-clip mean of AU04 (brow lowerer)                     [mean-driven]
  openness           std of AU02 (outer brow raiser) over the clip                      [spread-driven]
                     or, with --openness reaction, the mean delay (1-4 s, a person's tendency) from a head nod
                     to the surprised look that answers it (AU05 upper-lid raiser with an AU01/AU02 brow raise),
                     shown only when it comes before the next nod, so the frames tell which nod each answers
                     (brow raises also come on their own, AU05 does not): a second, slower time scale [temporal]
                     or, with --openness noise, nothing: the label is pure noise (an overfitting check)
Clips of one source video share the person's tendencies, so labels correlate within a video.

--snr fi sets every planted R^2 to 0.25, the signal-to-noise of First Impressions-like data (a training-mean
predictor scores 1 - MAE ~ 0.88); --pair-gap sets the nod/smile distance of agreeableness (default 60 frames).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from data.synthetic import zoo  # noqa: E402
from data.synthetic.zoo import FPS, add_event, bump, smooth_noise  # noqa: E402
from openface import AU_COLUMNS, FEATURE_COLUMNS, TRAITS, Clip, clip_key, source_group  # noqa: E402
from tables import write_text_atomic  # noqa: E402

SLOT = 90  # frames per event slot (3 s)
PAIR_GAP = 60  # frames between the two events of a nod/smile pair (2 s)
SMILE_LEN, NOD_LEN, BROW_LEN, BLINK_LEN = 24, 18, 15, 6
TRAIT_MEAN = {"extroversion": 0.48, "neuroticism": 0.52, "agreeableness": 0.55, "conscientiousness": 0.52,
              "openness": 0.57}
TRAIT_SD = 0.145
SNR_PLANTED_R2 = {
    "strong": {"extroversion": 0.85, "neuroticism": 0.75, "agreeableness": 0.75, "conscientiousness": 0.7,
               "openness": 0.7},
    "fi": {trait: 0.25 for trait in TRAITS},
}
OPENNESS_SIGNALS = ("spread", "reaction", "noise")
REACTION_SECONDS = (1.0, 4.0)  # range of a person's nod -> surprised-look delay (--openness reaction)
AU_INDEX = {name: i for i, name in enumerate(FEATURE_COLUMNS)}
OPENFACE_AU_C = ("AU01_c", "AU02_c", "AU04_c", "AU05_c", "AU06_c", "AU07_c", "AU09_c", "AU10_c", "AU12_c",
                 "AU14_c", "AU15_c", "AU17_c", "AU20_c", "AU23_c", "AU25_c", "AU26_c", "AU28_c", "AU45_c")


def person_params(rng: np.random.Generator, reaction: bool = False) -> dict:
    """Tendencies shared by all clips of one source video (the reaction delay only when it is planted, so the
    other corpora stay as they were)."""
    params = {
        "au_level": rng.uniform(0.0, 0.6, len(AU_COLUMNS)),
        "smile_amp": rng.uniform(0.8, 3.5),
        "free_smiles": rng.uniform(0, 1),
        "follow": rng.beta(1.2, 1.2),
        "yaw_amp": rng.uniform(0.02, 0.2),
        "au04": rng.uniform(0.0, 1.5),
        "brow_amp": rng.uniform(0.2, 2.5),
        "brow_rate": rng.uniform(0.1, 0.5),
        "gaze": rng.normal([0.0, 0.15], [0.1, 0.08]),
    }
    if reaction:
        params["reaction"] = rng.uniform(*REACTION_SECONDS) * FPS
        params["lid_amp"] = rng.uniform(1.0, 2.0)
    return params


def clip_frames(rng: np.random.Generator, person: dict, seconds: tuple[float, float], pair_gap: int = PAIR_GAP,
                reaction: bool = False) -> tuple[np.ndarray, float, float]:
    """One clip's 22 feature tracks (T, 22), its realised share of nod -> smile pairs and, with `reaction`, the
    mean delay in frames from a nod to the reaction that answers it (NaN when no reaction fits in the clip before
    the next nod)."""
    n = int(rng.integers(int(seconds[0] * FPS), int(seconds[1] * FPS) + 1))
    x = np.zeros((n, len(FEATURE_COLUMNS)))
    for j in range(len(AU_COLUMNS)):
        x[:, j] = person["au_level"][j] * rng.uniform(0.7, 1.3) + smooth_noise(rng, n, 0.9, 0.12)
    x[:, AU_INDEX["AU04_r"]] += person["au04"] * rng.uniform(0.8, 1.2)
    au12, au06, au25 = (x[:, AU_INDEX[c]] for c in ("AU12_r", "AU06_r", "AU25_r"))
    pitch = smooth_noise(rng, n, 0.95, 0.03)
    slots = n // SLOT
    n_pairs = int(rng.integers(min(2, slots), min(4, slots) + 1))
    pair_slots = set(rng.choice(slots, n_pairs, replace=False).tolist())
    follows, delays = 0, []
    nods: list[tuple[int, float]] = []  # (frame, delay of the reaction it would get), with `reaction`
    for slot in range(slots):
        start = slot * SLOT + int(rng.integers(0, 6))
        amp = person["smile_amp"] * rng.uniform(0.8, 1.2)
        if slot in pair_slots:
            follow = rng.random() < person["follow"]
            follows += follow
            nod_at, smile_at = (start, start + pair_gap) if follow else (start + pair_gap, start)
            add_event(pitch, nod_at, bump(NOD_LEN), -0.25)
            if reaction:
                nods.append((nod_at, person["reaction"] * rng.uniform(0.85, 1.15)))
        elif rng.random() < person["free_smiles"]:
            smile_at = start + int(rng.integers(0, SLOT - SMILE_LEN))
        else:
            continue
        for track, scale in ((au12, 1.0), (au06, 0.6), (au25, 0.5)):
            add_event(track, smile_at, bump(SMILE_LEN), amp * scale)
    nods.sort()
    for (nod_at, delay), (next_nod, _) in zip(nods, nods[1:] + [(n, 0.0)]):
        react_at = nod_at + int(round(delay))
        if react_at + BROW_LEN <= n and react_at < next_nod:
            delays.append(delay)
            add_event(x[:, AU_INDEX["AU05_r"]], react_at, bump(BROW_LEN), person["lid_amp"])
            add_event(x[:, AU_INDEX["AU02_r"]], react_at, bump(BROW_LEN), 1.5 * person["brow_amp"])
            add_event(x[:, AU_INDEX["AU01_r"]], react_at, bump(BROW_LEN), 1.0 * person["brow_amp"])
    for _ in range(rng.poisson(person["brow_rate"] * n / FPS)):
        amp = person["brow_amp"] * rng.lognormal(0, 0.3)
        at = int(rng.integers(0, n))
        add_event(x[:, AU_INDEX["AU02_r"]], at, bump(BROW_LEN), amp)
        add_event(x[:, AU_INDEX["AU01_r"]], at, bump(BROW_LEN), 0.7 * amp)
    for at in range(int(rng.integers(0, 60)), n, int(rng.integers(75, 120))):
        add_event(x[:, AU_INDEX["AU45_r"]], at, bump(BLINK_LEN), 2.0)
    x[:, : len(AU_COLUMNS)] = np.clip(x[:, : len(AU_COLUMNS)], 0, 5)
    x[:, AU_INDEX["gaze_angle_x"]] = person["gaze"][0] + smooth_noise(rng, n, 0.9, 0.06)
    x[:, AU_INDEX["gaze_angle_y"]] = person["gaze"][1] + smooth_noise(rng, n, 0.9, 0.05)
    x[:, AU_INDEX["pose_Rx"]] = 0.05 + pitch
    x[:, AU_INDEX["pose_Ry"]] = smooth_noise(rng, n, 0.9, person["yaw_amp"] * rng.uniform(0.8, 1.2))
    x[:, AU_INDEX["pose_Rz"]] = smooth_noise(rng, n, 0.97, 0.04)
    x[:, len(AU_COLUMNS):] = np.clip(x[:, len(AU_COLUMNS):], -0.6, 0.6)
    mean_delay = float(np.mean(delays)) if delays else float("nan")
    return np.round(x, 3), follows / n_pairs if n_pairs else 0.5, mean_delay


def trait_signals(frames: np.ndarray, follow_share: float, mean_delay: float, openness: str) -> dict[str, float]:
    """The planted, noise-free signal of each trait, computed from the frames as written."""
    col = lambda name: frames[:, AU_INDEX[name]]  # noqa: E731
    return {
        "extroversion": col("AU12_r").mean() + 0.5 * col("AU06_r").mean(),
        "neuroticism": -col("pose_Ry").std(),
        "agreeableness": follow_share,
        "conscientiousness": -col("AU04_r").mean(),
        "openness": {"spread": col("AU02_r").std(), "reaction": mean_delay, "noise": 0.0}[openness],
    }


def video_ids(rng: np.random.Generator, n: int) -> list[str]:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
    ids: list[str] = []
    while len(ids) < n:
        candidate = "".join(rng.choice(alphabet, 11))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def generate(n_clips: int, clips_per_video: int, seed: int, seconds: tuple[float, float] = (12, 16),
             snr: str = "strong", pair_gap: int = PAIR_GAP, openness: str = "spread",
             kinds: tuple[str, ...] | None = None) -> tuple[list[dict], dict]:
    """Clips (name, frames, labels) and the truth record, deterministic in the arguments. With `kinds` (one
    zoo.KINDS name per trait) the traits follow those signal kinds instead of the recipes above."""
    planted_r2 = dict(SNR_PLANTED_R2[snr], **({"openness": 0.0} if openness == "noise" else {}))
    if kinds is not None:
        planted_r2 = {trait: 0.0 if kind == "noise" else SNR_PLANTED_R2[snr]["openness"]
                      for trait, kind in zip(TRAITS, kinds)}
    rng = np.random.default_rng(seed)
    n_videos = -(-n_clips // clips_per_video)
    videos = video_ids(rng, n_videos)
    channels = zoo.assign_channels(list(kinds)) if kinds is not None else []
    clips, signals = [], []
    for v, video in enumerate(videos):
        if kinds is None:
            person = person_params(rng, openness == "reaction")
        else:
            levels, tendency = zoo.person_levels(rng), rng.uniform(0, 1, len(kinds))
        for k in range(min(clips_per_video, n_clips - v * clips_per_video)):
            if kinds is None:
                frames, follow, delay = clip_frames(rng, person, seconds, pair_gap, openness == "reaction")
                signal = trait_signals(frames, follow, delay, openness)
            else:
                n = int(rng.integers(int(seconds[0] * FPS), int(seconds[1] * FPS) + 1))
                values = np.clip(tendency + rng.normal(0, 0.1, len(kinds)), 0, 1)
                frames, planted = zoo.clip_frames(rng, levels, n, list(kinds), channels, values)
                signal = dict(zip(TRAITS, planted))
            clips.append({"file": f"{video}.{k:03d}.mp4", "frames": frames})
            signals.append(signal)
    sig = pd.DataFrame(signals)
    sig = sig.fillna(sig.mean())  # a clip too short for any reaction carries the average delay
    z = ((sig - sig.mean()) / sig.std(ddof=0)).fillna(0.0)  # a constant signal (pure noise) is all zeros
    noise = rng.standard_normal((len(clips), len(TRAITS)))
    truth = {"seed": seed, "clips": len(clips), "videos": n_videos, "trait_sd": TRAIT_SD, "snr": snr,
             "pair_gap_frames": pair_gap, "openness_signal": openness, "traits": {}}
    if kinds is not None:
        truth["kinds"] = {trait: {"kind": kind, "description": zoo.KINDS[kind].description,
                                  "channels": [FEATURE_COLUMNS[c] for c in ch]}
                          for trait, kind, ch in zip(TRAITS, kinds, channels)}
    for j, trait in enumerate(TRAITS):
        clean = TRAIT_MEAN[trait] + TRAIT_SD * np.sqrt(planted_r2[trait]) * z[trait].to_numpy()
        noise_sd = TRAIT_SD * np.sqrt(1 - planted_r2[trait])
        label = np.clip(clean + noise_sd * noise[:, j], 0, 1)
        best = 1 - np.sum((label - clean) ** 2) / np.sum((label - label.mean()) ** 2)
        for clip, value in zip(clips, label):
            clip.setdefault("labels", {})[trait] = round(float(value), 6)
        truth["traits"][trait] = {"label_noise_sd": noise_sd, "planted_r2": planted_r2[trait],
                                  "best_r2": float(best), "label_mean": float(label.mean()),
                                  "label_sd": float(label.std())}
    truth["best_r2_mean"] = float(np.mean([t["best_r2"] for t in truth["traits"].values()]))
    return clips, truth


def labelled_clips(generated: list[dict]) -> list[Clip]:
    """generate()'s clips as labelled Clips, keyed and grouped as the readers key and group their files."""
    return [Clip(clip_key(c["file"]), c["file"], source_group(clip_key(c["file"])), c["frames"].astype(np.float32),
                 np.array([c["labels"][t] for t in TRAITS], np.float32)) for c in generated]


def frame_table(clips: list[dict]) -> pd.DataFrame:
    """Layout A: one row per frame."""
    parts = []
    for i, clip in enumerate(clips, start=1):
        part = pd.DataFrame(clip["frames"], columns=list(FEATURE_COLUMNS))
        part.insert(0, "File", clip["file"])
        part.insert(0, "ID", i)
        for trait in TRAITS:
            part[trait] = clip["labels"][trait]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def openface_table(frames: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Layout B: an OpenFace FeatureExtraction table, with a few faceless frames (success 0, zeros)."""
    n_fail = int(rng.integers(0, 12)) if rng.random() < 0.3 else 0
    total = len(frames) + n_fail
    fail_at = int(rng.integers(0, len(frames)))
    ok = np.ones(total, bool)
    ok[fail_at: fail_at + n_fail] = False
    feats = np.zeros((total, frames.shape[1]))
    feats[ok] = frames
    table = pd.DataFrame({"frame": np.arange(1, total + 1), "face_id": 0,
                          "timestamp": np.round(np.arange(total) / FPS, 3),
                          "confidence": np.where(ok, np.round(rng.uniform(0.85, 0.98, total), 2), 0.0),
                          "success": ok.astype(int)})
    gx, gy = feats[:, AU_INDEX["gaze_angle_x"]], feats[:, AU_INDEX["gaze_angle_y"]]
    for eye in (0, 1):
        table[f"gaze_{eye}_x"] = np.round(np.sin(gx), 6)
        table[f"gaze_{eye}_y"] = np.round(np.sin(gy), 6)
        table[f"gaze_{eye}_z"] = np.round(-np.cos(gx) * np.cos(gy), 6)
    table["gaze_angle_x"], table["gaze_angle_y"] = gx, gy
    for name, value in (("pose_Tx", 20.0), ("pose_Ty", 40.0), ("pose_Tz", 600.0)):
        table[name] = np.where(ok, value, 0.0)
    for name in ("pose_Rx", "pose_Ry", "pose_Rz"):
        table[name] = feats[:, AU_INDEX[name]]
    for name in AU_COLUMNS:
        table[name] = feats[:, AU_INDEX[name]]
    for name in OPENFACE_AU_C:
        r = name.replace("_c", "_r")
        table[name] = (feats[:, AU_INDEX[r]] >= 1.0).astype(float) if r in AU_INDEX else 0.0
    return table


def write_corpus(out: Path, clips: list[dict], truth: dict, seed: int, layouts: tuple[str, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if "table" in layouts:
        write_text_atomic(out / "frames.csv", frame_table(clips).to_csv(index=False, float_format="%.6g",
                                                                        lineterminator="\n"))
    labels = pd.DataFrame([{"File": c["file"], **c["labels"]} for c in clips])
    write_text_atomic(out / "labels.csv", labels.rename(columns={"extroversion": "extraversion"}).to_csv(
        index=False, lineterminator="\n"))
    if "openface" in layouts:
        folder = out / "openface"
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng([seed, 1])
        for clip in clips:
            table = openface_table(clip["frames"], rng)
            body = table.to_csv(index=False, header=False, float_format="%.6g", lineterminator="\n")
            write_text_atomic(folder / clip["file"].replace(".mp4", ".csv"), ", ".join(table.columns) + "\n" + body)
    write_text_atomic(out / "truth.json", json.dumps(truth, indent=2) + "\n")


def describe(truth: dict) -> str:
    lines = [f"{truth['clips']} clips from {truth['videos']} source videos (seed {truth['seed']})",
             f"{'trait':<18} {'best R2':>8} {'label mean':>11} {'label sd':>9}"]
    for trait, t in truth["traits"].items():
        lines.append(f"{trait:<18} {t['best_r2']:>8.3f} {t['label_mean']:>11.3f} {t['label_sd']:>9.3f}")
    lines.append(f"{'mean':<18} {truth['best_r2_mean']:>8.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: this script's folder)")
    parser.add_argument("--clips", type=int, default=400, help="number of clips (default 400)")
    parser.add_argument("--clips-per-video", type=int, default=4, help="clips per source video (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every random choice of the corpus (default 0)")
    parser.add_argument("--seconds", type=float, nargs=2, default=(12, 16), metavar=("MIN", "MAX"),
                        help="clip duration range in seconds at 30 fps (default 12 16)")
    parser.add_argument("--snr", choices=tuple(SNR_PLANTED_R2), default="strong",
                        help="signal-to-noise: strong (planted R2 .70-.85) or fi (0.25, First Impressions-like) "
                             "(default strong)")
    parser.add_argument("--pair-gap", type=int, default=PAIR_GAP, metavar="FRAMES",
                        help=f"frames between the nod and the smile of a pair (agreeableness; default {PAIR_GAP})")
    parser.add_argument("--openness", choices=OPENNESS_SIGNALS, default="spread",
                        help="what openness follows: AU02 spread, the nod -> brow-raise delay, or nothing "
                             "(default spread)")
    parser.add_argument("--kinds", nargs=len(TRAITS), choices=tuple(zoo.KINDS), metavar="KIND",
                        help="one signal kind per trait, in the order " + ", ".join(TRAITS) + ", instead of the "
                             "planted relationships above: " + ", ".join(zoo.KINDS) + " (data/synthetic/zoo.py; "
                             "default: none)")
    parser.add_argument("--layouts", nargs="+", choices=("table", "openface"), default=("table", "openface"),
                        help="which layouts to write (default both; labels.csv and truth.json are always written)")
    args = parser.parse_args(argv)
    if (args.clips < 3 or args.clips_per_video < 1 or not 0 < args.seconds[0] <= args.seconds[1]
            or not 0 < args.pair_gap < SLOT):
        print(f"error: need --clips >= 3, --clips-per-video >= 1, 0 < MIN <= MAX seconds and 0 < --pair-gap < {SLOT}",
              file=sys.stderr)
        return 1
    try:
        zoo.assign_channels(args.kinds or [])
    except ValueError as err:
        print(f"error: --kinds: {err}", file=sys.stderr)
        return 1
    clips, truth = generate(args.clips, args.clips_per_video, args.seed, tuple(args.seconds), args.snr,
                            args.pair_gap, args.openness, tuple(args.kinds) if args.kinds else None)
    write_corpus(args.out, clips, truth, args.seed, tuple(args.layouts))
    print(describe(truth))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
