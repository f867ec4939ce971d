"""The one state store: SQLite in WAL mode, every change committed in a transaction.

Holds the baseline rows, the per-(orig_h, resp_p) parameters, the normalisation states,
the still-open windows, notice suppressions, the DNS tunnel rule's history and open windows
(`dns_history`, `dns_windows`; tables added to schema 1 with CREATE IF NOT EXISTS, so an
older state gains them empty) and run metadata (schema version, domain mode, time zone,
parameter schedule, watermark). A kill at any moment leaves the last committed
snapshot intact; a corrupt or foreign file is refused without being touched.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pcapexfil.detect.baseline import BaselineDelta, BaselineKey, Element
from pcapexfil.detect.dnstunnel.history import ELEMENT_COLUMNS as DNS_HISTORY_COLUMNS
from pcapexfil.detect.dnstunnel.history import Element as DnsElement
from pcapexfil.detect.dnstunnel.rule import DnsCommit
from pcapexfil.detect.dnstunnel.window import DnsWindow
from pcapexfil.detect.windows import Window
from pcapexfil.logs.staging import LogStaging, crash_point, finish_moves

SCHEMA_VERSION = 1
# meta key: renames of a committed run's logs not known to be done yet (logs.staging).
PENDING_MOVES = "pending_log_moves"
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS baseline (
    id INTEGER PRIMARY KEY,
    orig_h TEXT NOT NULL, resp_p INTEGER NOT NULL, proto TEXT NOT NULL, day TEXT NOT NULL,
    ts REAL NOT NULL, identifier TEXT NOT NULL,
    orig_ip_bytes INTEGER NOT NULL, resp_ip_bytes INTEGER NOT NULL, duration REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS baseline_key ON baseline (orig_h, resp_p, proto, day);
CREATE TABLE IF NOT EXISTS params (
    orig_h TEXT NOT NULL, resp_p INTEGER NOT NULL, proto TEXT NOT NULL,
    median_bytes REAL, mad_bytes REAL, median_duration REAL, mad_duration REAL,
    ref_bytes REAL, ref_duration REAL,
    PRIMARY KEY (orig_h, resp_p, proto)
);
CREATE TABLE IF NOT EXISTS norm (name TEXT PRIMARY KEY, n INTEGER NOT NULL, mean REAL NOT NULL, m2 REAL NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    seq INTEGER PRIMARY KEY, orig_h TEXT NOT NULL, resp_p INTEGER NOT NULL, proto TEXT NOT NULL,
    identifier TEXT NOT NULL, created REAL NOT NULL, close_at REAL NOT NULL,
    orig_ip_bytes INTEGER NOT NULL, resp_ip_bytes INTEGER NOT NULL, duration REAL NOT NULL,
    uids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suppress (key TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dns_history (
    id INTEGER PRIMARY KEY,
    orig_h TEXT NOT NULL, domain TEXT NOT NULL, day TEXT NOT NULL, ts REAL NOT NULL,
    info REAL NOT NULL, queries INTEGER NOT NULL, names INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dns_history_ts ON dns_history (ts);
CREATE TABLE IF NOT EXISTS dns_windows (
    seq INTEGER PRIMARY KEY, orig_h TEXT NOT NULL, domain TEXT NOT NULL,
    created REAL NOT NULL, close_at REAL NOT NULL, data TEXT NOT NULL
);
"""

BASELINE_COLUMNS = ("orig_h", "resp_p", "proto", "day", "ts", "identifier",
                    "orig_ip_bytes", "resp_ip_bytes", "duration")


class StateError(Exception):
    """A state database that cannot be used (locked, corrupt, other mode, newer schema)."""


