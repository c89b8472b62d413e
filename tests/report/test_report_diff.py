"""Packet diff: alignment of two paths and the explanation of where they part ways (on JSON packets read back)."""

from __future__ import annotations

from report_cases import packet, seed003_json, step

from ruletrace.analyze.diff import diff_packets
from ruletrace.analyze.rule_check import check_rule, rule_options
from ruletrace.render.json import from_json


def test_seed003_first_divergence_is_kube_nodeports_rule_16_by_dport():
    a, b = seed003_json()
    d = diff_packets(from_json(a), from_json(b))
    first = d.first
    assert (first.table, first.chain, first.num, first.matched) == ("nat", "KUBE-NODEPORTS", 16, "left")
    assert "--dport 52000" in first.rule
    [dec] = first.decisive
    assert (dec.option, dec.field, dec.left, dec.right) == ("--dport 52000", "DPT", "52000", "80")
    assert dec.left_ok is True and dec.right_ok is False
    # the row marked as the first divergence is packet 1's KUBE-NODEPORTS rule 16, with no right step
    row = d.rows[first.row]
    assert d.left.steps[row.left].place == "nat:KUBE-NODEPORTS rule 16"
    assert row.right is None and row.tag == "left"
    # packet 2 is shown returning from KUBE-NODEPORTS
    assert "returned from KUBE-NODEPORTS" in first.text


def test_seed003_later_divergences_redirect_and_mark():
    a, b = seed003_json()
    d = diff_packets(from_json(a), from_json(b))
    second, third = d.divergences[1], d.divergences[2]
    assert (second.chain, second.num, second.matched) == ("PREROUTING", 3, "right")
    assert "REDIRECT" in second.rule
    assert [c.option for c in second.decisive] == ["--dport 80"]
    assert (third.chain, third.num, third.matched) == ("KUBE-FIREWALL", 1, "left")
    [m] = third.decisive
    assert (m.field, m.left, m.right) == ("MARK", "0x8000", "0x0")


def test_policy_number_change_aligns_and_is_only_a_note():
    a, b = seed003_json()
    d = diff_packets(from_json(a), from_json(b))
    # raw:PREROUTING policy 3 (old ruleset) vs policy 4: the same step, not a divergence
    assert d.rows[0].tag == "same"
    assert d.left.steps[0].num == 3 and d.right.steps[0].num == 4
    assert any("raw:PREROUTING" in n for n in d.notes)


def test_alignment_rows_cover_both_paths_in_order():
    a, b = seed003_json()
    d = diff_packets(from_json(a), from_json(b))
    lefts = [r.left for r in d.rows if r.left is not None]
    rights = [r.right for r in d.rows if r.right is not None]
    assert lefts == list(range(len(a["steps"])))
    assert rights == list(range(len(b["steps"])))
    same = [r for r in d.rows if r.tag == "same"]
    for r in same:
        sa, sb = d.left.steps[r.left], d.right.steps[r.right]
        assert (sa.table, sa.chain, sa.kind) == (sb.table, sb.chain, sb.kind)


def test_identical_paths_have_no_divergence():
    a, _ = seed003_json()
    d = diff_packets(from_json(a), from_json(a))
    assert d.same and d.first is None
    assert all(r.tag == "same" for r in d.rows)
    assert d.left.label != d.right.label  # "left packet 1" / "right packet 1"


def test_interface_and_source_options_name_the_field():
    rule = "-A FORWARD -s 10.1.0.0/16 ! -i docker0 -p udp -m udp --dport 53 -j ACCEPT"
    fa = {"SRC": "10.1.2.3", "IN": "eth0", "PROTO": "UDP", "DPT": "53"}
    fb = {"SRC": "10.2.2.3", "IN": "docker0", "PROTO": "UDP", "DPT": "53"}
    checks = {c.option: c for c in check_rule(rule, fa, fb)}
    assert checks["-s 10.1.0.0/16"].decisive
    assert checks["! -i docker0"].left_ok is True and checks["! -i docker0"].right_ok is False
    assert not checks["-p udp"].decisive and checks["-p udp"].left_ok is True
    assert not checks["--dport 53"].decisive


def test_uncheckable_matches_are_reported_as_unknown():
    a = packet(1, [step("filter", "INPUT", "rule", 1, "-A INPUT -m conntrack --ctstate NEW -j DROP", DPT="80")])
    b = packet(2, [step("filter", "INPUT", "policy", 2, None, DPT="80")])
    d = diff_packets(from_json(a), from_json(b))
    first = d.first
    assert first.num == 1 and first.matched == "left"
    assert not first.decisive
    assert [c.option for c in first.unknown] == ["-m conntrack --ctstate NEW"]
    assert "cannot show" in first.text


def test_multiport_tcp_flags_and_mark_mask():
    opts = rule_options('-A X -p tcp -m multiport --dports 80,443,8000:8100 -m tcp --tcp-flags SYN,ACK SYN '
                        '-m mark ! --mark 0x4000/0x4000 -m comment --comment "a -b c" -j MARK --set-mark 1')
    assert [o[0] for o in opts] == ["proto", "dports", "tcpflags", "mark"]
    fa = {"PROTO": "TCP", "DPT": "8050", "TCPFLAGS": "SYN", "MARK": "0x1"}
    fb = {"PROTO": "TCP", "DPT": "8050", "TCPFLAGS": "SYN ACK"}
    rule = "-A X -p tcp -m multiport --dports 80,443,8000:8100 -m tcp --tcp-flags SYN,ACK SYN -m mark ! --mark 0x4000/0x4000"
    c = {x.field: x for x in check_rule(rule, fa, fb)}
    assert c["DPT"].left_ok and c["DPT"].right_ok
    assert c["TCPFLAGS"].left_ok is True and c["TCPFLAGS"].right_ok is False
    assert c["MARK"].left_ok is True and c["MARK"].right_ok is True  # no MARK= printed means 0


def test_trace_that_ends_early_is_explained():
    a = packet(1, [step("raw", "PREROUTING", "policy", 1), step("filter", "INPUT", "rule", 1, "-A INPUT -j DROP")],
               fate="dropped", verdict={"action": "drop", "table": "filter", "chain": "INPUT", "num": 1,
                                        "rule": "-A INPUT -j DROP", "reason": ""})
    b = packet(2, [step("raw", "PREROUTING", "policy", 1)])
    d = diff_packets(from_json(a), from_json(b))
    assert d.first.left_step == 1 and d.first.right_step is None
    assert "trace ends" in d.first.text


def test_to_json_shape():
    a, b = seed003_json()
    j = diff_packets(from_json(a), from_json(b)).to_json()
    assert j["same"] is False
    assert j["divergences"][0]["num"] == 16
    assert j["divergences"][0]["fields"][0] == {"option": "--dport 52000", "field": "DPT", "left": "52000",
                                                 "right": "80", "left_matches": True, "right_matches": False}
    first_row = j["rows"][j["divergences"][0]["row"]]
    assert first_row["left"]["chain"] == "KUBE-NODEPORTS" and first_row["right"] is None
