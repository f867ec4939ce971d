"""Zeek ASCII escaping: the shortcut for plain values agrees with the byte-by-byte rule."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pcapexfil.logs.zeek import ZeekLogWriter, escape_string, json_string, tsv_formatter, tsv_line_functions


def escape_by_bytes(value: str, in_container: bool) -> str:
    """LogAscii's rule spelled out: every byte outside printable ASCII, the separators and the
    backslash as \\xHH."""
    raw = value.encode("utf-8", "surrogateescape")
    if not raw:
        return "(empty)"
    text = "".join(
        f"\\x{b:02x}" if b < 0x20 or b >= 0x7F or b == 0x09 or b == 0x5C or (in_container and b == 0x2C) else chr(b) for b in raw
    )
    if text in ("-", "(empty)"):
        return f"\\x{ord(text[0]):02x}{text[1:]}"
    return text


@given(st.text(alphabet=st.sampled_from("ab-,(empty) \t\x00\x7f\xe9\u2603\\x4"), max_size=12), st.booleans())
def test_escape_matches_byte_rule(value: str, in_container: bool) -> None:
    assert escape_string(value, in_container) == escape_by_bytes(value, in_container)


def test_escape_examples() -> None:
    assert escape_string("example.com") == "example.com"
    assert escape_string("a\tb") == "a\\x09b"
    assert escape_string("a,b", in_container=True) == "a\\x2cb"
    assert escape_string("-") == "\\x2d" and escape_string("(empty)") == "\\x28empty)"
    assert escape_string("") == "(empty)"
    assert escape_string(b"\xff") == "\\xff"
    # The backslash itself is escaped, so data holding the text \x41 does not read back as A.
    assert escape_string("\\x41") == "\\x5cx41"
    assert tsv_formatter("string")("a\\b") == "a\\x5cb"
    assert tsv_formatter("set[string]")(["a\\b", "c"]) == "a\\x5cb,c"


def test_tsv_escaping_reads_back_exactly(tmp_path) -> None:
    """Whatever the bytes, `detect`'s reader gets back the string that was written (before,
    an SNI holding the text \\x41 read back as A)."""
    from pcapexfil.zeekread import read_log

    values = ["\\x41", "a\\\\b", "\\x5c", "x\\", "\udcff\\xff"]
    path = tmp_path / "t.log"
    with ZeekLogWriter(path, "t", [("s", "string")]) as writer:
        for value in values:
            writer.write({"s": value})
    assert [row["s"] for row in read_log(str(path))] == values


@given(st.binary(max_size=64))
def test_json_string_is_zeek_json_escape_utf8(data: bytes) -> None:
    """Any bytes give a string that encodes and round-trips through JSON; undoing the \\xHH
    escapes gives the bytes back (when the data has no backslash of its own to confuse)."""
    text = json_string(data)
    line = json.dumps({"s": text}, ensure_ascii=False).encode("utf-8")
    assert json.loads(line)["s"] == text
    if b"\\" not in data:
        back = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8"))
        assert back == data
    # Valid UTF-8 and the controls JSON names stay as they are.
    assert json_string("caf\xe9 \u2603\t") == "caf\xe9 \u2603\t"
    assert json_string(b"a\xffb\x01") == "a\\xffb\\x01"
    assert json_string("a\udcffb") == "a\\xffb"  # analyzers' raw bytes, carried as surrogates


@given(st.one_of(st.none(), st.text(alphabet=st.sampled_from("ab-,(empty) \t\x00\x7f\xe9\u2603\\x4"), max_size=12)))
def test_string_column_matches_byte_rule(value: str | None) -> None:
    expected = "-" if value is None else escape_by_bytes(value, in_container=False)
    assert tsv_formatter("string")(value) == expected


@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from("ab-,(empty) \t\xe9\\"), max_size=8)), max_size=4))
def test_string_container_matches_byte_rule(items: list[str | None]) -> None:
    expected = ",".join("-" if v is None else escape_by_bytes(v, in_container=True) for v in items) or "(empty)"
    assert tsv_formatter("vector[string]")(items) == expected
    assert tsv_formatter("set[enum]")(tuple(items)) == expected


def test_container_bytes_items_are_escaped() -> None:
    assert tsv_formatter("vector[string]")([b"a,b", "c"]) == "a\\x2cb,c"


def test_interval_container_prints_each_item() -> None:
    printer = tsv_formatter("vector[interval]")
    assert printer([3600.0, 60, None, 0.5]) == "3600.000000,60.000000,-,0.500000"
    # 0.0 and -0.0 are equal (one cache key) but print differently.
    assert printer([0.0, -0.0]) == "0.000000,-0.000000" and printer([-0.0, 0.0]) == "-0.000000,0.000000"
    assert printer([]) == "(empty)" and printer(None) == "-"


def test_count_column_takes_any_integral_value() -> None:
    printer = tsv_formatter("count")
    assert [printer(v) for v in (7, True, False, 3.9, "12", None)] == ["7", "1", "0", "3", "12", "-"]


# Values of every class a column may be handed: the analyzers' usual ones and the odd ones
# the generated line printer leaves to the column's printer.
_ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.sampled_from("ab-,(empty) \t\x00\x7f\xe9\u2603\\x4"), max_size=8), st.binary(max_size=4),
)
_TYPES = ["time", "interval", "double", "count", "int", "port", "bool", "addr", "subnet", "string", "enum",
          "set[string]", "vector[string]", "vector[interval]", "set[count]"]


def _outcome(printer: Any, value: Any) -> Any:
    try:
        return printer(value)
    except Exception as exc:  # noqa: BLE001 (the same failure is the expected outcome)
        return type(exc)


@given(st.lists(st.tuples(st.sampled_from(_TYPES), st.one_of(_ANY_VALUE, st.lists(_ANY_VALUE, max_size=3))),
                max_size=6))
def test_generated_line_matches_column_printers(columns: list[tuple[str, Any]]) -> None:
    """The generated TSV line printers print each value as its column's tsv_formatter does
    (or fail as it does), whatever the value's class, from values and from a row."""
    of_values, of_row = tsv_line_functions([(f"c.{i}", type_) for i, (type_, _) in enumerate(columns)])
    values = [value for _, value in columns]
    row = {f"c.{i}": value for i, value in enumerate(values) if value is not None}  # None as a missing key
    expected = [_outcome(tsv_formatter(type_), value) for type_, value in columns]
    if any(isinstance(text, type) for text in expected):
        assert isinstance(_outcome(of_values, values), type) and isinstance(_outcome(of_row, row), type)
    else:
        assert of_values(values) == of_row(row) == "\t".join(expected) + "\n"


