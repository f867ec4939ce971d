"""Connection records as Parquet (optional dependency pyarrow, extra `pcapexfil[dist]`).

One column per ConnRecord field, with the types that keep every value exact (ts and
duration as float64 epoch seconds, counters as int64), plus `sensor`. Files are partitioned
by the UTC day of `ts` (Hive style: DIR/day=YYYY-MM-DD/part-NNNNN.parquet), so a reader can
prune whole days. docs/parquet-schema.md is the reference for users.
"""

from __future__ import annotations

import datetime as dt
import importlib.abc
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

from pcapexfil.record import ConnRecord, DnsQuery

RECORD_FIELDS = [f.name for f in fields(ConnRecord)]
# Rows buffered per day before a row group is written.
ROW_GROUP = 65536
# Records converted to Arrow at a time, as they come: at the end of a cluster run the
# conversion of a whole row group (and pyarrow's first-use import of pandas) was 0.6 s of
# one process's work after the extraction had ended.
CONVERT_ROWS = 4096


def require_pyarrow() -> Any:
    """pyarrow, or an ImportError that says how to get it."""
    try:
        import pyarrow
    except ImportError:
        raise ImportError("Parquet needs pyarrow: pip install 'pcapexfil[dist]'") from None
    return pyarrow


class _PandasAbsent(importlib.abc.MetaPathFinder):
    """An import system in which pandas cannot be found."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas", name="pandas")


def skip_pandas_probe() -> None:
    """Keeps pyarrow from importing pandas in this process, for the CLI's processes.

    pyarrow asks once per process, at its first conversion of a Python sequence, whether
    pandas can be imported, and imports it if so (0.2 s uncontended; in a cluster run it
    fell on the merging process, the sequential part), although records need nothing of
    pandas. Answered "no" here, the question is not asked again; `Table.to_pandas` still
    imports pandas when called. Not done for library callers: their own pyarrow calls may
    want pandas objects recognised. Where pandas is already imported, nothing changes."""
    pa = require_pyarrow()
    if "pandas" in sys.modules:
        return
    finder = _PandasAbsent()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)


def record_schema(extra: Sequence[tuple[str, Any]] = ()) -> Any:
    """The Arrow schema of a record table (the day is the partition, not a column)."""
    pa = require_pyarrow()
    s, i64, i32, f64 = pa.string(), pa.int64(), pa.int32(), pa.float64()
    cols = [
        ("ts", f64), ("uid", s), ("orig_h", s), ("orig_p", i32), ("resp_h", s), ("resp_p", i32),
        ("proto", s), ("service", pa.list_(s)), ("duration", f64), ("orig_bytes", i64), ("resp_bytes", i64),
        ("conn_state", s), ("local_orig", pa.bool_()), ("local_resp", pa.bool_()), ("missed_bytes", i64),
        ("history", s), ("orig_pkts", i64), ("orig_ip_bytes", i64), ("resp_pkts", i64), ("resp_ip_bytes", i64),
        ("tunnel_parents", pa.list_(s)), ("ip_proto", i32), ("server_name", s), ("http_host", s),
        ("dns_name", s), ("ja3", s), ("ja3s", s),
        ("dns_queries", pa.list_(pa.struct([("ts", f64), ("query", s), ("qtype", i64), ("answer_chars", i64)]))),
        ("sensor", s),
    ]  # fmt: skip
    assert [c for c, _ in cols[:-1]] == RECORD_FIELDS, "schema out of step with ConnRecord"
    return pa.schema(cols + list(extra))


def day_of(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()


def records_table(records: Sequence[ConnRecord], sensor: str | None = None,
                  extra: Sequence[tuple[str, Any, list[Any]]] = ()) -> Any:
    """An Arrow table of `records`; `extra` adds (name, type, values) columns."""
    pa = require_pyarrow()
    schema = record_schema([(n, t) for n, t, _ in extra])
    data: dict[str, list[Any]] = {name: [getattr(r, name) for r in records] for name in RECORD_FIELDS}
    # Built by hand: dataclasses.asdict deep-copies each field, half the table's build time
    # at the end of a cluster run.
    data["dns_queries"] = [[{"ts": q.ts, "query": q.query, "qtype": q.qtype, "answer_chars": q.answer_chars}
                            for q in r.dns_queries] for r in records]
    data["sensor"] = [sensor] * len(records)
    for name, _, values in extra:
        data[name] = values
    return pa.Table.from_pydict(data, schema=schema)


def table_records(table: Any) -> list[ConnRecord]:
    """ConnRecords back from a table written by `records_table` (extra columns ignored)."""
    cols = {name: table.column(name).to_pylist() for name in RECORD_FIELDS}
    queries: list[list[dict[str, Any]] | None] = cols.pop("dns_queries")
    out = []
    for i in range(table.num_rows):
        rec = ConnRecord(**{name: values[i] for name, values in cols.items()})
        if rec.service is None:
            rec.service = []
        if rec.tunnel_parents is None:
            rec.tunnel_parents = []
        rec.dns_queries = [DnsQuery(**q) for q in queries[i] or ()]
        out.append(rec)
    return out


def read_records(root: str, days: Iterable[str] | None = None) -> Any:
    """Every record under a day-partitioned directory as one Arrow table (day column added)."""
    pa = require_pyarrow()
    import pyarrow.dataset as ds

    dataset = ds.dataset(root, format="parquet", partitioning=ds.partitioning(pa.schema([("day", pa.string())]),
                                                                               flavor="hive"))
    if days is not None:
        return dataset.to_table(filter=ds.field("day").isin(list(days)))
    return dataset.to_table()


class ParquetSink:
    """RecordSink writing DIR/day=YYYY-MM-DD/part-NNNNN.parquet (one writer per day)."""

    def __init__(self, root: str, sensor: str | None = None, part: int = 0) -> None:
        require_pyarrow()
        self.root = root
        self.sensor = sensor
        self.part = part
        self._rows: dict[str, list[ConnRecord]] = {}  # not converted yet
        self._tables: dict[str, list[Any]] = {}  # converted, their row group not written yet
        self._converted: dict[str, int] = {}
        self._writers: dict[str, Any] = {}
        self.written = 0

    def on_record(self, rec: ConnRecord) -> None:
        day = day_of(rec.ts)
        rows = self._rows.setdefault(day, [])
        rows.append(rec)
        if len(rows) >= CONVERT_ROWS:
            self._convert(day)
            if self._converted[day] >= ROW_GROUP:
                self._flush(day)

    def on_time(self, now: float) -> None:
        pass

    def close(self, now: float) -> None:
        for day in list(self._rows):
            self._convert(day)
        for day in list(self._tables):
            self._flush(day)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _convert(self, day: str) -> None:
        rows = self._rows.pop(day, [])
        if rows:
            self._tables.setdefault(day, []).append(records_table(rows, self.sensor))
            self._converted[day] = self._converted.get(day, 0) + len(rows)

    def _flush(self, day: str) -> None:
        """The day's converted records as one row group."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = self._tables.pop(day, [])
        rows = self._converted.pop(day, 0)
        if not rows:
            return
        table = pa.concat_tables(tables)
        writer = self._writers.get(day)
        if writer is None:
            path = os.path.join(self.root, f"day={day}", f"part-{self.part:05d}.parquet")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            writer = self._writers[day] = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=rows)
        self.written += rows
