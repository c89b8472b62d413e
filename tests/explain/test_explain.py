"""The explainer against the seed-003 Kubernetes ruleset, with events built from the trace tags."""

from pathlib import Path

import pytest

from ruletrace.explain.explain import Explainer
from ruletrace.model import Fate, Origin, Packet, StepKind
from ruletrace.rulesets import iptables_save
from tests.helpers import ev

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "explain"

SYN = dict(IN="eth0", OUT="", SRC="172.28.129.2", DST="172.28.129.4", PROTO="TCP", SPT="55694", DPT="52000")

NODEPORT_52000 = (
    "raw:PREROUTING:policy:4 mangle:PREROUTING:rule:1 mangle:cali-PREROUTING:rule:3 "
    "mangle:cali-from-host-endpoint:return:1 mangle:cali-PREROUTING:return:5 mangle:PREROUTING:policy:2 "
    "nat:PREROUTING:rule:1 nat:cali-PREROUTING:rule:1 nat:cali-fip-dnat:return:1 nat:cali-PREROUTING:return:2 "
    "nat:PREROUTING:rule:2 nat:KUBE-SERVICES:rule:59 nat:KUBE-NODEPORTS:rule:16 "
    "nat:KUBE-XLB-VETHOZVMBYUVK3NB:rule:4 nat:KUBE-MARK-DROP:rule:1 |MARK nat:KUBE-MARK-DROP:return:2 "
    "nat:KUBE-XLB-VETHOZVMBYUVK3NB:return:5 nat:KUBE-NODEPORTS:return:37 nat:KUBE-SERVICES:return:60 "
    "nat:PREROUTING:rule:5 nat:DOCKER:return:8 nat:PREROUTING:policy:9 mangle:INPUT:policy:1 "
    "filter:INPUT:rule:1 filter:KUBE-FIREWALL:rule:1"
)


@pytest.fixture(scope="module")
def ruleset():
    p = FIX / "seed003.rules"
    return iptables_save.parse(p.read_text(), origin=Origin(str(p)))


def _packet(spec: str, **fields) -> Packet:
    evs, marked = [], False
    for tag in spec.split():
        if tag == "|MARK":
            marked = True
            continue
        f = dict(fields)
        if marked:
            f["MARK"] = "0x8000"
        evs.append(ev(tag, **f))
    return Packet(1, evs)


def test_nodeport_52000_is_dropped_by_kube_firewall_because_of_the_mark(ruleset):
    e = Explainer(ruleset).explain(_packet(NODEPORT_52000, **SYN))
    assert e.fate is Fate.DROPPED
    assert (e.verdict.table, e.verdict.chain, e.verdict.num, e.verdict.action) == ("filter", "KUBE-FIREWALL", 1, "drop")
    assert "--mark 0x8000/0x8000 -j DROP" in e.verdict.rule.text
    # every step found its rule / policy; no misfit
    assert not [s.warning for s in e.steps if s.warning]
    assert e.marks[0].new == "0x8000" and (e.marks[0].chain, e.marks[0].num) == ("KUBE-MARK-DROP", 1)
    roles = [(c.role, c.chain, c.num) for c in e.cause]
    assert roles[:3] == [("decided", "KUBE-FIREWALL", 1), ("mark set", "KUBE-MARK-DROP", 1),
                         ("called from", "KUBE-XLB-VETHOZVMBYUVK3NB", 4)]
    assert ("called from", "KUBE-NODEPORTS", 16) in roles
    assert "reached from nat:KUBE-NODEPORTS rule 16 (ootob9/ingress-nginx:http, dport 52000)" in e.cause[0].text
    assert "mark 0x8000, set in nat:KUBE-MARK-DROP rule 1" in e.cause[0].text


