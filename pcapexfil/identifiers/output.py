"""Where an analyzer's log goes: a Zeek log in ctx.out_dir, created on its first row (Zeek
writes no file for a protocol it never saw), or nowhere when out_dir is None."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pcapexfil.hooks import AnalyzerContext
from pcapexfil.logs.zeek import Field, ZeekLogWriter


class LogOut:
    def __init__(self, ctx: AnalyzerContext, name: str, fields: list[Field]) -> None:
        self.ctx = ctx
        self.name = name
        self.fields = fields
        self.writer: ZeekLogWriter | None = None

    @property
    def enabled(self) -> bool:
        return self.ctx.out_dir is not None

    def write(self, row: Mapping[str, Any]) -> None:
        if self.ctx.out_dir is None:
            return
        if self.writer is None:
            path = os.path.join(self.ctx.out_dir, f"{self.name}.log")
            self.writer = ZeekLogWriter(path, self.name, self.fields, self.ctx.use_json, self.ctx.ts_style,
                                        staging=self.ctx.staging)
        self.writer.write(row)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
