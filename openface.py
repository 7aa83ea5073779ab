"""OpenFace 2.x inputs: the feature/trait schema, the readers for the three input layouts, and frame hygiene.

Layouts (see docs/data.md):
  A. a combined frame table (CSV or Parquet): one row per frame, a clip column (`ID`, or `clip_id` as
     attn_deploy.py writes it), optional `File`, features, optional trait columns;
  B. raw OpenFace `FeatureExtraction` CSVs, one clip per file (folders are searched recursively);
  C. labels: a CSV with a clip key column and trait columns, or a ChaLearn annotation pickle.

Every column is selected by its exact name. A clip is one file of layout B (one face of a multi-face file,
`read_openface_csv`), or one run of rows sharing a clip id in layout A (`clip_runs`); nowhere else says so.
Readers yield `Clip`s whose `status` says whether they are usable; nothing is dropped without being counted in
`ReadSummary`.
"""
from __future__ import annotations

import enum
import functools
import math
import os
import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cli import option
from errors import DataError
from tables import (CellError, check_unique_columns, column_array, first_line, is_parquet, iter_column_batches,
                    read_columns, read_header)

# ----------------------------------------------------------------------------------------------------------
# Schema: the one place that names features, feature sets and traits.

AU_COLUMNS: tuple[str, ...] = (
    "AU01_r", "AU02_r", "AU04_r", "AU05_r", "AU06_r", "AU07_r", "AU09_r", "AU10_r", "AU12_r",
    "AU14_r", "AU15_r", "AU17_r", "AU20_r", "AU23_r", "AU25_r", "AU26_r", "AU45_r",
)
GAZE_COLUMNS: tuple[str, ...] = ("gaze_angle_x", "gaze_angle_y")
HEAD_COLUMNS: tuple[str, ...] = ("pose_Rx", "pose_Ry", "pose_Rz")
FEATURE_COLUMNS: tuple[str, ...] = AU_COLUMNS + GAZE_COLUMNS + HEAD_COLUMNS
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {"au": AU_COLUMNS, "gaze": GAZE_COLUMNS, "head": HEAD_COLUMNS}
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "au": AU_COLUMNS,
    "au_gaze": AU_COLUMNS + GAZE_COLUMNS,
    "au_head": AU_COLUMNS + HEAD_COLUMNS,
    "gaze_head": GAZE_COLUMNS + HEAD_COLUMNS,
    "all": FEATURE_COLUMNS,
}
# Physically possible values: OpenFace clamps AU intensities to 0..5; gaze and head angles are radians.
RANGE_TOLERANCE = 0.01
FEATURE_RANGES: dict[str, tuple[float, float]] = {
    **{c: (0.0, 5.0) for c in AU_COLUMNS}, **{c: (-math.pi, math.pi) for c in GAZE_COLUMNS + HEAD_COLUMNS}}
TRAITS: tuple[str, ...] = ("extroversion", "neuroticism", "agreeableness", "conscientiousness", "openness")
TRAIT_ALIASES: dict[str, str] = {"extraversion": "extroversion"}
TRAIT_LETTERS: dict[str, str] = {"extroversion": "E", "neuroticism": "N", "agreeableness": "A",
                                 "conscientiousness": "C", "openness": "O"}
# The paper's figure columns; ChaLearn's "neuroticism" score is emotional stability (higher = more stable).
TRAIT_FIGURE_LABELS: dict[str, str] = {"openness": "Open.", "conscientiousness": "Consc.", "extroversion": "Extro.",
                                       "agreeableness": "Agree.", "neuroticism": "Stab."}
FACS_NAMES: dict[str, str] = {
    "AU01_r": "Inner Brow Raiser", "AU02_r": "Outer Brow Raiser", "AU04_r": "Brow Lowerer",
    "AU05_r": "Upper Lid Raiser", "AU06_r": "Cheek Raiser", "AU07_r": "Lid Tightener", "AU09_r": "Nose Wrinkler",
    "AU10_r": "Upper Lip Raiser", "AU12_r": "Lip Corner Puller", "AU14_r": "Dimpler",
    "AU15_r": "Lip Corner Depressor", "AU17_r": "Chin Raiser", "AU20_r": "Lip Stretcher", "AU23_r": "Lip Tightener",
    "AU25_r": "Lips Part", "AU26_r": "Jaw Drop", "AU45_r": "Blink",
}
SHORT_NAMES: dict[str, str] = {"gaze_angle_x": "Gaze yaw (left-right)", "gaze_angle_y": "Gaze pitch (up-down)",
                               "pose_Rx": "Head pitch", "pose_Ry": "Head yaw", "pose_Rz": "Head roll"}

OPENFACE_META_COLUMNS: tuple[str, ...] = ("frame", "face_id", "timestamp", "confidence", "success")
CLIP_COLUMNS: tuple[str, ...] = ("ID", "clip_id")  # the clip column of a combined table, in order of preference
LABEL_KEY_COLUMNS: tuple[str, ...] = ("File", "clip_id", "video_name", "ID")
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".parquet")
EXTRACTION_STATUS = "extraction_status.csv"  # extract_features.py's table in its output folder: never an input
SHARD_STATUS = re.compile(r"^extraction_status\.shard-\d+-of-\d+\.csv$")  # one shard's table (--shard K/N)
FACE_SEPARATOR = "#face"  # a face of a multi-face file is clip KEY#faceN
PARTS_SUFFIX, VIDEO_CACHE_SUFFIX = ".parts", ".openface"  # attn_deploy.py's work folders OUTPUT.parts, OUTPUT.openface
WORK_FOLDERS: tuple[str, ...] = (PARTS_SUFFIX, VIDEO_CACHE_SUFFIX)
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
KEY_SUFFIXES: tuple[str, ...] = VIDEO_SUFFIXES + TABLE_SUFFIXES  # what a clip key leaves out of a file name
FIRST_IMPRESSIONS_NAME = re.compile(r"^(?P<video>.+)\.\d{3}$")



