"""One commit point for a run's logs, and for its `--state` with them (docs/state.md).

A run writes every log to a hidden temporary file beside its final name
(`DIR/.NAME.pcapexfil-tmp`), so what a reader sees does not change while it runs. At the
end each one is closed (`#close` written), fsync'd, the directory fsync'd; then the state,
if any, commits in one SQLite transaction that also records the renames still to do
(`StateStore.commit`); only then are the files renamed into place. A kill before that
transaction leaves the previous logs and state as they were (the next run in the directory
removes the orphaned temporary files); a kill after it leaves renames that the next run on
that state completes (`finish_moves`). A write error (a full disk) discards the temporary
files: the previous complete logs stay, nothing torn is left behind.
"""

from __future__ import annotations

import contextlib
import os
from typing import Protocol

TMP_SUFFIX = ".pcapexfil-tmp"
# Test hook (tests/test_crash_safety.py): the process dies at the named point of the commit,
# as a SIGKILL would, to prove each step's recovery deterministically.
CRASH_ENV = "PCAPEXFIL_CRASH_AT"

Move = tuple[str, str]  # (temporary path, final path)


class StagedWriter(Protocol):
    def close(self) -> None: ...

    def abandon(self) -> None: ...


def temp_path(final: str) -> str:
    head, name = os.path.split(final)
    return os.path.join(head, f".{name}{TMP_SUFFIX}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def crash_point(name: str) -> None:
    """Die here, without any cleanup, when the test hook names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)


def finish_moves(moves: list[Move]) -> None:
    """Rename what is still pending (idempotent: a kill midway is finished by the next call)."""
    for tmp, final in moves:
        if os.path.exists(tmp):
            os.replace(tmp, final)
            crash_point("mid-publish")
    for directory in {os.path.dirname(final) for _, final in moves}:
        _fsync_dir(directory)


class LogStaging:
    """The logs of one run in one directory, published together."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.moves: list[Move] = []
        self.writers: list[StagedWriter] = []
        # Set by the state store once its transaction naming these renames committed: from
        # then on the temporary files are the run's logs and must survive any failure.
        self.committed = False

    def remove_orphans(self) -> None:
        """Temporary files of an earlier run that was killed before its commit point."""
        for name in os.listdir(self.out_dir):
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.out_dir, name))

    def add(self, final: str, writer: StagedWriter) -> str:
        """Where `writer` writes the log that is to become `final`."""
        tmp = temp_path(final)
        self.moves.append((tmp, final))
        self.writers.append(writer)
        return tmp

    def seal(self) -> list[Move]:
        """Close (and so fsync) every log not closed yet; returns the renames to do."""
        for writer in self.writers:
            writer.close()
        if self.moves:
            _fsync_dir(self.out_dir)
        return list(self.moves)

    def publish(self) -> None:
        """Move the sealed logs into place (a no-op once done)."""
        finish_moves(self.seal())
        self.moves, self.writers = [], []

    def discard(self) -> None:
        """After a failure: drop every temporary file, leave the previous logs as they were
        (unless the state already committed them: the next writer of the state publishes them)."""
        for writer in self.writers:
            writer.abandon()
        if not self.committed:
            for tmp, _ in self.moves:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
        self.moves, self.writers = [], []