def test_steps_carry_kind_rule_text_depth_and_returns(ruleset):
    e = Explainer(ruleset).explain(_packet(NODEPORT_52000, **SYN))
    by_tag = {s.event.tag: s for s in e.steps}
    s = by_tag["nat:KUBE-NODEPORTS:rule:16"]
    assert s.action == "jump" and s.depth == 2 and "--dport 52000" in s.rule.text
    r = by_tag["nat:KUBE-MARK-DROP:return:2"]
    assert r.kind is StepKind.RETURN and r.returned_to == "KUBE-XLB-VETHOZVMBYUVK3NB" and r.depth == 4
    assert by_tag["nat:KUBE-SERVICES:return:60"].returned_to == "PREROUTING"
    p = by_tag["nat:PREROUTING:policy:9"]
    assert p.policy == "ACCEPT" and p.depth == 0 and p.rule is None
    assert by_tag["nat:KUBE-MARK-DROP:rule:1"].action == "continue"  # MARK does not end the chain


def test_port_80_redirect_after_kube_services_is_delivered(ruleset):
    spec = ("raw:PREROUTING:policy:4 mangle:PREROUTING:rule:1 mangle:cali-PREROUTING:rule:3 "
            "mangle:cali-from-host-endpoint:return:1 mangle:cali-PREROUTING:return:5 mangle:PREROUTING:policy:2 "
            "nat:PREROUTING:rule:1 nat:cali-PREROUTING:rule:1 nat:cali-fip-dnat:return:1 "
            "nat:cali-PREROUTING:return:2 nat:PREROUTING:rule:2 nat:KUBE-SERVICES:rule:59 "
            "nat:KUBE-NODEPORTS:return:37 nat:KUBE-SERVICES:return:60 nat:PREROUTING:rule:3")
    evs = _packet(spec, **{**SYN, "DPT": "80"}).events
    after = {**SYN, "DPT": "52000"}
    evs += [ev(t, **after) for t in "mangle:INPUT:policy:1 filter:INPUT:rule:1 filter:KUBE-FIREWALL:return:3 "
            "filter:INPUT:policy:2 nat:INPUT:policy:1".split()]
    e = Explainer(ruleset).explain(Packet(2, evs))
    assert e.fate is Fate.DELIVERED
    assert (e.verdict.chain, e.verdict.rule, e.verdict.action) == ("INPUT", None, "accept")
    assert e.verdict.table == "filter"
    [nat] = e.nat
    assert (nat.what, nat.old, nat.new, nat.chain, nat.num) == ("DST", "172.28.129.4:80", "172.28.129.4:52000",
                                                                 "PREROUTING", 3)
    assert "REDIRECT --to-ports 52000" in nat.rule.text


def test_rule_number_past_the_end_is_said_not_guessed(ruleset):
    e = Explainer(ruleset).explain(Packet(1, [ev("filter:KUBE-FIREWALL:rule:9"), ev("filter:NOPE:rule:1")]))
    w = [s.warning for s in e.steps]
    assert "rule 9 is past the end of filter:KUBE-FIREWALL (2 rules)" in w[0]
    # a chain the listing leaves out is not a misfit: said once for the packet, not on the step
    assert w[1] is None and "chain filter:NOPE is not in the ruleset" in e.warnings
    assert any("fit 1 of 2 steps" in x and "older or newer" in x for x in e.warnings)


def test_policy_number_that_does_not_fit_is_flagged(ruleset):
    e = Explainer(ruleset).explain(Packet(1, [ev("raw:PREROUTING:policy:3")]))
    assert "chain has 3 rules" in e.steps[0].warning


def test_ends_before_any_decision_is_unknown_with_last_place(ruleset):
    e = Explainer(ruleset).explain(Packet(1, [ev("raw:PREROUTING:policy:4"), ev("mangle:PREROUTING:rule:1"),
                                              ev("mangle:cali-PREROUTING:return:5"),
                                              ev("mangle:PREROUTING:policy:2")]))
    assert e.fate is Fate.UNKNOWN and e.last_seen == "mangle:PREROUTING"
    assert any("routing decision" in n for n in e.notes)


def test_established_packet_skipping_nat_gets_a_note(ruleset):
    e = Explainer(ruleset).explain(Packet(1, [ev("raw:PREROUTING:policy:4"), ev("mangle:PREROUTING:policy:2"),
                                              ev("mangle:INPUT:policy:1"), ev("filter:INPUT:rule:1"),
                                              ev("filter:KUBE-FIREWALL:return:3"), ev("filter:INPUT:policy:2")]))
    assert e.fate is Fate.DELIVERED
    assert any("nat PREROUTING was not traversed" in n for n in e.notes)