@dataclass(frozen=True)
class ReadOptions:
    """How OpenFace frames become clips; the same options for every script (their flags come from here)."""

    face_id: int | None = option(None, "face to label in multi-face OpenFace files (default: every face, each its "
                                       "own clip KEY#faceN)", minimum=0)
    min_face_share: float = option(0.2, "in a multi-face file, a face found in a smaller share of the video's frames "
                                        "is too_short (a passer-by or a tracking fragment)", minimum=0.0)
    min_confidence: float = option(0.75, "drop frames with lower OpenFace confidence", minimum=0.0)
    min_frames: int = option(41, "skip clips with fewer usable frames", minimum=1)


def shard_status_name(index: int, count: int) -> str:
    return f"extraction_status.shard-{index}-of-{count}.csv"


def is_status_table(name: str) -> bool:
    """extract_features.py's status tables (never inputs): the merged one and each shard's."""
    return name == EXTRACTION_STATUS or SHARD_STATUS.match(name) is not None


def display_name(column: str) -> str:
    """A readable feature name: 'Lip Corner Puller (AU12)', 'Gaze yaw (left-right)', 'Head roll'."""
    if column in FACS_NAMES:
        return f"{FACS_NAMES[column]} ({column[:4]})"
    return SHORT_NAMES.get(column, column)


