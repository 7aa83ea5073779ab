"""Files in and out: atomic writes, and CSV/Parquet tables through pyarrow (multithreaded C++ parsing and writing).

Every file the scripts write goes through `atomic_output`: it is written under a temporary name unique to the
process and renamed over the target only when complete, so a crash never leaves a complete-looking file.
Tables are CSV, or Parquet when the name ends in .parquet. CSV floats are written in their shortest exact form
(0.123 stays 0.123; float32 values are written as float32), so values round-trip without 17-digit noise.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import re
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from errors import DataError

PARQUET_SUFFIX = ".parquet"
BLOCK_BYTES = 16 << 20  # CSV bytes parsed per block in large files: large blocks keep both cores busy
PARQUET_BATCH_ROWS = 1 << 20  # rows read from Parquet at a time
SMALL_BLOCK_BYTES = 1 << 20  # and in small ones (one OpenFace CSV), where a large block costs more than it gives
NEEDS_QUOTES = re.compile(r'[",\r\n]')
CSV_SLICE_ROWS = 1 << 17  # rows formatted per task when writing CSV on several threads
WORKERS = max(1, os.cpu_count() or 1)  # threads for that formatting
T, R = TypeVar("T"), TypeVar("R")
_NULLS = ("", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "NULL", "null", "#N/A")
NULL_VALUES = list(_NULLS) + [" " + v for v in _NULLS]  # OpenFace's ", " separator leaves a blank before a value


# ----------------------------------------------------------------------------------------------------------
# Work on several threads, results in order


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[R]:
    """fn(item) for every item, in order, on `workers` threads with at most `ahead` items in flight (so memory
    stays bounded). For work that releases the GIL: Arrow's CSV parsing and formatting."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


# ----------------------------------------------------------------------------------------------------------
# Atomic writes


TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.\d+\.[0-9a-f]{8}\.tmp$")


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside `path`, unique to this process and call (torchrun ranks may write at once)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def remove_temporaries(folder: Path, names: Iterable[str]) -> int:
    """Remove what a killed writer left in `folder` for the files `names` (temporaries of temporaries too). Only
    for a caller that holds the lock of those files, so nothing is writing them."""
    wanted = set(names)
    removed = 0
    for entry in folder.iterdir() if folder.is_dir() else ():
        base = standing_for(entry.name)
        if base != entry.name and base in wanted:
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def named_faults(path: Path) -> Iterator[None]:
    """Give an OSError without a file name (Arrow's: 'Error writing bytes to file. Detail: [errno 28] ...') the
    name of the file being written, and its errno the words the system has for it."""
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        code = err.errno or int((re.search(r"\[errno (\d+)\]", str(err)) or [0, errno.EIO])[1])
        raise OSError(code, os.strerror(code), str(path)) from None


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed (an OSError then
    names `path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with named_faults(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def manifest_beside(output: str | Path) -> Path:
    """Where a finished output's manifest lies: OUTPUT.json (attn_deploy.py writes it last)."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def json_safe(value):
    """The value with every NaN or infinite float replaced by None, so json.dumps writes null (valid JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def json_line(value) -> str:
    return json.dumps(json_safe(value), allow_nan=False)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def standing_for(name: str) -> str:
    """The name of the file a temporary name stands for ('.c.parquet.12.0a1b2c3d.tmp' -> 'c.parquet')."""
    while (match := TEMPORARY_NAME.match(name)) is not None:
        name = match["name"]
    return name


def is_parquet(path: str | Path) -> bool:
    """By the name (of the file a temporary stands for)."""
    return Path(standing_for(Path(path).name)).suffix.lower() == PARQUET_SUFFIX


# ----------------------------------------------------------------------------------------------------------
# Writing tables


def to_arrow(table: pa.Table | "pd.DataFrame") -> pa.Table:  # noqa: F821
    return table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False)


def _csv_field(name: str) -> str:
    return f'"{name.replace(chr(34), chr(34) * 2)}"' if NEEDS_QUOTES.search(name) else name


def _needs_quoting(table: pa.Table) -> bool:
    """True when some text value holds a separator, quote or line break (only then are strings quoted)."""
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            if pc.any(pc.match_substring_regex(column, NEEDS_QUOTES.pattern)).as_py():
                return True
    return False


def _csv_text(table: pa.Table, options: pcsv.WriteOptions) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pcsv.write_csv(table, sink, options)
    return sink.getvalue()


class TableWriter:
    """Append Arrow tables of one schema to a CSV or Parquet file, atomically: `close()` publishes the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows = 0
        self._context = atomic_output(self.path)
        self._tmp = self._context.__enter__()
        self._parquet = is_parquet(self.path)
        self._writer: pq.ParquetWriter | None = None
        self._handle = None if self._parquet else open(self._tmp, "wb")
        self._schema: pa.Schema | None = None

    def write(self, table: pa.Table | "pd.DataFrame") -> None:  # noqa: F821
        with named_faults(self.path):
            self._write(to_arrow(table))

    def _write(self, table: pa.Table) -> None:
        if self._schema is None:
            self._schema = table.schema
            if self._parquet:
                self._writer = pq.ParquetWriter(self._tmp, self._schema)
            else:
                self._handle.write((",".join(_csv_field(n) for n in table.column_names) + "\n").encode())
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        if self._parquet:
            self._writer.write_table(table)
        elif table.num_rows:
            options = pcsv.WriteOptions(include_header=False, quoting_style="needed" if _needs_quoting(table) else "none")
            slices = (table.slice(k, CSV_SLICE_ROWS) for k in range(0, table.num_rows, CSV_SLICE_ROWS))
            for text in ordered_map(lambda part: _csv_text(part, options), slices, WORKERS, 2 * WORKERS):
                self._handle.write(text)
        self.rows += table.num_rows

    def close(self) -> int:
        """Publish the file; returns the number of rows written. A failure (a full disk) leaves the target as
        it was and no temporary file."""
        try:
            with named_faults(self.path):
                if self._writer is not None:
                    self._writer.close()
                if self._handle is not None:
                    self._handle.close()
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self._context.__exit__(None, None, None)
        return self.rows

    def abort(self) -> None:
        """Discard what was written; the target is left as it was."""
        for closing in (self._writer, self._handle):
            if closing is not None:
                with contextlib.suppress(OSError, pa.ArrowException):
                    closing.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_table(table: pa.Table | "pd.DataFrame", path: str | Path) -> int:  # noqa: F821
    """Write one table (CSV or Parquet by the name), atomically; returns the rows written."""
    with TableWriter(path) as writer:
        writer.write(table)
    return writer.rows


# ----------------------------------------------------------------------------------------------------------
# Reading tables


KNOWN_BINARY: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed: unpack it first"), (b"PK\x03\x04", "a zip archive: unpack it first"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8"), (b"\xfe\xff", "UTF-16 text: save it as UTF-8"))


def binary_kind(path: Path) -> str | None:
    """Why a file is no CSV text (what kind of file it is, when known), or None for text."""
    with open(path, "rb") as handle:
        start = handle.read(4096)
    for magic, kind in KNOWN_BINARY:
        if start.startswith(magic):
            return kind
    return "it holds binary data" if b"\0" in start else None


def read_header(path: str | Path) -> list[str]:
    """Column names of a CSV (spaces around names removed) or a Parquet file; [] for an empty file."""
    path = Path(path)
    if is_parquet(path):
        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as err:
            raise DataError(path, f"not a readable Parquet file: {first_line(err)}") from None
    kind = binary_kind(path)
    if kind:
        raise DataError(path, f"not a CSV text file ({kind})")
    with open(path, "r", encoding="utf-8-sig", errors="replace", newline="") as handle:  # -sig: Excel's byte-order mark
        first = handle.readline()
    if not first.strip():
        return []
    return [name.strip() for name in next(csv.reader([first]))]


def check_unique_columns(path: str | Path, header: Sequence[str]) -> None:
    """Refuse a header that names a column twice: which of the two is meant cannot be known."""
    repeated = [name for name, n in Counter(header).items() if n > 1 and name]
    if repeated:
        raise DataError(path, f"column {repeated[0]!r} appears {header.count(repeated[0])} times in the header; "
                              "rename or remove the copies")


class CellError(DataError):
    """A cell that is not a number where a number is needed."""


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _csv_options(path: Path, header: Sequence[str], columns: Sequence[str], types: Mapping[str, pa.DataType]):
    block = BLOCK_BYTES if os.path.getsize(path) > BLOCK_BYTES else SMALL_BLOCK_BYTES
    read = pcsv.ReadOptions(column_names=list(header), skip_rows=1, block_size=block, use_threads=True)
    convert = pcsv.ConvertOptions(include_columns=list(columns), column_types=dict(types), null_values=NULL_VALUES,
                                  strings_can_be_null=False, quoted_strings_can_be_null=False)
    return read, convert


def _explain_csv_error(path: Path, header: Sequence[str], columns: Sequence[str],
                       types: Mapping[str, pa.DataType], err: pa.ArrowInvalid) -> DataError:
    """One line naming the line and column of the first cell or row Arrow refused (found on a slow path)."""
    numeric = [c for c in columns if c in types and not pa.types.is_string(types[c])]
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        where = {name: j for j, name in enumerate(header)}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                return DataError(path, f"line {line}: {len(row)} fields where the header has {len(header)}")
            for name in numeric:
                text = row[where[name]].strip()
                if text and not _parses_as_number(text):
                    return CellError(path, f"line {line}, column {name}: {text!r} is not a number")
    return DataError(path, f"cannot parse CSV: {first_line(err)}")


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _clean_strings(table: pa.Table) -> pa.Table:
    """Strip the blanks OpenFace's ', ' separator leaves in front of text values."""
    for j, field in enumerate(table.schema):
        if pa.types.is_string(field.type):
            table = table.set_column(j, field.name, pc.utf8_trim_whitespace(table.column(j)))
    return table


def read_columns(path: str | Path, columns: Sequence[str], types: Mapping[str, pa.DataType],
                 header: Sequence[str] | None = None) -> pa.Table:
    """The named columns of a CSV or Parquet file as one Arrow table, with the given column types.

    CSV is parsed on all cores; a cell that does not convert is reported with its line and column."""
    path = Path(path)
    header = read_header(path) if header is None else list(header)
    if is_parquet(path):
        return _read_parquet(path, columns, types)
    read, convert = _csv_options(path, header, columns, types)
    try:
        table = pcsv.read_csv(path, read_options=read, convert_options=convert)
    except pa.ArrowInvalid as err:
        raise _explain_csv_error(path, header, columns, types, err) from None
    return _clean_strings(table)


def iter_column_batches(path: str | Path, columns: Sequence[str], types: Mapping[str, pa.DataType],
                        header: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """The named columns in blocks of about BLOCK_BYTES, for inputs larger than memory."""
    path = Path(path)
    header = read_header(path) if header is None else list(header)
    if is_parquet(path):
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(columns)):
            yield _cast_columns(path, pa.Table.from_batches([batch]), types)
        return
    read, convert = _csv_options(path, header, columns, types)
    try:
        with pcsv.open_csv(path, read_options=read, convert_options=convert) as reader:
            for batch in reader:
                yield _clean_strings(pa.Table.from_batches([batch]))
    except pa.ArrowInvalid as err:
        raise _explain_csv_error(path, header, columns, types, err) from None


def _read_parquet(path: Path, columns: Sequence[str], types: Mapping[str, pa.DataType]) -> pa.Table:
    try:
        table = pq.read_table(path, columns=list(columns))
    except (pa.ArrowException, OSError) as err:
        raise DataError(path, f"not a readable Parquet file: {first_line(err)}") from None
    return _cast_columns(path, table, types)


def _cast_columns(path: Path, table: pa.Table, types: Mapping[str, pa.DataType]) -> pa.Table:
    for name, kind in types.items():
        if name not in table.column_names:
            continue
        j = table.column_names.index(name)
        if table.column(j).type == kind:
            continue
        try:
            table = table.set_column(j, name, table.column(j).cast(kind))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DataError(path, f"column {name}: cannot be read as {kind}: {first_line(err)}") from None
    return table


def column_array(table: pa.Table, names: Sequence[str], dtype=np.float64) -> np.ndarray:
    """Columns as one (rows, len(names)) array, stored column by column (Fortran order: each column is copied in
    one contiguous pass); nulls (empty cells, 'nan') become NaN."""
    out = np.empty((len(names), table.num_rows), dtype=dtype)
    for j, name in enumerate(names):
        out[j] = table.column(name).to_numpy(zero_copy_only=False)
    return out.T
