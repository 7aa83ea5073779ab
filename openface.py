"""OpenFace 2.x inputs: the feature/trait schema, the readers for the three input layouts, and frame hygiene.

Layouts (see README "Data layouts"):
  A. the paper's combined frame table: one row per frame, `ID`, `File`, features, optional trait columns;
  B. raw OpenFace `FeatureExtraction` CSVs, one clip per file (folders are searched recursively);
  C. labels: a CSV with a clip key column and trait columns, or a ChaLearn annotation pickle.

Every column is selected by its exact name. Readers yield `Clip`s whose `status` says whether they are usable;
nothing is dropped without being counted in `ReadSummary`.
"""
from __future__ import annotations

import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

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
SHORT_NAMES: dict[str, str] = {"gaze_angle_x": "GazeX", "gaze_angle_y": "GazeY", "pose_Rx": "HeadX",
                               "pose_Ry": "HeadY", "pose_Rz": "HeadZ"}


def display_name(column: str) -> str:
    """A readable feature name: 'Lip Corner Puller (AU12)', 'GazeX', 'HeadY'."""
    if column in FACS_NAMES:
        return f"{FACS_NAMES[column]} ({column[:4]})"
    return SHORT_NAMES.get(column, column)

OPENFACE_META_COLUMNS: tuple[str, ...] = ("frame", "face_id", "timestamp", "confidence", "success")
LABEL_KEY_COLUMNS: tuple[str, ...] = ("File", "clip_id", "video_name", "ID")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".csv", ".parquet")
FIRST_IMPRESSIONS_NAME = re.compile(r"^(?P<video>.+)\.\d{3}$")

DEFAULT_MIN_CONFIDENCE = 0.75
DEFAULT_MIN_FRAMES = 41

STATUS_OK = "ok"
STATUS_TOO_SHORT = "too_short"
STATUS_NO_FACE = "no_face"
STATUS_UNREADABLE = "unreadable"


