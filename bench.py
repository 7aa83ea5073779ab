"""Benchmark: this pipeline against the paper's one-clip-at-a-time way, side by side in one run.

    python bench.py --quick          # a few minutes
    python bench.py                  # the README table (10,000-clip sizes; about half an hour on 2 cores)

Measures (1) training and (2) inference throughput in clips/s for: the reference (the paper network run as the
original scripts do: batch size 1, every clip padded to 700 frames, the time encoding recomputed and the
attention LSTM run over all 700 positions every step, Adam lr 1e-4), the paper network our way (batched,
bucketed, the constant branch once per call, in eval mode the convolutions over the valid frames only), the
default hybrid network and the conv branch alone; (3) the augmentation in memory and as a command, CSV in and
CSV or Parquet out, on OpenFace-precision values; (4) deploy end to end on raw OpenFace CSVs with the peak RSS
of that process; (5) au_analysis as a whole command, from CSV and from Parquet; (6) deploy on clips of 450, 2,000 and 9,000 frames, batched against one
clip at a time (seconds per 1,000 frames, peak memory); (7) the real OpenFace (found as
extract_features.py finds it) on OpenFace's sample video default.wmv (288 frames, one face): frames/s per job
with --jobs 1 and 2, and seconds per clip from video to labels (attn_deploy.py given videos), with the CPU-hours
a First-Impressions-size corpus (10,000 clips of 450 frames) would take. Prints one table with ratios to the
reference and the targets, and writes the numbers as JSON (--json).

    python bench.py --sections openface      # only the real OpenFace (about 2 minutes on 2 cores)
    python bench.py --sections paths         # what each linear path costs, at 1,000 training clips

(8) paths: the seconds to fit the default network's linear paths before training (stacking.fit_linear_paths) on
the synthetic corpus's training clips, with the statistics path alone, each gated path beside it, and all of
them (the default); then the seconds each path's inputs take over those clips at inference, once its gates open.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from checkpoint import Checkpoint, save_checkpoint
from cli import Parser
from data_augmentation import augment_table
from dataset import INFERENCE_BATCH, Normalization, bucketed_batches, collate, predict
from data.synthetic import prepare
from errors import DataError
from featurizers import GATED_PATHS
from layers import conv_branch, sinusoidal_encoding
from model import ModelConfig, build_model, paper_config
from openface import AU_COLUMNS, FEATURE_COLUMNS, TRAITS, Clip
from openface_program import find_openface
from paper_net import PAPER_FRAMES, PaperNet
from stacking import batched, fit_linear_paths
from tables import write_table

ROOT = Path(__file__).resolve().parent
SAMPLE_VIDEO = ROOT.parent / "shared" / "openface" / "videos" / "default.wmv"
CORPUS_CLIPS, CLIP_FRAMES = 10_000, 450  # First Impressions: 10,000 clips of 15 s at 30 frames/s
SECTIONS = ("train", "infer", "paths", "augment", "pipeline", "long", "openface")
LONG_CLIPS = (450, 2000, 9000)  # frames: a First Impressions clip, a long recording, a 5-minute interview
LONG_COPIES = 8  # clips of each length labelled together
PATH_CLIPS = 1000  # training clips the linear paths are fitted on
TARGETS = {"infer_ratio": 6.0, "train_ratio": 4.0, "augment_csv_s": 40.0, "augment_parquet_s": 15.0,
           "deploy_s": 50.0, "deploy_rss_mb": 1024.0, "analysis_csv_s": 4.0, "analysis_parquet_s": 2.0}


def original_forward(model: PaperNet, x: torch.Tensor) -> torch.Tensor:
    """The original computation for one clip padded to 700 frames: (1, 700, F) -> (1, 5)."""
    times = torch.arange(PAPER_FRAMES, dtype=torch.float32) * model.cfg.frame_time_scale
    e = model.au_emb(x) + model.time_embed(sinusoidal_encoding(times, model.cfg.embed_dim))[None]  # (1, 700, E)
    out, _ = model.attention_lstm.lstm(e)  # no batch_first: 700 one-step sequences, (1, 700, H)
    z = out[:, -1]  # the last padded position, (1, H)
    attn = model.attention_lstm.self_attn
    u = attn.W2 @ torch.tanh(attn.W1 @ z.T)  # (r, 1)
    weights = torch.softmax(u, dim=1)  # over an axis of size 1: all ones
    c = model.attention_lstm.output_layer(weights @ z).T  # (1, r)
    convs, ses = model.convs_and_ses()
    y = conv_branch(x, convs, ses, model.dropout, None)
    return torch.sigmoid(model.linear_layer_stack(torch.cat([c, y], dim=1)))


def synthetic_clips(n: int, seed: int, n_features: int = 22) -> list[Clip]:
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        frames = rng.normal(size=(int(rng.integers(360, 481)), n_features)).astype(np.float32)
        clips.append(Clip(str(i), f"c{i}.000.mp4", f"c{i}", frames, rng.uniform(0.3, 0.7, 5).astype(np.float32)))
    return clips


def padded(clip: Clip) -> torch.Tensor:
    x = torch.zeros(1, PAPER_FRAMES, clip.frames.shape[1])
    x[0, : clip.n_frames] = torch.from_numpy(clip.frames)
    return x


def reference_train(clips: list[Clip], seconds: float) -> float:
    torch.manual_seed(0)
    model = PaperNet(paper_config(22)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        clip = clips[done % len(clips)]
        loss = F.mse_loss(original_forward(model, padded(clip)), torch.from_numpy(clip.label)[None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
    return done / (time.perf_counter() - started)


def our_train(cfg: ModelConfig, clips: list[Clip], seconds: float, batch_size: int = 16) -> float:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scaler = Normalization("none").scaler(FEATURE_COLUMNS, ())
    batches = bucketed_batches([c.n_frames for c in clips], batch_size, seed=0, epoch=0)
    done, started, step = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        batch = collate(clips, batches[step % len(batches)], scaler)
        out = model(batch.x, batch.lengths)
        loss = F.mse_loss(out, batch.y.expand_as(out))
        opt.zero_grad()
        loss.backward()
        opt.step()
        done, step = done + len(batch.index), step + 1
    return done / (time.perf_counter() - started)


def inference(clips: list[Clip], seconds: float) -> tuple[dict[str, float], float]:
    """Clips/s for each network, and the largest output difference between the reference and ours."""
    torch.manual_seed(0)
    paper = PaperNet(paper_config(22)).eval()
    rates, reference_out = {}, []
    with torch.inference_mode():
        started = time.perf_counter()
        for clip in clips:
            reference_out.append(original_forward(paper, padded(clip)))
            if time.perf_counter() - started > seconds:
                break
        rates["reference"] = len(reference_out) / (time.perf_counter() - started)
    scaler = Normalization("none").scaler(FEATURE_COLUMNS, ())
    diff = float("nan")
    for name, model in (("paper (ours)", paper), ("hybrid", build_model(ModelConfig()).eval()),
                        ("conv", build_model(ModelConfig(kind="conv")).eval())):
        started = time.perf_counter()
        out = predict(model, clips, scaler)
        rates[name] = len(clips) / (time.perf_counter() - started)
        if name == "paper (ours)":
            diff = float(np.abs(out[: len(reference_out)] - torch.cat(reference_out).numpy()).max())
    return rates, diff


def openface_precision_table(n_clips: int, seed: int = 0) -> pa.Table:
    """A combined frame table with values written as OpenFace writes them: AUs with 2 decimals, angles with 3."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(420, 481, n_clips)
    rows = int(lengths.sum())
    columns = {"ID": np.repeat(np.arange(1, n_clips + 1), lengths).astype(str),
               "File": np.repeat([f"v{i:05d}.000.mp4" for i in range(n_clips)], lengths)}
    for name in FEATURE_COLUMNS:
        columns[name] = (rng.uniform(0, 5, rows).round(2) if name in AU_COLUMNS else rng.uniform(-0.6, 0.6, rows).round(3))
    return pa.table(columns)


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def augmentation_times(n_clips: int, workdir: Path) -> dict[str, float]:
    table = openface_precision_table(n_clips)
    started = time.perf_counter()
    augment_table(table)
    memory = time.perf_counter() - started
    source = workdir / f"aug_in_{n_clips}.csv"
    write_table(table, source)
    script = [sys.executable, str(ROOT / "data_augmentation.py"), str(source), "-o"]
    results = {"memory_s": memory}
    for suffix in ("csv", "parquet"):
        target = workdir / f"aug_out_{n_clips}.{suffix}"
        results[f"command_{suffix}_s"] = timed(script + [str(target)])
        target.unlink()
    source.unlink()
    return results


