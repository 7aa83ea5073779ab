"""The paper's three clip augmentations, in time linear in the number of frames.

For every clip it adds (1) every 2nd frame, (2) the clip shifted 5 frames later with the first value filling
the gap, (3) non-overlapping 100-frame windows (a shorter remainder is not used). New clips keep their
source's labels and source video, get a new ID, and record `source_id` and `augmentation`.

    python data_augmentation.py data/synthetic/frames.csv -o data/synthetic/frames_aug.csv
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cli import report_user_errors
from openface import Clip, DataError, coerce_numeric

AUGMENTATIONS: tuple[str, ...] = ("downsample", "shift", "window")
DOWNSAMPLE_STEP = 2
SHIFT_FRAMES = 5
WINDOW_FRAMES = 100


def augmented_rows(length: int, kind: str) -> list[np.ndarray]:
    """Row positions, within a source clip of `length` frames, of each clip the augmentation makes from it."""
    if kind == "downsample":
        return [np.arange(0, length, DOWNSAMPLE_STEP)]
    if kind == "shift":
        return [np.maximum(np.arange(length) - SHIFT_FRAMES, 0)]
    if kind == "window":
        return [np.arange(k * WINDOW_FRAMES, (k + 1) * WINDOW_FRAMES) for k in range(length // WINDOW_FRAMES)]
    raise ValueError(f"unknown augmentation {kind!r}; choose from {', '.join(AUGMENTATIONS)}")


def augment_clips(clips: Sequence[Clip], kinds: Sequence[str] = AUGMENTATIONS) -> list[Clip]:
    """The clips followed by their augmented copies (same label and group, ids '<id>~<kind><k>')."""
    out = list(clips)
    for clip in clips:
        for kind in kinds:
            for k, rows in enumerate(augmented_rows(clip.n_frames, kind)):
                out.append(replace(clip, clip_id=f"{clip.clip_id}~{kind}{k}", frames=clip.frames[rows],
                                   augmentation=kind, source_id=clip.clip_id, rows=None))
    return out


def clip_starts(ids: np.ndarray, path: str | Path) -> np.ndarray:
    """Start row of each clip of a frame table; the rows of one ID must be contiguous."""
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    if len(np.unique(ids[starts])) != len(starts):
        seen, repeated = set(), None
        for start in starts:
            if ids[start] in seen:
                repeated = start
                break
            seen.add(ids[start])
        raise DataError(path, f"line {repeated + 2}: rows of clip ID {ids[repeated]} are not contiguous; "
                              "sort the table by ID")
    return starts


def augment_table(table: pd.DataFrame, kinds: Sequence[str] = AUGMENTATIONS,
                  path: str | Path = "<table>") -> tuple[pd.DataFrame, Counter]:
    """A combined frame table with its augmented clips appended, and the number of new clips per kind."""
    if "ID" not in table:
        raise DataError(path, "no ID column: augmentation needs the paper's combined frame table")
    if "augmentation" in table:
        raise DataError(path, "already has an augmentation column; augment the original table instead")
    coerce_numeric(path, table, ["ID"], np.arange(len(table)) + 2)
    ids = table["ID"].to_numpy()
    starts = clip_starts(ids, path)
    lengths = np.diff(np.r_[starts, len(ids)])
    pieces, new_kind, new_source = [np.arange(len(table))], [], []
    counts: Counter = Counter()
    for start, length, source in zip(starts, lengths, ids[starts]):
        for kind in kinds:
            for rows in augmented_rows(int(length), kind):
                pieces.append(start + rows)
                new_kind.append(kind)
                new_source.append(source)
                counts[kind] += 1
    piece_len = np.array([len(p) for p in pieces[1:]], dtype=np.int64)
    out = table.take(np.concatenate(pieces)).reset_index(drop=True)
    first_new = int(np.max(ids)) + 1 if len(ids) else 1
    new_ids = np.repeat(np.arange(first_new, first_new + len(piece_len)), piece_len)
    out["source_id"] = np.r_[ids, np.repeat(np.asarray(new_source), piece_len)]
    out["augmentation"] = np.r_[np.full(len(ids), "original", dtype=object),
                                np.repeat(np.asarray(new_kind, dtype=object), piece_len)]
    out.loc[len(ids):, "ID"] = new_ids
    return out, counts


def write_csv_atomic(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table.to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, path)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="combined frame table (CSV with ID, File, features, traits)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="augmented table to write (CSV)")
    parser.add_argument("--augmentations", nargs="+", choices=AUGMENTATIONS, default=list(AUGMENTATIONS),
                        help="which augmentations to add (default: all three; none of them is random)")
    args = parser.parse_args(argv)
    if args.output.resolve() == args.input.resolve():
        raise DataError(args.output, "refusing to overwrite the input; choose another --output")
    if not args.input.is_file():
        raise DataError(args.input, "no such file")
    started = time.perf_counter()
    try:
        table = pd.read_csv(args.input, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError(args.input, "empty file") from None
    if table.empty:
        raise DataError(args.input, "no frames")
    out, counts = augment_table(table, args.augmentations, args.input)
    write_csv_atomic(out, args.output)
    n_in = table["ID"].nunique()
    print(f"{n_in} clips ({len(table)} frames) -> {n_in + sum(counts.values())} clips ({len(out)} frames) "
          f"in {time.perf_counter() - started:.1f} s: " + ", ".join(f"+{counts[k]} {k}" for k in args.augmentations))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
