"""Clips as model inputs: normalisation, padded batches, length-bucketed batch order, and the group split."""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from openface import GAZE_COLUMNS, HEAD_COLUMNS, TRAITS, Clip, DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
PAPER_MINMAX_COLUMNS: tuple[str, ...] = GAZE_COLUMNS + HEAD_COLUMNS
PAD_MULTIPLE = 32


# ----------------------------------------------------------------------------------------------------------
# Normalisation


@dataclass
class Scaler:
    """Per-feature affine scaling x -> (x - offset) / scale: standardisation fitted on training frames, the
    paper's deploy min-max, or none."""

    offset: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)

    @classmethod
    def fit(cls, clips: Sequence[Clip]) -> "Scaler":
        """Mean and std over every frame of the given (training) clips."""
        total = sum(c.n_frames for c in clips)
        if total == 0:
            raise DataError(None, "cannot fit normalisation: the training split has no frames")
        sums = sum(c.frames.sum(axis=0, dtype=np.float64) for c in clips)
        mean = sums / total
        sq = sum(((c.frames - mean) ** 2).sum(axis=0, dtype=np.float64) for c in clips)
        std = np.sqrt(sq / total)
        return cls(mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))

    @classmethod
    def identity(cls, n_features: int) -> "Scaler":
        return cls(np.zeros(n_features, np.float32), np.ones(n_features, np.float32))

    @classmethod
    def paper_minmax(cls, clips: Iterable[Clip], features: Sequence[str]) -> "Scaler":
        """The original deploy preprocessing: min-max scaling of the gaze/pose columns over every frame of the
        input being labelled; AU columns stay as they are."""
        low = np.full(len(features), np.inf)
        high = np.full(len(features), -np.inf)
        for clip in clips:
            if clip.n_frames:
                low = np.minimum(low, clip.frames.min(axis=0))
                high = np.maximum(high, clip.frames.max(axis=0))
        scaled = np.array([f in PAPER_MINMAX_COLUMNS and np.isfinite(low[j]) for j, f in enumerate(features)])
        span = np.where(scaled & (high > low), high - low, 1.0)
        return cls(np.where(scaled, low, 0.0).astype(np.float32), span.astype(np.float32))

    def transform(self, frames: np.ndarray) -> np.ndarray:
        return (frames - self.offset) / self.scale

    def to_dict(self) -> dict:
        return {"kind": "standard", "mean": self.offset.tolist(), "std": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict, n_features: int) -> "Scaler":
        if data.get("kind") == "standard":
            return cls(np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32))
        return cls.identity(n_features)


# ----------------------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    x: torch.Tensor  # (B, T, F) float32, zero beyond each clip's length
    lengths: torch.Tensor  # (B,) int64
    y: torch.Tensor | None  # (B, 5) float32
    index: list[int]  # positions of the clips in the source list