def timed_with_peak_rss(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command, measured in a fresh helper process."""
    probe = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True)
    seconds, rss_kb = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, rss_kb / 1024


def deploy_and_analysis(n_clips: int, workdir: Path) -> dict[str, float]:
    corpus = workdir / f"corpus_{n_clips}"
    subprocess.run([sys.executable, str(ROOT / "data" / "synthetic" / "prepare.py"), "--clips", str(n_clips), "-o",
                    str(corpus)], check=True, capture_output=True)
    seconds, rss = timed_with_peak_rss([sys.executable, str(ROOT / "attn_deploy.py"), str(corpus / "openface"),
                                        "--weights", str(hybrid_weights(workdir)), "-o", str(workdir / f"clips_{n_clips}.csv")])
    frames = corpus / "frames.csv"
    pq.write_table(pcsv.read_csv(frames), corpus / "frames.parquet")
    analysis = [sys.executable, str(ROOT / "au_analysis.py")]
    return {"deploy_s": seconds, "deploy_peak_rss_mb": rss,
            "analysis_csv_s": timed(analysis + [str(frames), "-o", str(workdir / f"fig_{n_clips}")]),
            "analysis_parquet_s": timed(analysis + [str(corpus / "frames.parquet"), "-o", str(workdir / f"pq_{n_clips}")])}


def openface_files(folder: Path, frames: int, copies: int, seed: int = 0) -> Path:
    """`copies` raw OpenFace CSVs of `frames` frames each, at OpenFace's precision."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k in range(copies):
        columns = {"frame": np.arange(1, frames + 1), "face_id": np.zeros(frames, int),
                   "timestamp": np.arange(frames) / 30, "confidence": np.full(frames, 0.98), "success": np.ones(frames, int)}
        for name in FEATURE_COLUMNS:
            columns[name] = (rng.uniform(0, 5, frames).round(2) if name in AU_COLUMNS else
                             rng.uniform(-0.6, 0.6, frames).round(3))
        write_table(pa.table(columns), folder / f"clip{k}.csv")
    return folder


def long_clip_deploys(workdir: Path) -> dict:
    """For clips of LONG_CLIPS frames: the network's seconds per 1,000 frames in deploy's predict (batched at the
    default batch size, and one clip per batch, the reference), and the whole deploy command's peak RSS."""
    torch.manual_seed(0)
    model = build_model(ModelConfig()).eval()
    scaler = Normalization("none").scaler(FEATURE_COLUMNS, [])
    rng = np.random.default_rng(0)
    results = {}
    for frames in LONG_CLIPS:
        clips = [Clip(str(k), f"c{k}.csv", f"c{k}", rng.normal(size=(frames, len(FEATURE_COLUMNS))).astype(np.float32))
                 for k in range(LONG_COPIES)]
        row = {}
        for name, batch in (("batched", INFERENCE_BATCH), ("one_at_a_time", 1)):
            predict(model, clips, scaler, batch)  # warm-up: oneDNN builds its kernels for these shapes
            started = time.perf_counter()
            with torch.inference_mode():
                predict(model, clips, scaler, batch)
            row[name] = {"s_per_1000_frames": (time.perf_counter() - started) / (frames * LONG_COPIES / 1000)}
        folder = openface_files(workdir / f"long_{frames}", frames, LONG_COPIES)
        _, rss = timed_with_peak_rss([sys.executable, str(ROOT / "attn_deploy.py"), str(folder), "--weights",
                                      str(hybrid_weights(workdir)), "-o", str(workdir / f"long_{frames}.csv")])
        row["deploy_peak_rss_mb"] = rss
        results[frames] = row
    return results


def hybrid_weights(workdir: Path) -> Path:
    """A default hybrid network with random weights: what deploy costs, not what it predicts."""
    weights = workdir / "hybrid.pt"
    if not weights.exists():
        torch.manual_seed(0)
        cfg = ModelConfig()
        save_checkpoint(weights, Checkpoint(build_model(cfg), cfg, FEATURE_COLUMNS, TRAITS, Normalization("none")))
    return weights


def video_folder(folder: Path, video: Path, copies: int) -> Path:
    folder.mkdir(parents=True)
    for k in range(copies):
        (folder / f"v{k}{video.suffix}").symlink_to(video.resolve())
    return folder


def openface_extraction(video: Path, workdir: Path) -> dict:
    """The real OpenFace: frames/s per job at --jobs 1 and 2, and video -> labels seconds per clip."""
    try:
        program = find_openface(None, False)
    except DataError as err:
        return {"skipped": str(err)}
    if not video.is_file():
        return {"skipped": f"{video}: no such sample video"}
    results: dict = {"program": program.describe(), "video": video.name}
    for jobs in (1, 2):
        folder = video_folder(workdir / f"videos_{jobs}", video, 2 * jobs)
        out = workdir / f"of_{jobs}"
        seconds = timed([sys.executable, str(ROOT / "extract_features.py"), str(folder), "-o", str(out),
                         "--jobs", str(jobs)])
        frames = sum(pcsv.read_csv(out / "extraction_status.csv").column("frames").to_pylist())
        results[f"jobs_{jobs}"] = {"videos": 2 * jobs, "seconds": seconds, "frames_per_s_per_job": frames / seconds / jobs}
    folder = video_folder(workdir / "videos_deploy", video, 4)
    seconds = timed([sys.executable, str(ROOT / "attn_deploy.py"), str(folder), "--weights",
                     str(hybrid_weights(workdir)), "-o", str(workdir / "video_clips.csv"), "--jobs", "2"])
    results["video_to_labels_s_per_clip"] = seconds / 4
    results["frames_per_video"] = frames // 4
    per_core = min(results[f"jobs_{jobs}"]["frames_per_s_per_job"] for jobs in (1, 2))  # the busier rate
    results["corpus_cpu_hours"] = CORPUS_CLIPS * CLIP_FRAMES / per_core / 3600
    return results


def linear_path_costs(n_clips: int) -> dict[str, float]:
    """Seconds of stacking.fit_linear_paths on n_clips synthetic training clips: the statistics path alone, with
    each gated path, and with all (the default network)."""
    clips = prepare.labelled_clips(prepare.generate(n_clips, 4, seed=0)[0])
    scaler = Normalization.fit("standard", clips, FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())
    off = {path.enabled_by: False for path in GATED_PATHS}
    configs = {"statistics path alone": ModelConfig(**off),
               **{f"with the {path.name}": ModelConfig(**{**off, path.enabled_by: True}) for path in GATED_PATHS},
               "all (default)": ModelConfig()}
    seconds = {}
    for name, config in configs.items():
        started = time.perf_counter()
        fit_linear_paths(build_model(config), clips, scaler, torch.device("cpu"))
        seconds[name] = time.perf_counter() - started
    return seconds


def linear_path_inference_costs(n_clips: int) -> dict[str, float]:
    """Seconds to compute each linear path's inputs over n_clips synthetic clips in inference batches, the fitted
    default network's: what labelling costs per path whose gates are open."""
    clips = prepare.labelled_clips(prepare.generate(n_clips, 4, seed=0)[0])
    scaler = Normalization.fit("standard", clips, FEATURE_COLUMNS).scaler(FEATURE_COLUMNS, ())
    model = build_model(ModelConfig())
    fit_linear_paths(model, clips, scaler, torch.device("cpu"))
    seconds = {}
    for path in model.cfg.linear_paths:
        started = time.perf_counter()
        batched(model, clips, scaler, torch.device("cpu"),
                lambda x, lengths: {path.key: model.path_inputs(path, x, lengths)})
        seconds[path.name] = time.perf_counter() - started
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = Parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--json", type=Path, default=Path("bench.json"), help="where to write the numbers")
    parser.add_argument("--seconds", type=float, default=None,
                        help="time per throughput measurement (default: 5 with --quick, else 20)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure")
    parser.add_argument("--video", type=Path, default=SAMPLE_VIDEO, help="the video OpenFace is timed on")
    args = parser.parse_args(argv)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    small, large = (200, 1000) if args.quick else (1000, 10_000)
    torch.set_num_threads(os.cpu_count() or 1)
    clips = synthetic_clips(128 if args.quick else 256, seed=0)
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"torch {torch.__version__}, {torch.get_num_threads()} threads",
                     "quick": args.quick, "targets": TARGETS}
    if "train" in args.sections:
        print("training throughput ...", flush=True)
        results["train_clips_per_s"] = {"reference": reference_train(clips, seconds),
                                        "paper (ours)": our_train(paper_config(22), clips, seconds),
                                        "hybrid": our_train(ModelConfig(), clips, seconds),
                                        "conv": our_train(ModelConfig(kind="conv"), clips, seconds)}
    if "infer" in args.sections:
        print("inference throughput ...", flush=True)
        results["infer_clips_per_s"], results["paper_ours_vs_reference_max_abs_diff"] = inference(clips, seconds)
    if "paths" in args.sections:
        print("fitting the linear paths ...", flush=True)
        results["linear_path_fit_s"] = {"clips": PATH_CLIPS, **linear_path_costs(PATH_CLIPS)}
        results["linear_path_inference_s"] = {"clips": PATH_CLIPS, **linear_path_inference_costs(PATH_CLIPS)}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "augment" in args.sections:
            print("augmentation ...", flush=True)
            results["augmentation"] = {n: augmentation_times(n, workdir) for n in (small, large)}
        if "pipeline" in args.sections:
            print("deploy and analysis ...", flush=True)
            results["pipeline"] = {n: deploy_and_analysis(n, workdir) for n in (small, large)}
        if "long" in args.sections:
            print("deploy on long clips ...", flush=True)
            results["long_clips"] = long_clip_deploys(workdir)
        if "openface" in args.sections:
            print("the real OpenFace ...", flush=True)
            results["openface"] = openface_extraction(args.video, workdir)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results, small, large))
    print(f"wrote {args.json}")
    return 0


