"""fixtures/malformed/: each damaged capture is processed to the end, its damage counted in
weird.log under the expected name, and the good traffic around the damage still reported
exactly in conn.log (see fixtures/make_malformed.py for what each file holds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pcapexfil.pipeline import ConnLogSink, RunOptions, run

ROOT = Path(__file__).resolve().parents[1]
MALFORMED = ROOT / "fixtures" / "malformed"
MANIFEST = json.loads((MALFORMED / "MANIFEST.json").read_text())
REQUEST_LEN, RESPONSE_LEN = 42, 43  # the good HTTP exchange in make_malformed.py


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def test_generator_is_deterministic_and_committed_files_match(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "fixtures" / "make_malformed.py"), str(tmp_path)], check=True)
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == sorted(p.name for p in MALFORMED.iterdir())
    for name in generated:
        assert (tmp_path / name).read_bytes() == (MALFORMED / name).read_bytes(), name


@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_damage_counted_and_good_traffic_kept(name, engine, tmp_path):
    entry = MANIFEST[name]
    summary = run([str(MALFORMED / name)], RunOptions(out_dir=str(tmp_path), seed=1, engine=engine),
                  [ConnLogSink(str(tmp_path))])
    weird_names = sorted({r["name"] for r in _rows(tmp_path / "weird.log")})
    assert weird_names == sorted(set(entry["weirds"])), entry["about"]
    assert sorted(summary.weirds) == weird_names
    conns = _rows(tmp_path / "conn.log")
    good = [c for c in conns if (c["id.orig_h"], c["id.orig_p"], c["id.resp_h"], c["id.resp_p"])
            == ("10.0.0.1", "40000", "10.0.0.2", "80")]
    assert len(good) == 1, conns
    g = good[0]
    if entry["good_complete"]:
        assert (g["conn_state"], g["history"]) == ("SF", "ShADdFf")  # no pure ACK from the server: no "a"
        assert (g["orig_pkts"], g["resp_pkts"]) == ("5", "3")
        assert (g["orig_bytes"], g["resp_bytes"]) == (str(REQUEST_LEN), str(RESPONSE_LEN))
        assert g["service"] == "http"
        dns = [c for c in conns if c["id.resp_p"] == "53" and c["id.orig_p"] == "53000"]
        assert len(dns) == 1 and (dns[0]["orig_pkts"], dns[0]["resp_pkts"], dns[0]["service"]) == ("1", "1", "dns")
        assert len(conns) == 2 + entry["extra_conns"]
    else:  # the file ends at the damage: what came before it is kept
        assert (g["orig_pkts"], g["resp_pkts"]) == ("3", "1")
        assert summary.damaged
        assert len(conns) == 1
