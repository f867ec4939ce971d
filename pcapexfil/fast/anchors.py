"""The anchor gates (`services.base.AnchorGate`) as automata the kernel walks over stream bytes.

While the PIA's windows of a connection hold no anchor of the signatures its analyzers wait
on, those analyzers only keep the bytes (`ServiceAnalyzer.on_packet`, `TlsAnalyzer._attach`).
The kernel can tell that without Python: each direction's marks become one DFA over bytes
that reaches an accepting state on the first prefix of a window that holds a mark, exactly
where `WindowMarks.held` becomes true (a start pattern matches at the first byte, a literal
is contained, a word begins a line after spaces). The DFA comes from the marks' own regex
sources (interegular), so no pattern is written twice; marks it cannot translate leave the
port ungated, which costs speed, never a result.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

import interegular
import numpy as np
from interegular.patterns import InvalidSyntax, Unsupported

from pcapexfil.jit import CACHE_DIR, njit
from pcapexfil.services.base import PiaWait, WindowMarks

# walk's answer once a window holds a mark (states are >= 0).
HELD = -1
NO_GATE = -1  # Gates.start: the port is not gated
NO_RELEASE = -1  # Gates.release: the analyzers may read on after the PIA


class Gates(NamedTuple):
    """Every gated port's automata in one table: state -> byte -> state."""

    table: np.ndarray  # (states, 256) int32
    accept: np.ndarray  # (states,) uint8: the marks are held
    dead: np.ndarray  # (states,) uint8: no byte leads anywhere but here (nothing more can be held)
    start: np.ndarray  # (65536, 2) int32: per TCP port, the originator's and responder's first state, or NO_GATE
    # (65536,) int32: per TCP port, PiaWait.done_after_orig of all its analyzers together
    # (NO_RELEASE: None).
    release: np.ndarray


def _byte(b: int) -> str:
    return f"\\x{b:02x}"


def _literal(text: bytes, any_case: bool = False) -> str:
    """A regex over latin-1 characters matching `text` (ASCII letters in either case with
    `any_case`, as bytes.upper() compares)."""
    out = []
    for b in text:
        ch = chr(b)
        if any_case and ch.isascii() and ch.isalpha():
            out.append(f"[{ch.upper()}{ch.lower()}]")
        else:
            out.append(_byte(b))
    return "".join(out)


def marks_regex(marks: WindowMarks) -> str | None:
    """One pattern (over bytes as latin-1 characters) that matches a prefix of a window
    exactly where `marks.held(window)`; None where nothing is asked of the direction. (A
    case-insensitive start pattern may match a few more non-ASCII bytes than Python's
    bytes regex does: the gate then ends sooner, never later.)"""
    parts = []
    if marks.start is not None:
        parts.append("(?:" + marks.start.pattern.decode("latin-1") + ")")
    if marks.contains:
        parts.append("(?s:.*)(?:" + "|".join(_literal(c) for c in marks.contains) + ")")
    if marks.line_words:
        words = "|".join(_literal(w, any_case=True) for w in marks.line_words)
        parts.append("(?:(?s:.*)[\\r\\n])? *(?:" + words + ")")
    return "|".join(parts) if parts else None


def _dfa(pattern: str | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(table, accept, start) of one direction, states numbered from 0; state 0 is dead."""
    if pattern is None:
        return np.zeros((1, 256), np.int32), np.zeros(1, np.uint8), 0
    fsm = interegular.parse_pattern(pattern).to_fsm()
    states = sorted(fsm.states)
    index = {s: k + 1 for k, s in enumerate(states)}
    table = np.zeros((len(states) + 1, 256), np.int32)
    accept = np.zeros(len(states) + 1, np.uint8)
    symbols = [fsm.alphabet[chr(b)] for b in range(256)]
    for s in states:
        moves = fsm.map.get(s, {})
        row = table[index[s]]
        for b in range(256):
            nxt = moves.get(symbols[b])
            row[b] = index[nxt] if nxt is not None else 0
        accept[index[s]] = s in fsm.finals
    return table, accept, index[fsm.initial]


def build_gates(ports: dict[int, PiaWait]) -> Gates | None:
    """The automata of these ports, each gated by the union of its analyzers' marks (one
    PiaWait per port, all analyzers'); a port whose marks cannot be translated, or are
    held by an empty window, is left out. None when no port is left.

    Kept beside the kernels' cache (`jit.CACHE_DIR`), named by the ports' marks and rules:
    building them takes 0.15 s, a fifth of `conn`'s start-up; loading them a few ms."""
    key = hashlib.sha256(repr(sorted((port, _union([g.orig for g in w.gates]), _union([g.resp for g in w.gates]),
                                      w.done_after_orig) for port, w in ports.items())).encode())
    key.update(interegular.__version__.encode())
    path = os.path.join(CACHE_DIR, f"gates-{key.hexdigest()[:16]}.npz")
    try:
        with np.load(path) as saved:
            return Gates(**{name: saved[name] for name in Gates._fields}) if saved.files else None
    except (OSError, ValueError, KeyError):
        pass
    gates = _build_gates(ports)
    try:
        os.makedirs(CACHE_DIR, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **(gates._asdict() if gates is not None else {}))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: built again next time
    return gates


def _build_gates(ports: dict[int, PiaWait]) -> Gates | None:
    tables, accepts = [np.zeros((1, 256), np.int32)], [np.zeros(1, np.uint8)]  # state 0: dead for all
    size = 1
    start = np.full((65536, 2), NO_GATE, np.int32)
    release = np.full(65536, NO_RELEASE, np.int32)
    built: dict[tuple[str | None, str | None], tuple[int, int]] = {}
    for port, wait in sorted(ports.items()):
        gates = wait.gates
        key = (_union([g.orig for g in gates]), _union([g.resp for g in gates]))
        if key not in built:
            firsts = []
            try:
                for pattern in key:
                    table, accept, first = _dfa(pattern)
                    if accept[first]:
                        raise ValueError("held by an empty window")
                    table = np.where(table > 0, table + size - 1, 0).astype(np.int32)
                    tables.append(table[1:])
                    accepts.append(accept[1:])
                    firsts.append(first + size - 1 if first > 0 else 0)
                    size += table.shape[0] - 1
            except (ValueError, InvalidSyntax, Unsupported):
                continue
            built[key] = (firsts[0], firsts[1])
        start[port] = built[key]
        if wait.done_after_orig is not None:
            release[port] = wait.done_after_orig
    if not built:
        return None
    table = np.concatenate(tables)
    dead = np.array([all(table[s] == s) or s == 0 for s in range(table.shape[0])], np.uint8)
    return Gates(table=table, accept=np.concatenate(accepts), dead=dead, start=start, release=release)


def _union(marks: list[WindowMarks]) -> str | None:
    patterns = [p for p in (marks_regex(m) for m in marks) if p is not None]
    return "|".join(f"(?:{p})" for p in patterns) if patterns else None


@njit(cache=True, _nrt=False)
def walk(table, accept, dead, state, src, start, end):
    """The state after src[start:end] from `state`, or HELD at the first byte that makes
    the window hold a mark."""
    for i in range(start, end):
        if dead[state]:
            return state
        state = table[state, src[i]]
        if accept[state]:
            return HELD
    return state
