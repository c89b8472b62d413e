"""Pastes that lost part of a line or a whole line (issue 12): the surviving facts are used, the
lost ones are unknown, and a cause is attributed only as far as the evidence goes."""

from __future__ import annotations

import re
from pathlib import Path

import ruletrace
from ruletrace.pipeline import explain_files

EX = Path(ruletrace.__file__).parent / "examples" / "docker-portmap"
RULES = str(EX / "ruleset.rules")
# the first packet: raw PREROUTING, nat PREROUTING rule 1 (-j DOCKER), nat DOCKER rule 2 (the
# DNAT to 172.17.0.2:80), then filter FORWARD … DOCKER rule 1 ACCEPT, nat POSTROUTING
LINES = (EX / "kernel.log").read_text().splitlines()[:12]
DNAT_LINE = 2  # index of the nat:DOCKER:rule:2 line


def _first(tmp_path: Path, lines: list[str]):
    p = tmp_path / "pasted.log"
    p.write_text("\n".join(lines) + "\n")
    r = explain_files(RULES, [str(p)])
    return r, r.explanations[0]


def test_the_clean_capture_names_the_dnat_rule(tmp_path):
    _r, e = _first(tmp_path, LINES)
    assert [(c.chain, c.num) for c in e.nat] == [("DOCKER", 2)]


def test_a_line_cut_before_proto_keeps_its_step_and_its_dnat(tmp_path):
    lines = list(LINES)
    assert "TRACE: nat:DOCKER:rule:2 " in lines[DNAT_LINE]
    lines[DNAT_LINE] = re.sub(r" PROTO=.*", "", lines[DNAT_LINE])
    r, e = _first(tmp_path, lines)
    assert ("nat", "DOCKER", 2) in [(s.table, s.chain, s.num) for s in e.steps]
    assert [(c.what, c.chain, c.num, c.rule is not None) for c in e.nat] == [("DST", "DOCKER", 2, True)]
    assert len([x for x in r.explanations if x.steps]) == 2  # the request and the SYN-ACK, no stray packet
    assert r.skipped == 0


def test_a_redacted_address_is_unknown_not_a_rewrite(tmp_path):
    lines = list(LINES)
    k = next(i for i, ln in enumerate(lines) if "filter:DOCKER-USER" in ln)
    lines[k] = lines[k].replace("DST=172.17.0.2", "DST=172.17.0.x")
    _r, e = _first(tmp_path, lines)
    assert [(c.what, c.new) for c in e.nat] == [("DST", "172.17.0.2:80")]
    step = next(s for s in e.steps if s.chain == "DOCKER-USER")
    assert "DST" not in step.event.fields


def test_a_lost_nat_line_is_attributed_to_the_rule_the_jump_reaches_as_a_guess(tmp_path):
    lines = LINES[:DNAT_LINE] + LINES[DNAT_LINE + 1 :]
    _r, e = _first(tmp_path, lines)
    (c,) = e.nat
    assert c.table is None  # no traced step made it: not stated as a fact
    assert c.note.startswith("probably nat:DOCKER rule 2, reached from nat:PREROUTING rule 1;")
    why = next(x for x in e.cause if x.role == "rewritten")
    assert why.text.endswith("(probably nat:DOCKER rule 2, reached from nat:PREROUTING rule 1)")


def test_a_change_no_rule_explains_says_where_it_was_first_seen_once(tmp_path):
    # the DNAT line lost, and the later lines show an address no DNAT rule of the ruleset gives
    lines = LINES[:DNAT_LINE] + [ln.replace("DST=172.17.0.2 ", "DST=172.17.0.9 ") for ln in LINES[DNAT_LINE + 1 :]]
    _r, e = _first(tmp_path, lines)
    (c,) = e.nat
    assert c.note == "changed outside the traced rules; first seen at filter:FORWARD rule 1"
    why = next(x for x in e.cause if x.role == "rewritten")
    assert why.text == ("DST 192.168.50.1:10000 → 172.17.0.9:80, first seen at filter:FORWARD "
                        "(changed outside the traced rules)")


def test_an_address_with_unicode_digits_is_unknown_not_an_error():
    """The fuzz corpus: '①' is a digit to str.isdigit() but not to int(); such an address is
    damaged (unknown), never a ValueError."""
    from ruletrace.logtext import address_ok, parse_fields

    assert not address_ok("10.0.0.①") and not address_ok("1²7.0.0.1") and address_ok("10.0.0.1")
    fields = parse_fields("IN=eth0 OUT= SRC=10.0.0.① DST=10.0.0.2 LEN=60 TTL=64 ID=1 PROTO=TCP SPT=1 DPT=2")
    assert "SRC" not in fields or fields["SRC"] != "10.0.0.①"


