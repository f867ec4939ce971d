"""Writes logs byte-compatible with Zeek's ASCII writer, in TSV or JSON form.

See ../shared/docs/zeek-log-format.md; Zeek's tools, zat and SIEM parsers read these
files without changes.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as _dt
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Literal

from pcapexfil.logs.staging import LogStaging

Field = tuple[str, str]  # (dotted column name, Zeek type such as "count" or "set[string]")

# The columns most Zeek logs open with: time, connection uid and conn_id.
TS_UID_ID_FIELDS: list[Field] = [
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
]
TimestampStyle = Literal["epoch", "millis", "iso8601"]

_SEPARATOR = "\t"
_SET_SEPARATOR = ","
_EMPTY = "(empty)"
_UNSET = "-"
# Strings that cannot be written as they are: they would read back as empty or unset.
_RESERVED = frozenset(("", _UNSET, _EMPTY))


def format_double(value: float) -> str:
    """Zeek's double rendering: up to 6 decimals, trailing zeros trimmed, never an exponent."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    text = f"{value:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _plain(value: str) -> bool:
    """Printable ASCII without a backslash: written as it is in both TSV and JSON."""
    return value.isascii() and value.isprintable() and "\\" not in value


def escape_string(value: str | bytes, in_container: bool = False) -> str:
    """Escape as LogAscii does: non-printable bytes, the separators and the backslash itself
    as \\xHH (Zeek's src/Desc.cc, ODesc::FirstEscapeLoc and ODesc::AddBytes: a backslash is
    an escape location of one byte, written in hex), so `\\x41` in the data cannot read back as
    `A`. Strings are their bytes (str from the analyzers carries raw bytes as surrogates)."""
    # Most values need nothing, and skip the byte loop.
    if (isinstance(value, str) and _plain(value) and not (in_container and _SET_SEPARATOR in value)
            and value not in _RESERVED):
        return value
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if not raw:
        return _EMPTY
    out = []
    for byte in raw:
        ch = chr(byte)
        if byte < 0x20 or byte >= 0x7F or ch == "\\" or (in_container and ch == _SET_SEPARATOR):
            out.append(f"\\x{byte:02x}")
        else:
            out.append(ch)
    text = "".join(out)
    if text in (_UNSET, _EMPTY):
        # Threading formatter Ascii.cc, escapeReservedContent: the first character in hex.
        return "\\x{:02x}{}".format(ord(text[0]), text[1:])
    return text


def _hex_bytes(err: UnicodeError) -> tuple[str, int]:
    """Decoding error handler: each byte that is not valid UTF-8 as the text \\xHH."""
    assert isinstance(err, UnicodeDecodeError)
    return "".join(f"\\x{b:02x}" for b in err.object[err.start : err.end]), err.end


codecs.register_error("pcapexfil-zeek-hex", _hex_bytes)
# Control characters JSON writes by name; the others become \\xHH text (json_escape_utf8).
_JSON_NAMED_CONTROLS = frozenset("\b\f\n\r\t")


def json_string(value: str | bytes) -> str:
    """A string value as Zeek's JSON writer has it before JSON quoting: valid UTF-8 kept,
    every invalid byte and every control character but \\b \\f \\n \\r \\t as the text \\xHH
    (src/util.cc, json_escape_utf8 with escape_printable_controls). The result is always
    encodable, whatever bytes a packet carried."""
    if isinstance(value, str):
        if value.isascii() and value.isprintable():
            return value
        value = value.encode("utf-8", "surrogateescape")
    text = value.decode("utf-8", "pcapexfil-zeek-hex")
    if text.isprintable():
        return text
    return "".join(f"\\x{ord(c):02x}" if c < " " and c not in _JSON_NAMED_CONTROLS else c for c in text)


def _tsv_time(value: Any) -> str:
    return _UNSET if value is None else f"{float(value):.6f}"


def _tsv_double(value: Any) -> str:
    return _UNSET if value is None else format_double(float(value))


