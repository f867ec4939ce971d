"""evaluate on a tiny hand-written result set: every figure is worked out by hand in the comments."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcapexfil.cli import main
from pcapexfil.evaluate import evaluate, load_results
from pcapexfil.evaluate.metrics import (
    LOG_DELAY,
    Notice,
    Window,
    notice_matches,
    window_matches,
)
from pcapexfil.synth.labels import Label, format_ts, read_labels

T0 = 1710374400.0  # 2024-03-14T00:00:00Z
AGG = 10800.0

# Labels. E1..E3 are exfiltration, B1 a benign backup (the next day).
LABELS = f"""id,kind,orig_h,resp_h,resp_p,domain,start,end,bytes_sent,bytes_received,conns
E1,bulk_https_new_domain,10.0.0.1,1.1.1.1,443,files.evil.com,{format_ts(T0 + 1000)},{format_ts(T0 + 2000)},9000000,4000,1
E2,new_port,10.0.0.2,5.5.5.5,4444,,{format_ts(T0 + 5000)},{format_ts(T0 + 5100)},5000000,2000,1
E3,low_and_slow,10.0.0.3,7.7.7.7,443,api.slow.io,{T0 + 20000},{T0 + 40000},4000000,1000,4
B1,benign_backup,10.0.0.1,9.9.9.9,443,backup.ok.net,{format_ts(T0 + 90000)},{format_ts(T0 + 90100)},7000000,900,1
"""

HEADER = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\t{path}\n"

# conn.log: C2 is the same host and port as E1, at the same time, but another server.
CONNS = [
    ("C1", T0 + 1000, "10.0.0.1", "1.1.1.1", 443),
    ("C2", T0 + 1500, "10.0.0.1", "8.8.8.8", 443),
    ("C3", T0 + 5000, "10.0.0.2", "5.5.5.5", 4444),
    ("C4", T0 + 25000, "10.0.0.3", "7.7.7.7", 443),
    ("C5", T0 + 90000, "10.0.0.1", "9.9.9.9", 443),
    ("C6", T0 + 60000, "10.0.0.4", "6.6.6.6", 443),
]

# Windows: (ts, orig_h, resp_p, identifier, uids, score)
WINDOWS = [
    (T0 + 11800, "10.0.0.1", 443, "1.1.1.1", "C1", 0.9),    # W1 matches E1, flagged -> TP
    (T0 + 12300, "10.0.0.1", 443, "evil.com", "C1", 0.5),   # W2 matches E1, not flagged
    (T0 + 12300, "10.0.0.1", 443, "8.8.8.8", "C2", 0.85),   # W3 overlaps E1 but holds C2 only -> FP
    (T0 + 35800, "10.0.0.3", 443, "7.7.7.7", "C4", 0.6),    # W4 matches E3, not flagged
    (T0 + 100800, "10.0.0.1", 443, "ok.net", "C5", 0.82),   # W5 matches benign B1, flagged -> FP
    (T0 + 70800, "10.0.0.4", 443, "6.6.6.6", "C6", 0.1),    # W6 unlabelled
]


def _write_results(d: Path, with_conn: bool = True) -> None:
    d.mkdir(parents=True, exist_ok=True)
    lines = [HEADER.format(path="exfil_detection"),
             "#fields\tts\torig_h\tresp_p\tscore.pcr\tscore.zscore\tscore.euclidean\tidentifier\torig_ip_bytes\t"
             "resp_ip_bytes\tduration\tuid\texfiltration_score\n",
             "#types\ttime\taddr\tport\tdouble\tdouble\tdouble\tstring\tcount\tcount\tinterval\tvector[string]\t"
             "double\n"]
    for ts, orig, port, ident, uids, score in WINDOWS:
        lines.append(f"{ts:.6f}\t{orig}\t{port}\t1.0\t-\t0.5\t{ident}\t1000\t100\t3.000000\t{uids}\t{score}\n")
    (d / "exfil_detection.log").write_text("".join(lines) + "#close\t2024-03-15-00-00-00\n")
    # notice.log in Zeek's JSON form with ISO 8601 timestamps (unset fields omitted).
    notices = [
        {"ts": format_ts(T0 + 11800), "note": "EXFIL_DETECTION::High_Score", "src": "10.0.0.1", "p": 443},  # N1: E1
        {"ts": format_ts(T0 + 15800), "note": "EXFIL_DETECTION::New_Protocol", "src": "10.0.0.2", "p": 4444},  # N2: E2
        {"ts": format_ts(T0 + 3000), "note": "EXFIL_DETECTION::New_Protocol",  # N3: unlabelled, host from msg
         "msg": "new protocol detected: protocol 993 from host 10.0.0.5"},
        {"ts": format_ts(T0 + 12300), "note": "EXFIL_DETECTION::High_Score", "src": "10.0.0.1", "p": 443},  # N4: E1
        {"ts": format_ts(T0 + 100800), "note": "EXFIL_DETECTION::High_Score", "src": "10.0.0.1", "p": 443},  # N5: B1
    ]
    (d / "notice.log").write_text("".join(json.dumps(n) + "\n" for n in notices))
    if with_conn:
        rows = [HEADER.format(path="conn"), "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\n",
                "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\n"]
        rows += [f"{ts:.6f}\t{uid}\t{o}\t50000\t{r}\t{p}\ttcp\n" for uid, ts, o, r, p in CONNS]
        (d / "conn.log").write_text("".join(rows))


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(LABELS)
    return read_labels(path)


@pytest.mark.parametrize("with_conn", [True, False])
def test_hand_computed_figures(tmp_path, labels, with_conn):
    _write_results(tmp_path / "run", with_conn)
    ev = evaluate(load_results(str(tmp_path / "run")), labels, threshold=0.8, aggregation_interval=AGG)
    # E1 found (W1 >= 0.8 and High_Score N1/N4), E2 by New_Protocol N2 only, E3 missed (W4 = 0.6): 2 of 3.
    assert ev["episodes"]["found"] == 2 and ev["episodes"]["total"] == 3
    assert ev["episodes"]["recall"] == pytest.approx(2 / 3)
    kinds = {k["kind"]: k for k in ev["kinds"]}
    assert kinds["bulk_https_new_domain"]["recall"] == 1.0
    assert kinds["bulk_https_new_domain"]["found_by_notice"] == {"EXFIL_DETECTION::High_Score": 1}
    assert kinds["new_port"]["recall"] == 1.0 and kinds["new_port"]["found_by_window"] == 0
    assert kinds["low_and_slow"]["recall"] == 0.0
    assert kinds["benign_backup"]["flag_rate"] == 1.0  # W5 0.82 and N5
    assert ev["episodes"]["benign_flagged"] == 1
    # Flagged windows: W1 (TP), W3 and W5 (FP) -> precision 1/3.
    w = ev["windows"]
    assert (w["total"], w["flagged"], w["true_positive"], w["false_positive"]) == (6, 3, 1, 2)
    assert w["precision"] == pytest.approx(1 / 3)
    assert w["flagged_benign_labelled"] == 1
    # Host-days: (10.0.0.1, 14th), (10.0.0.3, 14th), (10.0.0.4, 14th), (10.0.0.1, 15th) = 4; 2 FP / 4.
    assert ev["host_days"] == 4
    assert ev["fp_windows_per_host_day"] == pytest.approx(0.5)
    # High_Score: N1, N4 match E1, N5 matches B1. New_Protocol: N2 matches E2, N3 unlabelled.
    assert ev["notices"]["EXFIL_DETECTION::High_Score"] == {"total": 3, "match_exfil": 2, "match_benign": 1,
                                                            "unlabelled": 0}
    assert ev["notices"]["EXFIL_DETECTION::New_Protocol"] == {"total": 2, "match_exfil": 1, "match_benign": 0,
                                                              "unlabelled": 1}
    assert ev["false_notices_per_host_day"] == pytest.approx(2 / 4)
    # PR curve, thresholds descending: 0.9 W1 (1 TP), 0.85 +W3 FP, 0.82 +W5 FP, 0.6 +W4 TP (E3),
    # 0.5 +W2 TP (E1 again), 0.1 +W6 FP.
    curve = [(p["threshold"], p["precision"], p["recall"]) for p in ev["pr_curve"]]
    expected = [(0.9, 1.0, 1 / 3), (0.85, 1 / 2, 1 / 3), (0.82, 1 / 3, 1 / 3), (0.6, 2 / 4, 2 / 3),
                (0.5, 3 / 5, 2 / 3), (0.1, 3 / 6, 2 / 3)]
    assert len(curve) == len(expected)
    for got, want in zip(curve, expected):
        assert got == pytest.approx(want)
    # AP: recall steps 1/3 at precision 1.0 and 1/3 at precision 0.5 -> 1/3 + 1/6.
    assert ev["average_precision"] == pytest.approx(0.5)
    per = {row["id"]: row for row in ev["per_label"]}
    assert per["E1"]["max_score"] == 0.9 and per["E1"]["windows"] == 2
    assert per["E2"]["max_score"] is None and per["E2"]["notices"] == ["EXFIL_DETECTION::New_Protocol"]
    # Score histogram (20 bins): exfil windows W1 0.9, W2 0.5, W4 0.6; benign W5 0.82; unlabelled W3, W6.
    hist = ev["score_histogram"]
    assert hist["exfil"][18] == 1 and hist["exfil"][10] == 1 and hist["exfil"][12] == 1 and sum(hist["exfil"]) == 3
    assert hist["benign_labelled"][16] == 1 and sum(hist["benign_labelled"]) == 1
    assert hist["unlabelled"][17] == 1 and hist["unlabelled"][2] == 1


def test_window_span_rule():
    lb = Label("E", "bulk_https_new_domain", "10.0.0.1", ["1.1.1.1"], 443, "", T0, T0 + 100)
    def win(ts: float) -> Window:
        return Window(ts, "10.0.0.1", 443, "1.1.1.1", 0.9, [])
    # [ts - AGG, ts] overlaps [T0, T0 + 100 + LOG_DELAY] (the last connection may be logged up to
    # LOG_DELAY after its last packet) exactly when T0 <= ts <= T0 + 100 + LOG_DELAY + AGG.
    assert LOG_DELAY == 300.0
    assert window_matches(win(T0), lb, AGG, None)
    assert window_matches(win(T0 + 100 + LOG_DELAY + AGG), lb, AGG, None)
    assert not window_matches(win(T0 - 0.001), lb, AGG, None)
    assert not window_matches(win(T0 + 100 + LOG_DELAY + AGG + 0.001), lb, AGG, None)
    # A notice: from the label's start to a window closing at the latest matching time.
    def note(ts: float) -> Notice:
        return Notice(ts, "EXFIL_DETECTION::New_Protocol", "10.0.0.1", 443)
    assert notice_matches(note(T0 + 100 + LOG_DELAY + AGG), lb, AGG)
    assert not notice_matches(note(T0 + 100 + LOG_DELAY + AGG + 0.001), lb, AGG)
    assert not notice_matches(note(T0 - 0.001), lb, AGG)
    # Without conn.log a JA3S hash identifier gets the benefit of the doubt; another address does not.
    assert window_matches(Window(T0 + 50, "10.0.0.1", 443, "a704460bd0a887c62e4f462bf1bba96b", 0.9, []), lb, AGG,
                          None)
    assert not window_matches(Window(T0 + 50, "10.0.0.1", 443, "2.2.2.2", 0.9, []), lb, AGG, None)


def test_cli_writes_reports(tmp_path):
    _write_results(tmp_path / "run")
    (tmp_path / "labels.csv").write_text(LABELS)
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--labels", str(tmp_path / "labels.csv"),
                                    "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "recall 2/3" in res.output
    report = json.loads((tmp_path / "rep/report.json").read_text())
    assert report["windows"]["precision"] == pytest.approx(1 / 3)
    md = (tmp_path / "rep/report.md").read_text()
    assert "| low_and_slow | 1 | 0 | 0.0% |" in md
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "rep/pr_curve.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "rep/score_distribution.png").exists()
    else:
        assert "plots skipped" in res.output


def test_cli_bad_inputs_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "labels.csv").write_text(LABELS)
    (tmp_path / "bad.csv").write_text("kind,orig_h,resp_p,start,end\nnew_port,10.0.0.1,notaport,0,1\n")
    _write_results(tmp_path / "run")
    runner = CliRunner()
    for args in (["evaluate", str(tmp_path / "empty"), "--labels", str(tmp_path / "labels.csv")],
                 ["evaluate", str(tmp_path / "run"), "--labels", str(tmp_path / "bad.csv")],
                 ["evaluate", str(tmp_path / "run"), "--labels", str(tmp_path / "labels.csv"),
                  "--aggregation-interval", "soon"]):
        res = runner.invoke(main, args)
        assert res.exit_code != 0
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_damaged_log_lines_are_skipped_and_counted(tmp_path, labels):
    _write_results(tmp_path / "run")
    log = tmp_path / "run/exfil_detection.log"
    log.write_text(log.read_text().replace("#close", "garbage\tline\n#close"))
    results = load_results(str(tmp_path / "run"))
    assert len(results.windows) == 6 and results.skipped_lines == 1
    assert any("skipped" in n for n in results.notes)
    shutil.rmtree(tmp_path / "run")


def test_benign_label_not_flagged_by_the_episode_sharing_its_window():
    # Sync B2 runs on the same host and port during exfiltration E1; window X holds connections of
    # both (uids C1 and C7) and scores 0.95, notice M fires then. X and M belong to E1, so B2 is
    # not flagged; a later window Y holding only B2's connection at 0.9 does flag it.
    from pcapexfil.evaluate.metrics import Conn, Notice, Results
    lbs = [Label("E1", "bulk_https_new_domain", "10.0.0.1", ["1.1.1.1"], 443, "", T0 + 1000, T0 + 2000),
           Label("B2", "benign_cloud_sync", "10.0.0.1", ["9.9.9.9"], 443, "", T0 + 1500, T0 + 1600)]
    conns = {"C1": Conn(T0 + 1000, "10.0.0.1", "1.1.1.1", 443), "C7": Conn(T0 + 1500, "10.0.0.1", "9.9.9.9", 443),
             "C8": Conn(T0 + 1550, "10.0.0.1", "9.9.9.9", 443)}
    x = Window(T0 + 11800, "10.0.0.1", 443, "ja3s", 0.95, ["C1", "C7"])
    m = Notice(T0 + 11800, "EXFIL_DETECTION::High_Score", "10.0.0.1", 443)
    ev = evaluate(Results([x], [m], conns), lbs, threshold=0.8, aggregation_interval=AGG)
    assert ev["episodes"]["found"] == 1 and ev["episodes"]["benign_flagged"] == 0
    y = Window(T0 + 12000, "10.0.0.1", 443, "9.9.9.9", 0.9, ["C8"])
    ev = evaluate(Results([x, y], [m], conns), lbs, threshold=0.8, aggregation_interval=AGG)
    assert ev["episodes"]["benign_flagged"] == 1
    assert ev["windows"]["false_positive"] == 1  # Y: a flagged window with no exfiltration
