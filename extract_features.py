"""Run OpenFace 2.2's FeatureExtraction on videos: one OpenFace CSV per video, in the layout attn_deploy.py reads.

    python extract_features.py my_videos/ -o openface_out/
    python extract_features.py interview.mp4 more_videos/ -o openface_out/ --jobs 4
    python extract_features.py my_videos/ -o openface_out/ --openface \\
        "docker run --rm -v $PWD:$PWD -w $PWD --entrypoint /home/openface-build/build/bin/FeatureExtraction algebr/openface:latest"

OpenFace is not a Python package and is not bundled: build it (https://github.com/TadasBaltrusaitis/OpenFace/wiki)
or use its Docker image. The program is --openface (a path, or a command to run, as above), else $OPENFACE_BIN,
else FeatureExtraction on PATH (FaceLandmarkVidMulti with --multi-face). Each video is run as

    FeatureExtraction -f VIDEO -out_dir TMP -aus -gaze -pose

(frame, face_id, timestamp, confidence, success, gaze, head pose, AU intensities and presences) into a temporary
folder; the CSV is checked and renamed to OUT/<same relative path>.csv only when OpenFace succeeded, so an
interrupted or failed video never leaves a partial CSV. Videos whose CSV exists are skipped (resume by running
the same command again). A video that fails never stops the others. OUT/extraction_status.csv lists every
video: ok, no_face (OpenFace found no face in any frame), or failed with the reason.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
from tqdm import tqdm

from cli import Parser, add_options, check_writable_folder, option, options_from, output_lock, report_user_errors
from errors import DataError
from openface import EXTRACTION_STATUS, FEATURE_COLUMNS, checked_header, missing_columns_reason
from tables import column_array, read_columns, write_table

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
OPENFACE_FLAGS: tuple[str, ...] = ("-aus", "-gaze", "-pose")  # OpenFace 2.2 FeatureExtraction output groups
OPENFACE_ENV = "OPENFACE_BIN"
TEMPORARY_PREFIX = ".openface-"
HOW_TO_GET_OPENFACE = (
    "build OpenFace 2.2 (https://github.com/TadasBaltrusaitis/OpenFace/wiki) and pass --openface PATH, set "
    f"{OPENFACE_ENV}, or put FeatureExtraction on PATH; or run it with Docker: --openface \"docker run --rm -v "
    "$PWD:$PWD -w $PWD --entrypoint /home/openface-build/build/bin/FeatureExtraction algebr/openface:latest\"")


@dataclass(frozen=True)
class ExtractOptions:
    """How videos become OpenFace CSVs; extract_features.py and attn_deploy.py get their flags from here."""

    openface: str | None = option(None, f"FeatureExtraction to run: a path or a command (default: ${OPENFACE_ENV}, "
                                        "else FeatureExtraction on PATH)", metavar="PROGRAM")
    multi_face: bool = option(False, "videos with several people: run FaceLandmarkVidMulti (pick the face to "
                                     "label with --face-id)")
    jobs: int = option(2, "videos processed at a time", minimum=1)
    timeout: float | None = option(None, "seconds after which one video's extraction is given up", minimum=1.0)


@dataclass(frozen=True)
class Video:
    path: Path
    name: str  # relative to the folder given on the command line; the file name for a video given directly

    def csv_name(self) -> str:
        return str(Path(self.name).with_suffix(".csv").as_posix())


@dataclass
class Extraction:
    """What became of one video."""

    video: Video
    csv: Path | None  # the OpenFace CSV, when there is one
    status: str  # ok, no_face, failed
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0


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


def openface_command(options: ExtractOptions) -> list[str]:
    """The program to run, as arguments; one line saying how to get OpenFace when it is not found."""
    text = options.openface or os.environ.get(OPENFACE_ENV)
    name = "FaceLandmarkVidMulti" if options.multi_face else "FeatureExtraction"
    command = shlex.split(text) if text else [name]
    program = command[0] if os.sep in command[0] else shutil.which(command[0])
    if program is None or not os.path.isfile(program) or not os.access(program, os.X_OK):
        raise DataError(None, f"OpenFace's {name} was not found ({command[0]!r}); {HOW_TO_GET_OPENFACE}")
    return [program, *command[1:]]


def last_line(*texts: str) -> str:
    lines = [line.strip() for text in texts for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def check_openface_csv(path: Path) -> tuple[int, int]:
    """(frames, frames with a face) of an OpenFace CSV that holds every feature column; raises otherwise."""
    header = checked_header(path)
    missing = [c for c in FEATURE_COLUMNS + ("success",) if c not in header]
    if missing:
        raise DataError(path, missing_columns_reason(missing, header))
    success = column_array(read_columns(path, ["success"], {"success": pa.float64()}, header), ["success"])[:, 0]
    return len(success), int((success == 1).sum())


def extract_one(video: Video, target: Path, command: list[str], timeout: float | None) -> Extraction:
    """Run OpenFace on one video into a temporary folder beside `target`; publish its CSV only on success."""
    started = time.perf_counter()
    scratch = target.parent / f"{TEMPORARY_PREFIX}{target.stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True)
    try:
        args = [*command, "-f", str(video.path.resolve()), "-out_dir", str(scratch.resolve()), *OPENFACE_FLAGS]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Extraction(video, None, "failed", f"OpenFace ran longer than {timeout:g} s")
        except OSError as err:
            return Extraction(video, None, "failed", f"OpenFace could not be started: {err.strerror or err}")
        produced = scratch / f"{video.path.stem}.csv"
        if done.returncode != 0:
            return Extraction(video, None, "failed", f"OpenFace exited with status {done.returncode}: "
                                                     f"{last_line(done.stderr, done.stdout)}")
        if not produced.is_file():
            return Extraction(video, None, "failed", f"OpenFace wrote no CSV ({last_line(done.stderr, done.stdout)})")
        try:
            frames, faces = check_openface_csv(produced)
        except DataError as err:
            return Extraction(video, None, "failed", f"OpenFace's CSV is unusable: {err.reason}")
        os.replace(produced, target)
        return Extraction(video, target, "ok" if faces else "no_face", "" if faces else "no face in any frame",
                          frames, time.perf_counter() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def earlier_extraction(video: Video, target: Path) -> Extraction:
    """The record of a video whose CSV an earlier run wrote (it is not run again)."""
    try:
        frames, faces = check_openface_csv(target)
    except DataError as err:
        return Extraction(video, None, "failed", f"the CSV of an earlier run is unusable: {err.reason}; delete it "
                                                 "to extract again")
    return Extraction(video, target, "ok" if faces else "no_face", "" if faces else "no face in any frame", frames)


def status_table(results: Sequence[Extraction]) -> pa.Table:
    return pa.table({"video": [r.video.name for r in results],
                     "csv": [r.video.csv_name() if r.csv else "" for r in results],
                     "status": [r.status for r in results], "reason": [r.reason for r in results],
                     "frames": pa.array([r.frames for r in results], pa.int64()),
                     "seconds": pa.array([round(r.seconds, 2) for r in results], pa.float64())})


def extract_videos(videos: Sequence[Video], out: Path, options: ExtractOptions, progress: bool = True) -> list[Extraction]:
    """Every video's CSV in `out` (earlier ones reused), at most options.jobs at a time; the status table is
    written to OUT/extraction_status.csv. Returns one record per video, in input order."""
    command = openface_command(options)
    check_writable_folder(out)
    with output_lock(out / EXTRACTION_STATUS):
        for stale in out.rglob(f"{TEMPORARY_PREFIX}*"):  # left by a run that was killed
            shutil.rmtree(stale, ignore_errors=True)
        targets = [out / v.csv_name() for v in videos]
        results: list[Extraction | None] = [earlier_extraction(v, t) if t.exists() else None
                                            for v, t in zip(videos, targets)]
        todo = [k for k, r in enumerate(results) if r is None]
        for k in todo:
            targets[k].parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(todo), unit="video", desc="OpenFace", disable=not progress or not sys.stderr.isatty())
        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            futures = {pool.submit(extract_one, videos[k], targets[k], command, options.timeout): k for k in todo}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        bar.close()
        write_table(status_table(results), out / EXTRACTION_STATUS)
    return results


def summary_line(results: Sequence[Extraction], out: Path) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "no_face", "failed")}
    return (f"{len(results)} video(s): {counts['ok']} ok, {counts['no_face']} without a face, {counts['failed']} "
            f"failed; CSVs in {out}, statuses in {out / EXTRACTION_STATUS}")


def build_parser() -> Parser:
    parser = Parser(__doc__)
    parser.add_argument("videos", nargs="+", help="video files or folders of videos (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the OpenFace CSVs")
    add_options(parser.add_argument_group("OpenFace"), ExtractOptions)
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for item in args.videos:
        if not Path(item).exists():
            raise DataError(item, "no such file or folder")
    videos = video_files(args.videos)
    if not videos:
        raise DataError(", ".join(args.videos), f"no videos found ({', '.join(VIDEO_SUFFIXES)})")
    results = extract_videos(videos, args.output, options_from(args, ExtractOptions))
    for failed in [r for r in results if r.status == "failed"][:5]:
        print(f"  failed: {failed.video.name}: {failed.reason}")
    print(summary_line(results, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