def feature_columns(feature_set: str) -> tuple[str, ...]:
    """The columns of a named feature set, in canonical order."""
    if feature_set not in FEATURE_SETS:
        raise DataError(None, f"unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[feature_set]


def feature_set_name(columns: Sequence[str]) -> str | None:
    """The name of the feature set with exactly these columns in this order, or None."""
    for name, cols in FEATURE_SETS.items():
        if tuple(columns) == cols:
            return name
    return None


def features_present(header: Iterable[str]) -> list[str]:
    """The feature columns a file holds, in canonical order."""
    present = set(header)
    return [c for c in FEATURE_COLUMNS if c in present]


def servable_feature_sets(columns: Iterable[str]) -> list[str]:
    """The feature sets whose every column is among `columns`."""
    present = set(columns)
    return [name for name, cols in FEATURE_SETS.items() if present.issuperset(cols)]


def missing_columns_reason(missing: Sequence[str], present: Iterable[str]) -> str:
    can = servable_feature_sets(present)
    return f"missing {', '.join(missing)}" + (
        f" (this file can serve feature sets: {', '.join(can)}: use a checkpoint trained on one of them, e.g. "
        f"attn_regression.py --features {can[0]})" if can else " (this file can serve no feature set)")


def canonical_trait(name: str) -> str:
    return TRAIT_ALIASES.get(name, name)


def trait_columns_in(header: Iterable[str]) -> dict[str, str]:
    """Map of canonical trait name -> column name for the trait columns present."""
    found = {}
    for col in header:
        trait = canonical_trait(col)
        if trait in TRAITS:
            found[trait] = col
    return found


def clip_key(name: str) -> str:
    """Join key of a clip: the base name without a video/CSV extension ('x/ab.000.mp4' -> 'ab.000')."""
    base = Path(str(name)).name
    for ext in KEY_SUFFIXES:
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def source_group(key: str) -> str:
    """The source video of a clip: 'VIDEOID' for First Impressions names 'VIDEOID.NNN', else the clip key."""
    match = FIRST_IMPRESSIONS_NAME.match(key)
    return match.group("video") if match else key


# ----------------------------------------------------------------------------------------------------------
# Clips


class Status(str, enum.Enum):
    """Whether a clip can be scored; the reason, when there is one, is kept beside it in `Clip.reason`."""

    OK = "ok"
    TOO_SHORT = "too_short"
    NO_FACE = "no_face"
    UNREADABLE = "unreadable"

    def __str__(self) -> str:
        return self.value


@dataclass
class Clip:
    """One clip: its usable frames (T, F) float32 and, when known, its label (5,) in TRAITS order."""

    clip_id: str
    file: str  # as written in outputs: the File value, or the path relative to the input folder given
    group: str
    frames: np.ndarray  # (T, F) float32
    label: np.ndarray | None = None  # (5,) float32
    status: Status = Status.OK
    reason: str = ""
    drops: Counter = field(default_factory=Counter)  # reason -> frames removed by hygiene
    augmentation: str = "original"
    source_id: str | None = None
    rows: pa.Table | None = None  # the input rows of this clip, only when asked for
    face: int | None = None  # the face of a multi-face file that this clip is

    @property
    def key(self) -> str:
        """The key labels are joined on: KEY, or KEY#faceN for one face of a multi-face file."""
        if not self.file:
            return self.clip_id
        return clip_key(self.file) + (f"{FACE_SEPARATOR}{self.face}" if self.face is not None else "")

    @property
    def n_dropped(self) -> int:
        """Frames removed by hygiene (rows of other faces are not counted)."""
        return int(sum(self.drops.values()))

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def unreadable_clip(clip_id: str, file: str, n_features: int, reason: str, rows: pa.Table | None = None) -> Clip:
    """The record of a clip that could not be read: no frames, status unreadable, the reason kept."""
    return Clip(clip_id=clip_id, file=file, group=source_group(clip_key(file) if file else clip_id),
                frames=np.zeros((0, n_features), np.float32), status=Status.UNREADABLE, reason=reason, rows=rows)


@dataclass
class ReadSummary:
    """Counts of everything a read kept or dropped, for the one-screen report."""

    files: int = 0
    clips: Counter = field(default_factory=Counter)  # status -> clips
    frames_kept: int = 0
    frames_dropped: Counter = field(default_factory=Counter)  # reason -> frames
    examples: dict = field(default_factory=dict)  # status -> first few clip ids

    def add(self, clip: Clip) -> None:
        self.clips[clip.status] += 1
        shown = self.examples.setdefault(clip.status, [])
        if len(shown) < 3:
            shown.append(clip.clip_id)
        if clip.status is Status.OK:
            self.frames_kept += clip.n_frames
        self.frames_dropped.update(clip.drops)

    def render(self) -> str:
        total = sum(self.clips.values())
        lines = [f"read {total} clips from {self.files} file(s): {self.clips.get(Status.OK, 0)} usable, "
                 f"{self.frames_kept} frames kept"]
        for status, n in sorted(self.clips.items(), key=lambda item: item[0].value):
            if status is not Status.OK:
                lines.append(f"  skipped {n} clip(s) [{status}], e.g. {', '.join(self.examples[status])}")
        for reason, n in sorted(self.frames_dropped.items()):
            lines.append(f"  dropped {n} frame(s): {reason}")
        return "\n".join(lines)


def usable_status(n_usable: int, n_rows: int, min_frames: int, drops: Counter) -> tuple[Status, str]:
    """Whether a clip of `n_rows` rows with `n_usable` usable frames can be scored, and why not."""
    if n_usable >= min_frames and n_usable > 0:
        return Status.OK, ""
    dropped = "; ".join(f"{n} {reason}" for reason, n in sorted(drops.items()))
    if n_usable == 0 and n_rows > 0:
        return Status.NO_FACE, f"no usable frame in {n_rows} ({dropped})"
    return Status.TOO_SHORT, (f"{n_usable} usable frame(s), fewer than --min-frames {min_frames}"
                              + (f" ({dropped})" if dropped else ""))


# ----------------------------------------------------------------------------------------------------------
# Input files


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str  # relative to the folder given on the command line; the file name for a file given directly
    failure: str = ""  # why there is nothing to read (a video OpenFace could not process): an unreadable clip

    @functools.cached_property
    def real(self) -> str:
        """The resolved path (links followed): one file, however it was named."""
        return os.path.realpath(self.path)

    @functools.cached_property
    def is_table(self) -> bool:
        """A combined frame table (layout A), rather than one raw OpenFace CSV or a failure (read once). A file
        whose header cannot be read is no table: read as an OpenFace CSV, it becomes unreadable with the reason."""
        if self.failure:
            return False
        try:
            return is_frame_table(self.path)
        except (DataError, OSError):
            return False


def input_files(inputs: Sequence[str | Path], exclude: Iterable[str | Path] = ()) -> list[InputFile]:
    """CSV and Parquet files named directly or found recursively in folders, in a stable order.

    Found in a folder, `exclude` (a run's own outputs), extract_features.py's status table and everything in
    attn_deploy.py's work folders (OUTPUT.parts, OUTPUT.openface) are no inputs; a
    file named directly always is. A file reached twice is listed once; two different files that would be
    written under one name are refused."""
    skip = {os.path.realpath(p) for p in exclude}
    found: list[InputFile] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.endswith(WORK_FOLDERS))
                for name in sorted(files):
                    if name.lower().endswith(TABLE_SUFFIXES) and not name.startswith(".") and not is_status_table(name):
                        file = InputFile(Path(folder) / name, (Path(folder) / name).relative_to(path).as_posix())
                        if file.real not in skip:
                            found.append(file)
        elif path.is_file():
            if path.suffix.lower() not in VIDEO_SUFFIXES:  # a video named directly is extraction's input
                found.append(InputFile(path, path.name))
        else:
            raise DataError(path, "no such file or folder")
    unique, seen, names = [], set(), {}
    for item in found:
        if item.real in seen:
            continue
        seen.add(item.real)
        if item.name in names:
            raise DataError(item.path, f"has the same name {item.name!r} as {names[item.name]}; outputs could not "
                                       "tell them apart: label them in separate runs or rename one")
        names[item.name] = item.path
        unique.append(item)
    return unique


def is_frame_table(path: Path) -> bool:
    """True for a combined frame table (a clip column `ID`/`clip_id`), False for a raw OpenFace CSV."""
    return is_parquet(path) or any(c in CLIP_COLUMNS for c in read_header(path))


def checked_header(path: Path) -> list[str]:
    header = read_header(path)
    if not header:
        raise DataError(path, "empty file")
    check_unique_columns(path, header)
    return header


def require_features(path: Path, header: Sequence[str], features: Sequence[str]) -> None:
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(path, missing_columns_reason(missing, header))


# ----------------------------------------------------------------------------------------------------------
# Frame checks, vectorised over many rows


