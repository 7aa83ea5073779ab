"""Run OpenFace 2.2 on videos: one OpenFace CSV per video, in the layout attn_deploy.py reads.

    python extract_features.py my_videos/ -o openface_out/
    python extract_features.py interview.mp4 more_videos/ -o openface_out/ --jobs 4
    python extract_features.py group_videos/ -o openface_out/ --multi-face
    sbatch --array=0-99 extract.sbatch      # each task runs: extract_features.py videos/ -o out/ (--shard from Slurm)
    python extract_features.py videos/ -o out/ --check   # after the array: merge the statuses, list what is missing

OpenFace is academic, non-commercial research software and is not bundled: `make openface` builds it
(tools/build_openface.sh), or use its Docker image. The program is --openface (a path, or a command to run),
else $OPENFACE_BIN, else FeatureExtraction on PATH, else the `make openface` build; --multi-face runs
FaceLandmarkVidMulti instead. The landmark model is CE-CLM when its patch experts are installed, else CLNF
(said in one line). Each video is run as

    FeatureExtraction -f VIDEO -out_dir TMP [-mloc model/main_clnf_general.txt] -aus -gaze -pose

into a temporary folder; the CSV is checked and renamed to OUT/<same relative path>.csv only when OpenFace
succeeded, so an interrupted or failed video never leaves a partial CSV. Videos whose CSV exists are skipped
(resume by running the same command again). A video that fails never stops the others. OUT/extraction_status.csv
lists every video: ok, no_face (OpenFace found no face in any frame), or failed with the reason, and what made
the CSV (OpenFace version, program, landmark model, flags).

--shard K/N (0 <= K < N; by default SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT when Slurm sets them) runs
only the videos whose name hashes to shard K, whatever other videos there are, and writes its statuses to
OUT/extraction_status.shard-K-of-N.csv; shards run at once on one output folder. --check merges every status file
into OUT/extraction_status.csv and lists the videos without a CSV; it exits 1 while any is missing or failed.
"""
from __future__ import annotations

import enum
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pyarrow as pa
from tqdm import tqdm

from cli import Parser, add_options, check_writable_folder, option, options_from, output_lock, report_user_errors
from errors import DataError
from openface import (EXTRACTION_STATUS, FEATURE_COLUMNS, VIDEO_SUFFIXES, checked_header, is_status_table,
                      missing_columns_reason, shard_status_name)
from openface_program import LANDMARK_MODELS, OpenFaceProgram, find_openface
from tables import column_array, read_columns, read_header, write_table

TEMPORARY_PREFIX = ".openface-"
SCRATCH_NAME = re.compile(rf"^{re.escape(TEMPORARY_PREFIX)}(?P<stem>.+)\.\d+\.[0-9a-f]{{8}}$")
PROVENANCE_COLUMNS: tuple[str, ...] = ("openface_version", "openface_program", "landmark_model", "openface_flags")
KEPT = "the CSVs of finished videos are kept; run the same command again to extract the rest"
SLURM_TASK, SLURM_COUNT, SLURM_MIN = "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"


@dataclass(frozen=True)
class ExtractOptions:
    """How videos become OpenFace CSVs; extract_features.py and attn_deploy.py get their flags from here."""

    openface: str | None = option(None, "OpenFace program to run: a path or a command (default: $OPENFACE_BIN, "
                                        "else FeatureExtraction on PATH, else the `make openface` build)",
                                  metavar="PROGRAM")
    multi_face: bool = option(False, "videos with several people: run FaceLandmarkVidMulti; each face becomes its "
                                     "own clip VIDEO#faceN (or pick one with --face-id)")
    landmark_model: str = option("auto", "OpenFace landmark model: auto takes CE-CLM when its patch experts are "
                                         "installed, else CLNF", choices=LANDMARK_MODELS)
    jobs: int = option(2, "videos processed at a time", minimum=1)
    timeout: float | None = option(None, "seconds after which one video's extraction is given up (default: none)",
                                   minimum=1.0)


@dataclass(frozen=True)
class Video:
    path: Path
    name: str  # relative to the folder given on the command line; the file name for a video given directly

    def csv_name(self) -> str:
        return str(Path(self.name).with_suffix(".csv").as_posix())


class Extracted(str, enum.Enum):
    """What became of a video: its status in extraction_status.csv."""

    OK = "ok"
    NO_FACE = "no_face"  # OpenFace found no face in any frame
    FAILED = "failed"  # the reason says why
    MISSING = "missing"  # no run has extracted it (--check)

    def __str__(self) -> str:
        return self.value


DONE = (Extracted.OK, Extracted.NO_FACE)  # a usable CSV exists