K8S = Path(ruletrace.__file__).parent / "examples" / "k8s-nodeport"


def test_a_monitor_paste_that_starts_mid_packet_says_so_and_blames_no_routing(tmp_path):
    """`tail -n +9 nft-monitor.txt` (`tail -n +6 xtables-monitor.txt`): the first trace id's steps
    from nat KUBE-MARK-DROP on are one packet, dropped by KUBE-FIREWALL as in the whole trace, with
    a note that its start is not in the input, and no claim that routing dropped it."""
    from ruletrace.explain.fate import ROUTING_NOTE

    for name, skip in (("nft-monitor.txt", 8), ("xtables-monitor.txt", 5)):
        whole = explain_files(str(K8S / "ruleset-nft.rules"), [str(K8S / name)])
        p = tmp_path / name
        p.write_text("".join((K8S / name).read_text().splitlines(keepends=True)[skip:]))
        mid = explain_files(str(K8S / "ruleset-nft.rules"), [str(p)])
        assert len(mid.explanations) == len(whole.explanations), name
        e = mid.explanations[0]
        assert (e.fate, e.verdict.chain, e.verdict.num) == (whole.explanations[0].fate, "KUBE-FIREWALL", 1), name
        assert not any(ROUTING_NOTE in n for x in mid.explanations for n in x.notes), name
        [note] = [n for n in e.notes if "start is missing" in n]
        assert note.startswith("the packet's start is missing from the input: its steps before nat:KUBE-"), name
        assert not [n for x in whole.explanations for n in x.notes if "start is missing" in n]
        assert not [n for x in mid.explanations[1:] for n in x.notes if "start is missing" in n]


def test_xtables_monitor_lines_cut_short_name_the_rule_they_begin(tmp_path):
    """`awk '{print substr($0,1,100)}' xtables-monitor.txt`: a rule text cut short
    (`-A PREROUTING -m comment -`) is the rule of its chain it begins, counted as cut; no step
    of a cut text is a misfit and every packet ends as in the whole trace, at the same rules."""
    rules = str(K8S / "ruleset-nft.rules")
    whole = explain_files(rules, [str(K8S / "xtables-monitor.txt")])
    p = tmp_path / "xcut.txt"
    lines = (K8S / "xtables-monitor.txt").read_text().splitlines()
    p.write_text("".join(x[:100] + "\n" for x in lines))
    cut = explain_files(rules, [str(p)])

    def facts(r):
        return [(e.fate, e.verdict and (e.verdict.chain, e.verdict.num),
                 [(s.event.table, s.event.chain, s.event.num) for s in e.steps if s.event.num != 1 or s.rule])
                for e in r.explanations]

    assert not [w for w in cut.warnings if "older or newer" in w]
    assert not [s.warning for e in cut.explanations for s in e.steps if s.warning]
    n = sum(1 for x in lines if x.lstrip().startswith("TRACE:") and " -A " in x and len(x) > 100)
    [w] = [w for w in cut.warnings if "cut short" in w]
    assert w.startswith(f"{n} rule text(s) cut short ({p}:2, {p}:5, ") and n > 10
    # the raw TRACE rule (dropped from the whole trace) reads as raw PREROUTING rule 1 when cut
    trace_rule = ("raw", "PREROUTING", 1)
    assert [(f, v, [s for s in st if s != trace_rule]) for f, v, st in facts(cut)] == \
        [(f, v, [s for s in st if s != trace_rule]) for f, v, st in facts(whole)]


def test_a_text_that_begins_several_rules_is_unknown_text_not_a_made_up_rule():
    from ruletrace.model import MonitorEvent, Origin, StepKind
    from ruletrace.rulesets import load_ruleset
    from ruletrace.sources.handles import Resolver

    rs = load_ruleset(str(K8S / "ruleset-nft.rules"))
    r = Resolver(rs)

    def num(text, verdict):
        ev = MonitorEvent("nat", "PREROUTING", StepKind.RULE, None, verdict=verdict, text=text,
                          origin=Origin("x.txt", 3))
        return r.number(ev), ev.text

    assert num("-A PREROUTING -m addrtype --dst-t", "jump:DOCKER") == (3, "-A PREROUTING -m addrtype --dst-t")
    # "-A PREROUTING -" begins all three rules; only rule 3 jumps to DOCKER
    assert num("-A PREROUTING -", "jump:DOCKER")[0] == 3
    assert num("-A PREROUTING -", "continue") == (None, None)
    assert num("-A PREROUTING -j NOTHERE", "continue") == (None, "-A PREROUTING -j NOTHERE")  # not cut: a misfit
    assert r.cut == 3 and r.cut_lines == ["x.txt:3"] * 3