def _tsv_count(value: Any) -> str:
    if value.__class__ is int:  # the common case, without the int() call (bool is not int here)
        return str(value)
    return _UNSET if value is None else str(int(value))


def _tsv_bool(value: Any) -> str:
    return _UNSET if value is None else ("T" if value else "F")


def _tsv_addr(value: Any) -> str:
    return _UNSET if value is None else str(value)


def _tsv_string(value: Any) -> str:
    # escape_string's clean case inlined: most strings are printable ASCII and returned as is.
    if value.__class__ is str and value.isascii() and value.isprintable() and "\\" not in value \
            and value not in _RESERVED:
        return value
    return _UNSET if value is None else escape_string(value)


def _tsv_item_string(value: Any) -> str:
    return _UNSET if value is None else escape_string(value, in_container=True)


# How LogAscii prints a value of each scalar type, unset included (a column's printer is
# chosen once per column: one call per value). Strings are the default.
_TSV_SCALARS: dict[str, Callable[[Any], str]] = {
    "time": _tsv_time, "interval": _tsv_time, "double": _tsv_double,
    "count": _tsv_count, "int": _tsv_count, "port": _tsv_count,
    "bool": _tsv_bool, "addr": _tsv_addr, "subnet": _tsv_addr,
}  # fmt: skip


def _tsv_joined_strings(items: list[Any]) -> str | None:
    """The items joined in one go when none needs escaping (the usual case), else None."""
    try:
        text = _SET_SEPARATOR.join(items)
    except TypeError:  # an unset or bytes item
        return None
    # No item holds the separator (the count shows it), a control or non-ASCII character,
    # or is a string that must be escaped as a whole.
    if (_plain(text) and text.count(_SET_SEPARATOR) == len(items) - 1
            and _RESERVED.isdisjoint(items)):
        return text
    return None


_cached_tsv_time = functools.lru_cache(maxsize=1024)(_tsv_time)


def _tsv_joined_times(items: list[Any]) -> str | None:
    """Times in containers (dns.log's TTLs) take few distinct values, and formatting a float
    costs far more than looking its text up. Zeros are left to the caller: 0.0 and -0.0 are
    one key but print differently."""
    if 0 in items:
        return None
    return _SET_SEPARATOR.join(map(_cached_tsv_time, items))


# Containers whose items have a faster printer for the whole list than one call per item.
_TSV_JOINED: dict[Callable[[Any], str], Callable[[list[Any]], str | None]] = {
    _tsv_item_string: _tsv_joined_strings, _tsv_time: _tsv_joined_times,
}  # fmt: skip


def tsv_formatter(type_: str) -> Callable[[Any], str]:
    """A column's printer, chosen once per column rather than once per value."""
    if type_.startswith(("set[", "vector[")):
        item = _TSV_SCALARS.get(type_[type_.index("[") + 1 : -1], _tsv_item_string)
        joined = _TSV_JOINED.get(item)

        def container(value: Any) -> str:
            if value is None:
                return _UNSET
            items = list(value)
            if not items:
                return _EMPTY
            text = joined(items) if joined is not None else None
            return _SET_SEPARATOR.join(map(item, items)) if text is None else text

        return container
    return _TSV_SCALARS.get(type_, _tsv_string)


_TSV_TIMES = frozenset(("time", "interval"))
_TSV_COUNTS = frozenset(("count", "int", "port"))
_TSV_ADDRS = frozenset(("addr", "subnet"))


