"""The simulator offline: paths, NAT, marks, assumptions, branches, --explain-miss, errors."""

from __future__ import annotations

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.model import Fate, Origin
from ruletrace.rulesets.iptables_save import parse
from ruletrace.simulate.engine import simulate, step_tags
from ruletrace.simulate.hostfacts import HostFacts, load_addrs, load_ipsets, load_routes
from ruletrace.simulate.probe import Probe

SEED003 = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-MARK-DROP - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 52000
-A KUBE-SERVICES -m comment --comment "nodeports" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/app:" -m tcp --dport 52000 -j KUBE-MARK-DROP
-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP
COMMIT
"""


def rs_of(text: str):
    return parse(text, origin=Origin("t.rules"))


def node_facts() -> HostFacts:
    f = HostFacts()
    f.add_local("eth0=172.28.129.4/24")
    return f


def syn(dport: int, **kw) -> Probe:
    return Probe(proto=6, src="172.28.129.2", dst="172.28.129.4", sport=55694, dport=dport, iif="eth0", **kw)


def test_seed003_52000_dropped_by_mark_from_nodeports() -> None:
    r = simulate(rs_of(SEED003), syn(52000), node_facts())
    assert step_tags(r.events) == [
        ("nat", "PREROUTING", "rule", 1),
        ("nat", "KUBE-SERVICES", "rule", 1),
        ("nat", "KUBE-NODEPORTS", "rule", 1),
        ("nat", "KUBE-MARK-DROP", "rule", 1),
        ("nat", "KUBE-MARK-DROP", "return", 2),
        ("nat", "KUBE-NODEPORTS", "return", 2),
        ("nat", "KUBE-SERVICES", "return", 2),
        ("nat", "PREROUTING", "policy", 3),
        ("filter", "INPUT", "rule", 1),
        ("filter", "KUBE-FIREWALL", "rule", 1),
    ]
    assert r.fate == Fate.DROPPED
    assert (r.verdict.table, r.verdict.chain, r.verdict.num) == ("filter", "KUBE-FIREWALL", 1)
    # the MARK target runs after its step is logged: the mark shows from the next step on
    assert "MARK" not in r.events[3].fields
    assert r.events[4].fields["MARK"] == "0x8000"


def test_seed003_80_redirected_and_delivered() -> None:
    r = simulate(rs_of(SEED003), syn(80), node_facts())
    assert r.fate == Fate.DELIVERED
    assert ("nat", "PREROUTING", "rule", 2) in step_tags(r.events)
    after = r.events[-1].fields
    assert after["DPT"] == "52000" and after["DST"] == "172.28.129.4"
    assert "MARK" not in after


def test_goto_returns_to_the_caller_of_the_jumping_chain() -> None:
    text = """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
-A INPUT -j A
-A INPUT -p tcp -j ACCEPT
-A A -g B
-A A -j DROP
-A B -p udp -j DROP
COMMIT
"""
    r = simulate(rs_of(text), syn(22), node_facts())
    assert step_tags(r.events) == [
        ("filter", "INPUT", "rule", 1), ("filter", "A", "rule", 1), ("filter", "B", "return", 2),
        ("filter", "INPUT", "rule", 2)]
    assert r.fate == Fate.DELIVERED


def test_unconditional_verdict_rule_is_reported_as_policy_or_return() -> None:
    # ip_tables.c get_chainname_rulenum(): no matches + standard verdict looks like the chain tail
    text = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:C - [0:0]
-A INPUT -j C
-A INPUT -p udp -j ACCEPT
-A INPUT -j DROP
-A C -j RETURN
COMMIT
"""
    r = simulate(rs_of(text), syn(22), node_facts())
    assert step_tags(r.events) == [
        ("filter", "INPUT", "rule", 1), ("filter", "C", "return", 1), ("filter", "INPUT", "policy", 3)]
    assert r.fate == Fate.DROPPED and r.verdict.num == 3


def test_return_in_builtin_chain_takes_the_policy() -> None:
    text = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -j RETURN\n-A INPUT -j ACCEPT\nCOMMIT\n"
    r = simulate(rs_of(text), syn(1), node_facts())
    assert step_tags(r.events) == [("filter", "INPUT", "rule", 1), ("filter", "INPUT", "policy", 3)]
    assert r.fate == Fate.DROPPED


def test_established_skips_nat_and_says_so() -> None:
    r = simulate(rs_of(SEED003), syn(52000, ctstate="ESTABLISHED"), node_facts())
    assert all(e.table != "nat" for e in r.events)
    assert r.fate == Fate.DELIVERED
    assert any("nat table is not traversed" in a for a in r.assumptions)


