"""Label OpenFace outputs with Big Five scores: one row per clip, and optionally every frame row with traits.

    python attn_deploy.py data/synthetic/openface --weights weights/hybrid.pt -o clips.csv
    python attn_deploy.py frames.csv --weights weights/3iternorm_180.pt -o clips.csv --frames-output output_pers.csv
    torchrun --nproc_per_node=2 attn_deploy.py big_folder/ --weights weights/hybrid.pt -o clips.csv

INPUT: raw OpenFace CSVs or folders of them (recursive), or combined frame tables. Every clip gets a row with
a status: ok, too_short, no_face or 'unreadable: <reason>' (traits empty unless ok). The paper's raw
checkpoints use the paper's deploy preprocessing (min-max scaling of the gaze/pose columns over the whole
input); our checkpoints use the normalisation stored in them.

Work is written in chunks to OUTPUT.parts/ and merged into OUTPUT at the end, so a crash never leaves a
half-written OUTPUT; --resume continues an interrupted run. Under torchrun each rank labels a contiguous share
of the clips and rank 0 merges the shards. Output is CSV, or Parquet when a name ends in .parquet (pyarrow).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm import tqdm

from cli import Distributed, add_device_arg, add_reading_args, distributed_session, reading_options, report_user_errors
from dataset import Scaler, predict
from model import Checkpoint, load_checkpoint
from openface import (FEATURE_COLUMNS, OPENFACE_META_COLUMNS, STATUS_OK, TRAITS, Clip, DataError, ReadSummary,
                      is_frame_table, iter_clips, openface_files, read_header, spaced_csv)

OPENFACE_FRAME_COLUMNS: tuple[str, ...] = ("File", "clip_id") + OPENFACE_META_COLUMNS + FEATURE_COLUMNS


@dataclass
class Share:
    """The slots (one per OpenFace file, one per clip of a table) that this process labels: [start, stop)."""

    start: int
    stop: int
    total: int


def count_slots(files: Sequence[Path]) -> int:
    """Clips in the inputs: one per OpenFace file, one per `ID` run in a combined table (reads only `ID`)."""
    total = 0
    for path in files:
        if is_frame_table(path):
            ids = pd.read_csv(path, usecols=["ID"], skipinitialspace=spaced_csv(path))["ID"].to_numpy()
            total += int(np.count_nonzero(ids[1:] != ids[:-1]) + 1) if len(ids) else 0
        else:
            total += 1
    return total


def share_of(total: int, rank: int, world_size: int) -> Share:
    return Share(total * rank // world_size, total * (rank + 1) // world_size, total)


def iter_share(files: Sequence[Path], features: Sequence[str], reading: dict, share: Share, keep_rows: bool,
               done: set[tuple[str, str]]) -> Iterator[tuple[int, Clip]]:
    """(slot, clip) for this process's slots that are not done yet; unreadable files become clips with a status."""
    slot = 0
    for path in files:
        if slot >= share.stop:
            return
        if not is_frame_table(path) and slot < share.start:
            slot += 1
            continue
        for clip in iter_clips([path], features, keep_rows=keep_rows, strict=False, **reading):
            if share.start <= slot < share.stop and (clip.file, clip.clip_id) not in done:
                yield slot, clip
            slot += 1
            if slot >= share.stop:
                return


