"""Label OpenFace outputs with Big Five scores: one row per clip, and optionally every frame row with traits.

    python attn_deploy.py data/synthetic/openface --weights weights/hybrid.pt -o clips.csv
    python attn_deploy.py frames.csv --weights weights/3iternorm_180.pt -o clips.csv --frames-output output_pers.csv
    torchrun --nproc_per_node=2 attn_deploy.py big_folder/ --weights weights/hybrid.pt -o clips.csv

INPUT: raw OpenFace CSVs or folders of them (recursive), or combined frame tables (CSV or Parquet), or videos
(then OpenFace runs first, as extract_features.py runs it, into OUTPUT.openface/, reused next time). Every clip
gets exactly one row with a status (ok, too_short, no_face, unreadable) and, when not ok, the reason; traits
are empty unless ok. File is the path relative to the input folder given (the name for a file given
directly). Inputs are scaled as the checkpoint says (checkpoint.input_scaler): our checkpoints with their stored
statistics, the paper's raw weights with the paper's min-max of gaze/pose over the usable clips labelled.

Work is written in chunks to OUTPUT.parts/ with a manifest (checkpoint SHA-256, inputs, options, code
version) and merged into OUTPUT only when every input clip has its row, so a crash never leaves a complete-
looking file; --resume continues only a run with the same manifest, and a fresh run refused on its inputs
removes its chunks again. The finished output gets the manifest as OUTPUT.json. One run at a time per output
(OUTPUT.lock). Under torchrun each rank labels a contiguous share of the clips and rank 0 merges. Output is CSV,
or Parquet when a name ends in .parquet.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from checkpoint import Checkpoint, code_version, input_scaler, load_checkpoint
from cli import Parser, add_device_option, add_options, check_outputs, options_from, output_lock, report_user_errors
from dataset import INFERENCE_BATCH, predict
from distributed import Distributed, distributed_session, under_torchrun
from errors import DataError
from extract_features import (ExtractOptions, Video, extract_videos, recorded_provenance, status_files, summary_line,
                              video_files)
from openface import (OPENFACE_OUTPUT_COLUMNS, PARTS_SUFFIX, TRAITS, VIDEO_CACHE_SUFFIX, Clip, InputFile, ReadOptions,
                      ReadSummary, Status, count_table_clips, input_files, iter_clips, read_header)
from tables import TableWriter, manifest_beside, ordered_map, remove_temporaries, temporary_sibling, write_text_atomic

OUTPUT_COLUMNS: tuple[str, ...] = (("clip_id", "File", "n_frames", "n_dropped", "status", "reason") + TRAITS
                                   + ("clamped", "out_of_range"))
FAR_OUTSIDE = 0.1  # share of a clip's statistics beyond the training range past which deploy warns
READ_AHEAD = 64  # OpenFace files parsed ahead of the model, in parallel
KEPT = "the chunks labelled so far are kept in OUTPUT.parts/; run the same command with --resume to continue"


# ----------------------------------------------------------------------------------------------------------
# The run manifest


@dataclass(frozen=True)
class Manifest:
    """What makes two deploy runs the same run: resuming continues only when every field matches."""

    checkpoint_sha256: str
    inputs: tuple[tuple[str, int, int], ...]  # (resolved path, size, mtime in ns) of every input file, in order
    options: dict  # every option that changes the numbers or the rows
    code_version: str

    @classmethod
    def of(cls, ckpt: Checkpoint, files: Sequence[InputFile], options: dict) -> "Manifest":
        """The checkpoint's hash is of the bytes the model was loaded from (the file may change later)."""
        stats = tuple((f.real, *_size_and_time(f.path)) for f in files)
        return cls(ckpt.sha256, stats, options, code_version())

    def record(self) -> dict:
        return {**asdict(self), "inputs": [list(i) for i in self.inputs]}

    def options_difference(self, theirs: dict) -> str | None:
        """The first option that differs from a recorded run's, in words; None when they match."""
        for key, value in self.record()["options"].items():
            if theirs.get(key) != value:
                return f"another {key} ({theirs.get(key)} then, {value} now)"
        return None

    def difference(self, other: dict) -> str | None:
        """What differs from a recorded manifest, in words; None when they match."""
        mine = self.record()
        if other.get("checkpoint_sha256") != mine["checkpoint_sha256"]:
            return "another checkpoint (its SHA-256 differs)"
        theirs = [tuple(i) for i in other.get("inputs", [])]
        if theirs != list(self.inputs):
            old, new = {i[0]: i for i in theirs}, {i[0]: i for i in self.inputs}
            added, removed = len(new.keys() - old.keys()), len(old.keys() - new.keys())
            changed = sum(1 for k in new.keys() & old.keys() if new[k] != old[k])
            return (f"other inputs ({added} file(s) added, {removed} removed, {changed} changed"
                    f"{', another order' if not (added or removed or changed) else ''})")
        options = self.options_difference(other.get("options", {}))
        if options:
            return options
        if other.get("code_version") != mine["code_version"]:
            return f"another code version ({other.get('code_version')} then, {mine['code_version']} now)"
        return None