@dataclass
class FrameBlock:
    """Rows of one input read into arrays: features (N, F) float32, the hygiene mask, each row's first bad cell."""

    features: np.ndarray  # (N, F) float32
    keep: np.ndarray  # (N,) bool: face found and confident enough
    drop_reason: np.ndarray  # (N,) int8: 0 kept, 1 no face, 2 low confidence
    bad: np.ndarray  # (N,) int: -1, or the index into `columns` of the first impossible value on the row
    columns: list[str]  # the columns `bad` indexes: features, then meta columns


DROP_REASONS = ("", "no face found (success == 0)", "confidence < {:g}")


def frame_block(table: pa.Table, features: Sequence[str], min_confidence: float) -> FrameBlock:
    """Features as float32, the hygiene of every row, and the first impossible value of each kept row.

    Impossible: empty or NaN cells, values that overflow float32, values outside FEATURE_RANGES (with
    RANGE_TOLERANCE); in `success` or `confidence`, empty cells or values outside 0..1."""
    n = table.num_rows
    values = column_array(table, features)  # (N, F) float64
    low = np.array([FEATURE_RANGES[c][0] - RANGE_TOLERANCE for c in features])
    high = np.array([FEATURE_RANGES[c][1] + RANGE_TOLERANCE for c in features])
    with np.errstate(invalid="ignore"):
        possible = (values >= low) & (values <= high)  # (N, F): False for NaN and infinities too
    meta = [c for c in ("success", "confidence") if c in table.column_names]
    meta_values = column_array(table, meta) if meta else np.zeros((n, 0))
    with np.errstate(invalid="ignore"):
        meta_ok = (meta_values >= 0) & (meta_values <= 1)
    reason = np.zeros(n, np.int8)
    if "success" in meta:
        reason[meta_values[:, meta.index("success")] == 0] = 1
    if "confidence" in meta:
        with np.errstate(invalid="ignore"):
            reason[(reason == 0) & (meta_values[:, meta.index("confidence")] < min_confidence)] = 2
    keep = reason == 0
    bad = np.full(n, -1)
    if not (possible.all() and meta_ok.all()):  # only then find each row's first impossible cell
        cells = np.concatenate([~possible & keep[:, None], ~meta_ok], axis=1)
        bad = np.where(cells.any(axis=1), cells.argmax(axis=1), -1)
    with np.errstate(over="ignore"):
        frames = values.astype(np.float32)  # (N, F); an overflowing value becomes inf
    return FrameBlock(frames, keep, reason, bad, list(features) + meta)


def impossible_value_reason(block: FrameBlock, row: int, where: str) -> str:
    """Why the first impossible value of `row` cannot be used; `where` names the row ('line 12')."""
    column = block.columns[block.bad[row]]
    if column in FEATURE_RANGES:
        value = float(block.features[row, block.columns.index(column)])
        low, high = FEATURE_RANGES[column]
        if not np.isfinite(value):
            what = "is empty or NaN" if np.isnan(value) else "overflows 32-bit floats"
            return f"{where}, column {column}: value {what}; fix or remove the frame"
        return (f"{where}, column {column}: value {value:g} is outside the possible range {low:g}..{high:.4g}; "
                "is this an OpenFace output?")
    return f"{where}, column {column}: must be a number from 0 to 1"


def drop_counts(reason: np.ndarray, min_confidence: float) -> Counter:
    counts = np.bincount(reason, minlength=len(DROP_REASONS))
    return Counter({DROP_REASONS[k].format(min_confidence): int(counts[k]) for k in (1, 2) if counts[k]})


# ----------------------------------------------------------------------------------------------------------
# Layout B: raw OpenFace CSVs


OPENFACE_OUTPUT_COLUMNS: tuple[str, ...] = OPENFACE_META_COLUMNS + FEATURE_COLUMNS  # kept for --frames-output


def read_openface_csv(item: InputFile, features: Sequence[str], reading: ReadOptions = ReadOptions(),
                      keep_rows: bool = False) -> list[Clip]:
    """One raw OpenFace CSV as clips: one, or one per face of a multi-face file (KEY#faceN, by face id) unless
    reading.face_id picks one. Raises DataError for input that cannot be used."""
    path, face_id = item.path, reading.face_id
    header = checked_header(path)
    require_features(path, header, features)
    wanted = [c for c in OPENFACE_OUTPUT_COLUMNS if c in header]
    table = read_columns(path, wanted, {c: pa.float64() for c in wanted}, header)
    if table.num_rows == 0:
        raise DataError(path, "no frames (header only)")
    lines = np.arange(table.num_rows) + 2
    faces = table.column("face_id").to_numpy(zero_copy_only=False) if "face_id" in table.column_names else None
    present = sorted({int(v) for v in faces if np.isfinite(v)}) if faces is not None else [0]
    if face_id is not None and faces is not None and face_id not in present:
        raise DataError(path, f"no rows with face_id {face_id} (faces present: {present}); use --face-id")
    chosen = [face_id] if face_id is not None else present
    block = frame_block(table, features, reading.min_confidence)
    rows_of = {f: (faces == f) if faces is not None else np.ones(table.num_rows, bool) for f in chosen}
    bad = np.flatnonzero((block.bad >= 0) & np.logical_or.reduce(list(rows_of.values())))
    if len(bad):
        raise DataError(path, impossible_value_reason(block, int(bad[0]), f"line {lines[bad[0]]}"))
    frame_numbers = table.column("frame").to_numpy(zero_copy_only=False) if "frame" in table.column_names else None
    video_frames = len(np.unique(frame_numbers)) if frame_numbers is not None else table.num_rows
    key = clip_key(item.name)
    each_face = face_id is None and len(present) > 1  # every face its own clip KEY#faceN
    clips = []
    for face in chosen:
        rows = rows_of[face]
        drops = drop_counts(block.drop_reason[rows], reading.min_confidence)
        status, reason = usable_status(int(block.keep[rows].sum()), int(rows.sum()), reading.min_frames, drops)
        if len(present) > 1:
            share = int((block.drop_reason[rows] != 1).sum()) / max(video_frames, 1)
            if status is Status.OK and share < reading.min_face_share:
                status, reason = Status.TOO_SHORT, (f"face {face} found in {share:.0%} of the video's {video_frames} "
                                                    f"frames, less than --min-face-share {reading.min_face_share:g}")
        clips.append(Clip(clip_id=f"{key}{FACE_SEPARATOR}{face}" if each_face else key, file=item.name,
                          group=source_group(key), frames=block.features[rows & block.keep], status=status,
                          reason=reason, face=face if each_face else None, drops=drops,
                          rows=table.filter(pa.array(rows)) if keep_rows else None))
    return clips