@dataclass(slots=True)
class Commit:
    """Everything that changed since the previous commit."""

    baseline: BaselineDelta
    params: dict[BaselineKey, list[float] | None]  # None: delete
    norms: dict[str, tuple[int, float, float]]
    windows: list[Window]  # full replacement, or with windows_closed: the changed ones
    suppress: dict[tuple[Any, ...], float]  # full replacement
    meta: dict[str, str] = field(default_factory=dict)
    # The baseline delta is a net change against the stored rows: its deletions apply to stored
    # rows only, so they run before the insertions (one commit at the end of a cluster run).
    net: bool = False
    # Seqs of windows closed since the previous commit; `windows` then holds only the windows
    # that changed (a delta), not all open ones.
    windows_closed: list[int] | None = None
    dns: DnsCommit | None = None  # the DNS tunnel rule's part (None: its tables are left alone)


@dataclass(slots=True)
class Loaded:
    meta: dict[str, str]
    baseline: list[tuple[BaselineKey, Element]]
    params: dict[BaselineKey, list[float]]
    norms: dict[str, tuple[int, float, float]]
    windows: list[Window]
    suppress: dict[tuple[Any, ...], float]
    dns_history: list[DnsElement] = field(default_factory=list)
    dns_windows: list[DnsWindow] = field(default_factory=list)


def _nan_to_none(values: Iterable[float]) -> list[float | None]:
    return [None if v != v else float(v) for v in values]


