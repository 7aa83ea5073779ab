"""Benchmark: this pipeline against the paper's one-clip-at-a-time way, side by side in one run.

    python bench.py --quick          # about a minute
    python bench.py                  # the full sizes of the README table (10,000 clips; many minutes)

Measures (1) training and (2) inference throughput in clips/s for: the reference (the paper network run as the
original scripts do: batch size 1, every clip padded to 700 frames, the time encoding recomputed and the
attention LSTM run over all 700 positions every step, Adam lr 1e-4), the paper network our way (batched,
bucketed, constant branch once per call), the hybrid and the conv-only network; (3) augmentation in memory and
through the command; (4) deploy end to end on raw OpenFace CSVs with the peak RSS of that process; (5)
au_analysis. Prints one table with ratios to the reference and writes it as JSON (--json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from data_augmentation import augment_table
from dataset import Scaler, bucketed_batches, collate, predict
from model import PAPER_FRAMES, ModelConfig, PaperNet, build_model, conv_branch, paper_config, sinusoidal_encoding
from openface import FEATURE_COLUMNS, Clip

ROOT = Path(__file__).resolve().parent


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
    convs = [model.conv1d_y1, model.conv1d_y2, model.conv1d_y3, model.conv1d_y4]
    ses = [model.squeeze_excite1, model.squeeze_excite2, model.squeeze_excite3, model.squeeze_excite4]
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


def our_train(cfg: ModelConfig, clips: list[Clip], seconds: float, batch_size: int = 32) -> float:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = Scaler.identity(22)
    batches = bucketed_batches([c.n_frames for c in clips], batch_size, seed=0, epoch=0)
    done, started, step = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        batch = collate(clips, batches[step % len(batches)], scaler)
        loss = F.mse_loss(model(batch.x, batch.lengths), batch.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done, step = done + len(batch.index), step + 1
    return done / (time.perf_counter() - started)


def inference(clips: list[Clip], seconds: float) -> dict[str, float]:
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
    scaler = Scaler.identity(22)
    for name, model in (("paper (ours)", paper), ("hybrid", build_model(ModelConfig(kind="hybrid")).eval()),
                        ("conv", build_model(ModelConfig(kind="conv")).eval())):
        started = time.perf_counter()
        out = predict(model, clips, scaler, 64)
        rates[name] = len(clips) / (time.perf_counter() - started)
        if name == "paper (ours)":
            diff = float(np.abs(out[: len(reference_out)] - torch.cat(reference_out).numpy()).max())
    return rates, diff


def augmentation_times(n_clips: int, workdir: Path) -> dict[str, float]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(420, 481, n_clips)
    table = pd.DataFrame(rng.uniform(0, 1, (int(lengths.sum()), 22)).round(3), columns=list(FEATURE_COLUMNS))
    table.insert(0, "File", np.repeat([f"v{i}.000.mp4" for i in range(n_clips)], lengths))
    table.insert(0, "ID", np.repeat(np.arange(1, n_clips + 1), lengths))
    started = time.perf_counter()
    augment_table(table)
    memory = time.perf_counter() - started
    source, target = workdir / f"aug_in_{n_clips}.csv", workdir / f"aug_out_{n_clips}.csv"
    table.to_csv(source, index=False)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "data_augmentation.py"), str(source), "-o", str(target)], check=True,
                   capture_output=True)
    command = time.perf_counter() - started
    source.unlink()
    target.unlink()
    return {"memory_s": memory, "command_s": command}


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
    weights = workdir / "hybrid.pt"
    if not weights.exists():
        from model import save_checkpoint
        from openface import TRAITS

        torch.manual_seed(0)
        model = build_model(ModelConfig(kind="hybrid"))
        save_checkpoint(weights, model, {"features": list(FEATURE_COLUMNS), "traits": list(TRAITS),
                                         "normalization": {"kind": "none"}})
    seconds, rss = timed_with_peak_rss([sys.executable, str(ROOT / "attn_deploy.py"), str(corpus / "openface"),
                                        "--weights", str(weights), "-o", str(workdir / f"clips_{n_clips}.csv")])
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "au_analysis.py"), str(corpus / "frames.csv"), "-o",
                    str(workdir / f"fig_{n_clips}")], check=True, capture_output=True)
    return {"deploy_s": seconds, "deploy_peak_rss_mb": rss, "analysis_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--json", type=Path, default=Path("bench.json"), help="where to write the numbers")
    parser.add_argument("--seconds", type=float, default=None, help="time per throughput measurement")
    args = parser.parse_args(argv)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    small, large = (200, 1000) if args.quick else (1000, 10_000)
    torch.manual_seed(0)
    clips = synthetic_clips(128 if args.quick else 256, seed=0)
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"torch {torch.__version__}, {torch.get_num_threads()} threads",
                     "quick": args.quick}
    print("training throughput ...", flush=True)
    train = {"reference": reference_train(clips, seconds),
             "paper (ours)": our_train(paper_config(22), clips, seconds),
             "hybrid": our_train(ModelConfig(kind="hybrid"), clips, seconds),
             "conv": our_train(ModelConfig(kind="conv"), clips, seconds)}
    print("inference throughput ...", flush=True)
    infer, max_diff = inference(clips, seconds)
    results["train_clips_per_s"], results["infer_clips_per_s"] = train, infer
    results["paper_ours_vs_reference_max_abs_diff"] = max_diff
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print("augmentation ...", flush=True)
        results["augmentation"] = {n: augmentation_times(n, workdir) for n in (small, large)}
        print("deploy and analysis ...", flush=True)
        results["pipeline"] = {n: deploy_and_analysis(n, workdir) for n in (small, large)}
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results, small, large))
    print(f"wrote {args.json}")
    return 0


def render(results: dict, small: int, large: int) -> str:
    lines = [f"machine: {results['machine']}", "", "| measure | reference | paper (ours) | hybrid | conv |",
             "|---|---|---|---|---|"]
    for key, label in (("train_clips_per_s", "training clips/s"), ("infer_clips_per_s", "inference clips/s")):
        row = results[key]
        ref = row["reference"]
        cells = [f"{row[name]:.1f} ({row[name] / ref:.1f}x)" for name in ("paper (ours)", "hybrid", "conv")]
        lines.append(f"| {label} | {ref:.1f} | " + " | ".join(cells) + " |")
    lines.append(f"\npaper network ours vs reference, largest output difference: "
                 f"{results['paper_ours_vs_reference_max_abs_diff']:.2e}")
    aug, pipe = results["augmentation"], results["pipeline"]
    lines += ["", f"| step | {small} clips | {large} clips | ratio |", "|---|---|---|---|"]
    for label, get in (("augmentation in memory (s)", lambda n: aug[n]["memory_s"]),
                       ("augmentation command, CSV in/out (s)", lambda n: aug[n]["command_s"]),
                       ("deploy raw OpenFace CSVs (s)", lambda n: pipe[n]["deploy_s"]),
                       ("deploy peak RSS (MB)", lambda n: pipe[n]["deploy_peak_rss_mb"]),
                       ("au_analysis (s)", lambda n: pipe[n]["analysis_s"])):
        lines.append(f"| {label} | {get(small):.1f} | {get(large):.1f} | {get(large) / get(small):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
