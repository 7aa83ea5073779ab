"""tables.py: CSV written on several threads equals one thread's, quoting only when needed, exact short floats,
atomic files, Parquet round trips."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet  # noqa: F401 (pa.parquet)
import pytest

import tables
from tables import TableWriter, atomic_output, ordered_map, write_table


def test_csv_written_in_slices_on_threads_equals_one_write(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "CSV_SLICE_ROWS", 1000)  # many slices
    rng = np.random.default_rng(0)
    table = pa.table({"id": [f"clip{i // 7}" for i in range(25_000)], "x": rng.uniform(0, 5, 25_000).round(3),
                      "y": rng.normal(size=25_000).astype(np.float32)})
    write_table(table, tmp_path / "t.csv")
    expected = pa.BufferOutputStream()
    pcsv.write_csv(table, expected, pcsv.WriteOptions(quoting_style="none"))
    assert (tmp_path / "t.csv").read_bytes() == b"id,x,y\n" + expected.getvalue().to_pybytes().split(b"\n", 1)[1]
    back = pd.read_csv(tmp_path / "t.csv")
    np.testing.assert_array_equal(back["x"].to_numpy(), table.column("x").to_numpy())  # exact round trip
    written_x = [line.split(",")[1] for line in (tmp_path / "t.csv").read_text().splitlines()[1:]]
    assert max(len(text) for text in written_x) <= 5  # "4.321", never "4.3209999999999997"


def test_text_is_quoted_only_when_needed(tmp_path):
    write_table(pa.table({"File": ["a.csv", "b.csv"], "v": [1.5, 0.25]}), tmp_path / "plain.csv")
    assert (tmp_path / "plain.csv").read_text() == "File,v\na.csv,1.5\nb.csv,0.25\n"
    write_table(pa.table({"File": ["a,b.csv", 'say "hi"'], "v": [1.0, 2.0]}), tmp_path / "quoted.csv")
    assert pd.read_csv(tmp_path / "quoted.csv")["File"].tolist() == ["a,b.csv", 'say "hi"']


def test_a_failed_write_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with TableWriter(target) as writer:
            writer.write(pa.table({"a": [1, 2]}))
            raise RuntimeError("killed half way")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "new.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_parquet_round_trip_keeps_types(tmp_path):
    table = pa.table({"clip_id": ["a", "b"], "n": pa.array([3, 4], pa.int64()), "s": pa.array([0.5, 0.25], pa.float32())})
    assert write_table(table, tmp_path / "t.parquet") == 2
    assert pa.parquet.read_table(tmp_path / "t.parquet").equals(table)


def test_ordered_map_keeps_order_with_bounded_work():
    in_flight, most = [0], [0]

    def work(x: int) -> int:
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        in_flight[0] -= 1
        return x * x

    assert list(ordered_map(work, range(50), workers=2, ahead=4)) == [x * x for x in range(50)]
    assert most[0] <= 4
