"""The training loop shared by attn_regression.py and attn_retrain.py: data with its group split, batched
training with early stopping, best/last checkpoints, resume, logs and a learning curve, alone or under torchrun."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from cli import Distributed
from data_augmentation import augment_clips
from dataset import (SPLITS, Scaler, bucketed_batches, collate, data_fingerprint, predict, prepare_split,
                     split_clips)
from metrics import regression_table
from model import Checkpoint, branch_parameters, load_checkpoint, save_checkpoint
from openface import TRAIT_LETTERS, TRAITS, Clip, DataError, ReadSummary, attach_labels, read_clips, read_labels


@dataclass
class TrainOptions:
    epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 10
    seed: int = 0
    augment: bool = False
    grad_clip: float = 1.0
    freeze: str | None = None  # 'conv' or 'attention'


# ----------------------------------------------------------------------------------------------------------
# Data


def load_labelled_clips(data: Sequence[str], labels: Sequence[str] | None, features: Sequence[str],
                        reading: dict) -> tuple[list[Clip], ReadSummary]:
    """Usable clips with labels (label files override a table's trait columns); unlabelled clips are an error.

    Clips are ordered by their key (file name), so both input layouts of one corpus train identically.
    """
    clips, summary = read_clips(data, features, **reading)
    clips.sort(key=lambda c: c.key)
    table = read_labels(labels) if labels else None
    attach_labels(clips, table, ", ".join(labels) if labels else ", ".join(map(str, data)))
    return clips, summary


@dataclass
class SplitData:
    parts: dict[str, list[Clip]]
    path: Path
    sha256: str
    assignment: dict[str, str]
    created: bool

    def record(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "assignment": self.assignment}

    def describe(self) -> str:
        counts = ", ".join(f"{name} {len(self.parts[name])}" for name in SPLITS)
        verb = "created" if self.created else "using"
        return f"{verb} split {self.path} (sha256 {self.sha256[:12]}): {counts} clips"


def split_data(clips: Sequence[Clip], split_path: Path, seed: int) -> SplitData:
    assignment, digest, created = prepare_split(clips, split_path, seed)
    parts = split_clips(clips, assignment, split_path)
    for name in ("train", "val"):
        if not parts[name]:
            raise DataError(split_path, f"the {name} split is empty; use more source videos or a new split")
    return SplitData(parts, split_path, digest, assignment, created)


# ----------------------------------------------------------------------------------------------------------
# Training


def output_paths(out: Path) -> dict[str, Path]:
    """Best checkpoint at OUT; last checkpoint, epoch log and learning curve beside it."""
    stem = out.with_suffix("")
    return {"best": out, "last": Path(f"{stem}.last.pt"), "log": Path(f"{stem}.log.jsonl"),
            "curve": Path(f"{stem}.curve.png")}


def evaluate(model: torch.nn.Module, clips: Sequence[Clip], scaler: Scaler, batch_size: int,
             device: torch.device) -> tuple[float, pd.DataFrame]:
    """MSE loss over clips and the per-trait metric table."""
    pred = predict(model, clips, scaler, batch_size, device)
    truth = np.stack([c.label for c in clips])
    return float(((pred - truth) ** 2).mean()), regression_table(truth, pred)


def epoch_line(record: dict, epochs: int) -> str:
    r2 = " ".join(f"{TRAIT_LETTERS[t]} {record['val_r2'][t]:+.3f}" for t in TRAITS)
    return (f"epoch {record['epoch']:>3}/{epochs}  train {record['train_loss']:.5f}  val {record['val_loss']:.5f}  "
            f"val R2 {r2} (mean {record['val_r2_mean']:+.3f})  {record['seconds']:.1f} s  "
            f"{record['clips_per_s']:.0f} clips/s{'  *' if record['best'] else ''}")


def plot_learning_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax1.set(xlabel="epoch", ylabel="MSE", title="loss", yscale="log")
    ax1.legend()
    for trait in TRAITS:
        ax2.plot(epochs, [h["val_r2"][trait] for h in history], label=trait, alpha=0.7)
    ax2.plot(epochs, [h["val_r2_mean"] for h in history], label="mean", color="black", linewidth=2)
    ax2.set(xlabel="epoch", ylabel="R$^2$", title="validation R$^2$", ylim=(-0.5, 1))
    ax2.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_log(history: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    os.replace(tmp, path)


def fit(model: torch.nn.Module, split: SplitData, scaler: Scaler, opts: TrainOptions, out: Path, meta: dict,
        device: torch.device, world: Distributed, resume: bool = False) -> dict:
    """Train with early stopping on validation loss; writes best/last checkpoints, log and curve (rank 0).

    Every epoch's batch order and dropout draws are seeded from (seed, epoch), so a run resumed from the
    last checkpoint ends exactly as an uninterrupted one. Returns the best epoch's record.
    """
    paths = output_paths(out)
    train_clips = augment_clips(split.parts["train"]) if opts.augment else list(split.parts["train"])
    val_clips = split.parts["val"]
    meta = {**meta, "normalization": scaler.to_dict(), "seed": opts.seed, "split": split.record(),
            "data_fingerprint": data_fingerprint([c for name in SPLITS for c in split.parts[name]]),
            "train_options": asdict(opts), "features": list(meta["features"]), "traits": list(TRAITS)}
    for p in branch_parameters(model, opts.freeze) if opts.freeze else []:
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, opts.epochs))
    state = {"epoch": 0, "best_val": math.inf, "bad_epochs": 0, "history": []}
    if resume:
        state = restore_training_state(paths["last"], model, optimizer, scheduler, meta)
    net = model
    if world.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=meta.get("model_kind") == "paper" or opts.freeze is not None)
    lengths = [c.n_frames for c in train_clips]
    best = next((h for h in state["history"] if h["best"] and h["val_loss"] == state["best_val"]), None)
    for epoch in range(state["epoch"] + 1, opts.epochs + 1):
        if state["bad_epochs"] >= opts.patience:
            break
        torch.manual_seed(opts.seed * 100_003 + epoch)
        batches = bucketed_batches(lengths, opts.batch_size, opts.seed, epoch, rank=world.rank,
                                   world_size=world.world_size)
        started = time.perf_counter()
        train_loss = train_epoch(net, train_clips, batches, scaler, optimizer, opts, device, world, epoch)
        scheduler.step()
        val_loss, table = evaluate(model, val_clips, scaler, opts.batch_size * 2, device)
        seconds = time.perf_counter() - started
        improved = val_loss < state["best_val"]
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                  "val_mae": table.loc[list(TRAITS), "mae"].to_dict(), "val_r2": table.loc[list(TRAITS), "r2"].to_dict(),
                  "val_r2_mean": float(table.loc["mean", "r2"]), "lr": optimizer.param_groups[0]["lr"],
                  "seconds": seconds, "clips_per_s": len(train_clips) / seconds, "best": improved}
        state["history"].append(record)
        state["epoch"] = epoch
        if improved:
            state["best_val"], state["bad_epochs"], best = val_loss, 0, record
        else:
            state["bad_epochs"] += 1
        if world.is_main:
            metrics = {"epoch": epoch, "val_loss": val_loss, "val": table.to_dict(orient="index")}
            if improved:
                save_checkpoint(paths["best"], model, {**meta, "metrics": metrics})
            save_checkpoint(paths["last"], model, {**meta, "metrics": metrics},
                            training_state={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                            **{k: v for k, v in state.items() if k != "history"},
                                            "history_json": json.dumps(state["history"])})
            write_log(state["history"], paths["log"])
            plot_learning_curve(state["history"], paths["curve"])
            print(epoch_line(record, opts.epochs), flush=True)
    if world.is_main and state["bad_epochs"] >= opts.patience:
        print(f"early stop: no validation improvement for {opts.patience} epochs", flush=True)
    return best or state["history"][-1]


def train_epoch(net: torch.nn.Module, clips: Sequence[Clip], batches: list[list[int]], scaler: Scaler,
                optimizer: torch.optim.Optimizer, opts: TrainOptions, device: torch.device, world: Distributed,
                epoch: int) -> float:
    """One pass over this rank's batches; returns the mean training loss over all ranks' clips."""
    net.train()
    total = torch.zeros(2, dtype=torch.float64)  # (loss * clips, clips)
    bar = tqdm(total=sum(len(b) for b in batches) * world.world_size, unit="clip", leave=False,
               desc=f"epoch {epoch}", disable=not world.is_main or not sys.stderr.isatty())
    for index in batches:
        batch = collate(clips, index, scaler)
        x, lengths, y = batch.x.to(device), batch.lengths.to(device), batch.y.to(device)
        loss = F.mse_loss(net(x, lengths), y)  # (B, T, F) -> (B, 5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if opts.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], opts.grad_clip)
        optimizer.step()
        total += torch.tensor([loss.item() * len(index), len(index)], dtype=torch.float64)
        bar.update(len(index) * world.world_size)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    if world.world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


def restore_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler, meta: dict) -> dict:
    """Weights, optimiser, scheduler and loop state from the last checkpoint of the same run."""
    ckpt: Checkpoint = load_checkpoint(path)
    if ckpt.training_state is None:
        raise DataError(path, "has no training state to resume from")
    for key in ("data_fingerprint", "seed"):
        if ckpt.meta.get(key) != meta.get(key):
            raise DataError(path, f"cannot resume: the {key.replace('_', ' ')} differs from this run's; "
                                  "start a new run without --resume")
    model.load_state_dict(ckpt.model.state_dict())
    ts = ckpt.training_state
    optimizer.load_state_dict(ts["optimizer"])
    scheduler.load_state_dict(ts["scheduler"])
    return {"epoch": int(ts["epoch"]), "best_val": float(ts["best_val"]), "bad_epochs": int(ts["bad_epochs"]),
            "history": json.loads(ts["history_json"])}


def held_out_report(model: torch.nn.Module, clips: Sequence[Clip], scaler: Scaler, device: torch.device,
                    title: str) -> tuple[float, pd.DataFrame, str]:
    """Loss, metric table and a printable block for a held-out split."""
    loss, table = evaluate(model, clips, scaler, 64, device)
    text = f"{title}: MSE {loss:.5f} on {len(clips)} clips\n" + table[["mse", "mae", "r2", "pearson", "ccc"]].to_string(
        float_format=lambda v: f"{v:.4f}")
    return loss, table, text
