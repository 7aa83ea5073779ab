"""The paper's three clip augmentations, in time linear in the number of frames.

For every clip it adds (1) every 2nd frame, (2) the clip shifted 5 frames later with the first value filling
the gap, (3) non-overlapping 100-frame windows (a shorter remainder is not used). New clips keep their
source's labels and source video, get a new ID, and record `source_id` and `augmentation`. None of the three
is random, so there is no seed. Input and output are CSV or Parquet (by the name).

    python data_augmentation.py data/synthetic/frames.csv -o data/synthetic/frames_augmented.csv
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from cli import Parser, check_outputs, output_lock, report_user_errors
from errors import DataError
from openface import Clip, checked_header, clip_runs, first_repeated_run
from tables import BLOCK_BYTES, first_line, is_parquet, write_table

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


def read_frame_table(path: Path) -> pa.Table:
    """A whole combined frame table, every column typed by Arrow (CSV on all cores, or Parquet)."""
    header = checked_header(path)
    if "ID" not in header:
        raise DataError(path, "no ID column: augmentation needs the paper's combined frame table")
    if "augmentation" in header:
        raise DataError(path, "already has an augmentation column; augment the original table instead")
    try:
        if is_parquet(path):
            return pq.read_table(path)
        options = pcsv.ReadOptions(column_names=header, skip_rows=1, block_size=BLOCK_BYTES)
        table = pcsv.read_csv(path, read_options=options,
                              convert_options=pcsv.ConvertOptions(column_types={"ID": pa.string()}))
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(path, f"cannot read the table: {first_line(err)}") from None
    return table.set_column(header.index("ID"), "ID", pc.utf8_trim_whitespace(table.column("ID")))


def new_ids(ids: pa.Array, count: int, sources: np.ndarray, kinds: list[str], ordinals: list[int]) -> pa.Array:
    """IDs for the new clips: the numbers after the largest ID when IDs are integers (the paper's tables),
    else '<source id>~<kind><k>' as for in-memory augmentation."""
    try:
        numbers = pc.cast(ids, pa.int64())
    except pa.ArrowInvalid:
        return pa.array([f"{ids[int(s)].as_py()}~{kind}{k}" for s, kind, k in zip(sources, kinds, ordinals)])
    first = (pc.max(numbers).as_py() or 0) + 1
    return pa.array(np.arange(first, first + count).astype(str))


def augment_table(table: pa.Table, kinds: Sequence[str] = AUGMENTATIONS,
                  path: str | Path = "<table>") -> tuple[pa.Table, Counter]:
    """A combined frame table with its augmented clips appended, and the number of new clips per kind."""
    if table.num_rows == 0:
        raise DataError(path, "no frames (header only)")
    ids = table.column("ID").combine_chunks()
    if ids.null_count:
        raise DataError(path, f"line {pc.index(pc.is_null(ids), True).as_py() + 2}: empty ID")
    starts, lengths = clip_runs(ids)
    run_ids = pc.take(ids, pa.array(starts)).to_pylist()
    repeated = first_repeated_run(run_ids, set())
    if repeated is not None:
        raise DataError(path, f"line {starts[repeated] + 2}: rows of clip ID {run_ids[repeated]} are not contiguous; "
                              "sort the table by ID")
    pieces, piece_kind, piece_source, piece_ordinal = [np.arange(table.num_rows)], [], [], []
    counts: Counter = Counter()
    for start, length in zip(starts, lengths):
        for kind in kinds:
            for k, rows in enumerate(augmented_rows(int(length), kind)):
                pieces.append(start + rows)
                piece_kind.append(kind)
                piece_source.append(start)
                piece_ordinal.append(k)
                counts[kind] += 1
    sizes = np.array([len(p) for p in pieces[1:]], dtype=np.int64)
    out = table.take(pa.array(np.concatenate(pieces)))
    source_rows = np.r_[np.arange(table.num_rows), np.repeat(np.asarray(piece_source, np.int64), sizes)]
    fresh = new_ids(ids, len(sizes), np.asarray(piece_source), piece_kind, piece_ordinal)
    out_ids = pa.concat_arrays([ids.cast(pa.string()), pc.take(fresh, pa.array(np.repeat(np.arange(len(sizes)), sizes)))])
    out = out.set_column(out.column_names.index("ID"), "ID", out_ids)
    kind_of_row = pa.DictionaryArray.from_arrays(
        pa.array(np.r_[np.zeros(table.num_rows, np.int32), np.repeat([AUGMENTATIONS.index(k) + 1 for k in piece_kind],
                                                                     sizes).astype(np.int32)]),
        pa.array(("original",) + AUGMENTATIONS))
    out = out.append_column("source_id", pc.take(ids, pa.array(source_rows)))
    return out.append_column("augmentation", kind_of_row.cast(pa.string())), counts


def build_parser() -> Parser:
    parser = Parser(__doc__)
    parser.add_argument("input", type=Path, help="combined frame table (CSV or Parquet with ID, File, features, traits)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="augmented table to write (.csv or .parquet)")
    parser.add_argument("--augmentations", nargs="+", choices=AUGMENTATIONS, default=list(AUGMENTATIONS),
                        help="which augmentations to add")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.input.is_file():
        raise DataError(args.input, "no such file")
    check_outputs([args.output], [args.input])
    with output_lock(args.output):
        started = time.perf_counter()
        table = read_frame_table(args.input)
        out, counts = augment_table(table, args.augmentations, args.input)
        write_table(out, args.output)
    n_in = len(clip_runs(table.column("ID"))[0])
    print(f"{n_in} clips ({table.num_rows} frames) -> {n_in + sum(counts.values())} clips ({out.num_rows} frames) "
          f"in {time.perf_counter() - started:.1f} s: " + ", ".join(f"+{counts[k]} {k}" for k in args.augmentations))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
