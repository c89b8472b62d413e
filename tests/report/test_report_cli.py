"""`ruletrace diff` and `ruletrace report` end to end on the seed-003 trace."""

from __future__ import annotations

import json

from report_cases import LOG, RULES, embedded, seed003_json

from ruletrace.cli import main
from ruletrace.cli.status import ExitStatus
from ruletrace.render.html import unpack


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_diff_terminal_marks_kube_nodeports_rule_16(capsys):
    code, out, err = run(capsys, "diff", "-r", RULES, LOG, "1", "2", "--no-color", "--width", "400")
    assert code == ExitStatus.DIFFERENT, err
    first = next(line for line in out.splitlines() if line.startswith("first divergence"))
    assert "nat:KUBE-NODEPORTS rule 16 matched packet 1 but not packet 2" in first
    assert "--dport 52000: packet 1 has DPT=52000, packet 2 has DPT=80" in first
    marked = [line for line in out.splitlines() if line.startswith(">")]
    assert len(marked) == 1 and "nat:KUBE-NODEPORTS rule 16" in marked[0]
    assert "divergence 2  nat:PREROUTING rule 3 matched packet 2 but not packet 1" in out


def test_diff_json(capsys):
    code, out, _ = run(capsys, "diff", "-r", RULES, LOG, "1", "2", "--json")
    assert code == ExitStatus.DIFFERENT == 1  # as diff(1)
    doc = json.loads(out)
    assert doc["command"] == "diff" and doc["left"]["id"] == 1 and doc["right"]["id"] == 2
    first = doc["divergences"][0]
    assert (first["chain"], first["num"], first["matched"]) == ("KUBE-NODEPORTS", 16, "left")
    assert first["fields"][0]["field"] == "DPT"


def test_diff_left_right_from_two_files(tmp_path, capsys):
    a, b = seed003_json()
    fa, fb = tmp_path / "a.json", tmp_path / "b.jsonl"
    fa.write_text(json.dumps({"schema": 1, "tool": "ruletrace", "packets": [a]}))
    fb.write_text(json.dumps({**b, "id": 9}) + "\n")
    code, out, err = run(capsys, "diff", "--left", f"{fa}:1", "--right", f"{fb}:9", "--json")
    assert code == ExitStatus.DIFFERENT, err
    doc = json.loads(out)
    assert doc["left"]["label"] == "a.json#1" and doc["right"]["label"] == "b.jsonl#9"
    assert doc["divergences"][0]["num"] == 16


def test_diff_same_packet_exits_zero(capsys):
    code, out, _ = run(capsys, "diff", "-r", RULES, LOG, "1", "1", "--no-color")
    assert code == ExitStatus.OK == 0  # as diff(1): no difference
    assert "the two paths are the same" in out


def test_diff_errors(capsys):
    code, _, err = run(capsys, "diff", "-r", RULES, LOG, "1", "5")
    assert code == 2 and "no packet 5 in" in err
    code, _, err = run(capsys, "diff", "-r", RULES, LOG, "1", "x")
    assert code == 2 and "'x' is not a packet id" in err
    code, _, err = run(capsys, "diff", "--left", f"{LOG}:1")
    assert code == 2 and "both --left" in err


def test_report_with_filters_and_diff(tmp_path, capsys):
    out = tmp_path / "r.html"
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(out), "--diff", "1,2", "--title", "k8s")
    assert code == ExitStatus.OK, err
    assert f"wrote {out}" in err
    page = out.read_text()
    assert "<title>k8s</title>" in page and 'id="diff"' in page
    data = embedded(page)
    assert data["defaults"] == {"a": 1, "b": 2}
    code, _, _ = run(capsys, "report", "-r", RULES, LOG, "-o", str(out), "--fate", "dropped")
    assert [p["id"] for p in unpack(embedded(out.read_text()))] == [1]
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(out), "--fate", "dropped", "--diff", "1,2")
    assert code == 2 and "--diff: no packet 2" in err


def test_report_needs_input(capsys):
    code, _, err = run(capsys, "report", "-o", "/dev/null")
    assert code == 2 and "give a trace file" in err