def test_without_ruleset_steps_have_no_rule_text():
    e = Explainer(None).explain(Packet(1, [ev("filter:INPUT:rule:1"), ev("filter:INPUT:policy:2")]))
    assert [s.rule for s in e.steps] == [None, None]
    # the policy's verdict is not in a legacy trace: without the ruleset the fate is unknown
    assert e.fate is Fate.UNKNOWN and e.verdict is None and e.last_seen == "filter:INPUT"
    assert any("the policy of filter:INPUT: its verdict is not known without the ruleset" in n for n in e.notes)
    # an nf_tables trace states the verdict itself
    e = Explainer(None).explain(Packet(1, [ev("filter:INPUT:rule:1", verdict="continue"),
                                           ev("filter:INPUT:policy:2", verdict="accept")]))
    assert e.fate is Fate.DELIVERED and e.verdict.action == "accept"


def test_legacy_reports_unconditional_verdict_rules_as_chain_end():
    # kernel lab, legacy ip_tables: "-A LOGDROP -j DROP" (rule 2) is traced as LOGDROP:return:2,
    # and "-A INPUT -j ACCEPT" as INPUT:policy:N with N its own number
    text = ("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:LOGDROP - [0:0]\n"
            "-A INPUT -p tcp -m tcp --dport 23 -j LOGDROP\n-A INPUT -j ACCEPT\n-A INPUT -p udp -j DROP\n"
            "-A LOGDROP -j LOG --log-prefix \"drop: \"\n-A LOGDROP -j DROP\nCOMMIT\n")
    rs = iptables_save.parse(text, origin=Origin("t.rules"))
    e = Explainer(rs).explain(Packet(1, [ev("filter:INPUT:rule:1"), ev("filter:LOGDROP:rule:1"),
                                         ev("filter:LOGDROP:return:2")]))
    assert e.fate is Fate.DROPPED and (e.verdict.chain, e.verdict.num) == ("LOGDROP", 2)
    assert e.steps[2].rule.text == "-A LOGDROP -j DROP" and e.steps[2].returned_to is None
    assert not [s.warning for s in e.steps if s.warning]
    e = Explainer(rs).explain(Packet(2, [ev("filter:INPUT:policy:2")]))
    assert e.fate is Fate.DELIVERED and e.steps[0].rule.text == "-A INPUT -j ACCEPT"
    e = Explainer(rs).explain(Packet(3, [ev("filter:INPUT:policy:4")]))  # the real policy: DROP
    assert e.fate is Fate.DROPPED and e.verdict.rule is None and e.steps[0].policy == "DROP"


def test_same_explanation_from_an_iptables_L_listing_of_the_ruleset():
    # seed003.list: `iptables-legacy -L -n -v --line-numbers -t T` of seed003.rules, taken from a
    # namespace loaded with it (the seed 004 users' form of a ruleset)
    from ruletrace.rulesets import load_ruleset

    rs = load_ruleset(str(FIX / "seed003.list"))
    assert rs.format == "iptables-list"
    e = Explainer(rs).explain(_packet(NODEPORT_52000, **SYN))
    assert e.fate is Fate.DROPPED and (e.verdict.chain, e.verdict.num) == ("KUBE-FIREWALL", 1)
    assert not [s.warning for s in e.steps if s.warning]
    assert [c.role for c in e.cause][:2] == ["decided", "mark set"]
    assert "reached from nat:KUBE-NODEPORTS rule 16 (ootob9/ingress-nginx:http, dport 52000)" in e.cause[0].text


