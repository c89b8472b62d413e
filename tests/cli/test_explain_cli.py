"""`ruletrace explain` end to end on the seed-003 trace: output, filters, JSON, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ruletrace.cli import main
from ruletrace.cli.status import ExitStatus

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "explain"
RULES = str(FIX / "seed003.rules")
LOG = str(FIX / "seed003.log")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_both_packets_with_fates_and_the_cause(capsys):
    code, out, _err = run(capsys, "explain", "-r", RULES, LOG, "--json")
    assert code == ExitStatus.OK
    doc = json.loads(out)
    assert doc["schema"] == 2
    pk = {p["dport"]: p for p in doc["packets"]}
    assert set(pk) == {52000, 80}
    drop, ok = pk[52000], pk[80]
    assert drop["fate"] == "dropped" and ok["fate"] == "delivered"
    assert drop["verdict"]["chain"] == "KUBE-FIREWALL" and drop["verdict"]["num"] == 1
    rules = doc["tables"]["rules"]
    assert rules[drop["verdict"]["rule"]].endswith("--mark 0x8000/0x8000 -j DROP")
    assert [c["role"] for c in drop["cause"]][:2] == ["decided", "mark set"]
    assert any(c["chain"] == "KUBE-NODEPORTS" and c["num"] == 16 for c in drop["cause"])
    assert drop["marks"][0]["new"] == "0x8000"
    assert ok["nat"][0]["new"] == "172.28.129.4:52000" and ok["nat"][0]["num"] == 3
    assert len(drop["steps"]) == 25 and len(ok["steps"]) == 20
    step = drop["steps"][12]
    assert (step["table"], step["chain"], step["kind"], step["num"]) == ("nat", "KUBE-NODEPORTS", "rule", 16)
    assert "ingress-nginx:http" in rules[step["rule"]]
    # the 52000 log was taken before a TRACE rule was added for port 80: the raw policy number misfits
    assert "chain has 3 rules" in drop["steps"][0]["warning"]
    assert doc["summary"]
    assert any("older or newer" in w for w in doc["warnings"])


def test_terminal_view_names_the_deciding_rule(capsys):
    code, out, _ = run(capsys, "explain", "-r", RULES, LOG, "--no-color", "--width", "120", "--match", "dport=52000")
    assert code == ExitStatus.OK
    assert "KUBE-FIREWALL" in out and "dropped" in out
    assert "\x1b[" not in out


def test_filters_by_fate_and_packet(capsys):
    code, out, _ = run(capsys, "explain", "-r", RULES, LOG, "--json", "--fate", "delivered")
    assert [p["dport"] for p in json.loads(out)["packets"]] == [80]
    code, out, _ = run(capsys, "explain", "-r", RULES, LOG, "--json", "--packet", "1")
    assert [p["id"] for p in json.loads(out)["packets"]] == [1]
    code, out, err = run(capsys, "explain", "-r", RULES, LOG, "--match", "dport=1")
    assert code == ExitStatus.FOUND_NOTHING and "no packet matched" in err


def test_gzip_and_stdin(capsys, tmp_path, monkeypatch):
    gz = tmp_path / "kern.log.1"  # no .gz suffix: detected by content
    gz.write_bytes(gzip.compress(Path(LOG).read_bytes()))
    code, out, _ = run(capsys, "explain", "-r", RULES, str(gz), "--json", "--summary")
    assert code == 0 and json.loads(out)["summary"]
    import io
    import sys
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(LOG).read_bytes())))
    code, out, _ = run(capsys, "explain", "-r", RULES, "-", "--json")
    assert code == 0 and len(json.loads(out)["packets"]) == 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "No such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"\x00\x01\x02binary\x00" * 100), "binary"),
        (lambda p: p.write_text(Path(RULES).read_text()), "ruleset"),
    ],
    ids=["missing", "empty", "binary", "ruleset-as-log"],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, make, message):
    p = tmp_path / "input.log"
    make(p)
    code, _out, err = run(capsys, "explain", "-r", RULES, str(p))
    assert code == ExitStatus.ERROR
    assert message.lower() in err.lower()
    assert "Traceback" not in err and len(err.strip().splitlines()) >= 1
    assert str(p) in err or "input.log" in err


def test_garbage_lines_are_skipped_and_counted(capsys, tmp_path):
    p = tmp_path / "mixed.log"
    lines = Path(LOG).read_text().splitlines()
    lines.insert(3, "Jan  1 21:23:16 cos74 kernel: TRACE: nat:KUBE-SERV")  # truncated
    lines.insert(5, "random garbage \x1b[31m not a trace")
    p.write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, "explain", "-r", RULES, str(p), "--json")
    assert code == 0
    assert len(json.loads(out)["packets"]) == 2
    assert "skipped 1" in err


def test_ruleset_errors_name_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.rules"
    bad.write_text("*filter\n:INPUT ACCEPT [0:0]\n-A NOPE -j DROP\nCOMMIT\n")
    code, _, err = run(capsys, "explain", "-r", str(bad), LOG)
    assert code == ExitStatus.ERROR
    assert f"{bad}:3" in err


def test_examples_list_and_run(capsys):
    code, out, _ = run(capsys, "examples")
    assert code == 0 and "k8s-nodeport" in out
    code, out, _ = run(capsys, "explain", "--example", "k8s-nodeport", "--json")
    assert code == 0
    fates = {p["dport"]: p["fate"] for p in json.loads(out)["packets"] if p["proto"] == "TCP"}
    assert fates.get(52000) == "dropped" and fates.get(80) == "delivered"


def test_examples_wrap_under_their_titles_on_a_terminal(capsys, monkeypatch):
    """On an 80-column terminal a long title wraps under itself, not back at the margin; piped,
    every example is one whole line (grep)."""
    import os
    import shutil
    import sys

    code, piped, _ = run(capsys, "examples")
    assert code == 0 and all(line[:1] != " " for line in piped.splitlines())
    assert any(len(line) > 80 for line in piped.splitlines())  # the titles are long: the test means something
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a, **k: os.terminal_size((80, 24)))
    code, out, _ = run(capsys, "examples")
    lines = out.splitlines()
    assert code == 0 and all(len(line) <= 80 for line in lines)
    names = [ln.split()[0] for ln in lines if ln[:1] != " "]
    assert names == [ln.split()[0] for ln in piped.splitlines()]
    assert all(ln.startswith(" " * 19) and ln[19] != " " for ln in lines if ln[:1] == " ")
    assert " ".join(" ".join(lines).split()) == " ".join(" ".join(piped.splitlines()).split())  # same words


def test_cli_json_validates_against_the_published_schema(capsys):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "json-schema.json").read_text())
    for extra in ([], ["--summary"]):
        code, out, _ = run(capsys, "explain", "-r", RULES, LOG, "--json", *extra)
        assert code == 0
        jsonschema.validate(json.loads(out), schema)


@pytest.mark.parametrize("extra", [[], ["--json"], ["--summary"]])
def test_a_reader_that_goes_away_is_not_an_error(extra):
    """`ruletrace explain … | head -c 20`: exit 0, nothing on stderr but the usual note."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "ruletrace", "explain", "--example", "k8s-nodeport", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(20)
    p.stdout.close()  # before the output is all written: the next write gets EPIPE
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "Error" not in err


