"""The training loop shared by attn_regression.py and attn_retrain.py: the linear paths fitted first (stacking.py),
then batched training of the branches with early stopping, best and last checkpoints after every epoch, resume
from the last one, logs and a learning curve, alone or under torchrun (distributed.py)."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from checkpoint import Checkpoint, config_record, load_checkpoint, save_checkpoint
from cli import option
from data_augmentation import augment_clips
from dataset import (INFERENCE_BATCH, SPLITS, Normalization, Scaler, SplitData, TrainingRange, bucketed_batches,
                     collate, data_fingerprint, labels_of, predict)
from distributed import Distributed
from errors import DataError
from metrics import regression_table
from model import ModelConfig, branch_parameters
from openface import TRAIT_LETTERS, TRAITS, Clip
from plots import pyplot, save_figure
from stacking import calibrate_gates, fit_linear_paths, open_branches_only
from tables import json_line, write_text_atomic


@dataclass(frozen=True)
class TrainOptions:
    """How a network is trained; attn_regression.py and attn_retrain.py get their flags from these fields."""

    epochs: int = option(60, "maximum number of epochs", minimum=1)
    batch_size: int = option(16, "clips per optimisation step", minimum=1)
    lr: float = option(1e-3, "AdamW learning rate (cosine schedule)", minimum=0.0)
    weight_decay: float = option(1e-2, "AdamW weight decay", minimum=0.0)
    patience: int = option(10, "stop after this many epochs without validation improvement", minimum=1)
    grad_clip: float = option(1.0, "clip the gradient norm at this value (0: no clipping)", minimum=0.0)
    seed: int = option(0, "seeds the split, the initialisation, the batch order and dropout")
    augment: bool = option(False, "add the paper's three augmentations to the training split")
    freeze: str | None = option(None, "keep one branch fixed (retraining)", choices=("conv", "attention"))


CURVE_EVERY_S = 30.0  # while training, the learning curve is redrawn after an epoch at most this often (and at the end)
RETRAIN_DEFAULTS = {"epochs": 30, "lr": 1e-4, "patience": 8}  # retraining starts from a trained network


# ----------------------------------------------------------------------------------------------------------
# A training run


@dataclass(frozen=True)
class RunOutputs:
    """Best checkpoint at OUT; last checkpoint, epoch log and learning curve beside it."""

    best: Path
    last: Path
    log: Path
    curve: Path

    @classmethod
    def beside(cls, out: Path) -> "RunOutputs":
        stem = out.with_suffix("")
        return cls(out, Path(f"{stem}.last.pt"), Path(f"{stem}.log.jsonl"), Path(f"{stem}.curve.png"))

    def all(self) -> list[Path]:
        return [self.best, self.last, self.log, self.curve]


@dataclass
class Run:
    """Everything one training run needs, prepared by the script."""

    model: torch.nn.Module
    config: ModelConfig
    features: tuple[str, ...]
    split: SplitData
    normalization: Normalization
    options: TrainOptions
    outputs: RunOutputs
    device: torch.device
    world: Distributed
    resume: bool = False
    retrained_from: str | None = None
    report: Callable[[str], None] = lambda line: None  # where progress lines go (the script passes print on rank 0)

    @property
    def scaler(self) -> Scaler:
        """The fixed input transform of training (kind 'paper' is fixed on the training split beforehand)."""
        return self.normalization.scaler(self.features, ())

    @functools.cached_property
    def training_range(self) -> TrainingRange:
        """The per-clip statistics of the training split, computed once; every checkpoint of the run records it."""
        return TrainingRange.of(self.split.parts["train"])


@dataclass
class LoopState:
    epoch: int = 0
    best_val: float = math.inf
    bad_epochs: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)

    @property
    def best(self) -> dict | None:
        return next((h for h in reversed(self.history) if h["best"]), None)


def run_checkpoint(run: Run, metrics: dict, training_state: dict | None = None) -> Checkpoint:
    """The checkpoint of this run's model as it is now."""
    clips = [c for name in SPLITS for c in run.split.parts[name]]
    return Checkpoint(run.model, run.config, run.features, TRAITS, run.normalization, "ours", run.split.record,
                      run.options.seed, data_fingerprint(clips), dataclasses.asdict(run.options),
                      retrained_from=run.retrained_from, metrics=metrics, training_state=training_state,
                      training_range=run.training_range)