def test_dnat_reroutes_to_forward_with_route_and_ttl() -> None:
    text = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 172.28.129.4/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.7:80
-A POSTROUTING -o cni0 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -d 10.244.1.7/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT --ctorigdst 172.28.129.4 -j ACCEPT
COMMIT
"""
    f = HostFacts()
    load_addrs('[{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "172.28.129.4", "prefixlen": 24}]},'
               '{"ifname": "cni0", "addr_info": [{"family": "inet", "local": "10.244.1.1", "prefixlen": 24}]}]',
               f, origin=Origin("addrs.json"))
    load_routes('[{"dst": "10.244.1.0/24", "dev": "cni0"}]', f, origin=Origin("routes.json"))
    r = simulate(rs_of(text), syn(8080), f)
    assert r.fate == Fate.FORWARDED
    fwd = next(e for e in r.events if e.chain == "FORWARD")
    assert (fwd.fields["DST"], fwd.fields["DPT"], fwd.fields["OUT"], fwd.fields["TTL"]) == (
        "10.244.1.7", "80", "cni0", "63")
    assert r.final["SRC"] == "10.244.1.1"  # MASQUERADE to cni0's address


def test_unknown_match_is_an_assumption_and_assume_flips_it() -> None:
    text = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m recent --rcheck --name x -j DROP\nCOMMIT\n"
    r = simulate(rs_of(text), syn(1), node_facts())
    assert r.fate == Fate.DELIVERED
    assert any("cannot evaluate -m recent: assumed no match; use --assume recent=match" in a
               for a in r.assumptions)
    f = node_facts()
    f.assume["recent"] = True
    assert simulate(rs_of(text), syn(1), f).fate == Fate.DROPPED


def test_statistic_takes_first_branch_and_records_it() -> None:
    text = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
-A PREROUTING -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.0.0.1
-A PREROUTING -j DNAT --to-destination 10.0.0.2
COMMIT
"""
    f = node_facts()
    r = simulate(rs_of(text), syn(80), f)
    assert r.events[0].num == 1 and r.final["DST"] == "10.0.0.1"
    assert len(r.branches) == 1 and r.branches[0].taken and r.branches[0].num == 1
    f.assume["nat:PREROUTING:1"] = False
    r2 = simulate(rs_of(text), syn(80), f)
    assert r2.final["DST"] == "10.0.0.2" and not r2.branches[0].taken


@pytest.mark.parametrize("target, start, want", [
    ("MARK --set-xmark 0x10/0xff", 0x1234, 0x1210),
    ("MARK --set-mark 0x3/0xf", 0x1ff, 0x1f3),
    ("MARK --and-mark 0xf0", 0x1ff, 0xf0),
    ("MARK --or-mark 0x100", 0x1, 0x101),
    ("MARK --xor-mark 0x3", 0x5, 0x6),
])
def test_mark_targets(target: str, start: int, want: int) -> None:
    text = f"*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j {target}\nCOMMIT\n"
    r = simulate(rs_of(text), syn(1, mark=start), node_facts())
    assert r.final["MARK"] == f"0x{want:x}"


def test_connmark_save_then_restore_needs_conntrack() -> None:
    text = """*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
-A PREROUTING -j MARK --set-xmark 0x7/0xffffffff
-A PREROUTING -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A PREROUTING -j MARK --set-xmark 0x0/0xffffffff
-A PREROUTING -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A INPUT -m connmark --mark 0x7 -j DROP
COMMIT
"""
    r = simulate(rs_of(text), syn(1), node_facts())
    assert r.final["MARK"] == "0x7" and r.fate == Fate.DROPPED


def test_ipset_contents_with_nomatch() -> None:
    text = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m set --match-set bad src -j DROP\nCOMMIT\n"
    f = node_facts()
    load_ipsets("create bad hash:net family inet\nadd bad 172.28.0.0/16\nadd bad 172.28.129.2/32 nomatch\n",
                f, origin=Origin("sets"))
    assert simulate(rs_of(text), syn(1), f).fate == Fate.DELIVERED  # the nomatch entry wins
    other = Probe(proto=6, src="172.28.1.1", dst="172.28.129.4", dport=1, iif="eth0")
    assert simulate(rs_of(text), other, f).fate == Fate.DROPPED
    missing = simulate(rs_of(text), syn(1), node_facts())
    assert any("no contents for ipset 'bad'" in a for a in missing.assumptions)


def test_conntrack_off_without_ct_rules() -> None:
    text = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j LOG\nCOMMIT\n"
    r = simulate(rs_of(text), syn(1), node_facts())
    assert r.events == [] and any("does not track" in a for a in r.assumptions)