def _tsv_inline(type_: str, v: str, p: str) -> str:
    """The expression printing the value named `v` of a `type_` column as its printer `p`
    (tsv_formatter) does: the usual classes in place, without a call; the rest by `p`."""
    if type_ in _TSV_TIMES:
        return f"'-' if {v} is None else '%.6f' % {v} if {v}.__class__ is float else {p}({v})"
    if type_ in _TSV_COUNTS:  # an int is its own text in an f-string (a bool is not an int here)
        return f"{v} if {v}.__class__ is int else {p}({v})"
    if type_ == "bool":
        return f"'-' if {v} is None else 'T' if {v} else 'F'"
    if type_ in _TSV_ADDRS:
        return f"{v} if {v}.__class__ is str else {p}({v})"
    if type_ == "double" or type_.startswith(("set[", "vector[")):
        return f"'-' if {v} is None else {p}({v})"
    # A string, as _tsv_string has it.
    return (f"'-' if {v} is None else {v} if {v}.__class__ is str and {v}.isascii() and {v}.isprintable()"
            f" and '\\\\' not in {v} and {v} not in RESERVED else {p}({v})")


ValuesPrinter = Callable[[Iterable[Any]], str]  # a row's values in column order → its line
RowPrinter = Callable[[Mapping[str, Any]], str]  # a row keyed by column name → its line


def tsv_line_functions(fields: Sequence[Field]) -> tuple[ValuesPrinter, RowPrinter]:
    """A log's TSV line printers, generated once per writer from its columns: one takes the
    row's values in column order (None: unset), the other the row as a mapping (a missing
    key: unset). Each value is printed as its column's tsv_formatter does, the usual cases
    inlined (a loop calling one printer per value ran a fifth more instructions)."""
    namespace: dict[str, Any] = {"RESERVED": _RESERVED}
    body = []
    for i, (_, type_) in enumerate(fields):
        namespace[f"p{i}"] = tsv_formatter(type_)
        body.append(f"    c{i} = {_tsv_inline(type_, f'v{i}', f'p{i}')}")
    body.append('    return f"' + "\\t".join(f"{{c{i}}}" for i in range(len(fields))) + '\\n"')
    of_values = ["def tsv_line(values):", "    (" + "".join(f"v{i}, " for i in range(len(fields))) + ") = values"]
    of_row = ["def tsv_row_line(row):"] + [f"    v{i} = row.get({name!r})" for i, (name, _) in enumerate(fields)]
    # Code generated from the column names and types only.
    exec("\n".join(of_values + body + of_row + body), namespace)  # noqa: S102
    return namespace["tsv_line"], namespace["tsv_row_line"]


def _json_epoch(value: Any) -> float:
    return float(f"{float(value):.6f}")


def _json_millis(value: Any) -> int:
    return int(round(float(value) * 1000))