def chunks(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def clip_rows(slots: Sequence[int], clips: Sequence[Clip], scores: np.ndarray) -> pd.DataFrame:
    """One row per clip; traits only for usable clips."""
    table = pd.DataFrame({"_slot": slots, "clip_id": [c.clip_id for c in clips], "File": [c.file for c in clips],
                          "n_frames": [c.n_frames for c in clips], "n_dropped": [c.n_dropped for c in clips],
                          "status": [c.status for c in clips]})
    for j, trait in enumerate(TRAITS):
        table[trait] = scores[:, j]
    return table


def frame_rows(clips: Sequence[Clip], scores: np.ndarray, openface_layout: bool) -> pd.DataFrame:
    """Every input frame row of the clips with the five trait columns added (empty where not labelled)."""
    parts = []
    for clip, score in zip(clips, scores):
        if clip.rows is None:
            continue
        rows = clip.rows.copy()
        if openface_layout:
            rows.insert(0, "File", clip.file)
            rows.insert(1, "clip_id", clip.clip_id)
            rows = rows.reindex(columns=list(OPENFACE_FRAME_COLUMNS))
        for j, trait in enumerate(TRAITS):
            rows[trait] = score[j]
        parts.append(rows)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def label_chunk(ckpt: Checkpoint, scaler: Scaler, items: list[tuple[int, Clip]], batch_size: int,
                device: torch.device) -> np.ndarray:
    """(N, 5) scores for the chunk; NaN for clips that are not usable."""
    scores = np.full((len(items), len(TRAITS)), np.nan, np.float32)
    usable = [i for i, (_, clip) in enumerate(items) if clip.status == STATUS_OK]
    if usable:
        scores[usable] = predict(ckpt.model, [items[i][1] for i in usable], scaler, batch_size, device)
    return scores


def done_clips(parts: Path) -> set[tuple[str, str]]:
    """(File, clip_id) of the clips in complete chunks; frame files of incomplete chunks are removed."""
    done = set()
    if not parts.is_dir():
        return done
    for clips_file in parts.glob("*.clips.csv"):
        table = pd.read_csv(clips_file, usecols=["File", "clip_id"], dtype=str, keep_default_na=False)
        done.update(zip(table["File"], table["clip_id"]))
    for frames_file in parts.glob("*.frames.csv"):
        if not frames_file.with_name(frames_file.name.replace(".frames.csv", ".clips.csv")).exists():
            frames_file.unlink()
    return done


def write_chunk(parts: Path, first_slot: int, clips: pd.DataFrame, frames: pd.DataFrame | None) -> None:
    """A chunk is complete once its .clips.csv exists (written last, by rename)."""
    name = f"{first_slot:012d}"
    if frames is not None:
        frames.to_csv(parts / f"{name}.frames.csv", index=False, lineterminator="\n")
    tmp = parts / f".{name}.clips.tmp"
    clips.to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(parts / f"{name}.clips.csv")


def write_table_atomic(source_files: Sequence[Path], out: Path, sort_by: str | None = None) -> int:
    """Concatenate chunk CSVs (same columns) into `out` as CSV or Parquet, atomically; returns the rows.

    With `sort_by` the (small) tables are read, sorted on that column and written without it; otherwise CSV
    chunks are copied as text, so values are written exactly as the chunks hold them.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    text_dtypes = {"clip_id": str, "File": str, "status": str}
    if sort_by is not None:
        table = pd.concat([pd.read_csv(f, dtype=text_dtypes) for f in source_files], ignore_index=True)
        sources: Iterator[pd.DataFrame] = iter([table.sort_values(sort_by, kind="stable").drop(columns=sort_by)])
    elif out.suffix.lower() == ".parquet":
        sources = (part for f in source_files for part in pd.read_csv(f, low_memory=False, chunksize=200_000))
    else:
        return _concatenate_csv(source_files, out, tmp)
    rows = 0
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(out, "writing Parquet needs pyarrow (pip install pyarrow), or use a .csv name") from None
        writer = None
        for part in sources:
            batch = pa.Table.from_pandas(part, preserve_index=False)
            writer = writer or pq.ParquetWriter(tmp, batch.schema)
            writer.write_table(batch.cast(writer.schema))
            rows += len(part)
        if writer is not None:
            writer.close()
    else:
        with open(tmp, "w", newline="") as handle:
            for k, part in enumerate(sources):
                part.to_csv(handle, index=False, header=k == 0, lineterminator="\n")
                rows += len(part)
    tmp.replace(out)
    return rows


def _concatenate_csv(source_files: Sequence[Path], out: Path, tmp: Path) -> int:
    rows = 0
    with open(tmp, "w", newline="") as target:
        for k, path in enumerate(source_files):
            with open(path, newline="") as source:
                header = source.readline()
                if k == 0:
                    target.write(header)
                for line in source:
                    target.write(line)
                    rows += 1
    tmp.replace(out)
    return rows


def check_frames_layout(files: Sequence[Path]) -> bool:
    """True when the inputs are raw OpenFace files; tables must share one header; no mixing of layouts."""
    tables = [f for f in files if is_frame_table(f)]
    if tables and len(tables) != len(files):
        raise DataError(tables[0], "--frames-output needs inputs of one layout (all combined tables or all OpenFace CSVs)")
    if tables and any(read_header(t) != read_header(tables[0]) for t in tables[1:]):
        raise DataError(tables[0], "--frames-output needs combined tables with identical columns")
    return not tables


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="OpenFace CSV files or folders, or combined frame tables")
    parser.add_argument("--weights", type=Path, required=True, help="our checkpoint, or the paper's au_180.pt / 3iternorm_180.pt")
    parser.add_argument("-o", "--output", type=Path, required=True, help="per-clip table (.csv or .parquet)")
    parser.add_argument("--frames-output", type=Path, default=None,
                        help="also write every input frame row with the trait columns (the paper's output_pers.csv)")
    parser.add_argument("--chunk-size", type=int, default=256, help="clips read, labelled and written per step")
    parser.add_argument("--batch-size", type=int, default=64, help="clips per forward pass")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT.parts/")
    parser.add_argument("--limit", type=int, default=None,
                        help="label at most this many new clips per process, then stop (resume later with --resume)")
    add_device_arg(parser)
    add_reading_args(parser, labels=False)
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with distributed_session(args.device) as (device, world):
        return run(args, device, world)


def run(args: argparse.Namespace, device: torch.device, world: Distributed) -> int:
    ckpt = load_checkpoint(args.weights, device)
    features, reading = ckpt.features, reading_options(args)
    files = openface_files(args.inputs)
    if not files:
        raise DataError(", ".join(args.inputs), "no CSV files found")
    openface_layout = check_frames_layout(files) if args.frames_output else False
    if ckpt.is_paper_release:
        scaler = Scaler.paper_minmax(iter_clips(files, features, strict=False, **reading), features)
    else:
        scaler = Scaler.from_dict(ckpt.meta["normalization"], len(features))
    parts = args.output.with_name(args.output.name + ".parts")
    if world.is_main:
        if parts.exists() and not args.resume:
            shutil.rmtree(parts)
        parts.mkdir(parents=True, exist_ok=True)
    if world.world_size > 1:
        dist.barrier()
    done = done_clips(parts) if args.resume else set()
    share = share_of(count_slots(files), world.rank, world.world_size)
    items = iter_share(files, features, reading, share, args.frames_output is not None, done)
    if args.limit is not None:
        items = (item for _, item in zip(range(args.limit), items))
    summary = ReadSummary(files=len(files))
    started = time.perf_counter()
    bar = tqdm(total=share.stop - share.start, unit="clip", desc=f"labelling (rank {world.rank})" if world.world_size > 1
               else "labelling", disable=not sys.stderr.isatty(), initial=0)
    with torch.inference_mode():
        for chunk in chunks(items, args.chunk_size):
            scores = label_chunk(ckpt, scaler, chunk, args.batch_size, device)
            clips = [clip for _, clip in chunk]
            frames = frame_rows(clips, scores, openface_layout) if args.frames_output else None
            write_chunk(parts, chunk[0][0], clip_rows([s for s, _ in chunk], clips, scores), frames)
            for clip in clips:
                summary.add(clip)
            bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - started
    if world.world_size > 1:
        dist.barrier()
    if not world.is_main:
        return 0
    remaining = share.total - len(done_clips(parts))
    if args.limit is not None and remaining > 0:
        print(f"stopped after --limit {args.limit}: {remaining} clip(s) left; continue with --resume")
        return 0
    n_clips = write_table_atomic(sorted(parts.glob("*.clips.csv")), args.output, sort_by="_slot")
    if args.frames_output:
        n_frames = write_table_atomic(sorted(parts.glob("*.frames.csv")), args.frames_output)
        print(f"wrote {args.frames_output}: {n_frames} frame rows")
    shutil.rmtree(parts)
    statuses = pd.read_parquet(args.output) if args.output.suffix == ".parquet" else pd.read_csv(args.output)
    counts = statuses["status"].str.split(":").str[0].value_counts()
    print(summary.render() if world.world_size == 1 else f"labelled {share.total} clips on {world.world_size} processes")
    print(f"wrote {args.output}: {n_clips} clips (" + ", ".join(f"{k} {v}" for k, v in counts.items()) +
          f"); {summary.clips.total() / max(seconds, 1e-9):.0f} clips/s on rank 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