def test_explain_miss_names_the_first_failing_condition() -> None:
    r = simulate(rs_of(SEED003), syn(80), node_facts(), explain_miss="nat:KUBE-NODEPORTS")
    assert [(m.rule.num, m.reason) for m in r.misses] == [(1, "would have jumped to KUBE-MARK-DROP but `--dport 52000` did not match: the packet's destination port is 80")]


def test_output_path_owner_and_loopback() -> None:
    text = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -m owner --uid-owner 1000 -j REJECT
COMMIT
"""
    p = Probe(proto=17, src="172.28.129.4", dst="172.28.129.4", sport=1, dport=53, path="output", uid=1000)
    r = simulate(rs_of(text), p, node_facts())
    assert r.fate == Fate.REJECTED and r.events[0].fields["OUT"] == "lo"
    p.uid = 0
    r = simulate(rs_of(text), p, node_facts())
    assert r.fate == Fate.DELIVERED and r.hooks == ["OUTPUT", "POSTROUTING", "PREROUTING", "INPUT"]


def test_ipv6_icmpv6_type() -> None:
    text = """# Generated by ip6tables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
-A INPUT -s 2001:db8::/32 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j DROP
COMMIT
"""
    f = HostFacts()
    f.add_local("2001:db8::1")
    p = Probe(proto=58, src="2001:db8::2", dst="2001:db8::1", icmp_type=128, icmp_code=0)
    r = simulate(rs_of(text), p, f)
    assert r.fate == Fate.DROPPED and r.events[0].fields["PROTO"] == "ICMPv6"
    with pytest.raises(RuletraceError, match="ipv6 but the packet is ipv4"):
        simulate(rs_of(text), syn(1), f)


def test_bad_rule_names_its_line() -> None:
    text = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 99999 -j DROP\nCOMMIT\n"
    with pytest.raises(RuletraceError) as e:
        simulate(rs_of(text), syn(1), node_facts())
    assert e.value.origin == Origin("t.rules", 3)


def test_snapshot_holds_every_logged_field_and_is_shared_until_reset() -> None:
    from ruletrace.simulate.state import Pkt, snapshot_fields

    p = Pkt()
    p.v, p.src, p.dst, p.proto, p.sport, p.dport = 4, 0x0A000001, 0x0A000002, 6, 1234, 80
    p.itype = p.icode = None
    p.tcpflags, p.iif, p.oif, p.physin, p.physout = 0x12, "eth0", "eth1", "veth0", "veth1"
    p.mark, p.length, p.ttl, p.tos, p.uid, p.gid = 0x4000, 60, 63, 0x10, 1000, 100
    s = p.snapshot()
    assert s == p._snapshot()
    assert p.snapshot() is s  # shared by the steps that follow
    assert snapshot_fields(s) == {
        "IN": "eth0", "OUT": "eth1", "PHYSIN": "veth0", "PHYSOUT": "veth1", "SRC": "10.0.0.1", "DST": "10.0.0.2",
        "LEN": "60", "TOS": "0x10", "PREC": "0x00", "TTL": "63", "PROTO": "TCP", "SPT": "1234", "DPT": "80",
        "TCPFLAGS": "ACK SYN", "MARK": "0x4000", "UID": "1000", "GID": "100"}
    p.ttl = 62
    p.snap = None
    assert p.snapshot() == p._snapshot() and p.snapshot()[15] == 62


def test_forwarded_packet_steps_show_out_and_decremented_ttl_after_prerouting() -> None:
    rs = parse("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
               "-A FORWARD -p tcp -j ACCEPT\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
               "-A PREROUTING -p tcp -j ACCEPT\nCOMMIT\n", origin=Origin("t"))
    f = HostFacts()
    f.add_local("eth0=192.168.1.1/24")
    r = simulate(rs, Probe(proto=6, src="10.1.0.1", dst="10.2.0.1", sport=1, dport=2, iif="eth0", oif="eth1",
                           ttl=64), f)
    by_hook = {(e.table, e.chain): e.fields for e in r.events}
    assert by_hook[("mangle", "PREROUTING")]["OUT"] == "" and by_hook[("mangle", "PREROUTING")]["TTL"] == "64"
    assert by_hook[("filter", "FORWARD")]["OUT"] == "eth1" and by_hook[("filter", "FORWARD")]["TTL"] == "63"
    assert r.final["TTL"] == "63"


# --- issue 14: addrtype, re-route after DNAT in nat OUTPUT, MASQUERADE on lo, loopback ------------

def _tables(filter_rules: list[str], nat_rules: list[str] = ()) -> str:
    return ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            + "".join(r + "\n" for r in nat_rules) + "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
            ":OUTPUT ACCEPT [0:0]\n" + "".join(r + "\n" for r in filter_rules) + "COMMIT\n")


def _two_ifaces() -> HostFacts:
    f = HostFacts()
    f.add_local("eth0=10.0.0.2/24")
    f.add_local("eth1=10.1.0.2/24")
    return f


def test_addrtype_limit_iface_in_is_evaluated_per_interface() -> None:
    rs = rs_of(_tables(["-A INPUT -m addrtype --dst-type LOCAL --limit-iface-in -j DROP"]))
    on = simulate(rs, Probe(proto=17, src="10.0.0.9", dst="10.0.0.2", sport=1, dport=2, iif="eth0"), _two_ifaces())
    assert on.fate == Fate.DROPPED
    # 10.1.0.2 is local, but on eth1: for the kernel's lookup limited to eth0 it is UNICAST
    off = simulate(rs, Probe(proto=17, src="10.0.0.9", dst="10.1.0.2", sport=1, dport=2, iif="eth0"), _two_ifaces())
    assert off.fate == Fate.DELIVERED


def test_addrtype_unicast_is_false_for_a_local_address() -> None:
    rs = rs_of(_tables(["-A OUTPUT -m addrtype --src-type UNICAST -j DROP"]))
    r = simulate(rs, Probe(proto=17, src="10.0.0.2", dst="10.0.0.7", sport=1, dport=2), _two_ifaces())
    assert r.fate == Fate.SENT
    r = simulate(rs, Probe(proto=17, src="10.0.0.7", dst="10.0.0.2", sport=1, dport=2, path="output"), _two_ifaces())
    assert r.fate == Fate.DROPPED


def test_dnat_in_nat_output_reroutes_after_the_output_hook() -> None:
    rs = rs_of(_tables(["-A OUTPUT -j LOG"], ["-A OUTPUT -p udp -j DNAT --to-destination 10.1.0.9"]))
    r = simulate(rs, Probe(proto=17, src="10.0.0.2", dst="10.0.0.7", sport=1, dport=2), _two_ifaces())
    outs = {(e.table, e.chain): e.fields["OUT"] for e in r.events}
    assert outs[("filter", "OUTPUT")] == "eth0"  # the device routed before the DNAT
    assert outs[("nat", "POSTROUTING")] == "eth1"
    assert r.events[-1].fields["DST"] == "10.1.0.9"


def test_masquerade_on_lo_takes_the_first_global_address() -> None:
    rs = rs_of(_tables([], ["-A POSTROUTING -o lo -j MASQUERADE"]))
    r = simulate(rs, Probe(proto=17, src="10.1.0.2", dst="10.0.0.2", sport=1, dport=2), _two_ifaces())
    assert r.fate == Fate.DELIVERED
    assert r.final["SRC"] == "10.0.0.2"
    assert not any("MASQUERADE" in a for a in r.assumptions)


def test_loopback_source_is_locally_generated_with_both_halves() -> None:
    rs = rs_of(_tables(["-A INPUT -i lo -j DROP"]))
    r = simulate(rs, Probe(proto=6, src="127.0.0.1", dst="127.0.0.1", sport=1, dport=2))
    assert r.fate == Fate.DROPPED
    # no rule needs conntrack: no nat chains; the INPUT half comes back in on lo
    assert [(t, c) for t, c, _, _ in step_tags(r.events)] == [("filter", "OUTPUT"), ("filter", "INPUT")]
    assert r.events[-1].fields["IN"] == "lo"


def test_depends_on_names_branches_and_unevaluated_matches_that_decide() -> None:
    from ruletrace.simulate.depends import depends_on

    rs = rs_of(_tables(["-A INPUT -m statistic --mode random --probability 0.5 -j DROP",
                        "-A INPUT -m foo --bar 1 -j REJECT", "-A INPUT -m statistic --mode nth --every 2 -j LOG"]))
    pr = Probe(proto=17, src="10.0.0.9", dst="10.0.0.2", sport=1, dport=2, iif="eth0")
    r = simulate(rs, pr, _two_ifaces())
    assert r.fate == Fate.DROPPED
    assert depends_on(rs, pr, _two_ifaces(), r) == [
        "filter:INPUT:1 -m statistic --mode random --probability 0.5 matched"]
    f = _two_ifaces()
    f.assume["filter:INPUT:1"] = False
    r = simulate(rs, pr, f)
    assert r.fate == Fate.DELIVERED
    # the given branch is not a condition; the module it cannot evaluate is; the LOG rule decides nothing
    assert depends_on(rs, pr, f, r) == ["filter:INPUT:2 did not match"]
