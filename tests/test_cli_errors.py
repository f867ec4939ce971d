"""Bad paths and options, for every command: one line `pcapexfil: error: ...` on stderr, a
non-zero exit status (2 for usage errors), no traceback, and nothing half-written.

Unwritable output directories are made by putting them under a regular file (root, which
runs these tests in CI, can write into a chmod 555 directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcapexfil.cli import main
from pcapexfil.synth.labels import write_labels

ROOT = Path(__file__).resolve().parents[1]
GOOD_PCAP = str(ROOT / "fixtures" / "malformed" / "bad-ihl-small.pcap")  # decodes fine apart from one packet


@pytest.fixture()
def paths(tmp_path: Path) -> dict[str, str]:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "conn.log").write_text("#separator \\x09\n#fields\tts\tuid\n")
    (logs / "exfil_detection.log").write_text("#separator \\x09\n#fields\tts\n")
    labels = tmp_path / "labels.csv"
    write_labels(labels, [])
    return {
        "missing": str(tmp_path / "does-not-exist.pcap"),
        "missing_dir": str(tmp_path / "no-such-dir"),
        "dir": str(tmp_path),
        "file": str(blocker),
        "unwritable": str(blocker / "out"),
        "out": str(tmp_path / "out"),
        "state_dir": str(tmp_path),
        "logs": str(logs),
        "labels": str(labels),
    }


# (command line with {placeholders}, text the error must contain)
CASES: dict[str, list[tuple[str, str]]] = {
    "conn": [
        ("conn {missing} -o {out}", "no such file"),
        ("conn {dir} -o {out}", "is a directory"),
        ("conn " + GOOD_PCAP + " -o {unwritable}", "cannot write"),
        ("conn " + GOOD_PCAP + " -o {out} --local-nets 10.0.0.0/33", "--local-nets"),
        ("conn " + GOOD_PCAP + " -o {out} --local-nets 10.0.0.1/8,banana", "banana"),
        ("conn " + GOOD_PCAP + " -o {out} --json-timestamps nanos", "--json-timestamps"),
        ("conn " + GOOD_PCAP + " -o {out} --max-flows -1", "--max-flows"),
        ("conn " + GOOD_PCAP + " -o {out} --seed abc", "--seed"),
        ("conn " + GOOD_PCAP + " -o {out} --no-such-option", "--no-such-option"),
    ],
    "analyze": [
        ("analyze {missing} -o {out}", "no such file"),
        ("analyze {dir} -o {out}", "is a directory"),
        ("analyze " + GOOD_PCAP + " -o {unwritable}", "cannot write"),
        ("analyze " + GOOD_PCAP + " -o {out} --local-nets 300.0.0.0/8", "300.0.0.0/8"),
        ("analyze " + GOOD_PCAP + " -o {out} --state {state_dir}", "directory"),
        ("analyze " + GOOD_PCAP + " -o {out} --state {unwritable}", "state"),
        ("analyze " + GOOD_PCAP + " -o {out} --tz Mars/Olympus_Mons", "Mars/Olympus_Mons"),
        ("analyze " + GOOD_PCAP + " -o {out} --domain-mode last3", "--domain-mode"),
        ("analyze " + GOOD_PCAP + " -o {out} --aggregation-interval 3x", "--aggregation-interval"),
        ("analyze " + GOOD_PCAP + " -o {out} --baseline-days 0", "--baseline-days"),
        ("analyze " + GOOD_PCAP + " -o {out} --threshold-raise-notice-at-high-score high", "threshold"),
        ("analyze " + GOOD_PCAP + " -o {out} --rule no-such-rule", "no-such-rule"),
        ("analyze " + GOOD_PCAP + " -o {out} --max-flows many", "--max-flows"),
    ],
    "detect": [
        ("detect {missing_dir} -o {out}", "not a directory"),
        ("detect {file} -o {out}", "not a directory"),
        ("detect {dir} -o {out}", "no conn.log"),
        ("detect {logs} -o {unwritable}", "cannot write"),
        ("detect {logs} -o {out} --local-nets 10.0.0.0/8,10.1", "10.1"),
        ("detect {logs} -o {out} --busy-timeout soon --state {out}/s.db", "--busy-timeout"),
        ("detect {logs} -o {out} --json-timestamps nanos", "--json-timestamps"),
    ],
    "baseline": [
        ("baseline show --state {missing}", "no such file"),
        ("baseline show --state {state_dir}", "directory"),
        ("baseline show --state {file}", "not an SQLite database"),
        ("baseline export --state {missing}", "no such file"),
        ("baseline export --state {missing} --format xml", "--format"),
        ("baseline import {missing} --state {out}/s.db", "does not exist"),
        ("baseline reset --state {missing} --yes", "no such file"),
        ("baseline frobnicate", "frobnicate"),
    ],
    "synth": [
        ("synth -o {unwritable} --days 12", "Not a directory"),
        ("synth -o {out} --days 0", "--days"),
        ("synth -o {out} --days 5", "--days"),
        ("synth -o {out} --local-nets 10.0.0.0/88", "10.0.0.0/88"),
        ("synth -o {out} --scale lots", "--scale"),
    ],
    "evaluate": [
        ("evaluate {missing_dir} --labels {labels}", "does not exist"),
        ("evaluate {file} --labels {labels}", "is a file"),
        ("evaluate {logs} --labels {missing}", "does not exist"),
        ("evaluate {logs} --labels {dir}", "is a directory"),
        ("evaluate {logs} --labels {file}", "missing column"),
        ("evaluate {logs} --labels {labels} -o {unwritable}", "Not a directory"),
        ("evaluate {logs} --labels {labels} --threshold 2", "--threshold"),
        ("evaluate {logs} --labels {labels} --aggregation-interval soon", "--aggregation-interval"),
    ],
    "live": [
        ("live -i no-such-if0 -o {out}", "no such interface"),
        ("live -i lo -o {out} --bpf 'tcp port port'", "invalid BPF filter"),
        ("live -i lo -o {out} --bpf 'ether proto \\\\ip and'", "invalid BPF filter"),
        ("live -i lo -o {unwritable}", "cannot write"),
        ("live -i lo -o {out} --local-nets everything", "everything"),
        ("live -i lo -o {out} --snaplen 10", "--snaplen"),
        ("live -i lo -o {out} --workers 0", "--workers"),
        ("live -i lo -o {out} --rotate weekly", "--rotate"),
        ("live -i lo -o {out} --state {state_dir}", "directory"),
        ("live -i lo -o {out} --max-flows -1", "--max-flows"),
    ],
}

ALL = [(cmd, line, text) for cmd, cases in CASES.items() for line, text in cases]


def _argv(line: str, paths: dict[str, str]) -> list[str]:
    import shlex

    return shlex.split(line.format(**paths))


@pytest.mark.parametrize(("command", "line", "text"), ALL,
                         ids=[f"{c}-{n}" for c, cases in CASES.items() for n in range(len(cases))])
def test_one_line_error_nonzero_no_traceback(command, line, text, paths):
    result = CliRunner().invoke(main, _argv(line, paths))
    assert isinstance(result.exception, SystemExit), result.exception  # no other exception escaped
    assert result.exit_code != 0
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, result.stderr
    assert err[0].startswith("pcapexfil: error: "), err[0]
    assert text in err[0], err[0]
    assert "Traceback" not in result.output
    out = Path(paths["out"])
    assert not (out / "conn.log").exists() and not (out / "exfil_detection.log").exists()


def test_usage_errors_exit_2(paths):
    for line in ("conn {missing} -o {out}", "analyze {dir} -o {out}", "synth -o {out} --days 0",
                 "evaluate {missing_dir} --labels {labels}", "live -i lo -o {out} --bpf 'tcp port port'",
                 "baseline show --state {missing}", "detect {missing_dir} -o {out}"):
        assert CliRunner().invoke(main, _argv(line, paths)).exit_code == 2, line


def test_every_command_is_covered():
    wanted = {"conn", "analyze", "detect", "baseline", "synth", "evaluate", "live"}
    assert wanted <= set(main.commands) and wanted <= set(CASES)


def test_real_process_one_line_and_help_still_works(tmp_path):
    """Through the console entry point: errors on one line; --help and --version unchanged."""
    cli = [sys.executable, "-c", "from pcapexfil.cli import main; main()"]
    r = subprocess.run([*cli, "conn", str(tmp_path), "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("pcapexfil: error:")
    r = subprocess.run([*cli, "conn", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--max-flows" in r.stdout
    r = subprocess.run([*cli, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "version" in r.stdout
    r = subprocess.run(cli, capture_output=True, text=True)  # bare: the help, as a usage error
    assert r.returncode == 2 and "Commands:" in r.stderr
    assert os.path.exists(GOOD_PCAP)