# ----------------------------------------------------------------------------------------------------------
# Layout A: combined frame tables


def clip_column(header: Sequence[str]) -> str:
    return next(c for c in CLIP_COLUMNS if c in header)


def clip_runs(ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Start row and length of each clip: a clip is a run of consecutive rows with one clip id."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    changes = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, changes])
    return starts, np.diff(np.r_[starts, n])


def first_repeated_run(run_ids: Sequence[str], seen: set[str]) -> int | None:
    """The index of the first run whose clip id already had a run (here or in `seen`), or None."""
    if len(set(run_ids)) == len(run_ids) and seen.isdisjoint(run_ids):
        return None
    earlier = set(seen)
    for k, value in enumerate(run_ids):
        if value in earlier:
            return k
        earlier.add(value)
    return None


def first_in_each(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For sorted row numbers `rows`, the first one in each [start, end) range, or -1 where there is none."""
    at = np.searchsorted(rows, starts)
    found = np.full(len(starts), -1, np.int64)
    inside = at < len(rows)
    found[inside] = rows[at[inside]]
    found[found >= ends] = -1
    return found


@dataclass
class TablePlan:
    """What to read from a combined table and how to type it."""

    header: list[str]
    id_column: str
    features: list[str]
    traits: dict[str, str]  # canonical trait -> column; empty when unlabelled or labels are not wanted
    types: dict[str, pa.DataType]
    columns: list[str]
    numeric: list[str]
    position: str  # how a row is named in messages: 'line' (CSV, counting the header) or 'row' (Parquet)
    first: int  # the position of the first data row


def plan_table(path: Path, features: Sequence[str], labels: bool, keep_rows: bool,
               id_column: str | None = None) -> TablePlan:
    header = checked_header(path)
    require_features(path, header, features)
    if id_column is not None and id_column not in header:
        raise DataError(path, f"no column {id_column!r} to group frames into clips")
    if id_column is None and not any(c in header for c in CLIP_COLUMNS):
        raise DataError(path, f"no clip column ({' or '.join(CLIP_COLUMNS)}) to group frames into clips")
    id_column = id_column or clip_column(header)
    traits = trait_columns_in(header) if labels else {}
    if traits and len(traits) != len(TRAITS):
        raise DataError(path, f"has trait columns {', '.join(traits.values())} but lacks "
                              f"{', '.join(t for t in TRAITS if t not in traits)}")
    numeric = [c for c in ("success", "confidence") if c in header] + list(features) + list(traits.values())
    text = [id_column] + [c for c in ("File", "source_id", "augmentation") if c in header]
    types = {**{c: pa.float64() for c in numeric}, **{c: pa.string() for c in text}}
    if keep_rows:  # every other column travels to --frames-output as it was written (trait columns are replaced)
        for name in header:
            if name not in types and canonical_trait(name) not in TRAITS:
                types[name] = pa.string()
    columns = [c for c in header if c in types]
    parquet = is_parquet(path)
    return TablePlan(header, id_column, list(features), traits, types, columns, numeric,
                     "row" if parquet else "line", 1 if parquet else 2)


class _Progress:
    """How far a table has been turned into clips, so a second, lenient pass can continue where the first stopped."""

    def __init__(self) -> None:
        self.rows_done = 0
        self.seen: set[str] = set()


def iter_frame_table(path: Path, features: Sequence[str], reading: ReadOptions = ReadOptions(),
                     keep_rows: bool = False, labels: bool = True, strict: bool = True,
                     id_column: str | None = None) -> Iterator[Clip]:
    """Clips of a combined frame table, streamed in blocks; the rows of one clip id must be contiguous.

    strict: a clip with an impossible or non-numeric value or a bad label raises DataError; otherwise that clip
    is yielded as unreadable and the others are read. Labels are read only with `labels`, so a bad trait column
    cannot stop a run that does not use it. id_column: the clip column (default ID, else clip_id)."""
    plan = plan_table(path, features, labels, keep_rows, id_column)
    progress = _Progress()
    try:
        yield from _stream_table(path, plan, reading, keep_rows, strict, progress, lenient=False)
    except CellError:
        if strict:
            raise
        yield from _stream_table(path, plan, reading, keep_rows, strict, progress, lenient=True)


def _stream_table(path: Path, plan: TablePlan, reading: ReadOptions, keep_rows: bool, strict: bool,
                  progress: _Progress, lenient: bool) -> Iterator[Clip]:
    """Clips of the table from row `progress.rows_done` on. Lenient: numbers are parsed here, not by Arrow, so a
    cell that is not a number marks its clip unreadable instead of stopping the read."""
    types = {c: (pa.string() if lenient and c in plan.numeric else t) for c, t in plan.types.items()}
    pending: pa.Table | None = None
    row = 0
    for batch in iter_column_batches(path, plan.columns, types, plan.header):
        skip = min(batch.num_rows, max(0, progress.rows_done - row))
        batch_rows = np.arange(row + skip, row + batch.num_rows, dtype=np.int64)
        row += batch.num_rows
        batch = batch.slice(skip)
        text_errors: dict[int, str] = {}
        if lenient:
            batch, text_errors = _parse_numbers(batch, plan, batch_rows)
        batch = batch.append_column("_row", pa.array(batch_rows))
        if text_errors:
            batch = batch.append_column("_text_error", pa.array([text_errors.get(int(r)) for r in batch_rows],
                                                                pa.string()))
        elif lenient:
            batch = batch.append_column("_text_error", pa.nulls(batch.num_rows, pa.string()))
        if pending is not None:
            batch = pa.concat_tables([pending, batch])
        if batch.num_rows == 0:
            continue
        starts, _ = clip_runs(batch.column(plan.id_column))
        pending = batch.slice(int(starts[-1]))
        yield from _table_clips(path, batch.slice(0, int(starts[-1])), plan, reading, keep_rows, strict, progress)
    if pending is None or pending.num_rows == 0:
        if progress.rows_done == 0:
            raise DataError(path, "no frames (header only)")
        return
    yield from _table_clips(path, pending, plan, reading, keep_rows, strict, progress)


def _parse_numbers(batch: pa.Table, plan: TablePlan, rows: np.ndarray) -> tuple[pa.Table, dict[int, str]]:
    """Numeric columns read as text, converted here; returns the table and row -> 'not a number' reason."""
    errors: dict[int, str] = {}
    for name in plan.numeric:
        j = batch.column_names.index(name)
        text = np.asarray(batch.column(j).to_pylist(), dtype=object)
        values = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(np.float64)
        blank = pd.Series(text).fillna("").str.strip().str.lower().isin(["", "nan"]).to_numpy()
        for k in np.flatnonzero(np.isnan(values) & ~blank):
            row = int(rows[k])
            errors.setdefault(row, f"{plan.position} {row + plan.first}, column {name}: {str(text[k]).strip()!r} is "
                                   "not a number")
        batch = batch.set_column(j, name, pa.array(values, pa.float64()))
    return batch, errors


def _table_clips(path: Path, table: pa.Table, plan: TablePlan, reading: ReadOptions, keep_rows: bool, strict: bool,
                 progress: _Progress) -> Iterator[Clip]:
    """The clips of complete runs in `table`: checked in bulk, then built one by one."""
    if table.num_rows == 0:
        return
    ids = table.column(plan.id_column).combine_chunks()
    starts, lengths = clip_runs(ids)
    ends = starts + lengths
    rows = table.column("_row").to_numpy()
    where = [f"{plan.position} {r + plan.first}" for r in rows[starts]]  # only the first row of each clip
    run_ids = pc.take(ids, pa.array(starts)).to_pylist()
    repeated = first_repeated_run(run_ids, progress.seen)
    if repeated is not None:
        raise DataError(path, f"{where[repeated]}: rows of clip {plan.id_column} {run_ids[repeated]} are not "
                              "contiguous; sort the table by clip")
    block = frame_block(table, plan.features, reading.min_confidence)
    first_bad = first_in_each(np.flatnonzero(block.bad >= 0), starts, ends)
    text_errors = table.column("_text_error").to_pylist() if "_text_error" in table.column_names else None
    first_text = first_in_each(np.flatnonzero([e is not None for e in text_errors]), starts, ends) \
        if text_errors is not None else np.full(len(starts), -1)
    labels = column_array(table, [plan.traits[t] for t in TRAITS]) if plan.traits else None
    label_problem = _label_problems(labels, plan, run_ids, starts, lengths, rows) if labels is not None else {}
    files = _first_values(table, "File", starts)
    sources = _first_values(table, "source_id", starts)
    kinds = _first_values(table, "augmentation", starts)
    kept_before = np.r_[0, np.cumsum(block.keep)]
    kept_frames = block.features[block.keep]  # (kept rows, F)
    for k, (start, end) in enumerate(zip(starts, ends)):
        clip_id, file = run_ids[k], files[k] if files is not None else ""
        clip_rows = table.slice(start, end - start).drop_columns(
            [c for c in ("_row", "_text_error") if c in table.column_names]) if keep_rows else None
        reason = None
        if first_text[k] >= 0:
            reason = text_errors[first_text[k]]
        elif first_bad[k] >= 0:
            bad = int(first_bad[k])
            reason = impossible_value_reason(block, bad, f"{plan.position} {rows[bad] + plan.first}")
        elif k in label_problem:
            reason = label_problem[k]
        progress.rows_done = int(rows[end - 1]) + 1
        progress.seen.add(clip_id)
        if reason is not None:
            if strict:
                raise DataError(path, reason)
            yield unreadable_clip(clip_id, file, len(plan.features), reason, clip_rows)
            continue
        frames = kept_frames[kept_before[start]: kept_before[end]]
        label = labels[start].astype(np.float32) if labels is not None and np.isfinite(labels[start]).all() else None
        key = clip_key(file) if file else clip_id
        drops = drop_counts(block.drop_reason[start:end], reading.min_confidence)
        status, why = usable_status(len(frames), int(end - start), reading.min_frames, drops)
        yield Clip(clip_id=clip_id, file=file, group=source_group(key), frames=frames, label=label,
                   status=status, reason=why, drops=drops,
                   augmentation=kinds[k] if kinds is not None else "original",
                   source_id=sources[k] if sources is not None else None, rows=clip_rows)


def _first_values(table: pa.Table, column: str, starts: np.ndarray) -> list[str] | None:
    if column not in table.column_names:
        return None
    return pc.take(table.column(column), pa.array(starts)).to_pylist()


def _label_problems(values: np.ndarray, plan: TablePlan, run_ids: Sequence[str], starts: np.ndarray,
                    lengths: np.ndarray, rows: np.ndarray) -> dict[int, str]:
    """Clip index -> the first problem with its trait values (N, 5): outside [0, 1], partly empty, or not
    constant within the clip. A clip whose trait cells are all empty is unlabelled, which is no problem here."""
    columns = [plan.traits[t] for t in TRAITS]
    empty = np.isnan(values)
    with np.errstate(invalid="ignore"):
        outside = ~empty & ((values < 0) | (values > 1) | ~np.isfinite(values))
    first = np.repeat(values[starts], lengths, axis=0)  # (N, 5): each row's clip's first row
    same = (values == first) | (empty & np.isnan(first))
    partly_empty = empty.any(axis=1) & ~empty.all(axis=1)
    owner = np.repeat(np.arange(len(starts)), lengths)
    problems: dict[int, str] = {}
    for row in np.flatnonzero(outside.any(axis=1) | ~same.all(axis=1) | partly_empty):
        clip = int(owner[row])
        if clip in problems:
            continue
        where = f"{plan.position} {rows[row] + plan.first}"
        if outside[row].any():
            col = int(np.argmax(outside[row]))
            problems[clip] = f"{where}, column {columns[col]}: trait value {values[row, col]:g} is outside [0, 1]"
        elif partly_empty[row]:
            col = int(np.argmax(empty[row]))
            problems[clip] = f"{where}, column {columns[col]}: trait value is empty while others are not"
        else:
            problems[clip] = (f"clip {plan.id_column} {run_ids[clip]} has two different labels ({plan.position}s "
                              f"{rows[starts[clip]] + plan.first} and {rows[row] + plan.first}); a clip's trait "
                              "values must be constant")
    return problems


def count_table_clips(path: Path) -> int:
    """The number of clips in a combined table, reading only its clip column."""
    header = checked_header(path)
    id_column = clip_column(header)
    total, previous = 0, None
    for batch in iter_column_batches(path, [id_column], {id_column: pa.string()}, header):
        ids = batch.column(id_column).combine_chunks()
        if len(ids) == 0:
            continue
        starts, _ = clip_runs(ids)
        total += len(starts) - (1 if ids[0].as_py() == previous else 0)
        previous = ids[len(ids) - 1].as_py()
    if total == 0:
        raise DataError(path, "no frames (header only)")
    return total


# ----------------------------------------------------------------------------------------------------------
# All layouts


def iter_clips(inputs: Sequence[InputFile], features: Sequence[str], reading: ReadOptions = ReadOptions(), *,
               keep_rows: bool = False, strict: bool = True, labels: bool = True) -> Iterator[Clip]:
    """Clips from combined tables and/or raw OpenFace CSVs, in input order.

    strict: raise DataError on an unusable file or clip; otherwise yield a clip with status unreadable."""
    for item in inputs:
        if item.failure:
            if strict:
                raise DataError(item.path, item.failure)
            yield unreadable_clip(clip_key(item.name), item.name, len(features), item.failure)
            continue
        if item.is_table:
            yield from iter_frame_table(item.path, features, reading, keep_rows, labels, strict)
            continue
        try:
            yield from read_openface_csv(item, features, reading, keep_rows)
        except (DataError, OSError) as err:
            reason = err.reason if isinstance(err, DataError) else vanished_reason(err)
            if strict:
                raise DataError(item.path, reason) from None
            yield unreadable_clip(clip_key(item.name), item.name, len(features), reason)


def vanished_reason(err: OSError) -> str:
    """Why a file that was there when the run started could not be read."""
    if isinstance(err, FileNotFoundError):
        return "file disappeared during the run"
    return f"cannot be read: {err.strerror or err}"


def read_clips(inputs: Sequence[str | Path], features: Sequence[str], reading: ReadOptions = ReadOptions(),
               **options) -> tuple[list[Clip], ReadSummary]:
    """All usable clips and the summary of what was read and skipped (strict about unreadable files)."""
    files = input_files(inputs)
    summary = ReadSummary(files=len(files))
    clips = []
    for clip in iter_clips(files, features, reading, **options):
        summary.add(clip)
        if clip.status is Status.OK:
            clips.append(clip)
    if not clips:
        raise DataError(", ".join(map(str, inputs)), "no usable clips\n" + summary.render())
    duplicate = _first_duplicate(c.clip_id for c in clips)
    if duplicate is not None:
        raise DataError(", ".join(map(str, inputs)), f"clip id {duplicate!r} appears twice; rename one file")
    return clips, summary


def _first_duplicate(items: Iterable[str]) -> str | None:
    seen = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


# ----------------------------------------------------------------------------------------------------------
# Layout C: labels


class _AnnotationUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, strings and numbers; numpy scalars are the sole allowed globals."""

    ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_annotation_pickle(path: Path) -> pd.DataFrame:
    """A ChaLearn First Impressions annotation pickle as a table: index clip key, columns TRAITS."""
    try:
        with open(path, "rb") as handle:
            data = _AnnotationUnpickler(handle, encoding="latin1").load()
    except Exception as err:  # a hostile or broken pickle can raise nearly anything; none of it is code we run
        raise DataError(path, f"unreadable annotation pickle: {first_line(err)}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DataError(path, "annotation pickle is not a dict of trait -> {clip -> score}")
    by_trait = {canonical_trait(str(k)): v for k, v in data.items()}
    missing = [t for t in TRAITS if t not in by_trait]
    if missing:
        raise DataError(path, f"annotation pickle lacks traits {', '.join(missing)}")
    columns = {}
    for trait in TRAITS:
        scores = {}
        for clip, value in by_trait[trait].items():
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
                raise DataError(path, f"trait {trait}, clip {clip!r}: score {value!r} is not a number")
            scores[str(clip)] = float(value)
        columns[trait] = pd.Series(scores, dtype=np.float64)
    return pd.DataFrame(columns)


def read_label_csv(path: Path) -> pd.DataFrame:
    header = checked_header(path)
    key_col = next((c for c in LABEL_KEY_COLUMNS if c in header), None)
    if key_col is None:
        raise DataError(path, f"no clip key column; name one of {', '.join(LABEL_KEY_COLUMNS)}")
    traits = trait_columns_in(header)
    missing = [t for t in TRAITS if t not in traits]
    if missing:
        raise DataError(path, f"missing trait columns {', '.join(missing)}")
    types = {key_col: pa.string(), **{traits[t]: pa.float64() for t in TRAITS}}
    table = read_columns(path, [key_col] + [traits[t] for t in TRAITS], types, header)
    if table.num_rows == 0:
        raise DataError(path, "no labels (header only)")
    values = column_array(table, [traits[t] for t in TRAITS])
    keys = table.column(key_col).to_pylist()
    check_label_values(path, values, [f"line {i + 2}" for i in range(len(keys))], [traits[t] for t in TRAITS])
    frame = pd.DataFrame(values, columns=list(TRAITS))
    frame.insert(0, "key", keys)
    return frame.drop_duplicates().set_index("key")  # a per-frame label file repeats each clip's row


def check_label_values(path: Path | str, values: np.ndarray, where: Sequence[str], columns: Sequence[str]) -> None:
    """Refuse trait values (rows, 5) that are empty, not finite or outside [0, 1], naming the first."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = values[row, col]
        what = "is empty" if np.isnan(value) else f"{value:g} is outside [0, 1]"
        raise DataError(path, f"{where[row]}, column {columns[col]}: trait value {what}")


def read_labels(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Labels from CSVs and/or annotation pickles, keyed by clip key; a clip with two labels is an error."""
    tables = []
    for item in paths:
        path = Path(item)
        if not path.is_file():
            raise DataError(path, "no such labels file")
        table = read_annotation_pickle(path) if path.suffix.lower() in (".pkl", ".pickle") else read_label_csv(path)
        table.index = [clip_key(k) for k in table.index]
        check_label_values(path, table.to_numpy(dtype=np.float64), [f"key {k}" for k in table.index], TRAITS)
        tables.append((path, table))
    labels = pd.concat([t for _, t in tables]) if tables else pd.DataFrame(columns=list(TRAITS))
    grouped = labels.groupby(level=0)
    conflicting = grouped.nunique().max(axis=1) > 1
    if conflicting.any():
        key = conflicting.index[conflicting.to_numpy()][0]
        where = ", ".join(str(p) for p, t in tables if key in t.index)
        raise DataError(where, f"clip {key!r} has two different labels")
    return grouped.first()


def attach_labels(clips: list[Clip], labels: pd.DataFrame | None, source: str, require: bool = True) -> list[Clip]:
    """Set clip labels from a labels table (overriding labels the clips carry); list clips left without one."""
    if labels is not None:
        matched = [c for c in clips if c.key in labels.index]
        if not matched:
            example = clips[0].key if clips else "?"
            raise DataError(source, f"no label matches any clip (clip keys look like {example!r}, label keys like "
                                    f"{labels.index[0] if len(labels) else '?'!r})")
        values = labels.loc[[c.key for c in matched], list(TRAITS)].to_numpy(dtype=np.float32)
        for clip, value in zip(matched, values):
            clip.label = value
    unlabelled = [c.clip_id for c in clips if c.label is None]
    if require and unlabelled:
        shown = ", ".join(unlabelled[:10]) + (f" and {len(unlabelled) - 10} more" if len(unlabelled) > 10 else "")
        raise DataError(source, f"{len(unlabelled)} clip(s) have no label: {shown}")
    return clips
