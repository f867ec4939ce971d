"""Every log of a live run, written by one process and rotated together, as Zeek does.

The current file is always `NAME.log`. Rotation closes it (with its `#close` line) and
renames it the way Zeek's ASCII writer's default post-processor does: `NAME.<open>.log`,
the open time formatted with `Log::default_rotation_date_format` ("%Y-%m-%d-%H-%M-%S",
local time). Zeek's comment there speaks of opening *and* closing times, but its name holds
only the opening time; the closing time is the next file's opening time. Times are network
time. A new file is created on the next row (Zeek writes no file for a log with no rows).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

from pcapexfil.logs.zeek import Field, TimestampStyle, ZeekLogWriter

ROTATION_DATE_FORMAT = "%Y-%m-%d-%H-%M-%S"  # Zeek's Log::default_rotation_date_format


def rotated_name(out_dir: str, name: str, opened: float) -> str:
    """Zeek's name for a closed log, made unique with `-N` rather than overwrite a file."""
    stamp = time.strftime(ROTATION_DATE_FORMAT, time.localtime(opened))
    path = os.path.join(out_dir, f"{name}.{stamp}.log")
    n = 0
    while os.path.exists(path):
        n += 1
        path = os.path.join(out_dir, f"{name}.{stamp}-{n}.log")
    return path


class LogSet:
    """Named logs in `out_dir`, created on their first row and rotated all at once."""

    def __init__(self, out_dir: str, use_json: bool = False, ts_style: TimestampStyle = "epoch") -> None:
        self.out_dir = out_dir
        self.use_json = use_json
        self.ts_style = ts_style
        self.fields: dict[str, list[Field]] = {}
        self.writers: dict[str, ZeekLogWriter] = {}
        self.opened: dict[str, float] = {}
        self.rows: Counter[str] = Counter()
        self.now: float | None = None  # network time, set by the caller
        self.generation_start: float | None = None  # when the current files' period began

    def declare(self, name: str, fields: list[Field]) -> None:
        self.fields.setdefault(name, list(fields))

    def write(self, name: str, row: dict[str, Any]) -> None:
        writer = self.writers.get(name)
        if writer is None:
            path = os.path.join(self.out_dir, f"{name}.log")
            writer = ZeekLogWriter(path, name, self.fields[name], use_json=self.use_json, ts_style=self.ts_style)
            self.writers[name] = writer
            start = self.generation_start if self.generation_start is not None else self.now
            self.opened[name] = start if start is not None else 0.0
        writer.write(row)
        self.rows[name] += 1

    def proxy(self, name: str, fields: list[Field]) -> RowProxy:
        self.declare(name, fields)
        return RowProxy(self, name)

    def rotate(self, now: float) -> list[str]:
        """Close and rename every open log; the next period starts at `now`. Returns new paths."""
        done = []
        for name, writer in sorted(self.writers.items()):
            writer.close()
            target = rotated_name(self.out_dir, name, self.opened[name])
            os.replace(writer.path, target)
            done.append(target)
        self.writers.clear()
        self.opened.clear()
        self.generation_start = now
        return done

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


class RowProxy:
    """Stands where a component expects its own log writer; the LogSet owns the file."""

    def __init__(self, logs: LogSet, name: str) -> None:
        self.logs = logs
        self.name = name

    def write(self, row: dict[str, Any]) -> None:
        self.logs.write(self.name, row)

    def close(self) -> None:
        """The LogSet closes the file, after every component is done with it."""