def test_jsonl_is_the_documents_packets_one_a_line(capsys):
    code, out, _ = run(capsys, "explain", "-r", RULES, LOG, "--json")
    doc = json.loads(out)
    code, out, err = run(capsys, "explain", "-r", RULES, LOG, "--jsonl")
    assert code == ExitStatus.OK
    lines = [json.loads(line) for line in out.splitlines()]
    # the packets, each after a table line with the rule texts and owners it is the first to use
    assert [x for x in lines if "tables" not in x] == doc["packets"]
    tables = [x["tables"] for x in lines if "tables" in x]
    assert [list(x) for x in lines] == [["tables"], list(doc["packets"][0])] * 2
    for key in ("rules", "owners"):
        merged = {k: v for t in tables for k, v in t[key].items()}
        assert merged == doc["tables"][key] and sum(len(t[key]) for t in tables) == len(merged)  # each once
    assert "older or newer" in err  # run warnings go to stderr: the lines are packets only
    code, out, _ = run(capsys, "explain", "-r", RULES, LOG, "--jsonl", "--fate", "dropped")
    assert [json.loads(line)["dport"] for line in out.splitlines() if '"steps"' in line] == [52000]


@pytest.mark.parametrize("other", ["--json", "--summary"])
def test_jsonl_alone(capsys, other):
    code, _out, err = run(capsys, "explain", "-r", RULES, LOG, "--jsonl", other)
    assert code == 2 and "--jsonl" in err