class DataError(ValueError):
    """A problem with the user's input. `str()` is one line naming the file."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(reason if path is None else f"{path}: {reason}")


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


def servable_feature_sets(columns: Iterable[str]) -> list[str]:
    """The feature sets whose every column is among `columns`."""
    present = set(columns)
    return [name for name, cols in FEATURE_SETS.items() if present.issuperset(cols)]


def missing_columns_reason(missing: Sequence[str], present: Iterable[str]) -> str:
    can = servable_feature_sets(present)
    return f"missing {', '.join(missing)}" + (
        f" (this file can serve feature sets: {', '.join(can)})" if can else " (this file can serve no feature set)"
    )


def canonical_trait(name: str) -> str:
    return TRAIT_ALIASES.get(name, name)


def clip_key(name: str) -> str:
    """Join key of a clip: the base name without a video/CSV extension ('x/ab.000.mp4' -> 'ab.000')."""
    base = Path(str(name)).name
    for ext in VIDEO_EXTENSIONS:
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def source_group(key: str) -> str:
    """The source video of a clip: 'VIDEOID' for First Impressions names 'VIDEOID.NNN', else the clip key."""
    match = FIRST_IMPRESSIONS_NAME.match(key)
    return match.group("video") if match else key


# ----------------------------------------------------------------------------------------------------------
# Clips


@dataclass
class Clip:
    """One clip: its usable frames (T, F) float32 and, when known, its label (5,) in TRAITS order."""

    clip_id: str
    file: str
    group: str
    frames: np.ndarray  # (T, F) float32
    label: np.ndarray | None = None  # (5,) float32
    status: str = STATUS_OK
    drops: Counter = field(default_factory=Counter)  # reason -> frames removed by hygiene
    augmentation: str = "original"
    source_id: str | None = None
    rows: pd.DataFrame | None = None  # the input rows of this clip, only when asked for

    @property
    def key(self) -> str:
        """The key labels are joined on."""
        return clip_key(self.file) if self.file else self.clip_id

    @property
    def n_dropped(self) -> int:
        """Frames removed by hygiene (rows of other faces are not counted)."""
        return int(sum(self.drops.values()))

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class ReadSummary:
    """Counts of everything a read kept or dropped, for the one-screen report."""

    files: int = 0
    clips: Counter = field(default_factory=Counter)  # status -> clips
    frames_kept: int = 0
    frames_dropped: Counter = field(default_factory=Counter)  # reason -> frames
    examples: dict = field(default_factory=dict)  # status -> first few clip ids

    def add(self, clip: Clip) -> None:
        status = clip.status.split(":")[0]
        self.clips[status] += 1
        self.examples.setdefault(status, [])
        if len(self.examples[status]) < 3:
            self.examples[status].append(clip.clip_id)
        if clip.status == STATUS_OK:
            self.frames_kept += clip.n_frames
        self.frames_dropped.update(clip.drops)

    def render(self) -> str:
        total = sum(self.clips.values())
        lines = [f"read {total} clips from {self.files} file(s): {self.clips.get(STATUS_OK, 0)} usable, "
                 f"{self.frames_kept} frames kept"]
        for status, n in sorted(self.clips.items()):
            if status != STATUS_OK:
                lines.append(f"  skipped {n} clip(s) [{status}], e.g. {', '.join(self.examples[status])}")
        for reason, n in sorted(self.frames_dropped.items()):
            lines.append(f"  dropped {n} frame(s): {reason}")
        return "\n".join(lines)


def frame_hygiene(frame_table: pd.DataFrame, min_confidence: float) -> tuple[np.ndarray, Counter]:
    """Mask of usable rows (face found, confidence high enough) and per-reason drop counts."""
    keep = np.ones(len(frame_table), dtype=bool)
    drops: Counter = Counter()
    if "success" in frame_table:
        failed = frame_table["success"].to_numpy() == 0
        drops["no face found (success == 0)"] += int(failed.sum())
        keep &= ~failed
    if "confidence" in frame_table:
        low = keep & (frame_table["confidence"].to_numpy() < min_confidence)
        drops[f"confidence < {min_confidence:g}"] += int(low.sum())
        keep &= ~low
    return keep, +drops


def clip_status(n_usable: int, n_rows: int, min_frames: int) -> str:
    if n_usable >= min_frames:
        return STATUS_OK
    return STATUS_NO_FACE if n_usable == 0 and n_rows > 0 else STATUS_TOO_SHORT


def check_finite(path: Path | str, table: pd.DataFrame, columns: Sequence[str], line_of_row: np.ndarray) -> None:
    """Raise naming the first row/column holding NaN or inf among `columns`."""
    values = table[list(columns)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(path, f"line {line_of_row[row]}, column {columns[col]}: value is {values[row, col]} "
                              "(NaN or inf); fix or remove the frame")


def coerce_numeric(path: Path | str, table: pd.DataFrame, columns: Sequence[str], line_of_row: np.ndarray) -> None:
    """Convert `columns` to float in place; raise naming the first non-numeric cell."""
    for col in columns:
        if pd.api.types.is_numeric_dtype(table[col]):
            continue
        converted = pd.to_numeric(table[col], errors="coerce")
        bad = converted.isna().to_numpy() & table[col].notna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(path, f"line {line_of_row[row]}, column {col}: {table[col].iloc[row]!r} is not a number")
        table[col] = converted


# ----------------------------------------------------------------------------------------------------------
# Layout B: raw OpenFace CSVs


def read_header(path: Path) -> list[str]:
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    return [name.strip() for name in first.strip().split(",")] if first.strip() else []


def spaced_csv(path: Path) -> bool:
    """True when the CSV separates with ", " (OpenFace's Windows builds); parsing then skips the spaces,
    which costs time, so files written with plain "," are read without that step."""
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        return ", " in handle.readline()


def header_with(path: Path, features: Sequence[str]) -> list[str]:
    """The header of a CSV that holds every feature column; raises naming the missing ones."""
    header = read_header(path)
    if not header:
        raise DataError(path, "empty file")
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(path, missing_columns_reason(missing, header))
    return header


def is_frame_table(path: Path) -> bool:
    """True when a CSV is in the paper's combined layout (has an `ID` column) rather than raw OpenFace."""
    return "ID" in read_header(path)


def openface_files(inputs: Sequence[str | Path]) -> list[Path]:
    """All CSV files named directly or found recursively in folders, in a stable order."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".csv"))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(path, "no such file or folder")
    return files


def read_openface_csv(path: Path, features: Sequence[str], face_id: int | None = 0,
                      min_confidence: float = DEFAULT_MIN_CONFIDENCE, min_frames: int = DEFAULT_MIN_FRAMES,
                      keep_rows: bool = False) -> Clip:
    """One raw OpenFace CSV as one clip. Raises DataError for input that cannot be used."""
    header = header_with(path, features)
    wanted = [c for c in OPENFACE_META_COLUMNS if c in header] + [c for c in FEATURE_COLUMNS if c in header]
    try:
        table = pd.read_csv(path, usecols=wanted, skipinitialspace=spaced_csv(path), header=0, names=None,
                            engine="c", low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(path, f"cannot parse CSV: {str(err).splitlines()[0]}") from None
    table.columns = [c.strip() for c in table.columns]
    if len(table) == 0:
        raise DataError(path, "no frames (header only)")
    line_of_row = np.arange(len(table)) + 2
    coerce_numeric(path, table, [c for c in wanted if c in table], line_of_row)
    drops: Counter = Counter()
    if face_id is not None and "face_id" in table:
        this_face = table["face_id"].to_numpy() == face_id
        if not this_face.any():
            faces = sorted(set(int(v) for v in table["face_id"].unique()))
            raise DataError(path, f"no rows with face_id {face_id} (faces present: {faces}); use --face-id")
        table, line_of_row = table[this_face].reset_index(drop=True), line_of_row[this_face]
    keep, drops = frame_hygiene(table, min_confidence)
    check_finite(path, table[keep], list(features), line_of_row[keep])
    frames = table.loc[keep, list(features)].to_numpy(dtype=np.float32)
    key = clip_key(path.name)
    return Clip(clip_id=key, file=str(path), group=source_group(key), frames=frames,
                status=clip_status(len(frames), len(table), min_frames),
                drops=drops, rows=table if keep_rows else None)


# ----------------------------------------------------------------------------------------------------------
# Layout A: the paper's combined frame table


def trait_columns_in(header: Iterable[str]) -> dict[str, str]:
    """Map of canonical trait name -> column name for the trait columns present."""
    found = {}
    for col in header:
        trait = canonical_trait(col)
        if trait in TRAITS:
            found[trait] = col
    return found


def iter_frame_table(path: Path, features: Sequence[str], min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                     min_frames: int = DEFAULT_MIN_FRAMES, keep_rows: bool = False,
                     chunk_rows: int = 200_000) -> Iterator[Clip]:
    """Clips of a combined frame table, streamed in chunks; the rows of one `ID` must be contiguous."""
    header = header_with(path, features)
    traits = trait_columns_in(header)
    has_labels = len(traits) == len(TRAITS)
    if traits and not has_labels:
        raise DataError(path, f"has trait columns {', '.join(traits.values())} but lacks "
                              f"{', '.join(t for t in TRAITS if t not in traits)}")
    numeric = ["ID"] + [c for c in ("success", "confidence") if c in header] + list(features)
    numeric += [traits[t] for t in TRAITS] if has_labels else []
    usecols = None if keep_rows else list(dict.fromkeys(numeric + [c for c in ("File",) if c in header]))
    seen: set = set()
    pending: pd.DataFrame | None = None
    first_line = 2
    try:
        reader = pd.read_csv(path, usecols=usecols, skipinitialspace=spaced_csv(path), chunksize=chunk_rows,
                             low_memory=False)
        for chunk in reader:
            chunk.columns = [c.strip() for c in chunk.columns]
            chunk["_line"] = np.arange(len(chunk)) + first_line
            first_line += len(chunk)
            coerce_numeric(path, chunk, numeric, chunk["_line"].to_numpy())
            if pending is not None:
                chunk = pd.concat([pending, chunk], ignore_index=True)
            ids = chunk["ID"].to_numpy()
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            last_start = starts[-1]
            pending = chunk.iloc[last_start:]
            for start, stop in zip(starts[:-1], starts[1:]):
                yield _frame_table_clip(path, chunk.iloc[start:stop], features, traits if has_labels else None,
                                        min_confidence, min_frames, keep_rows, seen)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot parse CSV: {str(err).splitlines()[0]}") from None
    if pending is None or len(pending) == 0:
        raise DataError(path, "no frames (header only)")
    yield _frame_table_clip(path, pending, features, traits if has_labels else None, min_confidence,
                            min_frames, keep_rows, seen)


def _frame_table_clip(path: Path, rows: pd.DataFrame, features: Sequence[str], traits: dict[str, str] | None,
                      min_confidence: float, min_frames: int, keep_rows: bool, seen: set) -> Clip:
    raw_id = rows["ID"].iloc[0]
    clip_id = str(int(raw_id)) if float(raw_id).is_integer() else str(raw_id)
    lines = rows["_line"].to_numpy()
    if clip_id in seen:
        raise DataError(path, f"line {lines[0]}: rows of clip ID {clip_id} are not contiguous; sort the table by ID")
    seen.add(clip_id)
    label = None
    if traits is not None:
        values = rows[[traits[t] for t in TRAITS]].to_numpy(dtype=np.float64)
        label = check_label_values(path, values, lines, [traits[t] for t in TRAITS])
        differs = np.flatnonzero(np.any(values != values[0], axis=1))
        if differs.size:
            raise DataError(path, f"clip ID {clip_id} has two different labels (lines {lines[0]} and "
                                  f"{lines[differs[0]]}); a clip's trait values must be constant")
    keep, drops = frame_hygiene(rows, min_confidence)
    check_finite(path, rows[keep], list(features), lines[keep])
    frames = rows.loc[keep, list(features)].to_numpy(dtype=np.float32)
    file = str(rows["File"].iloc[0]) if "File" in rows else ""
    key = clip_key(file) if file else clip_id
    source_id = None
    if "source_id" in rows:
        source_id = str(rows["source_id"].iloc[0])
    return Clip(clip_id=clip_id, file=file, group=source_group(key), frames=frames, label=label,
                status=clip_status(len(frames), len(rows), min_frames),
                drops=drops, augmentation=str(rows["augmentation"].iloc[0]) if "augmentation" in rows else "original",
                source_id=source_id, rows=rows.drop(columns="_line") if keep_rows else None)


def check_label_values(path: Path | str, values: np.ndarray, lines: Sequence, columns: Sequence[str]) -> np.ndarray:
    """Validate trait values (rows, 5) are finite and in [0, 1]; return the first row as float32."""
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(path, f"line {lines[row]}, column {columns[col]}: trait value {values[row, col]} "
                              "is outside [0, 1]")
    return values[0].astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# All layouts


def iter_clips(inputs: Sequence[str | Path], features: Sequence[str], *, face_id: int | None = 0,
               min_confidence: float = DEFAULT_MIN_CONFIDENCE, min_frames: int = DEFAULT_MIN_FRAMES,
               keep_rows: bool = False, strict: bool = True) -> Iterator[Clip]:
    """Clips from combined tables and/or raw OpenFace CSVs (files or folders), in a stable order.

    strict: raise DataError on an unusable file; otherwise yield a clip with status 'unreadable: <reason>'.
    """
    for path in openface_files(inputs):
        if is_frame_table(path):
            yield from iter_frame_table(path, features, min_confidence, min_frames, keep_rows)
            continue
        try:
            yield read_openface_csv(path, features, face_id, min_confidence, min_frames, keep_rows)
        except DataError as err:
            if strict:
                raise
            key = clip_key(path.name)
            yield Clip(clip_id=key, file=str(path), group=source_group(key),
                       frames=np.zeros((0, len(features)), np.float32), status=f"{STATUS_UNREADABLE}: {err.reason}")


def read_clips(inputs: Sequence[str | Path], features: Sequence[str], **options) -> tuple[list[Clip], ReadSummary]:
    """All usable clips and the summary of what was read and skipped (strict about unreadable files)."""
    files = openface_files(inputs)
    summary = ReadSummary(files=len(files))
    clips = []
    for clip in iter_clips(files, features, **options):
        summary.add(clip)
        if clip.status == STATUS_OK:
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
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as err:
        raise DataError(path, f"unreadable annotation pickle: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DataError(path, "annotation pickle is not a dict of trait -> {clip -> score}")
    by_trait = {canonical_trait(str(k)): v for k, v in data.items()}
    missing = [t for t in TRAITS if t not in by_trait]
    if missing:
        raise DataError(path, f"annotation pickle lacks traits {', '.join(missing)}")
    table = pd.DataFrame({t: pd.Series({str(k): float(v) for k, v in by_trait[t].items()}) for t in TRAITS})
    return table


def read_label_csv(path: Path) -> pd.DataFrame:
    header = read_header(path)
    key_col = next((c for c in LABEL_KEY_COLUMNS if c in header), None)
    if key_col is None:
        raise DataError(path, f"no clip key column; name one of {', '.join(LABEL_KEY_COLUMNS)}")
    traits = trait_columns_in(header)
    missing = [t for t in TRAITS if t not in traits]
    if missing:
        raise DataError(path, f"missing trait columns {', '.join(missing)}")
    table = pd.read_csv(path, usecols=[key_col] + list(traits.values()), skipinitialspace=spaced_csv(path),
                        dtype={key_col: str})
    lines = np.arange(len(table)) + 2
    coerce_numeric(path, table, list(traits.values()), lines)
    table = table.rename(columns={v: k for k, v in traits.items()})
    per_frame = table.drop_duplicates()
    return per_frame.set_index(per_frame[key_col].astype(str)).drop(columns=key_col)[list(TRAITS)]


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