def collate(clips: Sequence[Clip], index: Sequence[int], scaler: Scaler) -> Batch:
    """Pad the clips at `index` to the longest of them, rounded up to PAD_MULTIPLE frames; labels when every
    clip has one. The rounding bounds the number of distinct batch shapes, and with it the memory that
    oneDNN's per-shape primitive cache holds (outputs do not depend on the padding)."""
    chosen = [clips[i] for i in index]
    lengths = np.array([c.n_frames for c in chosen])
    steps = -(-int(lengths.max()) // PAD_MULTIPLE) * PAD_MULTIPLE
    x = np.zeros((len(chosen), steps, chosen[0].frames.shape[1]), np.float32)  # (B, T, F)
    for row, clip in enumerate(chosen):
        x[row, : clip.n_frames] = scaler.transform(clip.frames)
    labelled = all(c.label is not None for c in chosen)
    y = torch.from_numpy(np.stack([c.label for c in chosen])) if labelled else None
    return Batch(torch.from_numpy(x), torch.from_numpy(lengths), y, list(index))


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                     rank: int = 0, world_size: int = 1, pool: int = 50) -> list[list[int]]:
    """Batches of clip positions with similar lengths, in an order fixed by (seed, epoch).

    Clips are shuffled, cut into pools of `pool` batches, sorted by length within a pool and chunked; the
    batches are shuffled again. With `world_size` > 1 each rank takes every world_size-th batch of the same
    list (the list is trimmed so every rank runs the same number of steps).
    """
    order = np.arange(len(lengths))
    lengths = np.asarray(lengths)
    rng = np.random.default_rng([seed, epoch])
    if shuffle:
        order = rng.permutation(order)
    batches = []
    size = batch_size * pool
    for start in range(0, len(order), size):
        chunk = order[start: start + size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i: i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    if world_size > 1:
        per_rank = len(batches) // world_size
        if per_rank == 0:
            raise DataError(None, f"{len(batches)} batch(es) cannot be shared by {world_size} processes; "
                                  "use a smaller --batch-size")
        batches = batches[rank: per_rank * world_size: world_size]
    return batches


@torch.inference_mode()
def predict(model: torch.nn.Module, clips: Sequence[Clip], scaler: Scaler, batch_size: int = 64,
            device: torch.device | str = "cpu") -> np.ndarray:
    """Model outputs (N, 5) for the clips, in their order; batches of similar length, eval mode."""
    model.eval()
    out = np.zeros((len(clips), len(TRAITS)), np.float32)
    for index in bucketed_batches([c.n_frames for c in clips], batch_size, seed=0, epoch=0, shuffle=False):
        batch = collate(clips, index, scaler)
        out[index] = model(batch.x.to(device), batch.lengths.to(device)).float().cpu().numpy()
    return out


# ----------------------------------------------------------------------------------------------------------
# Group split


def assign_splits(groups: Sequence[str], seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, str]:
    """Deterministic group -> split; depends only on the set of groups and the seed."""
    unique = sorted(set(groups))
    if len(unique) < 3:
        raise DataError(None, f"only {len(unique)} source video(s); a train/val/test split needs at least 3")
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = max(1, int(round(fractions[1] * len(unique))))
    n_test = max(1, int(round(fractions[2] * len(unique))))
    names = np.array(["train"] * len(unique), dtype=object)
    names[order[:n_test]] = "test"
    names[order[n_test: n_test + n_val]] = "val"
    return dict(zip(unique, names.tolist()))


def split_to_csv(assignment: dict[str, str]) -> str:
    table = pd.DataFrame({"group": list(assignment), "split": list(assignment.values())}).sort_values("group")
    return table.to_csv(index=False, lineterminator="\n")


def save_split(path: Path, assignment: dict[str, str]) -> str:
    """Write the split file atomically; return its content hash."""
    text = split_to_csv(assignment)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # torchrun ranks may write it at once
    tmp.write_text(text)
    tmp.replace(path)
    return sha256_text(text)


def load_split(path: Path) -> tuple[dict[str, str], str]:
    """A split file as group -> split, and its content hash."""
    text = Path(path).read_text()
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise DataError(path, f"not a split file: {err}") from None
    if list(table.columns) != ["group", "split"]:
        raise DataError(path, "not a split file (expected columns group,split)")
    bad = table[~table["split"].isin(SPLITS)]
    if len(bad):
        raise DataError(path, f"line {bad.index[0] + 2}: unknown split {bad['split'].iloc[0]!r}")
    return dict(zip(table["group"], table["split"])), sha256_text(text)


def default_split_path(data: str | Path) -> Path:
    """Where the split of a data set lives by default: beside it, '<name>.split.csv'."""
    path = Path(data)
    return path.parent / f"{path.stem if path.is_file() else path.name}.split.csv"


def split_clips(clips: Sequence[Clip], assignment: dict[str, str], source: str | Path) -> dict[str, list[Clip]]:
    """Clips per split by their group; groups the split file does not know are an error."""
    unknown = sorted({c.group for c in clips} - set(assignment))
    if unknown:
        raise DataError(source, f"{len(unknown)} source video(s) of the data are not in this split file "
                                f"(e.g. {', '.join(unknown[:3])}); pass --split NEW.csv to make a new split")
    out: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    for clip in clips:
        out[assignment[clip.group]].append(clip)
    return out


def prepare_split(clips: Sequence[Clip], split_path: Path, seed: int) -> tuple[dict[str, str], str, bool]:
    """Load the split file, or create it from the clips' groups; returns (assignment, hash, created)."""
    if split_path.exists():
        assignment, digest = load_split(split_path)
        return assignment, digest, False
    assignment = assign_splits([c.group for c in clips], seed)
    return assignment, save_split(split_path, assignment), True


@dataclass
class HeldOut:
    train: list[Clip]
    test: list[Clip]
    source: str  # where the split came from, for the report


def held_out_clips(clips: list[Clip], recorded: dict | None, split_path: Path | None, whole: bool,
                   data: str | Path) -> HeldOut:
    """The test clips (and training clips, for baselines): every clip with `whole`; else the test split of
    `split_path`, else of the split recorded in a checkpoint, else of the split file beside the data."""
    if whole:
        return HeldOut([], clips, f"all {len(clips)} clips of the data (--whole)")
    if split_path is not None:
        assignment, digest = load_split(split_path)
        source = f"split file {split_path} (sha256 {digest[:12]})"
    elif recorded is not None:
        assignment, source = recorded["assignment"], f"the split recorded in the checkpoint ({recorded['path']})"
    elif default_split_path(data).exists():
        assignment, digest = load_split(default_split_path(data))
        source = f"split file {default_split_path(data)} (sha256 {digest[:12]})"
    else:
        raise DataError(data, "no split to evaluate on: pass --split FILE, or --whole to use every clip")
    parts = split_clips(clips, assignment, split_path or data)
    if not parts["test"]:
        raise DataError(split_path or data, "the test split holds none of these clips")
    return HeldOut(parts["train"], parts["test"], source)


# ----------------------------------------------------------------------------------------------------------
# Fingerprints


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def data_fingerprint(clips: Sequence[Clip]) -> str:
    """Hash of clip ids, groups, frames and labels: equal data gives an equal fingerprint."""
    digest = hashlib.sha256()
    for clip in clips:
        digest.update(f"{clip.clip_id}|{clip.group}|{clip.frames.shape}".encode())
        digest.update(np.ascontiguousarray(clip.frames).tobytes())
        if clip.label is not None:
            digest.update(np.asarray(clip.label, np.float32).tobytes())
    return digest.hexdigest()