def test_no_none_in_texts_when_the_rule_number_is_unknown():
    # nf_tables events without a ruleset to number their handles: a verdict drop in a user chain
    from ruletrace.model import TraceEvent

    def nft(table, chain, kind, verdict, **f):
        return TraceEvent(table, chain, StepKind(kind), None, handle=7, verdict=verdict, ident=("n",),
                          source="nft-monitor", fields=dict(f), family="ipv4")
    evs = [nft("filter", "INPUT", "rule", "jump", MARK="0x0"), nft("filter", "BLOCK", "rule", "continue", MARK="0x1"),
           nft("filter", "BLOCK", "rule", "drop", MARK="0x1")]
    e = Explainer(None).explain(Packet(1, evs))
    assert e.fate is Fate.DROPPED
    assert e.verdict.reason == "dropped by a rule of filter:BLOCK"  # a rule, not "the DROP policy" of a user chain
    # nf_tables events show the packet after the rule's statements: the mark is the step's own
    [m] = e.marks
    assert (m.chain, m.step, m.note) == ("BLOCK", 1, "probably filter:BLOCK rule handle 7 (its text is not in the ruleset)")
    texts = [e.verdict.reason, *e.notes, *e.warnings, *(c.text for c in e.cause), *(c.note for c in e.marks)]
    assert not [t for t in texts if "None" in t]


def test_unknown_fate_has_no_verdict_and_says_where_it_stopped(ruleset):
    e = Explainer(ruleset).explain(Packet(1, [ev("raw:OUTPUT:policy:3")]))
    # seed003 lists raw, mangle, nat and filter OUTPUT: raw alone does not prove the packet left
    assert e.fate is Fate.UNKNOWN and e.verdict is None and e.last_seen == "raw:OUTPUT"
    assert any("before the hook's last table (filter)" in n for n in e.notes)


def test_queued_packet_is_unknown_without_a_verdict():
    text = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -j NFQUEUE --queue-num 1\nCOMMIT\n"
    rs = iptables_save.parse(text, origin=Origin("q.rules"))
    e = Explainer(rs).explain(Packet(1, [ev("filter:INPUT:rule:1")]))
    assert e.fate is Fate.UNKNOWN and e.verdict is None
    assert e.notes == ["queued to user space by filter:INPUT rule 1: the verdict is a program's"]


def test_iptables_L_row_of_an_unconditional_drop_is_the_rule_not_a_misfit():
    from ruletrace.model import Chain, Rule, Ruleset

    rules = [Rule("filter", "INPUT", 1, "ACCEPT 6 -- * * 0.0.0.0/0 0.0.0.0/0 tcp dpt:22", "ACCEPT"),
             Rule("filter", "INPUT", 2, "DROP 0 -- * * 0.0.0.0/0 0.0.0.0/0", "DROP"),
             Rule("filter", "INPUT", 3, "ACCEPT 17 -- * * 0.0.0.0/0 0.0.0.0/0", "ACCEPT")]
    rs = Ruleset(tables={"filter": {"INPUT": Chain("filter", "INPUT", "ACCEPT", rules)}}, format="iptables-list")
    e = Explainer(rs).explain(Packet(1, [ev("filter:INPUT:policy:2")]))
    assert e.fate is Fate.DROPPED and e.verdict.rule is rules[1]
    assert not e.warnings and not e.steps[0].warning


def test_reply_after_a_reject_rule_of_unknown_text_proves_nothing():
    from ruletrace.explain.replies import with_replies

    syn = Packet(1, [ev("filter:INPUT:rule:3", ("a",), SRC="10.0.0.2", DST="10.0.0.1", PROTO="TCP", SPT="4000",
                        DPT="23", TCPFLAGS="SYN")])
    rst = Packet(2, [ev("filter:OUTPUT:policy:2", ("b",), SRC="10.0.0.1", DST="10.0.0.2", PROTO="TCP", SPT="23",
                        DPT="4000", TCPFLAGS="ACK RST")])
    synack = Packet(3, [ev("filter:OUTPUT:policy:2", ("c",), SRC="10.0.0.1", DST="10.0.0.2", PROTO="TCP",
                           SPT="23", DPT="4000", TCPFLAGS="ACK SYN")])
    ex = Explainer(None)
    got = list(with_replies([(p, ex.explain(p)) for p in (syn, rst)]))
    assert got[0].fate is Fate.UNKNOWN  # the RST may come from a REJECT rule
    got = list(with_replies([(p, ex.explain(p)) for p in (syn, synack)]))
    assert got[0].fate is Fate.DELIVERED and "the reply in packet 3 proves" in got[0].notes[-1]
    assert [e.packet.id for e in got] == [1, 3]