def _size_and_time(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def published_manifest(manifest: Manifest, weights: Path, files: Sequence[InputFile], table: pa.Table,
                       openface: list[dict[str, str]]) -> dict:
    """The manifest written beside a finished output: which model, inputs, options and OpenFace made it, with
    inputs named as in the table (relative to the folder given), so it does not leak the machine it was made on."""
    statuses = table.column("status").to_pylist()
    return {"weights": weights.name, "checkpoint_sha256": manifest.checkpoint_sha256,
            "inputs": [[f.name, size] for f, (_, size, _) in zip(files, manifest.inputs)],
            "options": manifest.options, "openface": openface, "code_version": manifest.code_version,
            "clips": table.num_rows,
            "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def finished_output(path: Path) -> bool:
    """True for an output this script finished earlier (it has its manifest beside it), or one not written yet:
    found inside an input folder, such a file is never read as an input."""
    return not path.exists() or manifest_beside(path).exists()


def manifest_path(parts: Path) -> Path:
    return parts / "manifest.json"


def prepare_parts(parts: Path, manifest: Manifest, resume: bool) -> bool:
    """A fresh parts folder, or on --resume the one of the same run (refusing another run's, naming why); True
    when it made a fresh one."""
    if resume and parts.is_dir():
        if not manifest_path(parts).exists():
            raise DataError(parts, "has no manifest: it was not written by this version; delete it and start again")
        difference = manifest.difference(json.loads(manifest_path(parts).read_text()))
        if difference:
            raise DataError(parts, f"cannot resume: that run used {difference}; start without --resume (it is "
                                   "then discarded) or use another -o")
        for frames in parts.glob("*.frames.parquet"):
            if not clips_part(frames).exists():
                frames.unlink()  # an incomplete chunk
        for temporary in parts.glob(".*.tmp"):
            temporary.unlink()  # a chunk a killed run was writing
        return False
    if resume:
        print(f"nothing to resume in {parts}: labelling from the beginning", flush=True)
    if parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    write_text_atomic(manifest_path(parts), json.dumps(manifest.record(), indent=1) + "\n")
    return True


@contextlib.contextmanager
def parts_folder(parts: Path, manifest: Manifest, resume: bool, is_main: bool) -> Iterator[None]:
    """prepare_parts on rank 0 for the run inside; a folder it made fresh is removed again when the run is refused
    (DataError), as its chunks could never be resumed: the fix changes the inputs its manifest records."""
    fresh = is_main and prepare_parts(parts, manifest, resume)
    try:
        yield
    except DataError:
        if fresh:
            shutil.rmtree(parts, ignore_errors=True)
        raise


def clips_part(frames_part: Path) -> Path:
    return frames_part.with_name(frames_part.name.replace(".frames.parquet", ".clips.parquet"))


def done_slots(parts: Path) -> set[int]:
    """The slots of the chunks already complete (a chunk is complete once its .clips.parquet exists)."""
    done: set[int] = set()
    for path in parts.glob("*.clips.parquet"):
        done.update(pq.read_table(path, columns=["_slot"]).column("_slot").to_pylist())
    return done


# ----------------------------------------------------------------------------------------------------------
# Reading clips in slots


@dataclass
class Share:
    """The slots (one per OpenFace file, one per clip of a table) that this process labels: [start, stop)."""

    start: int
    stop: int
    total: int


def count_slots(files: Sequence[InputFile]) -> list[int]:
    """Slots per input file: one per OpenFace file (its clips, one per face), one per clip of a combined table
    (reads only its clip ids)."""
    return [count_table_clips(f.path) if f.is_table else 1 for f in files]


def share_of(total: int, rank: int, world_size: int) -> Share:
    return Share(total * rank // world_size, total * (rank + 1) // world_size, total)


def iter_share(files: Sequence[InputFile], slots: Sequence[int], features: Sequence[str], reading: ReadOptions,
               share: Share, keep_rows: bool, skip: set[int], workers: int) -> Iterator[tuple[int, list[Clip]]]:
    """(slot, its clips) for this process's slots not in `skip`: one clip per clip of a table, one per face of an
    OpenFace file (unreadable inputs become a clip with that status)."""
    first = np.r_[0, np.cumsum(slots)[:-1]]
    wanted = [(f, int(s)) for f, s, n in zip(files, first, slots) if s < share.stop and s + n > share.start]

    def read(entry: tuple[InputFile, int]) -> list[Clip] | None:
        item, slot = entry
        if item.is_table or slot in skip:
            return None  # a table is streamed below, not held in memory whole
        return list(iter_clips([item], features, reading, keep_rows=keep_rows, strict=False, labels=False))

    for (item, slot), clips in zip(wanted, ordered_map(read, wanted, workers, READ_AHEAD)):
        if not item.is_table:
            if clips is not None:
                yield slot, clips
            continue
        for k, clip in enumerate(iter_clips([item], features, reading, keep_rows=keep_rows, strict=False,
                                            labels=False)):
            if share.start <= slot + k < share.stop and slot + k not in skip:
                yield slot + k, [clip]


def batched(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ----------------------------------------------------------------------------------------------------------
# Labelling and writing chunks


def label_chunk(ckpt: Checkpoint, scaler, clips: Sequence[Clip], batch_size: int,
                device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(N, 5) scores for the chunk and (N,) the share of each clip's statistics outside the checkpoint's training
    range; NaN for clips that are not usable (and shares NaN where the checkpoint records no range)."""
    scores = np.full((len(clips), len(TRAITS)), np.nan, np.float32)
    outside = np.full(len(clips), np.nan)
    usable = [i for i, clip in enumerate(clips) if clip.status is Status.OK]
    if usable:
        chosen = [clips[i] for i in usable]
        scores[usable] = predict(ckpt.model, chosen, scaler, batch_size, device)
        if ckpt.training_range is not None:
            outside[usable] = ckpt.training_range.outside_share(chosen)
    return scores, outside


def trait_arrays(scores: np.ndarray) -> list[pa.Array]:
    return [pa.array(scores[:, j], pa.float32(), from_pandas=True) for j in range(len(TRAITS))]


def clamped_traits(scores: np.ndarray) -> list[str]:
    """Per clip, the traits whose score is exactly 0 or 1 (clipped to the range), comma-separated."""
    at_limit = (scores == 0) | (scores == 1)  # (N, 5); NaN is neither
    return [",".join(t for t, hit in zip(TRAITS, row) if hit) for row in at_limit]


def clip_rows(slots: Sequence[int], clips: Sequence[Clip], scores: np.ndarray, outside: np.ndarray) -> pa.Table:
    """One row per clip: ids, counts, status and reason, traits (empty unless ok), the traits at a limit, the share
    of the clip outside the training range; `slots` is each clip's slot."""
    columns = [pa.array([c.clip_id for c in clips], pa.string()), pa.array([c.file for c in clips], pa.string()),
               pa.array([c.n_frames for c in clips], pa.int64()), pa.array([c.n_dropped for c in clips], pa.int64()),
               pa.array([c.status.value for c in clips], pa.string()), pa.array([c.reason for c in clips], pa.string())]
    extra = [pa.array(clamped_traits(scores), pa.string()),
             pa.array(np.round(outside, 4), pa.float64(), from_pandas=True)]
    table = pa.table(columns + trait_arrays(scores) + extra, names=list(OUTPUT_COLUMNS))
    return table.append_column("_slot", pa.array(slots, pa.int64()))


def frame_rows(clips: Sequence[Clip], scores: np.ndarray, openface_layout: bool) -> pa.Table | None:
    """Every input frame row of the clips with the five trait columns added (empty where not labelled)."""
    parts = []
    for clip, score in zip(clips, scores):
        if clip.rows is None:
            continue
        rows = clip.rows
        if openface_layout:
            n = rows.num_rows
            columns = {"File": pa.array([clip.file] * n, pa.string()), "clip_id": pa.array([clip.clip_id] * n, pa.string())}
            for name in OPENFACE_OUTPUT_COLUMNS:
                columns[name] = rows.column(name) if name in rows.column_names else pa.nulls(n, pa.float64())
            rows = pa.table(columns)
        traits = trait_arrays(np.repeat(score[None], rows.num_rows, axis=0))
        for trait, values in zip(TRAITS, traits):
            rows = rows.append_column(trait, values)
        parts.append(rows)
    return pa.concat_tables(parts) if parts else None


def write_chunk(parts: Path, clips: pa.Table, frames: pa.Table | None) -> None:
    """A chunk is complete once its .clips.parquet exists, written last and atomically."""
    name = f"{clips.column('_slot')[0].as_py():012d}"
    if frames is not None:
        with TableWriter(parts / f"{name}.frames.parquet") as writer:
            writer.write(frames)
    with TableWriter(parts / f"{name}.clips.parquet") as writer:
        writer.write(clips)


def merge(parts: Path, total: int, output: Path, frames_output: Path | None) -> pa.Table:
    """Write the outputs from the chunks, only when the chunks hold every input slot exactly once (a slot is one
    clip of a table, or the clips of one OpenFace file, which a chunk never splits)."""
    chunks = [pq.read_table(p) for p in sorted(parts.glob("*.clips.parquet"))]
    clips = pa.concat_tables(chunks) if chunks else None
    slots = clips.column("_slot").to_numpy() if clips is not None else np.zeros(0, np.int64)
    distinct = np.unique(slots)
    split = sum(len(np.unique(chunk.column("_slot").to_numpy())) for chunk in chunks)  # (chunk, slot) pairs
    if len(distinct) != total or not np.array_equal(distinct, np.arange(total)) or split != total:
        raise DataError(parts, f"the chunks hold {len(slots)} rows for {len(distinct)} of {total} input slots "
                               f"({split - len(distinct)} written twice); nothing was written. Start again without "
                               "--resume")
    clips = clips.take(pa.array(np.argsort(slots, kind="stable"))).drop_columns(["_slot"])
    if frames_output is not None:
        with TableWriter(frames_output) as writer:
            for piece in sorted(parts.glob("*.frames.parquet")):
                for batch in pq.ParquetFile(piece).iter_batches():
                    writer.write(pa.Table.from_batches([batch]))
    with TableWriter(output) as writer:
        writer.write(clips)
    return clips


def publish(parts: Path, total: int, output: Path, frames_output: Path | None,
            manifest_of: Callable[[pa.Table], dict]) -> pa.Table:
    """Merge the chunks and publish the outputs with their manifests. Everything is written first under temporary
    names beside each output, then renamed into place (old manifests removed first, new ones last), so a full disk
    or a kill leaves the earlier outputs as they were, or an output without a manifest, which is unfinished."""
    outputs = [output] + ([frames_output] if frames_output is not None else [])
    staged = {out: temporary_sibling(out) for out in outputs}
    manifests = {out: temporary_sibling(manifest_beside(out)) for out in outputs}
    try:
        table = merge(parts, total, staged[output], staged.get(frames_output))
        record = json.dumps(manifest_of(table), indent=1) + "\n"
        for out in outputs:
            manifests[out].write_text(record)
        for out in outputs:
            manifest_beside(out).unlink(missing_ok=True)
        for out in outputs:
            os.replace(staged[out], out)
        for out in outputs:
            os.replace(manifests[out], manifest_beside(out))
    finally:
        for temporary in [*staged.values(), *manifests.values()]:
            temporary.unlink(missing_ok=True)
    return table


def removed_parts_name(parts: Path) -> Path:
    return parts.with_name(f".{parts.name}.removing")


def remove_parts(parts: Path) -> None:
    """Remove OUTPUT.parts/ in one step (a rename; the files go after), so a kill never leaves half of it."""
    doomed = removed_parts_name(parts)
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(parts, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_leftovers(parts: Path, outputs: Sequence[Path]) -> None:
    """What a killed run left beside its outputs (under the output lock, so nothing else is writing them)."""
    shutil.rmtree(removed_parts_name(parts), ignore_errors=True)
    for out in outputs:
        remove_temporaries(out.parent, [out.name, manifest_beside(out).name])


def finished_run(output: Path, manifest: Manifest) -> str:
    """What --resume says of an output this script finished; refuses when another checkpoint or other options
    finished it."""
    record = json.loads(manifest_beside(output).read_text())
    if record.get("checkpoint_sha256") != manifest.checkpoint_sha256:
        raise DataError(output, f"cannot resume: it was finished with another checkpoint ({record.get('weights')}, "
                                "its SHA-256 differs); start without --resume to label again")
    options = manifest.options_difference(record.get("options", {}))
    if options:
        raise DataError(output, f"cannot resume: it was finished with {options}; start without --resume to label "
                                "again")
    return (f"{output} is already finished ({record.get('clips')} clips, {record.get('finished')}; its manifest "
            f"{manifest_beside(output).name}): nothing to resume. Start without --resume to label again\n")


def check_frames_layout(files: Sequence[InputFile]) -> bool:
    """True when the inputs are raw OpenFace files; tables must share one header; no mixing of layouts."""
    tables = [f.path for f in files if f.is_table]
    if tables and len(tables) != len(files):
        raise DataError(tables[0], "--frames-output needs inputs of one layout (all combined tables or all OpenFace CSVs)")
    if tables and any(read_header(t) != read_header(tables[0]) for t in tables[1:]):
        raise DataError(tables[0], "--frames-output needs combined tables with identical columns")
    return not tables


# ----------------------------------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(__doc__)
    parser.add_argument("inputs", nargs="+", help="OpenFace CSV files or folders, or combined frame tables")
    parser.add_argument("--weights", type=Path, required=True,
                        help="our checkpoint, or the paper's au_180.pt / 3iternorm_180.pt (make demo's hybrid.pt is "
                             "trained on synthetic data: its scores on real faces mean nothing)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="per-clip table (.csv or .parquet)")
    parser.add_argument("--frames-output", type=Path, default=None,
                        help="also write every input frame row with the trait columns (the paper's output_pers.csv)")
    parser.add_argument("--chunk-size", type=int, default=256, help="clips read, labelled and written per step")
    parser.add_argument("--batch-size", type=int, default=INFERENCE_BATCH, help="clips per forward pass")
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 1),
                        help="threads parsing OpenFace files ahead of the model")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT.parts/")
    parser.add_argument("--limit", type=int, default=None,
                        help="label at most this many new clips per process, then stop (resume later with --resume)")
    add_device_option(parser)
    add_options(parser.add_argument_group("input"), ReadOptions)
    add_options(parser.add_argument_group("videos (run OpenFace first; see extract_features.py)"), ExtractOptions)
    return parser


def extracted_inputs(args, videos: Sequence[Video]) -> list[InputFile]:
    """For video inputs: OpenFace's CSVs, extracted into OUTPUT.openface/ (reused next time), one input per
    video, named as the video; a video OpenFace failed on is an input that becomes an unreadable row."""
    if under_torchrun():
        raise DataError(videos[0].path, "videos under torchrun: extract them first (extract_features.py), then "
                                        "label the CSV folder")
    cache = args.output.with_name(args.output.name + VIDEO_CACHE_SUFFIX)
    results = extract_videos(videos, cache, options_from(args, ExtractOptions), announce=print)
    print(summary_line(results, cache))
    return [InputFile(r.csv, r.video.name) if r.csv else InputFile(r.video.path, r.video.name,
                                                                       f"OpenFace failed: {r.reason}")
            for r in results]


def number_options(args, reading: ReadOptions, openface_layout: bool) -> dict:
    """The options recorded in the manifest: everything that changes the numbers or the rows written."""
    return {**asdict(reading), "batch_size": args.batch_size, "frames_output": args.frames_output is not None,
            "frames_layout": "openface" if openface_layout else "table"}


@report_user_errors(kept=KEPT)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("chunk_size", "batch_size", "workers"):
        if getattr(args, name) < 1:
            raise DataError(None, f"--{name.replace('_', '-')} must be at least 1")
    outputs = [args.output] + ([args.frames_output] if args.frames_output else [])
    parts = args.output.with_name(args.output.name + PARTS_SUFFIX)
    videos = video_files(args.inputs)
    files = input_files(args.inputs, exclude=[o for o in outputs if finished_output(o)])
    if videos and files:
        raise DataError(files[0].path, "videos and OpenFace tables in one run: label them in separate runs")
    if not videos and not files:
        raise DataError(", ".join(args.inputs), "no CSV, Parquet or video files found")
    folders = [Path(p) for p in args.inputs if Path(p).is_dir()]
    statuses = [table for folder in folders for table in status_files(folder)]  # read for what made the CSVs
    check_outputs(outputs, [v.path for v in videos] + [f.path for f in files] + [args.weights] + statuses)
    ckpt = load_checkpoint(args.weights)  # refused before any work, OpenFace's included
    files = extracted_inputs(args, videos) if videos else files
    openface = recorded_provenance([args.output.with_name(args.output.name + VIDEO_CACHE_SUFFIX)] if videos else
                                   folders)
    with distributed_session(args.device) as (device, world):
        return run(args, files, parts, ckpt, device, world, openface)


def run(args, files: list[InputFile], parts: Path, ckpt: Checkpoint, device: torch.device, world: Distributed,
        openface: list[dict[str, str]]) -> int:
    ckpt.model.to(device)
    reading = options_from(args, ReadOptions)
    openface_layout = check_frames_layout(files) if args.frames_output else True
    manifest = Manifest.of(ckpt, files, number_options(args, reading, openface_layout))
    slots = count_slots(files)  # a table without clips is refused here, before any work
    outputs = [args.output] + ([args.frames_output] if args.frames_output else [])
    with contextlib.ExitStack() as run_folders:
        if world.is_main:
            run_folders.enter_context(output_lock(args.output))
            remove_leftovers(parts, outputs)
        if args.resume and not manifest_path(parts).exists() and manifest_beside(args.output).exists():
            if world.is_main:
                print(finished_run(args.output, manifest), end="")
                shutil.rmtree(parts, ignore_errors=True)  # what a kill left of the finished run's chunks
            return 0
        run_folders.enter_context(parts_folder(parts, manifest, args.resume, world.is_main))
        world.barrier()
        share = share_of(sum(slots), world.rank, world.world_size)
        skip = done_slots(parts)
        features = list(ckpt.features)
        usable = (c for c in iter_clips(files, features, reading, strict=False, labels=False) if c.status is Status.OK)
        scaler = input_scaler(ckpt, usable)
        items = iter_share(files, slots, features, reading, share, args.frames_output is not None, skip, args.workers)
        if args.limit is not None:
            items = (item for _, item in zip(range(args.limit), items))
        summary = ReadSummary(files=len(files))
        started = time.perf_counter()
        todo = sum(1 for s in range(share.start, share.stop) if s not in skip)
        bar = tqdm(total=todo, unit="clip", desc=f"labelling (rank {world.rank})" if world.world_size > 1 else "labelling",
                   disable=not sys.stderr.isatty())
        with torch.inference_mode():
            for chunk in batched(items, args.chunk_size):
                chunk_slots = [slot for slot, clips in chunk for _ in clips]
                clips = [clip for _, clips in chunk for clip in clips]
                scores, outside = label_chunk(ckpt, scaler, clips, args.batch_size, device)
                frames = frame_rows(clips, scores, openface_layout) if args.frames_output else None
                write_chunk(parts, clip_rows(chunk_slots, clips, scores, outside), frames)
                for clip in clips:
                    summary.add(clip)
                bar.update(len(chunk))
        bar.close()
        seconds = time.perf_counter() - started
        world.barrier()
        if not world.is_main:
            return 0
        remaining = share.total - len(done_slots(parts))
        if args.limit is not None and remaining > 0:
            print(f"stopped after --limit {args.limit}: {remaining} clip(s) left; continue with --resume")
            return 0
        table = publish(parts, share.total, args.output, args.frames_output,
                        lambda merged: published_manifest(manifest, args.weights, files, merged, openface))
        remove_parts(parts)
    counts = {status: n for status, n in zip(*np.unique(table.column("status").to_numpy(zero_copy_only=False),
                                                         return_counts=True))}
    print(summary.render() if world.world_size == 1 else f"labelled {share.total} clips on {world.world_size} processes")
    if args.frames_output:
        print(f"wrote {args.frames_output} (every input frame row with the traits)")
    print(f"wrote {args.output}: {table.num_rows} clips (" + ", ".join(f"{k} {v}" for k, v in counts.items()) +
          f"); {sum(summary.clips.values()) / max(seconds, 1e-9):.0f} clips/s on rank 0; manifest in "
          f"{args.output.name}.json")
    for line in table_notes(table, args.weights, ckpt):
        print(line)
    if not counts.get(Status.OK.value):
        raise DataError(args.output, f"no clip could be labelled ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
                                     "the reasons are above and in the table's reason column")
    return 0


def table_notes(table: pa.Table, weights: Path, ckpt: Checkpoint, shown: int = 3) -> list[str]:
    """What a user should see of a finished table: the most common reasons clips were not labelled, the clips
    with a score clamped to 0 or 1, and a warning when clips lie far outside what the checkpoint was trained on."""
    rows = table.select(["clip_id", "status", "reason", "clamped", "out_of_range"]).to_pylist()
    lines = []
    kinds = Counter()  # (status, reason with its numbers left out) -> clips, with a first example
    example: dict[tuple[str, str], dict] = {}
    for r in rows:
        if r["status"] != Status.OK.value:
            kind = (r["status"], re.sub(r"\d+(\.\d+)?", "#", r["reason"]))
            kinds[kind] += 1
            example.setdefault(kind, r)
    for kind, n in kinds.most_common(shown):
        lines.append(f"  {n} clip(s) {kind[0]}, e.g. {example[kind]['clip_id']}: {example[kind]['reason']}")
    if len(kinds) > shown:
        lines.append(f"  ... and {sum(kinds.values()) - sum(n for _, n in kinds.most_common(shown))} clip(s) for "
                     f"{len(kinds) - shown} other reason(s) (see the reason column)")
    labelled = [r for r in rows if r["status"] == Status.OK.value]
    clamped = [r for r in labelled if r["clamped"]]
    if clamped:
        lines.append(f"note: {len(clamped)} of {len(labelled)} labelled clip(s) have a score clamped to 0 or 1, e.g. "
                     f"{clamped[0]['clip_id']} ({clamped[0]['clamped']}); see the clamped column")
    if labelled and ckpt.training_range is None:
        lines.append(f"note: {weights.name} records no training range, so whether these clips resemble its training "
                     "clips cannot be told")
    far = sorted((r for r in labelled if (r["out_of_range"] or 0) > FAR_OUTSIDE), key=lambda r: -r["out_of_range"])
    if far:
        shares = sorted(r["out_of_range"] for r in far)
        lines.append(f"warning: {len(far)} of {len(labelled)} labelled clip(s) lie outside what {weights.name} was "
                     f"trained on (a median {shares[len(shares) // 2]:.0%} of their {2 * len(ckpt.features)} clip "
                     f"statistics beyond the training range; most: {far[0]['clip_id']}, {far[0]['out_of_range']:.0%}): "
                     "their scores may mean nothing")
    return lines


if __name__ == "__main__":
    sys.exit(main())