def _json_iso8601(value: Any) -> str:
    moment = _dt.datetime.fromtimestamp(float(value), tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_double(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


def _json_other(value: Any) -> str:
    if isinstance(value, (str, bytes)):
        return json_string(value)
    return str(value)


_JSON_TIMES: dict[str, Callable[[Any], Any]] = {"epoch": _json_epoch, "millis": _json_millis, "iso8601": _json_iso8601}
_JSON_SCALARS: dict[str, Callable[[Any], Any]] = {
    "interval": _json_double, "double": _json_double,
    "count": int, "int": int, "port": int, "bool": bool,
}  # fmt: skip


def json_converter(type_: str, ts_style: TimestampStyle) -> Callable[[Any], Any]:
    """How Zeek's JSON writer has a set value of a column, as a JSON-encodable value; chosen
    once per column rather than once per value."""
    if type_.startswith(("set[", "vector[")):
        item = json_converter(type_[type_.index("[") + 1 : -1], ts_style)
        return lambda value: [item(v) for v in value]
    if type_ == "time":
        return _JSON_TIMES[ts_style]
    return _JSON_SCALARS.get(type_, _json_other)


# json.dumps with these options builds an encoder per call.
_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _strftime_local(moment: float) -> str:
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(moment))


def _named(exc: OSError, path: str) -> OSError:
    """A write error that names the log (a full disk's error carries no file name)."""
    return OSError(exc.errno, exc.strerror or str(exc), path)


class ZeekLogWriter:
    """One log file. Rows are dicts keyed by column name (missing key = unset), or their
    values in column order (`write_values`).

    Rows are written as they come, so memory does not grow with the log.
    `#open`/`#close` carry the writer's wall clock in local time, as Zeek's do. With a
    `staging`, the log is written to a temporary file that the run publishes at its commit
    point (pcapexfil.logs.staging); errors name the log's final path.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        log_path: str,
        fields: Sequence[Field],
        use_json: bool = False,
        ts_style: TimestampStyle = "epoch",
        staging: LogStaging | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.fields = list(fields)
        self.use_json = use_json
        self.ts_style = ts_style
        self.staged = staging is not None
        target = staging.add(self.path, self) if staging is not None else self.path
        try:
            self._fh: IO[str] | None = open(target, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise _named(exc, self.path) from None
        self.rows = 0
        self._names = [name for name, _ in self.fields]
        self._tsv_line, self._tsv_row_line = tsv_line_functions(self.fields)
        self._json_columns = [(name, json_converter(type_, ts_style)) for name, type_ in self.fields]
        if not use_json:
            names = _SEPARATOR.join(name for name, _ in self.fields)
            types = _SEPARATOR.join(type_ for _, type_ in self.fields)
            self._put(
                "#separator \\x09\n"
                f"#set_separator{_SEPARATOR}{_SET_SEPARATOR}\n"
                f"#empty_field{_SEPARATOR}{_EMPTY}\n"
                f"#unset_field{_SEPARATOR}{_UNSET}\n"
                f"#path{_SEPARATOR}{log_path}\n"
                f"#open{_SEPARATOR}{_strftime_local(time.time())}\n"
                f"#fields{_SEPARATOR}{names}\n"
                f"#types{_SEPARATOR}{types}\n"
            )

    def _put(self, text: str) -> None:
        assert self._fh is not None, "write after close"
        try:
            self._fh.write(text)
        except OSError as exc:
            raise _named(exc, self.path) from None

    def write(self, row: Mapping[str, Any]) -> None:
        self.write_line(self.line(row) if self.use_json else self._tsv_row_line(row))

    def write_values(self, values: Sequence[Any]) -> None:
        """Writes a row given as its values in column order (None: unset)."""
        self.write_line(self.line_of_values(values) if self.use_json else self._tsv_line(values))

    def line(self, row: Mapping[str, Any]) -> str:
        """`row` as this log's line (what `write` writes; workers format in parallel)."""
        if self.use_json:
            return self.line_of_values(map(row.get, self._names))
        return self._tsv_row_line(row)

    def line_of_values(self, values: Iterable[Any]) -> str:
        """The line of a row given as its values in column order (None: unset)."""
        if self.use_json:
            return _json_encode(
                {name: convert(value) for (name, convert), value in zip(self._json_columns, values)
                 if value is not None}
            ) + "\n"
        return self._tsv_line(values)

    def write_line(self, line: str) -> None:
        # _put's body: one call less per row.
        assert self._fh is not None, "write after close"
        try:
            self._fh.write(line)
        except OSError as exc:
            raise _named(exc, self.path) from None
        self.rows += 1

    def write_lines(self, lines: list[str]) -> None:
        """`write_line` for each of `lines`, in one write."""
        assert self._fh is not None, "write after close"
        try:
            self._fh.write("".join(lines))
        except OSError as exc:
            raise _named(exc, self.path) from None
        self.rows += len(lines)

    def flush(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
            except OSError as exc:
                raise _named(exc, self.path) from None

    def close(self) -> None:
        """Write `#close` and close; a staged log is fsync'd too (it is about to be published)."""
        fh = self._fh
        if fh is None:
            return
        try:
            if not self.use_json:
                fh.write(f"#close{_SEPARATOR}{_strftime_local(time.time())}\n")
            fh.flush()
            if self.staged:
                os.fsync(fh.fileno())
        except OSError as exc:
            self.abandon()
            raise _named(exc, self.path) from None
        self._fh = None
        fh.close()

    def abandon(self) -> None:
        """Close without completing the file (it is discarded), whatever state it is in."""
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):  # a failed final flush still closes the file
                fh.close()

    def __enter__(self) -> ZeekLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
