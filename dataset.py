"""Clips as model inputs: normalisation, padded batches, length-bucketed batch order, and the group split."""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import torch

from errors import DataError
from openface import (GAZE_COLUMNS, HEAD_COLUMNS, TRAITS, Clip, ReadOptions, ReadSummary, attach_labels, read_clips,
                      read_labels)
from tables import read_columns, read_header, write_text_atomic

INFERENCE_BATCH = 64  # clips per forward pass when nothing is trained (deploy's --batch-size default)
SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
MINMAX_COLUMNS: tuple[str, ...] = GAZE_COLUMNS + HEAD_COLUMNS  # the columns the paper min-max scales
PAD_MULTIPLE = 32
SCALE_FLOOR = 1e-6  # the smallest standardisation scale: a feature constant over the training frames stays finite


# ----------------------------------------------------------------------------------------------------------
# Normalisation


@dataclass
class Scaler:
    """Per-feature affine scaling x -> (x - offset) / scale, as applied to a batch."""

    offset: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)

    @classmethod
    def identity(cls, n_features: int) -> "Scaler":
        return cls(np.zeros(n_features, np.float32), np.ones(n_features, np.float32))

    def transform(self, frames: np.ndarray) -> np.ndarray:
        return (frames - self.offset) / self.scale


def standard_statistics(clips: Sequence[Clip]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (floored at SCALE_FLOOR) over every frame of the clips."""
    total = sum(c.n_frames for c in clips)
    if total == 0:
        raise DataError(None, "cannot fit normalisation: the training split has no frames")
    mean = sum(c.frames.sum(axis=0, dtype=np.float64) for c in clips) / total
    sq = sum(((c.frames - mean) ** 2).sum(axis=0, dtype=np.float64) for c in clips)
    return mean, np.maximum(np.sqrt(sq / total), SCALE_FLOOR)


def minmax_statistics(clips: Iterable[Clip], features: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The paper's preprocessing: the gaze/pose columns' minimum and span over every frame of the clips; AU
    columns stay as they are (offset 0, scale 1), as does a column that is constant."""
    low = np.full(len(features), np.inf)
    high = np.full(len(features), -np.inf)
    for clip in clips:
        if clip.n_frames:
            low = np.minimum(low, clip.frames.min(axis=0))
            high = np.maximum(high, clip.frames.max(axis=0))
    scaled = np.array([f in MINMAX_COLUMNS for f in features]) & np.isfinite(low) & (high > low)
    return np.where(scaled, low, 0.0), np.where(scaled, high - low, 1.0)


def clip_statistics(clips: Sequence[Clip]) -> np.ndarray:
    """(N, 2F): per-clip mean and std of every feature."""
    return np.stack([np.r_[c.frames.mean(axis=0), c.frames.std(axis=0)] for c in clips])


@dataclass(frozen=True)
class TrainingRange:
    """The lowest and highest per-clip statistic (clip_statistics: mean and std of every feature, 2F) over the
    clips a checkpoint was trained on, so that deploy can tell a clip unlike all of them."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def of(cls, clips: Sequence[Clip]) -> "TrainingRange":
        stats = clip_statistics(clips)  # (N, 2F)
        return cls(tuple(map(float, stats.min(axis=0))), tuple(map(float, stats.max(axis=0))))

    def outside_share(self, clips: Sequence[Clip]) -> np.ndarray:
        """(N,) the share of each clip's statistics beyond the training range."""
        stats = clip_statistics(clips)  # (N, 2F)
        beyond = (stats < np.asarray(self.low)) | (stats > np.asarray(self.high))
        return beyond.mean(axis=1)


@dataclass(frozen=True)
class Normalization:
    """How a checkpoint's inputs are scaled, x -> (x - offset) / scale per feature. Kinds:

    standard  mean and std of the training frames (our networks);
    minmax    the paper's gaze/pose min-max with statistics fixed when the checkpoint was trained or retrained;
    paper     the paper's gaze/pose min-max over the data being scored, as the original test and deploy scripts
              do (the published raw weights, which carry no statistics);
    none      inputs as read."""

    kind: str
    offset: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()

    KINDS = ("standard", "minmax", "paper", "none")

    @classmethod
    def fit(cls, kind: str, clips: Sequence[Clip], features: Sequence[str]) -> "Normalization":
        """Statistics of `kind` from training clips; 'paper' becomes 'minmax' fixed on these clips."""
        if kind == "standard":
            offset, scale = standard_statistics(clips)
        elif kind in ("minmax", "paper"):
            kind, (offset, scale) = "minmax", minmax_statistics(clips, features)
        else:
            return cls("none")
        return cls(kind, tuple(float(v) for v in offset), tuple(float(v) for v in scale))

    def scaler(self, features: Sequence[str], clips: Iterable[Clip]) -> Scaler:
        """The transform for these clips; only kind 'paper' looks at (and consumes) `clips`."""
        if self.kind == "paper":
            offset, scale = minmax_statistics(clips, features)
            return Scaler(offset.astype(np.float32), scale.astype(np.float32))
        if self.kind == "none":
            return Scaler.identity(len(features))
        return Scaler(np.asarray(self.offset, np.float32), np.asarray(self.scale, np.float32))

    def fixed_on(self, clips: Sequence[Clip], features: Sequence[str]) -> "Normalization":
        """This normalisation with statistics that no longer depend on the data scored: 'paper' is fitted on
        `clips` (a training split), the other kinds are already fixed."""
        return Normalization.fit("paper", clips, features) if self.kind == "paper" else self


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
def predict(model: torch.nn.Module, clips: Sequence[Clip], scaler: Scaler, batch_size: int = INFERENCE_BATCH,
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
    n_test = max(1, int(round(fractions[2] * len(unique)))) if fractions[2] > 0 else 0
    names = np.array(["train"] * len(unique), dtype=object)
    names[order[:n_test]] = "test"
    names[order[n_test: n_test + n_val]] = "val"
    return dict(zip(unique, names.tolist()))


def split_to_csv(assignment: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["group", "split"])
    writer.writerows((group, assignment[group]) for group in sorted(assignment))
    return out.getvalue()


def save_split(path: Path, assignment: dict[str, str]) -> str:
    """Write the split file atomically; return its content hash."""
    text = split_to_csv(assignment)
    write_text_atomic(path, text)
    return sha256_text(text)


def load_split(path: Path) -> tuple[dict[str, str], str]:
    """A split file as group -> split, and its content hash."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such split file")
    if read_header(path) != ["group", "split"]:
        raise DataError(path, "not a split file (expected the columns group,split)")
    table = read_columns(path, ["group", "split"], {"group": pa.string(), "split": pa.string()})
    if table.num_rows == 0:
        raise DataError(path, "an empty split file (no groups); delete it to make a new split")
    groups, names = table.column("group").to_pylist(), table.column("split").to_pylist()
    for line, name in enumerate(names, start=2):
        if name not in SPLITS:
            raise DataError(path, f"line {line}: unknown split {name!r} (expected one of {', '.join(SPLITS)})")
    assignment = dict(zip(groups, names))
    if len(assignment) != len(groups):
        raise DataError(path, "names a group twice")
    return assignment, sha256_text(path.read_text(encoding="utf-8", errors="replace"))


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


@dataclass(frozen=True)
class SplitRecord:
    """A group split as a checkpoint records it: the file it was read from or written to, its SHA-256, and the
    assignment itself. The path is provenance only: nothing is ever read from or written to it on the
    checkpoint's say-so."""

    path: str
    sha256: str
    assignment: dict[str, str]


def prepare_split(clips: Sequence[Clip], split_path: Path, seed: int) -> tuple[SplitRecord, bool]:
    """Load the split file, or create it from the clips' groups; returns the split and whether it was created."""
    if split_path.exists():
        assignment, digest = load_split(split_path)
        return SplitRecord(str(split_path), digest, assignment), False
    assignment = assign_splits([c.group for c in clips], seed)
    return SplitRecord(str(split_path), save_split(split_path, assignment), assignment), True


@dataclass
class HeldOut:
    train: list[Clip]
    test: list[Clip]
    source: str  # where the split came from, for the report


def held_out_clips(clips: list[Clip], recorded: SplitRecord | None, split_path: Path | None, whole: bool,
                   data: str | Path) -> HeldOut:
    """The test clips (and training clips, for baselines): every clip with `whole`; else the test split of
    `split_path`, else of the split recorded in a checkpoint, else of the split file beside the data."""
    if whole:
        return HeldOut([], clips, f"all {len(clips)} clips of the data (--whole)")
    if split_path is None and recorded is None and default_split_path(data).exists():
        split_path = default_split_path(data)
    if split_path is not None:
        assignment, digest = load_split(split_path)
        source = f"split file {split_path} (sha256 {digest[:12]})"
    elif recorded is not None:
        assignment, source = recorded.assignment, f"the split recorded in the checkpoint ({recorded.path})"
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


def labels_of(clips: Sequence[Clip]) -> np.ndarray:
    return np.stack([c.label for c in clips])  # (N, 5)


# ----------------------------------------------------------------------------------------------------------
# Labelled clips and their split


def load_labelled_clips(data: Sequence[str], labels: Sequence[str] | None, features: Sequence[str],
                        reading: ReadOptions) -> tuple[list[Clip], ReadSummary]:
    """Usable clips with labels (label files override a table's trait columns); unlabelled clips are an error.

    Clips are ordered by their key (file name), so both input layouts of one corpus train identically."""
    clips, summary = read_clips(data, features, reading)
    clips.sort(key=lambda c: c.key)
    table = read_labels(labels) if labels else None
    attach_labels(clips, table, ", ".join(labels) if labels else ", ".join(map(str, data)))
    return clips, summary


@dataclass
class SplitData:
    parts: dict[str, list[Clip]]
    record: SplitRecord
    created: bool

    def describe(self) -> str:
        counts = ", ".join(f"{name} {len(self.parts[name])}" for name in SPLITS)
        verb = "created" if self.created else "using"
        return f"{verb} split {self.record.path} (sha256 {self.record.sha256[:12]}): {counts} clips"


def split_from_record(clips: Sequence[Clip], record: SplitRecord, source: str | Path) -> SplitData:
    parts = split_clips(clips, record.assignment, source)
    for name in ("train", "val"):
        if not parts[name]:
            raise DataError(source, f"the {name} split is empty; use more source videos or a new split")
    return SplitData(parts, record, False)


def split_data(clips: Sequence[Clip], split_path: Path, seed: int) -> SplitData:
    """The split file's split of the clips, the file written first when it does not exist."""
    record, created = prepare_split(clips, split_path, seed)
    data = split_from_record(clips, record, split_path)
    data.created = created
    return data