def test_diff_at_80_columns_keeps_the_divergence_text_under_itself(capsys):
    """At 80 columns a divergence's text wraps under its own first line (it went back to the
    margin, mixed with the labels); the one-line form at a wide terminal is unchanged."""
    code, out, err = run(capsys, "diff", "-r", RULES, LOG, "1", "2", "--no-color", "--width", "80")
    assert code == ExitStatus.DIFFERENT, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    i = next(k for k, line in enumerate(lines) if line.startswith("first divergence  nat:KUBE-NODEPORTS rule 16"))
    follow = lines[i + 1]
    assert follow.startswith(" " * len("first divergence  ")) and follow.strip(), lines[i:i + 3]
    rule = next(k for k, line in enumerate(lines) if line.startswith("    rule  -A KUBE-NODEPORTS"))
    assert lines[rule + 1].startswith(" " * len("    rule  ")) and lines[rule + 1].strip()
    assert not any(line.startswith(("(packet", "-m ", "--")) for line in lines)  # nothing wrapped to the margin


def test_diff_at_80_columns_keeps_every_steps_rule_number(capsys):
    """Each side of a row says which step it is, whole: table, chain (its middle given up when
    long: "KUBE-XLB…K3NB") and rule or return number; the rule text is what gets cut."""
    import re

    code, out, err = run(capsys, "diff", "-r", RULES, LOG, "1", "2", "--no-color", "--width", "80")
    assert code == ExitStatus.DIFFERENT, err
    lines = out.splitlines()
    top = next(k for k, line in enumerate(lines) if line.startswith("─"))
    end = next(k for k, line in enumerate(lines) if line.startswith("first divergence"))
    step = re.compile(r"^\s*\w+:[\w…-]+ (rule|return|policy) \d+(\s|…|$)")
    sides = 0
    for row in lines[top + 1:end]:
        assert len(row) <= 80
        left, right = row[1:41], row[42:]  # the mark, the left column, "=" or "|", the right column
        for side in (left, right):
            if side.strip():
                assert step.match(side), (side, row)
                sides += 1
    assert sides >= 20
    assert any("KUBE-XLB" in row and "…" in row.split("rule")[0] for row in lines[top + 1:end])  # a long chain cut in its middle


def _header(page: str) -> list[str]:
    import re

    return re.findall(r'<span class="src[^"]*">([^<]*)</span>', page)


def test_report_of_simulate_json_names_the_ruleset_and_says_predicted(capsys, tmp_path):
    """`simulate --json` lists its ruleset among its sources with role "ruleset": the page named it
    "trace: ruleset.rules", said "no ruleset given", and called the packets traced."""
    sim = tmp_path / "s.json"
    code, out, _ = run(capsys, "simulate", "-r", RULES, "-p", "tcp", "-s", "10.0.0.9", "-d", "172.28.129.4",
                       "--dport", "52000", "-i", "eth0", "--json")
    sim.write_text(out)
    page = tmp_path / "s.html"
    code, _, err = run(capsys, "report", "--from-json", str(sim), "-o", str(page))
    assert code == ExitStatus.OK, err
    html = page.read_text()
    head = _header(html)
    assert "ruleset: seed003.rules (iptables-save)" in head
    assert not [h for h in head if h.startswith("trace:") or "no ruleset given" in h]
    assert any(h.startswith("predicted packets (ruletrace simulate)") for h in head)
    assert "predicted packets that passed it" in html and "traced packets" not in html
    assert "(1 packet, " in err  # one packet, not "1 packets"


def test_report_of_explain_json_stays_traced(capsys, tmp_path):
    js = tmp_path / "e.json"
    _code, out, _ = run(capsys, "explain", "-r", RULES, LOG, "--json")
    js.write_text(out)
    page = tmp_path / "e.html"
    code, _, err = run(capsys, "report", "--from-json", str(js), "-o", str(page))
    assert code == ExitStatus.OK, err
    html = page.read_text()
    assert "predicted" not in html and "traced packets that passed it" in html
    assert "(2 packets, " in err


def test_a_listing_of_several_families_is_named_once(capsys, tmp_path):
    """nft's layered listing is one Ruleset a family: the header listed ruleset-a.nft six times."""
    from pathlib import Path

    caps = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures" / "layered"
    page = tmp_path / "l.html"
    code, _, err = run(capsys, "report", "-r", str(caps / "ruleset-a.nft"), str(caps / "nft-monitor-a.txt"),
                       "-o", str(page))
    assert code == ExitStatus.OK, err
    rulesets = [h for h in _header(page.read_text()) if h.startswith("ruleset:")]
    assert rulesets == ["ruleset: ruleset-a.nft (nft-text, netdev, bridge, ipv4, inet, ipv6, arp)"]