class StateStore:
    """With `writer`, the store belongs to this process until close(): a second writer waits
    up to `busy_timeout` for it and then fails (a lock on the file, held for the whole run,
    so two runs never both load the same snapshot and both commit on top of it)."""

    def __init__(self, path: str, busy_timeout: float = 10.0, writer: bool = False) -> None:
        self.path = path
        if os.path.isdir(path):
            raise StateError(f"state database {path}: is a directory")
        self._lock_fd = self._lock(busy_timeout) if writer else None
        try:
            self._open(busy_timeout)
            if writer:
                self._finish_pending_moves()
        except BaseException:
            self._unlock()
            raise

    def _lock(self, timeout: float) -> int:
        """An exclusive flock on the database file (independent of SQLite's own POSIX locks;
        the descriptor stays open until close(), after SQLite's, so closing it cannot drop them)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"state database {self.path}: {exc.strerror}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StateError(f"state database {self.path} is locked by another pcapexfil run "
                                     f"(waited {timeout:g} s)") from None
                time.sleep(0.05)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _finish_pending_moves(self) -> None:
        """A run killed between its state commit and the renames of its logs: finish them."""
        pending = self.meta().get(PENDING_MOVES)
        if pending is None:
            return
        moves = [(tmp, final) for tmp, final in json.loads(pending)]
        try:
            finish_moves(moves)
        except OSError as exc:
            raise StateError(f"state database {self.path}: cannot finish publishing the logs of the "
                             f"previous run ({exc.filename}: {exc.strerror})") from None
        with self._write() as db:
            db.execute("DELETE FROM meta WHERE key=?", (PENDING_MOVES,))

    def _open(self, busy_timeout: float) -> None:
        path = self.path
        if os.path.exists(path) and os.path.getsize(path) > 0:
            try:
                with open(path, "rb") as fh:
                    magic = fh.read(len(_SQLITE_MAGIC))
            except OSError as exc:
                raise StateError(f"state database {path}: {exc.strerror}") from None
            if magic != _SQLITE_MAGIC:
                raise StateError(f"state database {path}: not an SQLite database (file left untouched)")
        self.busy_timeout = busy_timeout
        try:
            self.db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        try:
            check = self.db.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise StateError(f"state database {path}: integrity check failed (file left untouched)")
            version = self._user_version()
            if version > SCHEMA_VERSION:
                raise StateError(f"state database {path}: schema version {version} is newer than this "
                                 f"pcapexfil understands ({SCHEMA_VERSION})")
            self.db.execute("PRAGMA journal_mode=WAL")
            with self._write() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException as exc:
            self.db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._error(exc) from None
            raise

    def _user_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _error(self, exc: sqlite3.Error) -> StateError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StateError(f"state database {self.path} is locked by another process "
                              f"(waited {self.busy_timeout:g} s)")
        if "not a database" in text or "malformed" in text:
            return StateError(f"state database {self.path}: corrupt ({text}; file left untouched)")
        return StateError(f"state database {self.path}: {text}")

    class _Tx:
        def __init__(self, store: StateStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            try:
                self.store.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.store._error(exc) from None
            return self.store.db

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            try:
                self.store.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            except sqlite3.Error as err:
                raise self.store._error(err) from None

    def _write(self) -> StateStore._Tx:
        return StateStore._Tx(self)

    # -- settings that must not change within one baseline ---------------------------------
    def check_settings(self, fixed: dict[str, str]) -> None:
        """Record `fixed` settings on first use; refuse a run whose settings differ."""
        meta = self.meta()
        for name, value in fixed.items():
            if name in meta and meta[name] != value:
                raise StateError(
                    f"state database {self.path} was built with {name}={meta[name]}; refusing to mix "
                    f"with {name}={value} (use another --state, or 'pcapexfil baseline reset')"
                )
        missing = {k: v for k, v in fixed.items() if k not in meta}
        if missing:
            with self._write() as db:
                db.executemany("INSERT INTO meta VALUES (?, ?)", missing.items())

    def meta(self) -> dict[str, str]:
        try:
            return dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    # -- whole-state load and incremental commit --------------------------------------------
    def load(self) -> Loaded:
        try:
            db = self.db
            base = [
                ((r[0], r[1], r[2]), Element(r[3], r[4], r[5], r[6], r[7], r[8]))
                for r in db.execute(f"SELECT {', '.join(BASELINE_COLUMNS)} FROM baseline ORDER BY id")
            ]
            params = {
                (r[0], r[1], r[2]): [float("nan") if v is None else v for v in r[3:]]
                for r in db.execute("SELECT * FROM params")
            }
            norms = {r[0]: (r[1], r[2], r[3]) for r in db.execute("SELECT name, n, mean, m2 FROM norm")}
            windows = [
                Window(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], json.loads(r[10]))
                for r in db.execute("SELECT * FROM windows ORDER BY seq")
            ]
            suppress = {tuple(json.loads(k)): until for k, until in db.execute("SELECT key, until FROM suppress")}
            dns_history = [DnsElement(*r) for r in db.execute(
                f"SELECT {', '.join(DNS_HISTORY_COLUMNS)} FROM dns_history ORDER BY ts, id")]
            dns_windows = [DnsWindow.from_json(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]))
                           for r in db.execute("SELECT * FROM dns_windows ORDER BY seq")]
            return Loaded(self.meta(), base, params, norms, windows, suppress, dns_history, dns_windows)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def commit(self, c: Commit, staging: LogStaging | None = None) -> None:
        """Apply one snapshot's changes atomically; with `staging`, the run's logs are sealed
        first and published right after, their renames recorded in the same transaction so
        that a kill in between is finished by the next writer (pcapexfil.logs.staging)."""
        moves = staging.seal() if staging is not None else []
        if moves:
            c.meta[PENDING_MOVES] = json.dumps(moves)
            crash_point("logs-sealed")
        with self._write() as db:
            steps = [self._insert_added, self._delete_removed]
            for step in reversed(steps) if c.net else steps:
                step(db, c.baseline)
            db.executemany("DELETE FROM params WHERE orig_h=? AND resp_p=? AND proto=?",
                           (key for key, row in c.params.items() if row is None))
            db.executemany("INSERT OR REPLACE INTO params VALUES (?,?,?,?,?,?,?,?,?)",
                           ((*key, *_nan_to_none(row)) for key, row in c.params.items() if row is not None))
            db.executemany("INSERT OR REPLACE INTO norm VALUES (?,?,?,?)",
                           ((name, *v) for name, v in c.norms.items()))
            if c.windows_closed is None:
                db.execute("DELETE FROM windows")
            else:
                db.executemany("DELETE FROM windows WHERE seq=?", ((seq,) for seq in c.windows_closed))
            db.executemany(
                "INSERT OR REPLACE INTO windows VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                ((w.seq, w.orig_h, w.resp_p, w.proto, w.identifier, w.created, w.close_at,
                  w.orig_ip_bytes, w.resp_ip_bytes, w.duration, json.dumps(w.uids)) for w in c.windows),
            )
            db.execute("DELETE FROM suppress")
            db.executemany("INSERT INTO suppress VALUES (?, ?)",
                           ((json.dumps(list(k)), v) for k, v in c.suppress.items()))
            if c.dns is not None:
                self._commit_dns(db, c.dns)
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", c.meta.items())
        if staging is not None and moves:
            staging.committed = True
            crash_point("state-committed")
            staging.publish()
            with self._write() as db:
                db.execute("DELETE FROM meta WHERE key=?", (PENDING_MOVES,))

    @staticmethod
    def _commit_dns(db: sqlite3.Connection, c: DnsCommit) -> None:
        db.execute("DELETE FROM dns_history WHERE ts <= ?", (c.cutoff,))
        db.executemany(f"INSERT INTO dns_history ({', '.join(DNS_HISTORY_COLUMNS)}) VALUES (?,?,?,?,?,?,?)",
                       ((e.orig_h, e.domain, e.day, e.ts, e.info, e.queries, e.names) for e in c.added))
        db.execute("DELETE FROM dns_windows")
        db.executemany("INSERT INTO dns_windows VALUES (?,?,?,?,?,?)",
                       ((w.seq, w.orig_h, w.domain, w.created, w.close_at, json.dumps(w.to_json()))
                        for w in c.windows))

    @staticmethod
    def _insert_added(db: sqlite3.Connection, delta: BaselineDelta) -> None:
        db.executemany(
            f"INSERT INTO baseline ({', '.join(BASELINE_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?)",
            ((*key, e.day, e.ts, e.identifier, e.orig_ip_bytes, e.resp_ip_bytes, e.duration)
             for key, e in delta.added),
        )

    @staticmethod
    def _delete_removed(db: sqlite3.Connection, delta: BaselineDelta) -> None:
        db.executemany("DELETE FROM baseline WHERE orig_h=? AND resp_p=? AND proto=? AND day=?",
                       ((*key, day) for key, day in delta.pruned))
        db.executemany("DELETE FROM baseline WHERE orig_h=? AND resp_p=? AND proto=?", delta.dropped)

    # -- the `pcapexfil baseline` command ---------------------------------------------------
    def baseline_rows(self) -> Iterator[dict[str, Any]]:
        try:
            cur = self.db.execute(f"SELECT {', '.join(BASELINE_COLUMNS)} FROM baseline "
                                  "ORDER BY orig_h, resp_p, proto, day, id")
            for row in cur:
                yield dict(zip(BASELINE_COLUMNS, row, strict=True))
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def dns_summary(self) -> list[tuple[str, int, int, float]]:
        """The DNS tunnel rule's history per host: distinct domains, elements, last write time."""
        try:
            return self.db.execute(
                "SELECT orig_h, COUNT(DISTINCT domain), COUNT(*), MAX(ts) FROM dns_history "
                "GROUP BY orig_h ORDER BY orig_h").fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def summary(self) -> list[tuple[str, int, str, int, int, float]]:
        """Per (orig_h, resp_p, proto): distinct days, elements, last write time."""
        try:
            return self.db.execute(
                "SELECT orig_h, resp_p, proto, COUNT(DISTINCT day), COUNT(*), MAX(ts) FROM baseline "
                "GROUP BY orig_h, resp_p, proto ORDER BY orig_h, resp_p, proto").fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def import_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Add baseline rows in one transaction; parameters follow at the next recomputation."""
        count = 0
        with self._write() as db:
            for row in rows:
                db.execute(f"INSERT INTO baseline ({', '.join(BASELINE_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?)",
                           tuple(row[c] for c in BASELINE_COLUMNS))
                count += 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('recompute_all', '1')")
        return count

    def set_meta(self, items: dict[str, str]) -> None:
        """Set metadata outside a run's snapshot (e.g. the sensor names that fed this state)."""
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", items.items())

    def reset(self) -> None:
        """Forget everything learned (the file stays, empty)."""
        with self._write() as db:
            for table in ("meta", "baseline", "params", "norm", "windows", "suppress", "dns_history", "dns_windows"):
                db.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        self.db.close()
        self._unlock()