def make_optimizer(run: Run) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the trainable parameters (not a frozen branch; the linear paths never are) with a cosine
    schedule."""
    if run.options.freeze:
        for p in branch_parameters(run.model, run.options.freeze):
            p.requires_grad_(False)
    params = [p for p in run.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=run.options.lr, weight_decay=run.options.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=run.options.epochs)
    return optimizer, scheduler


def wrap_distributed(run: Run) -> torch.nn.Module:
    if run.world.world_size == 1:
        return run.model
    return torch.nn.parallel.DistributedDataParallel(
        run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None,
        find_unused_parameters=run.config.kind == "paper" or run.options.freeze is not None)


def evaluate(model: torch.nn.Module, clips: Sequence[Clip], scaler: Scaler, batch_size: int,
             device: torch.device) -> tuple[float, pd.DataFrame]:
    """MSE loss over clips and the per-trait metric table."""
    pred = predict(model, clips, scaler, batch_size, device)
    truth = labels_of(clips)
    return float(((pred - truth) ** 2).mean()), regression_table(truth, pred)


def constant_label_warnings(parts: dict[str, Sequence[Clip]]) -> list[str]:
    """One line per split and trait whose labels are all one value: R² is undefined there (shown as n/a)."""
    lines = []
    for name in ("train", "val"):
        if parts.get(name):
            labels = labels_of(parts[name])
            for j, trait in enumerate(TRAITS):
                if np.ptp(labels[:, j]) == 0:
                    lines.append(f"warning: {trait} is {labels[0, j]:g} on every {name} clip ({len(labels)}): nothing "
                                 f"to learn there, and its R² is undefined (n/a)")
    return lines


def fit(run: Run) -> dict:
    """Train with early stopping on validation loss; rank 0 writes the best and last checkpoints and the log after
    every epoch, and the curve every CURVE_EVERY_S and at the end. Batch order and dropout are seeded from (seed,
    epoch), so a run resumed from its last checkpoint ends exactly as an uninterrupted one. Returns the best
    epoch's record."""
    opts = run.options
    train_clips = augment_clips(run.split.parts["train"]) if opts.augment else list(run.split.parts["train"])
    for warning in constant_label_warnings(run.split.parts):
        run.report(warning)
    scaler = run.scaler
    path_defaults = prepare_linear_paths(run) if run.config.stats_path else None
    optimizer, scheduler = make_optimizer(run)
    state = restore_training_state(run, optimizer, scheduler) if run.resume else LoopState()
    if state.history and run.world.is_main:  # a kill may have come between the last checkpoint and the log
        write_text_atomic(run.outputs.log, "".join(json_line(h) + "\n" for h in state.history))
    net = wrap_distributed(run)
    lengths = [c.n_frames for c in train_clips]
    curve = CurveDrawer(run.outputs.curve)
    for epoch in range(state.epoch + 1, opts.epochs + 1):
        if state.bad_epochs >= opts.patience:
            break
        torch.manual_seed(opts.seed * 100_003 + epoch)
        batches = bucketed_batches(lengths, opts.batch_size, opts.seed, epoch, rank=run.world.rank,
                                   world_size=run.world.world_size)
        started = time.perf_counter()
        train_loss = train_epoch(net, train_clips, batches, scaler, optimizer, run, epoch)
        scheduler.step()
        val_loss, table = evaluate(run.model, run.split.parts["val"], scaler, opts.batch_size * 2, run.device)
        if not math.isfinite(train_loss) or not math.isfinite(val_loss):
            raise DataError(run.outputs.best, f"training diverged at epoch {epoch} (loss is {train_loss}); "
                                              "lower --lr or check the inputs")
        record = epoch_record(epoch, train_loss, val_loss, table, optimizer, time.perf_counter() - started,
                              len(train_clips), val_loss < state.best_val)
        advance(state, record)
        if run.world.is_main:
            save_epoch(run, state, table, optimizer, scheduler)
            curve.draw(state.history, due_only=True)
        run.report(epoch_line(record, opts.epochs))
    if run.world.is_main and state.history:
        curve.draw(state.history, due_only=False)
    if state.bad_epochs >= opts.patience:
        run.report(f"early stop: no validation improvement for {opts.patience} epochs")
    best = dict(state.best or state.history[-1])
    if run.config.stats_path:
        best["gates"] = finish_with_gates(run, path_defaults)
    return best


def prepare_linear_paths(run: Run) -> np.ndarray:
    """Before training: fit the linear paths; the branches then learn everything the statistics path misses
    (their gates open, the other paths' closed); all are weighed after training (finish_with_gates, from the
    paths' weights returned here)."""
    path_defaults = fit_linear_paths(run.model, run.split.parts["train"], run.scaler, run.device)
    with torch.no_grad():
        open_branches_only(run.model)
    return path_defaults