@dataclass
class Extraction:
    """What became of one video."""

    video: Video
    csv: Path | None  # the OpenFace CSV, when there is one
    status: Extracted
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0
    provenance: dict[str, str] = field(default_factory=dict)  # what made the CSV (PROVENANCE_COLUMNS)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the videos whose name hashes to it (the same set whatever else is extracted)."""

    index: int = 0
    count: int = 1

    def holds(self, video: Video) -> bool:
        bucket = int(hashlib.sha256(video.name.encode()).hexdigest()[:16], 16) % self.count
        return self.count == 1 or bucket == self.index

    def status_name(self) -> str:
        return EXTRACTION_STATUS if self.count == 1 else shard_status_name(self.index, self.count)


def parse_shard(text: str | None, environ: dict | os._Environ = os.environ) -> Shard:
    """--shard K/N, else Slurm's array task (its id counted from SLURM_ARRAY_TASK_MIN), else the whole set."""
    if text is None and SLURM_TASK in environ and SLURM_COUNT in environ:
        try:
            index = int(environ[SLURM_TASK]) - int(environ.get(SLURM_MIN, 0))
            text = f"{index}/{int(environ[SLURM_COUNT])}"
        except ValueError:
            raise DataError(None, f"{SLURM_TASK}={environ[SLURM_TASK]!r} / {SLURM_COUNT}={environ[SLURM_COUNT]!r} "
                                  "are not numbers; pass --shard K/N") from None
    if text is None:
        return Shard()
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise DataError(None, f"--shard {text!r}: give K/N with 0 <= K < N (e.g. 0/4)")
    return Shard(int(match[1]), int(match[2]))


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def video_files(inputs: Sequence[str | Path]) -> list[Video]:
    """Videos named directly or found recursively in folders, in a stable order; [] when there are none."""
    found: list[Video] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Video(Path(folder) / f, (Path(folder) / f).relative_to(path).as_posix())
                          for f in sorted(files) if is_video(Path(f)) and not f.startswith(".")]
        elif path.is_file() and is_video(path):
            found.append(Video(path, path.name))
    names: dict[str, Path] = {}
    for video in found:
        if video.csv_name() in names:
            raise DataError(video.path, f"would be written to {video.csv_name()} like {names[video.csv_name()]}; "
                                        "rename one or extract them separately")
        names[video.csv_name()] = video.path
    return found