def render(results: dict, small: int, large: int) -> str:
    lines = [f"machine: {results['machine']}"]
    if "train_clips_per_s" in results and "infer_clips_per_s" in results:
        lines += ["", "| measure | reference | paper (ours) | hybrid | conv |", "|---|---|---|---|---|"]
        for key, label in (("train_clips_per_s", "training clips/s"), ("infer_clips_per_s", "inference clips/s")):
            row = results[key]
            ref = row["reference"]
            cells = [f"{row[name]:.1f} ({row[name] / ref:.1f}x)" for name in ("paper (ours)", "hybrid", "conv")]
            lines.append(f"| {label} | {ref:.1f} | " + " | ".join(cells) + " |")
        lines.append(f"\npaper network ours vs reference, largest output difference: "
                     f"{results['paper_ours_vs_reference_max_abs_diff']:.2e}")
    steps = []
    if "augmentation" in results:
        aug = results["augmentation"]
        steps += [("augmentation in memory (s)", lambda n: aug[n]["memory_s"], ""),
                  ("augmentation command, CSV to CSV (s)", lambda n: aug[n]["command_csv_s"], "≤ 40"),
                  ("augmentation command, CSV to Parquet (s)", lambda n: aug[n]["command_parquet_s"], "≤ 15")]
    if "pipeline" in results:
        pipe = results["pipeline"]
        steps += [("deploy, raw OpenFace CSVs -> clips table (s)", lambda n: pipe[n]["deploy_s"], "≤ 50"),
                  ("deploy peak RSS (MB)", lambda n: pipe[n]["deploy_peak_rss_mb"], "≤ 1,024"),
                  ("au_analysis from CSV (s, whole command)", lambda n: pipe[n]["analysis_csv_s"], "≤ 4"),
                  ("au_analysis from Parquet (s, whole command)", lambda n: pipe[n]["analysis_parquet_s"], "≤ 2")]
    if steps:
        lines += ["", f"| step | {small:,} clips | {large:,} clips | target ({large:,}) |", "|---|---|---|---|"]
        lines += [f"| {label} | {get(small):.1f} | {get(large):.1f} | {target} |" for label, get, target in steps]
    if "long_clips" in results:
        lines += ["", f"deploy on long clips ({LONG_COPIES} of each length): the network's seconds per 1,000 frames in "
                      "predict, and the deploy command's peak memory",
                  "", f"| frames per clip | batched ({INFERENCE_BATCH}) | one clip per batch | deploy peak MB |", "|---|---|---|---|"]
        for frames, row in results["long_clips"].items():
            lines.append(f"| {int(frames):,} | {row['batched']['s_per_1000_frames']:.3f} | "
                         f"{row['one_at_a_time']['s_per_1000_frames']:.3f} | {row['deploy_peak_rss_mb']:.0f} |")
    if "linear_path_fit_s" in results:
        fits = dict(results["linear_path_fit_s"])
        lines += ["", f"fitting the linear paths on {fits.pop('clips'):,} training clips (s)", "",
                  "| paths | seconds |", "|---|---|", *(f"| {name} | {s:.1f} |" for name, s in fits.items())]
    if "linear_path_inference_s" in results:
        costs = dict(results["linear_path_inference_s"])
        lines += ["", f"each linear path's inputs over {costs.pop('clips'):,} clips at inference (s)", "",
                  "| path | seconds |", "|---|---|", *(f"| {name} | {s:.2f} |" for name, s in costs.items())]
    if "openface" in results:
        lines += ["", render_openface(results["openface"])]
    return "\n".join(lines)


def render_openface(of: dict) -> str:
    if "skipped" in of:
        return f"real OpenFace: not measured ({of['skipped']})"
    return "\n".join([
        f"real OpenFace: {of['program']}, on {of['video']} ({of['frames_per_video']} frames)", "",
        "| measure | value |", "|---|---|",
        f"| frames/s per job, --jobs 1 | {of['jobs_1']['frames_per_s_per_job']:.1f} |",
        f"| frames/s per job, --jobs 2 | {of['jobs_2']['frames_per_s_per_job']:.1f} |",
        f"| video -> labels, s per clip (--jobs 2) | {of['video_to_labels_s_per_clip']:.1f} |",
        f"| {CORPUS_CLIPS:,} clips of {CLIP_FRAMES} frames, CPU-hours | {of['corpus_cpu_hours']:.0f} |"])


if __name__ == "__main__":
    sys.exit(main())
