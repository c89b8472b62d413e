"""The chain functions (walker.py) predict what the plain walk predicts: steps, fields, fate, verdict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin
from ruletrace.rulesets.iptables_save import parse
from ruletrace.simulate import walker
from ruletrace.simulate.compiled import compiled
from ruletrace.simulate.engine import simulate, step_tags
from ruletrace.simulate.hostfacts import HostFacts
from ruletrace.simulate.probe import Probe

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.1.3", "192.168.1.1"]
PORTS = [22, 80, 443, 8080]
MATCHES = [
    "-s 10.0.0.0/24", "! -s 10.0.0.0/24", "-d 10.0.0.2/32", "! -d 10.0.0.2/32", "-s 10.0.0.1/32,10.0.1.3/32",
    "-p tcp", "! -p tcp", "-p udp", "-p tcp -m tcp --dport 80", "-p tcp -m tcp ! --dport 80",
    "-p tcp -m tcp --sport 1000:2000", "-p udp -m udp --dport 400:8080", "-i eth0", "! -i eth0", "-o eth+",
    "-m multiport --dports 80:443", "-p tcp -m multiport ! --dports 80:443", "-m multiport --sports 1000",
    "-p tcp -m multiport --dports 22,8080", "-m mark --mark 0x1", "-m mark ! --mark 0x2/0x2",
    "-m conntrack --ctstate NEW", "-m conntrack ! --ctstate NEW,DNAT", "-m state --state INVALID",
    "-m statistic --mode random --probability 0.5", "-m comment --comment \"x y\"", "-m recent --rcheck",
    "-m addrtype --dst-type LOCAL", "-p tcp -m tcp --tcp-flags SYN,ACK SYN", "-p tcp -m tcp ! --syn",
    "-m conntrack --ctstate ESTABLISHED,RELATED", "-m conntrack --ctstate UNTRACKED,INVALID",
]
TARGETS = ["-j ACCEPT", "-j DROP", "-j REJECT", "-j RETURN", "-j MARK --set-xmark 0x1/0x1",
           "-j MARK --set-xmark 0x2/0x2", "-j LOG", "-j TRACE", "-j CONNMARK --save-mark", "-j U1", "-j U2",
           "-g U2", "-j U3", "-j NOSUCHTARGET", ""]
NAT_TARGETS = ["-j DNAT --to-destination 10.0.1.3:8080", "-j SNAT --to-source 10.0.0.9", "-j MASQUERADE",
               "-j RETURN", "-j K1", "-g K2", "-j ACCEPT", "-j MARK --set-xmark 0x1/0x1", ""]


def _rule(draw, chain: str, targets: list[str]) -> str:
    m = draw(st.lists(st.sampled_from(MATCHES), max_size=3, unique=True))
    words = []
    seen: set[str] = set()
    for x in m:  # one -p / -s / -d / -i per rule, as iptables allows
        opt = x.replace("! ", "").split()[0]
        if opt in seen and opt in ("-p", "-s", "-d", "-i", "-o"):
            continue
        if opt == "-p" and "-p" in seen:
            continue
        seen.add(opt)
        words.append(x)
    return f"-A {chain} {' '.join(words)} {draw(st.sampled_from(targets))}".replace("  ", " ").rstrip()


@st.composite
def rulesets(draw):
    # user chains are called only "downwards" (U1 -> U2 -> U3), so the ruleset has no loop
    filt = {"INPUT": (0, 6), "FORWARD": (0, 8), "OUTPUT": (0, 4), "U1": (0, 6), "U2": (0, 5), "U3": (0, 4)}
    lines = ["*filter"]
    for ch in ("INPUT", "FORWARD", "OUTPUT"):
        pol = draw(st.sampled_from(["ACCEPT", "DROP", None]))  # None: no line, the policy unknown
        if pol is not None:
            lines.append(f":{ch} {pol} [0:0]")
    lines += [":U1 - [0:0]", ":U2 - [0:0]", ":U3 - [0:0]"]
    allowed = {"U1": ["-j U2", "-g U2", "-j U3"], "U2": ["-j U3"], "U3": []}
    for ch, (lo, hi) in filt.items():
        targets = [t for t in TARGETS if not t.startswith(("-j U", "-g U")) or t in allowed.get(ch, TARGETS)]
        for _ in range(draw(st.integers(lo, hi))):
            lines.append(_rule(draw, ch, targets))
    lines.append("COMMIT")
    lines += ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
              ":POSTROUTING ACCEPT [0:0]", ":K1 - [0:0]", ":K2 - [0:0]"]
    for ch in ("PREROUTING", "POSTROUTING", "OUTPUT", "K1", "K2"):
        targets = [t for t in NAT_TARGETS if ch not in ("K1", "K2") or not t.endswith(("K1", "K2"))]
        if ch == "K1":
            targets.append("-g K2")
        for _ in range(draw(st.integers(0, 4))):
            lines.append(_rule(draw, ch, targets))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


packets = st.builds(
    lambda proto, src, dst, sport, dport, mark, iif, ctstate: Probe(
        proto=proto, src=src, dst=dst, sport=sport, dport=dport, mark=mark, iif=iif, ctstate=ctstate),
    st.sampled_from([6, 17]), st.sampled_from(HOSTS), st.sampled_from(HOSTS), st.sampled_from([1000, 1500, 3000]),
    st.sampled_from(PORTS), st.sampled_from([0, 1, 2, 3]), st.sampled_from(["eth0", "eth1", None]),
    st.sampled_from(["NEW", "NEW", "ESTABLISHED", "INVALID"]))


def _same(a, b) -> None:
    assert step_tags(a.events) == step_tags(b.events)
    assert [e.fields for e in a.events] == [e.fields for e in b.events]
    assert [(type(e), e.family, e.origin, e.source, e.ts, e.handle, e.ident, e.packet_id, e.verdict, e.raw)
            for e in a.events] == [(type(e), e.family, e.origin, e.source, e.ts, e.handle, e.ident, e.packet_id,
                                    e.verdict, e.raw) for e in b.events]
    assert (a.fate, a.assumptions, a.final, a.hooks, a.trace_start) == \
           (b.fate, b.assumptions, b.final, b.hooks, b.trace_start)
    va, vb = a.verdict, b.verdict
    assert (va is None) == (vb is None)
    if va is not None:
        assert (va.action, va.table, va.chain, va.num, va.rule, va.reason) == \
               (vb.action, vb.table, vb.chain, vb.num, vb.rule, vb.reason)
    assert [(x.table, x.chain, x.num, x.taken, x.note) for x in a.branches] == \
           [(x.table, x.chain, x.num, x.taken, x.note) for x in b.branches]


@settings(max_examples=300, deadline=None)
@given(rulesets(), st.lists(packets, min_size=1, max_size=4), st.booleans())
def test_chain_functions_equal_plain_walk(text: str, probes: list[Probe], local_known: bool) -> None:
    rs = parse(text, origin=Origin("random"))
    facts = HostFacts()
    if local_known:
        facts.add_local("eth0=10.0.0.1/24")
    for p in probes:
        _same(simulate(rs, p, facts, index=True), simulate(rs, p, facts, index=False))


@settings(max_examples=150, deadline=None)
@given(rulesets(), st.lists(packets, min_size=1, max_size=4), st.booleans())
def test_generic_walk_equals_plain_walk(text: str, probes: list[Probe], local_known: bool) -> None:
    # every chain through walker._generic (the walk of indexed and very long chains), not the
    # straight-line code: it too must predict what the reference walk predicts
    rs = parse(text, origin=Origin("random"))
    facts = HostFacts()
    if local_known:
        facts.add_local("eth0=10.0.0.1/24")
    saved = walker.MAX_GENERATED
    walker.MAX_GENERATED = -1
    try:
        for p in probes:
            _same(simulate(rs, p, facts, index=True), simulate(rs, p, facts, index=False))
        cc = compiled(rs, False)
        assert all(ch.walk.__code__ is not None and ch.walk.__code__.co_name == "walk"
                   and ch.walk.__code__.co_filename == walker.__file__ for ch in cc.chains.values()
                   if ch.walk is not None and ch.walk.__code__.co_name != "first")
    finally:
        walker.MAX_GENERATED = saved


def _chain_ruleset(rules: list[str], user: list[str] = ()) -> str:
    return "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
                      *(f":{u} - [0:0]" for u in user), *rules, "COMMIT", ""])


def test_generated_chain_is_used_and_shared_by_shape() -> None:
    # two user chains of the same shape share one compiled factory; the walk goes through them
    rs = parse(_chain_ruleset(["-A FORWARD -s 10.0.0.1/32 -j A", "-A FORWARD -j B",
                               "-A A -p tcp -m tcp --dport 80 -j ACCEPT", "-A B -p tcp -m tcp --dport 22 -j ACCEPT"],
                              ["A", "B"]), origin=Origin("t"))
    before = len(walker._factories)
    p = Probe(proto=6, src="10.0.0.2", dst="10.0.0.3", sport=1000, dport=22, iif="eth0", path="forward")
    r = simulate(rs, p, HostFacts())
    assert step_tags(r.events) == [("filter", "FORWARD", "rule", 2), ("filter", "B", "rule", 1)]
    assert r.verdict is not None and (r.verdict.chain, r.verdict.num) == ("B", 1)
    cc = compiled(rs, False)
    a, b = cc.chain("filter", "A"), cc.chain("filter", "B")
    simulate(rs, Probe(proto=6, src="10.0.0.1", dst="10.0.0.3", sport=1000, dport=80, iif="eth0",
                       path="forward"), HostFacts())
    assert a.walk is not None and b.walk is not None and a.walk.__code__ is b.walk.__code__
    assert len(walker._factories) - before <= 2  # FORWARD's shape and the one of A and B


def test_loop_is_an_error_not_a_crash() -> None:
    rs = parse(_chain_ruleset(["-A INPUT -j A", "-A A -j B", "-A B -j A"], ["A", "B"]), origin=Origin("t"))
    with pytest.raises(RuletraceError, match="loops"):
        simulate(rs, Probe(proto=6, src="10.0.0.2", dst="10.0.0.3", sport=1, dport=2, path="input"), HostFacts())


def test_chains_nested_deeper_than_the_python_stack() -> None:
    # 3000 nested jumps: the chain functions run out of Python stack and the plain walk takes over
    n = 3000
    rules = [f"-A C{i} -j C{i + 1}" for i in range(n)] + [f"-A C{n} -p tcp -j DROP", "-A INPUT -j C0"]
    rs = parse(_chain_ruleset(rules, [f"C{i}" for i in range(n + 1)]), origin=Origin("t"))
    p = Probe(proto=6, src="10.0.0.2", dst="10.0.0.3", sport=1, dport=2, path="input")
    a, b = simulate(rs, p, HostFacts()), simulate(rs, p, HostFacts(), index=False)
    _same(a, b)
    assert len(a.events) == n + 2 and a.events[-1].tag == f"filter:C{n}:rule:1"


@pytest.mark.parametrize(("match", "dport", "want"), [
    ("-p tcp -m multiport --dports 30000:32767", 30000, True),
    ("-p tcp -m multiport --dports 30000:32767", 32768, False),
    ("-p tcp -m multiport ! --dports 30000:32767", 32768, True),
    ("-p tcp -m multiport ! --dports 30000:32767", 31000, False),
    ("-p tcp -m tcp --dport 80", 80, True),
    ("-p tcp -m tcp ! --dport 80", 80, False),
    ("! -p udp", 80, True),
    ("! -d 10.0.0.3/32", 80, False),
    ("! -s 10.0.0.0/24", 80, False),
    ("-s 10.0.0.0/24 -d 10.0.0.3/32", 80, True),
    ("-m mark ! --mark 0x4000/0x4000", 80, True),
    ("-m mark --mark 0x0", 80, True),
    ("-m conntrack --ctstate NEW", 80, True),
    ("-m conntrack ! --ctstate NEW", 80, False),
    ("-m conntrack ! --ctstate ESTABLISHED,DNAT", 80, True),
    ("-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN", 80, True),
    ("-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN", 80, False),
    ("-p tcp -m tcp --syn", 80, True),
])
def test_single_condition(match: str, dport: int, want: bool) -> None:
    # a TCP SYN 10.0.0.2:1000 -> 10.0.0.3:dport, mark 0, conntrack on (the conntrack rule needs it)
    rs = parse(_chain_ruleset([f"-A INPUT {match} -j DROP", "-A INPUT -m conntrack --ctstate INVALID -j LOG"]),
               origin=Origin("t"))
    p = Probe(proto=6, src="10.0.0.2", dst="10.0.0.3", sport=1000, dport=dport, path="input")
    for index in (True, False):
        r = simulate(rs, p, HostFacts(), index=index)
        assert (("filter", "INPUT", "rule", 1) in step_tags(r.events)) is want