def last_line(*texts: str) -> str:
    lines = [line.strip() for text in texts for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def check_openface_csv(path: Path) -> tuple[int, int]:
    """(video frames, frames with a face) of an OpenFace CSV that holds every feature column; raises otherwise.
    A multi-face CSV has a row per face and frame: its frames are counted once."""
    header = checked_header(path)
    missing = [c for c in FEATURE_COLUMNS + ("success",) if c not in header]
    if missing:
        raise DataError(path, missing_columns_reason(missing, header))
    columns = ["success"] + (["frame"] if "frame" in header else [])
    values = column_array(read_columns(path, columns, {c: pa.float64() for c in columns}, header), columns)
    if "frame" not in header:
        return len(values), int((values[:, 0] == 1).sum())
    return len(set(values[:, 1].tolist())), len(set(values[values[:, 0] == 1, 1].tolist()))


def failure_reason(returncode: int, stdout: str, stderr: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"OpenFace was killed by {name} ({last_line(stderr, stdout)})"
    return f"OpenFace exited with status {returncode}: {last_line(stderr, stdout)}"


def scratch_folder(target: Path) -> Path:
    return target.parent / f"{TEMPORARY_PREFIX}{target.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def stale_scratch(targets: Sequence[Path]) -> list[Path]:
    """Temporary folders that a killed run left for these targets (never another shard's)."""
    stems: dict[Path, set[str]] = {}
    for target in targets:
        stems.setdefault(target.parent, set()).add(target.stem)
    found = []
    for folder, names in stems.items():
        if folder.is_dir():
            for entry in folder.iterdir():
                match = SCRATCH_NAME.match(entry.name)
                if match and match["stem"] in names:
                    found.append(entry)
    return found


def extract_one(video: Video, target: Path, program: OpenFaceProgram, timeout: float | None) -> Extraction:
    """Run OpenFace on one video into a temporary folder beside `target`; publish its CSV only on success."""
    started = time.perf_counter()
    scratch = scratch_folder(target)
    scratch.mkdir(parents=True)
    made = program.provenance()

    def failed(reason: str) -> Extraction:
        return Extraction(video, None, Extracted.FAILED, reason, 0, time.perf_counter() - started, made)

    try:
        try:
            done = subprocess.run(program.args(video.path.absolute(), scratch.resolve()), capture_output=True,
                                  text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            return failed(f"OpenFace ran longer than {timeout:g} s")
        except OSError as err:
            return failed(f"OpenFace could not be started: {err.strerror or err}")
        produced = scratch / f"{video.path.stem}.csv"
        if done.returncode != 0:
            return failed(failure_reason(done.returncode, done.stdout, done.stderr))
        if not produced.is_file():
            return failed(f"OpenFace wrote no CSV ({last_line(done.stderr, done.stdout)})")
        try:
            frames, faces = check_openface_csv(produced)
        except DataError as err:
            return failed(f"OpenFace's CSV is unusable: {err.reason}")
        os.replace(produced, target)
        return Extraction(video, target, *found_faces(faces), frames, time.perf_counter() - started, made)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def provenance_of(row: dict | None) -> dict[str, str]:
    """What made a video's CSV, as its status row recorded it ('' where the row or the column is missing)."""
    return {c: (row or {}).get(c, "") for c in PROVENANCE_COLUMNS}


def found_faces(faces: int) -> tuple[Extracted, str]:
    """The status and reason of a CSV with `faces` frames that have a face."""
    return (Extracted.OK, "") if faces else (Extracted.NO_FACE, "no face in any frame")


def earlier_extraction(video: Video, target: Path, recorded: dict[str, dict]) -> Extraction:
    """The record of a video whose CSV an earlier run wrote (it is not run again), with what that run recorded."""
    before = recorded.get(video.name, {})
    made = provenance_of(before)
    try:
        frames, faces = check_openface_csv(target)
    except DataError as err:
        return Extraction(video, None, Extracted.FAILED,
                          f"the CSV of an earlier run is unusable: {err.reason}; delete it to extract again",
                          provenance=made)
    return Extraction(video, target, *found_faces(faces), frames, float(before.get("seconds") or 0.0), made)


STATUS_COLUMNS: tuple[str, ...] = ("video", "csv", "status", "reason", "frames", "seconds") + PROVENANCE_COLUMNS


def status_table(results: Sequence[Extraction]) -> pa.Table:
    columns = {"video": [r.video.name for r in results],
               "csv": [r.video.csv_name() if r.csv else "" for r in results],
               "status": [r.status.value for r in results], "reason": [r.reason for r in results],
               "frames": pa.array([r.frames for r in results], pa.int64()),
               "seconds": pa.array([round(r.seconds, 2) for r in results], pa.float64())}
    for name in PROVENANCE_COLUMNS:
        columns[name] = pa.array([r.provenance.get(name, "") for r in results], pa.string())
    return pa.table(columns)


def status_files(out: Path) -> list[Path]:
    """Every status table in an output folder: the merged one and each shard's."""
    return sorted(p for p in out.glob("*.csv") if is_status_table(p.name)) if out.is_dir() else []


def recorded_statuses(paths: Sequence[Path]) -> dict[str, dict]:
    """video name -> its row in the status tables (a later file's row wins; an ok row wins over a failed one)."""
    rows: dict[str, dict] = {}
    for path in paths:
        header = read_header(path)
        if "video" not in header or "status" not in header:
            raise DataError(path, "not an extraction status table (no video and status columns)")
        wanted = [c for c in STATUS_COLUMNS if c in header]
        table = read_columns(path, wanted, {c: pa.string() for c in wanted}, header)
        for row in table.to_pylist():
            row = {k: v or "" for k, v in row.items()}
            failed = Extracted.FAILED.value
            if row["status"] != failed or rows.get(row["video"], {}).get("status", failed) == failed:
                rows[row["video"]] = row
    return rows


def extract_videos(videos: Sequence[Video], out: Path, options: ExtractOptions, shard: Shard = Shard(),
                   progress: bool = True, announce=None) -> list[Extraction]:
    """Every video's CSV in `out` (earlier ones reused), at most options.jobs at a time, for the videos of
    `shard`; its status table is written to OUT/extraction_status.csv (OUT/extraction_status.shard-K-of-N.csv).
    Returns one record per video of the shard, in input order. `announce` gets the program's description."""
    program = find_openface(options.openface, options.multi_face, options.landmark_model)
    if announce is not None:
        announce(program.describe())
    check_writable_folder(out)
    mine = [v for v in videos if shard.holds(v)]
    status = out / shard.status_name()
    with output_lock(status):
        targets = [out / v.csv_name() for v in mine]
        for stale in stale_scratch(targets):  # left by a run of this shard that was killed
            shutil.rmtree(stale, ignore_errors=True)
        recorded = recorded_statuses(status_files(out))
        results: list[Extraction | None] = [earlier_extraction(v, t, recorded) if t.exists() else None
                                            for v, t in zip(mine, targets)]
        todo = [k for k, r in enumerate(results) if r is None]
        for k in todo:
            targets[k].parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(todo), unit="video", desc="OpenFace", disable=not progress or not sys.stderr.isatty())
        pool = ThreadPoolExecutor(max_workers=options.jobs)
        futures = {pool.submit(extract_one, mine[k], targets[k], program, options.timeout): k for k in todo}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        finally:  # interrupted too: no new video starts, and the videos done so far keep their record
            pool.shutdown(wait=True, cancel_futures=True)
            for future, k in futures.items():
                if results[k] is None and future.done() and not future.cancelled() and future.exception() is None:
                    results[k] = future.result()
            bar.close()
            write_table(status_table([r for r in results if r is not None]), status)
    return results


def checked_extractions(videos: Sequence[Video], out: Path) -> list[Extraction]:
    """Every video's record from the CSVs in `out` and all its status tables, written to OUT/extraction_status.csv:
    a video with a usable CSV is ok or no_face, one without is failed (with its reason) or missing."""
    if not out.is_dir():
        raise DataError(out, "no such output folder to check")
    with output_lock(out / EXTRACTION_STATUS):
        recorded = recorded_statuses(status_files(out))
        results = []
        for video in videos:
            target = out / video.csv_name()
            if target.exists():
                results.append(earlier_extraction(video, target, recorded))
                continue
            row = recorded.get(video.name)
            results.append(Extraction(video, None, Extracted.FAILED, row["reason"], provenance=provenance_of(row))
                           if row and row["status"] == Extracted.FAILED.value else
                           Extraction(video, None, Extracted.MISSING, "no run has extracted it"))
        write_table(status_table(results), out / EXTRACTION_STATUS)
    return results


def recorded_provenance(folders: Sequence[str | Path]) -> list[dict[str, str]]:
    """What made the CSVs of these extraction folders (each distinct record once), from their status tables."""
    made: list[dict[str, str]] = []
    for folder in folders:
        for row in recorded_statuses(status_files(Path(folder))).values():
            record = provenance_of(row)
            if row["status"] in {s.value for s in DONE} and any(record.values()) and record not in made:
                made.append(record)
    return made


def summary_line(results: Sequence[Extraction], out: Path, status: str = EXTRACTION_STATUS) -> str:
    counts = {s: sum(r.status is s for r in results) for s in Extracted}
    return (f"{len(results)} video(s): {counts[Extracted.OK]} ok, {counts[Extracted.NO_FACE]} without a face, "
            f"{counts[Extracted.FAILED]} failed"
            + (f", {counts[Extracted.MISSING]} missing" if counts[Extracted.MISSING] else "") +
            f"; CSVs in {out}, statuses in {out / status}")


def build_parser() -> Parser:
    parser = Parser(__doc__)
    parser.add_argument("videos", nargs="+", help="video files or folders of videos (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the OpenFace CSVs")
    add_options(parser.add_argument_group("OpenFace"), ExtractOptions)
    cluster = parser.add_argument_group("cluster (Slurm job arrays)")
    cluster.add_argument("--shard", default=None, metavar="K/N",
                         help=f"extract only shard K of N (default: ${SLURM_TASK}/${SLURM_COUNT} under a Slurm array "
                              "job, else every video)")
    cluster.add_argument("--check", action="store_true",
                         help="run nothing: merge the shards' statuses into OUTPUT/extraction_status.csv and list the "
                              "videos without a CSV (exit 1 while any)")
    return parser


def print_problems(results: Sequence[Extraction], shown: int = 10) -> None:
    for kind in (Extracted.FAILED, Extracted.MISSING):
        bad = [r for r in results if r.status is kind]
        for r in bad[:shown]:
            print(f"  {kind}: {r.video.name}: {r.reason}")
        if len(bad) > shown:
            print(f"  ... and {len(bad) - shown} more {kind} (see the status table)")


@report_user_errors(kept=KEPT)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for item in args.videos:
        if not Path(item).exists():
            raise DataError(item, "no such file or folder")
    videos = video_files(args.videos)
    if not videos:
        raise DataError(", ".join(args.videos), f"no videos found ({', '.join(VIDEO_SUFFIXES)})")
    if args.check:
        results = checked_extractions(videos, args.output)
        print_problems(results)
        print(summary_line(results, args.output))
        incomplete = sum(r.status not in DONE for r in results)
        if incomplete:
            raise DataError(args.output, f"{incomplete} of {len(results)} video(s) have no CSV yet (listed above); "
                                         "rerun their shards")
        return 0
    shard = parse_shard(args.shard)
    results = extract_videos(videos, args.output, options_from(args, ExtractOptions), shard, announce=print)
    print_problems(results, shown=5)
    if shard.count > 1:
        print(f"shard {shard.index}/{shard.count}: {len(results)} of {len(videos)} video(s)")
    print(summary_line(results, args.output, shard.status_name()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