def finish_with_gates(run: Run, path_defaults: np.ndarray) -> dict[str, dict[str, float]]:
    """Weigh the gated linear paths and the best epoch's branches per trait on validation clips; rank 0 saves it
    again."""
    run.world.barrier()
    best_ckpt = load_checkpoint(run.outputs.best, run.device)
    run.model.load_state_dict(best_ckpt.model.state_dict())
    gates = calibrate_gates(run.model, run.split.parts["val"], run.scaler, run.device, path_defaults)
    if run.world.is_main:
        best_ckpt.model.load_state_dict(run.model.state_dict())
        save_checkpoint(run.outputs.best, best_ckpt)
    run.world.barrier()
    names = [path.name for path in run.config.gated_paths] + ["branches"]
    run.report("weights per trait over the statistics path (0: not used): " + "; ".join(
        f"{name} " + " ".join(f"{TRAIT_LETTERS[t]} {g:.2f}" for t, g in zip(TRAITS, row)) for name, row in zip(names, gates)))
    return {name: dict(zip(TRAITS, map(float, row))) for name, row in zip(names, gates)}


def epoch_record(epoch: int, train_loss: float, val_loss: float, table: pd.DataFrame,
                 optimizer: torch.optim.Optimizer, seconds: float, n_clips: int, improved: bool) -> dict:
    return {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
            "val_mae": table.loc[list(TRAITS), "mae"].to_dict(), "val_r2": table.loc[list(TRAITS), "r2"].to_dict(),
            "val_r2_mean": float(table.loc["mean", "r2"]), "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds, "clips_per_s": n_clips / seconds, "best": improved}


def advance(state: LoopState, record: dict) -> None:
    state.history.append(record)
    state.epoch = record["epoch"]
    if record["best"]:
        state.best_val, state.bad_epochs = record["val_loss"], 0
    else:
        state.bad_epochs += 1


def save_epoch(run: Run, state: LoopState, table: pd.DataFrame, optimizer: torch.optim.Optimizer,
               scheduler) -> None:
    """The best checkpoint when this epoch improved, then the last checkpoint and the log."""
    record = state.history[-1]
    metrics = {"epoch": record["epoch"], "val_loss": record["val_loss"], "val": table.to_dict(orient="index")}
    if record["best"]:
        save_checkpoint(run.outputs.best, run_checkpoint(run, metrics))
    loop = {"epoch": state.epoch, "best_val": state.best_val, "bad_epochs": state.bad_epochs,
            "history_json": json_line(state.history)}
    save_checkpoint(run.outputs.last, run_checkpoint(run, metrics, {"optimizer": optimizer.state_dict(),
                                                                      "scheduler": scheduler.state_dict(), **loop}))
    write_text_atomic(run.outputs.log, "".join(json_line(h) + "\n" for h in state.history))


def train_epoch(net: torch.nn.Module, clips: Sequence[Clip], batches: list[list[int]], scaler: Scaler,
                optimizer: torch.optim.Optimizer, run: Run, epoch: int) -> float:
    """One pass over this rank's batches; returns the mean training loss over all ranks' clips."""
    net.train()
    world, opts = run.world, run.options
    total = torch.zeros(2, dtype=torch.float64)  # (loss * clips, clips)
    bar = tqdm(total=sum(len(b) for b in batches) * world.world_size, unit="clip", leave=False,
               desc=f"epoch {epoch}", disable=not world.is_main or not sys.stderr.isatty())
    params = [p for p in net.parameters() if p.requires_grad]
    for index in batches:
        batch = collate(clips, index, scaler)
        x, lengths, y = batch.x.to(run.device), batch.lengths.to(run.device), batch.y.to(run.device)
        out = net(x, lengths)  # (B, 5), or (K, B, 5) for an ensemble in training
        loss = F.mse_loss(out, y.expand_as(out))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if opts.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)
        optimizer.step()
        total += torch.tensor([loss.item() * len(index), len(index)], dtype=torch.float64)
        bar.update(len(index) * world.world_size)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    if world.world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


