"""Zeek ASCII escaping: the shortcut for plain values agrees with the byte-by-byte rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pcapexfil.logs.zeek import escape_string


def escape_by_bytes(value: str, in_container: bool) -> str:
    """LogAscii's rule spelled out: every byte outside printable ASCII (and the separators) as \\xHH."""
    raw = value.encode("utf-8", "surrogateescape")
    if not raw:
        return "(empty)"
    text = "".join(
        f"\\x{b:02x}" if b < 0x20 or b >= 0x7F or b == 0x09 or (in_container and b == 0x2C) else chr(b) for b in raw
    )
    if text in ("-", "(empty)"):
        return f"\\x{ord(text[0]):02x}{text[1:]}"
    return text


@given(st.text(alphabet=st.sampled_from("ab-,(empty) \t\x00\x7f\xe9\u2603"), max_size=12), st.booleans())
def test_escape_matches_byte_rule(value: str, in_container: bool) -> None:
    assert escape_string(value, in_container) == escape_by_bytes(value, in_container)


def test_escape_examples() -> None:
    assert escape_string("example.com") == "example.com"
    assert escape_string("a\tb") == "a\\x09b"
    assert escape_string("a,b", in_container=True) == "a\\x2cb"
    assert escape_string("-") == "\\x2d" and escape_string("(empty)") == "\\x28empty)"
    assert escape_string("") == "(empty)"
    assert escape_string(b"\xff") == "\\xff"