def test_row_and_values_give_one_line(tmp_path) -> None:
    """A row as a dict (missing keys unset) and as its values in column order are one line,
    in TSV and in every JSON timestamp form."""
    fields = [("ts", "time"), ("uid", "string"), ("n", "count"), ("ok", "bool"), ("rtt", "interval"),
              ("names", "vector[string]"), ("ttls", "vector[interval]")]
    row = {"ts": 1700000000.25, "uid": "Cabc", "n": 3, "ok": True, "names": ["a\\b", "c,d"], "ttls": [60.0, 0.5]}
    values = [row.get(name) for name, _ in fields]
    for use_json, style in ((False, "epoch"), (True, "epoch"), (True, "millis"), (True, "iso8601")):
        with ZeekLogWriter(tmp_path / f"{use_json}{style}.log", "t", fields, use_json=use_json,
                           ts_style=style) as writer:
            assert writer.line(row) == writer.line_of_values(values)
    with ZeekLogWriter(tmp_path / "j.log", "t", fields, use_json=True) as writer:
        assert json.loads(writer.line(row)) == {
            "ts": 1700000000.25, "uid": "Cabc", "n": 3, "ok": True, "names": ["a\\b", "c,d"], "ttls": [60.0, 0.5]}
    with ZeekLogWriter(tmp_path / "t.log", "t", fields) as writer:
        assert writer.line(row) == "1700000000.250000\tCabc\t3\tT\t-\ta\\x5cb,c\\x2cd\t60.000000,0.500000\n"