def resume_mismatch(last: Checkpoint, run: Run) -> str | None:
    """What makes the last checkpoint another run than this one, or None when it is the same run."""
    clips = [c for name in SPLITS for c in run.split.parts[name]]
    mine = {"model": config_record(run.config), "features": list(run.features),
            "normalization": run.normalization, "split": run.split.record.sha256,
            "data": data_fingerprint(clips), "options": dataclasses.asdict(run.options)}
    theirs = {"model": config_record(last.config), "features": list(last.features),
              "normalization": last.normalization, "split": last.split.sha256 if last.split else None,
              "data": last.data_fingerprint, "options": last.train_options}
    for key in mine:
        if mine[key] != theirs[key]:
            if isinstance(mine[key], dict) and isinstance(theirs[key], dict):
                fields = [k for k in mine[key] if mine[key].get(k) != theirs[key].get(k)]
                return f"{key} differs ({', '.join(f'{k}: {theirs[key].get(k)} -> {mine[key].get(k)}' for k in fields)})"
            return f"the {key} differs"
    return None


def restore_training_state(run: Run, optimizer: torch.optim.Optimizer, scheduler) -> LoopState:
    """Weights, optimiser, scheduler and loop state from the last checkpoint of the same run; anything else is
    refused, naming what differs."""
    path = run.outputs.last
    if not path.exists():
        run.report(f"nothing to resume in {path}: starting the run from the beginning")
        return LoopState()
    last = load_checkpoint(path)
    if last.training_state is None:
        raise DataError(path, "has no training state to resume from")
    mismatch = resume_mismatch(last, run)
    if mismatch:
        raise DataError(path, f"cannot resume: it is another run ({mismatch}); start a new run without --resume "
                              "or use another -o")
    run.model.load_state_dict(last.model.state_dict())
    ts = last.training_state
    optimizer.load_state_dict(ts["optimizer"])
    scheduler.load_state_dict(ts["scheduler"])
    return LoopState(int(ts["epoch"]), float(ts["best_val"]), int(ts["bad_epochs"]), json.loads(ts["history_json"]))


@dataclass
class CurveDrawer:
    """The learning curve at `path`, redrawn after an epoch only once CURVE_EVERY_S have passed since the last
    drawing (matplotlib takes a quarter of a second, a tenth of a short epoch), and whenever asked at the end."""

    path: Path
    clock: Callable[[], float] = time.monotonic
    drawn_at: float = -math.inf
    drawn_epochs: int = 0

    def draw(self, history: list[dict], due_only: bool) -> None:
        if len(history) == self.drawn_epochs or (due_only and self.clock() - self.drawn_at < CURVE_EVERY_S):
            return
        plot_learning_curve(history, self.path)
        self.drawn_at, self.drawn_epochs = self.clock(), len(history)


def plot_learning_curve(history: list[dict], path: Path) -> None:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    from matplotlib.ticker import MaxNLocator

    best = min(history, key=lambda h: h["val_loss"])["epoch"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax1.set(xlabel="epoch", ylabel="MSE", title="loss", yscale="log")
    for trait in TRAITS:
        ax2.plot(epochs, [h["val_r2"][trait] if h["val_r2"][trait] is not None else np.nan for h in history],
                 label=trait, alpha=0.7)
    ax2.plot(epochs, [h["val_r2_mean"] for h in history], label="mean", color="black", linewidth=2)
    ax2.set(xlabel="epoch", ylabel="R$^2$", title="validation R$^2$", ylim=(-0.5, 1))
    for ax in (ax1, ax2):
        ax.axvline(best, color="tab:green", linestyle=":", label=f"best epoch ({best})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.legend()
    ax2.legend(fontsize=8)
    save_figure(fig, [path], dpi=110)


def signed(value: float) -> str:
    """+0.123, or n/a where the value is undefined (R² of constant labels)."""
    return f"{value:+.3f}" if np.isfinite(value) else "n/a"


def epoch_line(record: dict, epochs: int) -> str:
    r2 = " ".join(f"{TRAIT_LETTERS[t]} {signed(record['val_r2'][t])}" for t in TRAITS)
    return (f"epoch {record['epoch']:>3}/{epochs}  train {record['train_loss']:.5f}  val {record['val_loss']:.5f}  "
            f"val R2 {r2} (mean {signed(record['val_r2_mean'])})  {record['seconds']:.1f} s  "
            f"{record['clips_per_s']:.0f} clips/s{'  *' if record['best'] else ''}")


def held_out_report(model: torch.nn.Module, clips: Sequence[Clip], scaler: Scaler, device: torch.device,
                    title: str) -> tuple[float, pd.DataFrame, str]:
    """Loss, metric table and a printable block for a held-out split."""
    loss, table = evaluate(model, clips, scaler, INFERENCE_BATCH, device)
    text = f"{title}: MSE {loss:.5f} on {len(clips)} clips\n" + table[["mse", "mae", "r2", "pearson", "ccc"]].to_string(
        float_format=lambda v: f"{v:.4f}")
    return loss, table, text
