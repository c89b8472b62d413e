"""Text from the input never reaches the terminal as control characters, and JSON escapes the
characters a terminal or an editor would act on (C1 and BiDi controls) as \\uXXXX."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ruletrace.cli import main
from ruletrace.cli.status import ExitStatus
from ruletrace.render import json as rjson
from tests.simulate.test_engine import SEED003

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "explain"
RULES, LOG = FIX / "seed003.rules", FIX / "seed003.log"

EVIL = "\x1b]0;owned\x07\x1b[2J\u202e\x9b31m"  # title change, clear screen, right-to-left override, 8-bit CSI
# what may not appear raw in anything shown on a terminal (tabs and newlines are layout)
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

BASE = ("IN=eth0 OUT= MAC=00:15:5d:12:e2:28:00:15:5d:12:e2:24:08:00 SRC=172.28.129.2 DST=172.28.129.4 LEN=60 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=41569 DF PROTO=TCP SPT=55694 DPT=52000 SEQ=1 ACK=0 WINDOW=29200 RES=0x00 "
        "SYN URGP=0")
TAGS = ["nat:PREROUTING:rule:1", "nat:KUBE-SERVICES:rule:1", "nat:KUBE-NODEPORTS:rule:1",
        "nat:KUBE-MARK-DROP:rule:1", "nat:KUBE-MARK-DROP:return:2", "nat:KUBE-NODEPORTS:return:2",
        "nat:KUBE-SERVICES:return:2", "nat:PREROUTING:policy:3", "filter:INPUT:rule:1"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean(text: str) -> None:
    bad = RAW_CONTROL.findall(text)
    assert not bad, f"raw control characters reached the terminal: {bad!r}"


def evil_rules(tmp_path: Path) -> Path:
    """seed 003's simulate ruleset with EVIL in the comment of nat:KUBE-NODEPORTS rule 1."""
    p = tmp_path / "node.rules"
    text = SEED003.replace('--comment "default/app:"', f'--comment "default/app:{EVIL}"')
    assert text != SEED003
    p.write_text(text)
    return p


def test_read_line_and_warnings_of_explain_clean_the_file_name(tmp_path, capsys):
    log = tmp_path / f"kern{EVIL}.log"
    log.write_bytes(LOG.read_bytes())
    code, out, err = run(capsys, "explain", "-r", str(RULES), str(log), "--no-color", "--summary")
    assert code == ExitStatus.OK, err
    assert "ruletrace: read " in err and "as kernel-log" in err
    assert "\\x1b]0;owned\\x07" in err  # shown, as an escape
    assert_clean(out + err)


def test_simulate_explain_miss_cleans_rule_text(tmp_path, capsys):
    rules = evil_rules(tmp_path)
    code, out, err = run(capsys, "simulate", "-r", str(rules), "-p", "tcp", "-s", "172.28.129.2", "-d", "172.28.129.4",
                         "--dport", "80", "--local-addr", "172.28.129.4", "--explain-miss", "nat:KUBE-NODEPORTS",
                         "--no-color", "--width", "300")
    assert code == ExitStatus.OK, err
    assert "rules that did not match" in out and "default/app:\\x1b]0;owned" in out
    assert_clean(out + err)


def test_simulate_compare_cleans_the_trace(tmp_path, capsys):
    rules = evil_rules(tmp_path)
    log = tmp_path / "trace.log"
    tags = TAGS[:-1] + [f"filter:INPUT{EVIL}:policy:2"]
    log.write_text("".join(f"Jan  1 21:23:16 cos74 kernel: TRACE: {t} {BASE}{' MARK=0x8000' if i >= 4 else ''}\n"
                           for i, t in enumerate(tags)))
    code, out, err = run(capsys, "simulate", "-r", str(rules), "--compare", str(log), "--local-addr", "172.28.129.4",
                         "--no-color", "--width", "300")
    assert code == ExitStatus.FOUND_NOTHING, out + err
    assert "part ways at step 9: the trace shows filter:INPUT\\x1b]0;owned" in out
    assert_clean(out + err)


def test_report_from_json_cleans_warnings(tmp_path, capsys):
    code, out, _ = run(capsys, "explain", "-r", str(RULES), str(LOG), "--json")
    doc = json.loads(out)
    doc["warnings"].append(f"ruleset{EVIL}")
    src = tmp_path / f"in{EVIL}.json"
    src.write_text(json.dumps(doc))
    code, out, err = run(capsys, "report", "--from-json", str(src), "-o", str(tmp_path / "r.html"))
    assert code == ExitStatus.OK, err
    assert "ruletrace: warning: ruleset\\x1b]0;owned" in err
    assert_clean(out + err)


@pytest.mark.parametrize("encoder", ["orjson", "json"])
def test_json_escapes_bidi_and_c1_controls(tmp_path, capsys, monkeypatch, encoder):
    if encoder == "json":
        monkeypatch.setattr(rjson, "_orjson", None)
    elif rjson._orjson is None:
        pytest.skip("orjson is not installed")
    rules = tmp_path / "seed003.rules"
    rules.write_text(RULES.read_text().replace('"ootob9/ingress-nginx:http"', f'"ingress{EVIL}\u2066x\u2069"'))
    code, out, err = run(capsys, "explain", "-r", str(rules), str(LOG), "--json")
    assert code == ExitStatus.OK, err
    assert_clean(out)
    for esc in ("\\u001b]0;owned\\u0007", "\\u202e", "\\u009b31m", "\\u2066x\\u2069"):
        assert esc in out
    doc = json.loads(out)  # still JSON, and it decodes to the text of the ruleset
    rule = doc["tables"]["rules"][doc["packets"][0]["steps"][12]["rule"]]
    assert f"ingress{EVIL}\u2066x\u2069" in rule


@pytest.mark.parametrize("encoder", ["orjson", "json"])
def test_dumps_keeps_other_text_and_the_value(monkeypatch, encoder):
    if encoder == "json":
        monkeypatch.setattr(rjson, "_orjson", None)
    elif rjson._orjson is None:
        pytest.skip("orjson is not installed")
    value = {"a": "é ü 中文 \u00a0 \\\u202e \x7f", "b": ["\u2028", "\x85"]}
    text = rjson.dumps(value)
    assert "é ü 中文 \u00a0" in text  # printable non-ASCII stays UTF-8
    assert "\\\\\\u202e" in text and "\\u007f" in text and "\\u2028" in text and "\\u0085" in text
    assert json.loads(text) == value
    assert json.loads(rjson.dumps(value, indent=True)) == value
