"""Offline reasoning of issue 15 item 4 / issue 14 item 3: the routing step from the host's dumps.

The fixtures in tests/fixtures/fate describe the lab host of lab/scenarios_fate.py (client net
10.93.0.0/24 on fh0; 10.94.0.0/24 and 10.96.0.0/24 on fs0; ip rule 100 fwmark 0x1 -> table 100,
which holds an unreachable route for 10.94.0.0/24). The expected reasons are the kernel's, as
measured there by tests/fate/test_fate_kernel.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ruletrace import routes as rt
from ruletrace.errors import RuletraceError
from ruletrace.explain.ctinvalid import invalid_note
from ruletrace.live import conntrack
from ruletrace.model import ConntrackEntry, Explanation, Packet, Rule, StepKind, TraceEvent, Verdict
from ruletrace.simulate.engine import simulate
from ruletrace.simulate.hostfacts import HostFacts, load_routes, load_rules, load_sysctls
from ruletrace.simulate.probe import Probe

F = Path(__file__).resolve().parents[1] / "fixtures" / "fate"
SRC = str(Path(__file__).resolve().parents[2] / "src")
RULES = json.loads((F / "ip-rule.json").read_text())
ROUTES = json.loads((F / "ip-route-all.json").read_text())


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruletrace", *args], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_resolve_follows_ip_rules_to_their_table():
    d = rt.resolve("input", RULES, ROUTES, dst="10.94.0.7", src="10.93.0.1", mark=1, iif="fh0")
    assert (d.rule, d.table, d.type, d.error) == ("100: from all fwmark 0x1 lookup 100", "100", "unreachable",
                                                  "No route to host")
    d = rt.resolve("input", RULES, ROUTES, dst="10.94.0.7", src="10.93.0.1", mark=None, iif="fh0")
    assert (d.rule, d.table, d.type, d.dev, d.error) == ("32766: from all lookup main", "main", "unicast", "fs0", None)
    d = rt.resolve("input", RULES, ROUTES, dst="10.93.0.2", src="10.93.0.1", mark=None, iif="fh0")
    assert (d.table, d.type, d.dev) == ("local", "local", "lo")  # as the kernel answers: via loopback
    d = rt.resolve("input", RULES, ROUTES, dst="10.95.0.7", src="10.93.0.1", mark=None, iif="fh0")
    assert (d.rule, d.table, d.type, d.error) == (None, None, "unreachable", "Network is unreachable")
    # without ip rules: the kernel's default three, so table 100 is never looked up
    d = rt.resolve("input", None, ROUTES, dst="10.94.0.7", src="10.93.0.1", mark=1, iif="fh0")
    assert (d.table, d.dev) == ("main", "fs0")


def test_throw_goes_on_and_a_prohibit_rule_ends_the_lookup():
    routes = [{"type": "throw", "dst": "10.0.0.0/8", "table": "7"}, {"dst": "10.0.0.0/8", "dev": "eth1"}]
    rules = [{"priority": 5, "src": "all", "table": "7"}, {"priority": 6, "src": "10.1.0.0", "srclen": 16,
                                                              "action": "prohibit"},
             {"priority": 32766, "src": "all", "table": "main"}]
    assert rt.resolve("input", rules, routes, dst="10.2.3.4", src="10.9.0.1", mark=None, iif="e0").dev == "eth1"
    d = rt.resolve("input", rules, routes, dst="10.2.3.4", src="10.1.0.1", mark=None, iif="e0")
    assert (d.type, d.rule, d.error) == ("prohibit", "6: from 10.1.0.0/16 prohibit", "Permission denied")


def test_rp_filter_strict_loose_and_off():
    sy = {"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.fh0.rp_filter": "1"}
    why = rt.rp_check(RULES, ROUTES, sy, src="10.96.0.9", dst="10.93.0.2", iif="fh0")
    assert why == "rp_filter=1 (strict) on fh0: the route back to 10.96.0.9 leaves by fs0, not fh0"
    assert rt.rp_check(RULES, ROUTES, sy, src="10.93.0.1", dst="10.93.0.2", iif="fh0") is None
    loose = {**sy, "net.ipv4.conf.all.rp_filter": "2"}  # the higher of all and the interface applies
    assert rt.rp_check(RULES, ROUTES, loose, src="10.96.0.9", dst="10.93.0.2", iif="fh0") is None
    assert rt.rp_check(RULES, ROUTES, loose, src="192.0.2.1", dst="10.93.0.2", iif="fh0") == \
        "rp_filter=2 (loose) on fh0: no route back to 192.0.2.1 (Network is unreachable)"
    assert rt.rp_check(RULES, ROUTES, {}, src="10.96.0.9", dst="10.93.0.2", iif="fh0") is None


def test_drop_reason_of_a_failed_lookup_follows_the_kernel():
    no_route = rt.resolve("input", RULES, ROUTES, dst="10.95.0.7", src="10.93.0.1", mark=None, iif="fh0")
    unreachable = rt.resolve("input", RULES, ROUTES, dst="10.94.0.7", src="10.93.0.1", mark=1, iif="fh0")
    assert rt.drop_reason(no_route, "1") == "IP_INNOROUTES"
    assert rt.drop_reason(unreachable, "1") == "NOT_SPECIFIED"
    assert rt.drop_reason(no_route, "0") == rt.drop_reason(unreachable, "0") == "IP_INADDRERRORS"


def test_sysctl_dump():
    text = (F / "sysctl-strict.txt").read_text()
    sy = rt.parse_sysctl(text, "s.txt")
    assert sy["net.ipv4.conf.fh0.rp_filter"] == "1" and sy["net.ipv4.ip_forward"] == "1"
    assert rt.parse_sysctl("net/ipv4/ip_forward = 0\n", "x") == {"net.ipv4.ip_forward": "0"}
    with pytest.raises(RuletraceError) as e:
        rt.parse_sysctl("net.ipv4.ip_forward = 1\nthis is not one\n", "dump.txt")
    assert str(e.value).startswith("dump.txt:2: ")
    p = _run("simulate", "-r", str(F / "mark-policy.rules"), "--sysctl", str(F / "ip-rule.json"), "-p", "udp",
             "-s", "10.93.0.1", "-d", "10.94.0.7")
    assert p.returncode == 2 and "ip-rule.json:1: " in p.stderr and "Traceback" not in p.stderr


def _facts(sysctl: str = "sysctl-strict.txt") -> HostFacts:
    from ruletrace.model import Origin

    f = HostFacts()
    load_routes((F / "ip-route-all.json").read_text(), f, origin=Origin("routes"))
    load_rules((F / "ip-rule.json").read_text(), f, origin=Origin("rules"))
    load_sysctls((F / sysctl).read_text(), f, origin=Origin("sysctl"))
    return f


def _sim(dst: str, src: str = "10.93.0.1", sysctl: str = "sysctl-strict.txt", **kw):
    from ruletrace.pipeline import load_rulesets

    rs = load_rulesets([str(F / "mark-policy.rules")])[0]
    return simulate(rs, Probe(proto=17, src=src, dst=dst, dport=9998, iif="fh0", **kw), _facts(sysctl))


@pytest.mark.parametrize(("dst", "src", "sysctl", "reason"), [
    ("10.94.0.7", "10.93.0.1", "sysctl-strict.txt", "NOT_SPECIFIED"),  # policy-route: marked into table 100
    ("10.95.0.7", "10.93.0.1", "sysctl-strict.txt", "IP_INNOROUTES"),  # no-route
    ("10.96.0.7", "10.93.0.1", "sysctl-noforward.txt", "IP_INADDRERRORS"),  # forward-off
    ("10.93.0.2", "10.96.0.9", "sysctl-strict.txt", "IP_RPFILTER"),  # rp-filter
])
def test_simulate_predicts_routing_drops_as_the_kernel_names_them(dst, src, sysctl, reason):
    res = _sim(dst, src, sysctl)
    assert str(res.fate) == "dropped" and res.kernel_drop is not None, res
    assert res.kernel_drop.reason == reason
    assert res.assumed_out is None


def test_simulate_routes_by_the_mark_a_rule_set_and_derives_out():
    res = _sim("10.96.0.7")  # not marked: main, connected prefix of fs0
    assert str(res.fate) == "forwarded" and res.kernel_drop is None and res.assumed_out is None
    assert res.final["OUT"] == "fs0"
    (d,) = res.routing
    assert (d.point, d.table, d.dev, d.mark) == ("input", "main", "fs0", None)
    res = _sim("10.94.0.7")
    assert (res.routing[0].mark, res.routing[0].table) == ("0x1", "100")
    ttl = _sim("10.96.0.7", ttl=1)
    assert ttl.kernel_drop is not None and (ttl.kernel_drop.reason, ttl.kernel_drop.function) == ("IP_INHDR",
                                                                                                 "ip_forward")


def test_simulate_cli_headline_and_json():
    args = ["simulate", "-r", str(F / "mark-policy.rules"), "--routes", str(F / "ip-route-all.json"), "--rules",
            str(F / "ip-rule.json"), "--sysctl", str(F / "sysctl-strict.txt"), "-p", "udp", "-s", "10.93.0.1",
            "-d", "10.94.0.7", "--dport", "9998", "-i", "fh0", "--no-color"]
    p = _run(*args)
    assert p.returncode == 3, p.stderr
    assert "DROPPED by the kernel: the routing step refused it" in p.stdout
    assert ("after PREROUTING: mark 0x1 set in mangle:PREROUTING rule 1 → ip rule 100: from all fwmark 0x1 lookup "
            "100 → table 100 → unreachable (No route to host)") in " ".join(p.stdout.split())
    doc = json.loads(_run(*args[:-1], "--json").stdout)
    pkt = doc["packets"][0]
    assert pkt["fate"] == "dropped" and pkt["drops"][0]["reason"] == "NOT_SPECIFIED"
    assert pkt["routing"][0]["mark_set"] == "mangle:PREROUTING rule 1"
    assert {"path": str(F / "sysctl-strict.txt"), "format": "sysctl", "role": "host-facts"} in doc["sources"]


def test_explain_ranks_causes_from_the_dumps():
    base = ["explain", str(F / "prerouting-ends.log"), "-r", str(F / "mark-policy.rules"), "--json"]
    facts = ["--routes", str(F / "ip-route-all.json"), "--rules", str(F / "ip-rule.json"), "--addrs",
             str(F / "ip-addr.json")]
    pk = json.loads(_run(*base, *facts, "--sysctl", str(F / "sysctl-strict.txt")).stdout)["packets"]
    notes = [p["notes"] for p in pk]
    assert notes[0][1].startswith("likely cause 1/2: an unreachable route for 10.94.0.7 (ip rule 100: from all "
                                  "fwmark 0x1 lookup 100 → table 100): NOT_SPECIFIED")
    assert notes[1][1].startswith("likely cause 1/2: reverse-path filter: rp_filter=1 (strict) on fh0")
    assert notes[2][1:] == ["likely cause 1/1: the log was cut after PREROUTING"]  # nothing in the dumps stops it
    assert pk[0]["routing"][0]["mark_set"] == "mangle:PREROUTING rule 1"
    nofwd = json.loads(_run(*base, *facts, "--sysctl", str(F / "sysctl-noforward.txt")).stdout)["packets"]
    assert nofwd[2]["notes"][1].startswith("likely cause 1/2: forwarding is disabled "
                                           "(net.ipv4.conf.fh0.forwarding=0): IP_INADDRERRORS")
    assert nofwd[0]["notes"][1].endswith("IP_INADDRERRORS (from " + str(F / "ip-route-all.json") + ")")
    # without the dumps: the fixed guess, unchanged
    plain = json.loads(_run(*base).stdout)["packets"]
    assert all("routing" not in p and p["notes"][0].startswith("last seen in PREROUTING: after it") for p in plain)


def _invalid(flags: str) -> Explanation:
    rule = Rule(table="filter", chain="INPUT", num=1, text="-A INPUT -p tcp -m conntrack --ctstate INVALID -j DROP",
                target="DROP")
    ev = TraceEvent(table="filter", chain="INPUT", kind=StepKind.RULE, num=1, fields={"PROTO": "TCP", "TCPFLAGS": flags, "SRC": "10.93.0.1",
                                                            "DST": "10.93.0.2"})
    return Explanation(Packet(1, [ev]), verdict=Verdict("drop", "filter", "INPUT", 1, rule, "dropped"))


def test_invalid_is_explained():
    e = _invalid("ACK")
    invalid_note(e, None, {"net.netfilter.nf_conntrack_tcp_loose": "0"})
    assert e.notes == ["conntrack state INVALID: a TCP packet without SYN (ACK) starts no connection when "
                       "net.netfilter.nf_conntrack_tcp_loose=0 (no mid-stream pickup), and no entry exists for "
                       "the flow"]
    invalid_note(e, ConntrackEntry("end", "tcp", state="ESTABLISHED"), {})  # replaces, with the entry
    assert len(e.notes) == 1 and "the flow's entry (ESTABLISHED) did not accept the segment" in e.notes[0]
    e = _invalid("SYN FIN")
    invalid_note(e)
    assert e.notes == ["conntrack state INVALID: the TCP flags FIN SYN are not a valid combination"]


def test_conntrack_event_line():
    e = conntrack.parse("    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.93.0.1 dst=10.93.0.2 sport=51924 "
                        "dport=9998 [UNREPLIED] src=10.93.0.2 dst=10.93.0.1 sport=9998 dport=51924", "first seen")
    assert (e.proto, e.state, e.timeout, e.status) == ("tcp", "SYN_SENT", 120, ["UNREPLIED"])
    assert e.original == "src=10.93.0.1 dst=10.93.0.2 sport=51924 dport=9998"
    assert e.reply == "src=10.93.0.2 dst=10.93.0.1 sport=9998 dport=51924"


COMPARE_RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 10.0.0.9:8080
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate NEW -j DROP
-A INPUT -p tcp -j ACCEPT
COMMIT
"""


def test_compare_takes_the_conntrack_state_the_trace_shows(tmp_path):
    rules = tmp_path / "r.rules"
    rules.write_text(COMPARE_RULES)
    base = ("IN=eth0 OUT= MAC=00:15:5d:12:e2:28:00:15:5d:12:e2:24:08:00 SRC=10.0.0.1 DST=10.0.0.2 LEN=52 TOS=0x00 "
            "PREC=0x00 TTL=64 ID={id} DF PROTO=TCP SPT=40000 DPT=22 SEQ=1 ACK=1 WINDOW=29200 RES=0x00 {flags} URGP=0")
    lines = [  # an established packet: no nat step; a new one: nat PREROUTING and INPUT, then dropped
        "kernel: TRACE: filter:INPUT:rule:2 " + base.format(id=1, flags="ACK"),
        "kernel: TRACE: nat:PREROUTING:policy:2 " + base.format(id=2, flags="SYN"),
        "kernel: TRACE: filter:INPUT:rule:1 " + base.format(id=2, flags="SYN"),
    ]
    log = tmp_path / "t.log"
    log.write_text("\n".join(lines) + "\n")
    p = _run("simulate", "-r", str(rules), "--compare", str(log), "--local-addr", "10.0.0.2", "--no-color")
    assert p.returncode == 0, p.stdout + p.stderr
    assert ("compare: 2 of 2 traced packet(s) agree with their prediction step by step; the fate agrees for 2 "
            "of the 2 whose trace shows it") in " ".join(p.stdout.split())
    assert "conntrack state ESTABLISHED: the nat table is not traversed" in " ".join(p.stdout.split())


def test_a_trace_ending_at_its_dnat_is_routed_to_the_new_destination(tmp_path):
    rules = tmp_path / "dnat.rules"
    rules.write_text("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                     ":POSTROUTING ACCEPT [0:0]\n-A PREROUTING -d 10.93.0.2/32 -p udp -m udp --dport 9998 -j DNAT "
                     "--to-destination 10.94.0.7:9998\nCOMMIT\n")
    f = ("IN=fh0 OUT= MAC=e6:86:64:6b:0a:ed:5e:7f:cd:91:9c:46:08:00 SRC=10.93.0.1 DST=10.93.0.2 LEN=29 TOS=0x00 "
         "PREC=0x00 TTL=64 ID=7 DF PROTO=UDP SPT=40000 DPT=9998 LEN=9")
    log = tmp_path / "t.log"
    log.write_text(f"[ 1.000001] TRACE: nat:PREROUTING:rule:1 {f}\n")
    p = _run("explain", str(log), "-r", str(rules), "--routes", str(F / "ip-route-all.json"), "--json")
    (pkt,) = json.loads(p.stdout)["packets"]
    # the line shows the packet before the DNAT ran: routed as the kernel does, to 10.94.0.7 (fs0), not local
    assert (pkt["routing"][0]["dev"], pkt["routing"][0]["table"]) == ("fs0", "main"), pkt["routing"]


def test_default_rules_fast_path_equals_resolve():
    """routestep's lookup without ip rules (HostFacts.route, cached) == routes.resolve with the default rules."""
    from types import SimpleNamespace

    from ruletrace.simulate.hostfacts import to_int
    from ruletrace.simulate.routestep import lookup

    f = HostFacts()
    routes = [*ROUTES, {"type": "blackhole", "dst": "10.97.0.0/16"}, {"dst": "default", "gateway": "10.93.0.1",
                                                                      "dev": "fh0"},
              {"type": "prohibit", "dst": "10.97.5.0/24"}]
    from ruletrace.model import Origin

    load_routes(json.dumps(routes), f, origin=Origin("r"))
    for dst in ("10.93.0.2", "10.93.0.9", "10.94.0.7", "10.96.0.1", "10.97.1.1", "10.97.5.5", "192.0.2.1",
                "127.0.0.1", "10.94.0.1"):
        v, a = to_int(dst)
        run = SimpleNamespace(facts=f, lookups=[])
        p = SimpleNamespace(v=v, dst=a, src=to_int("10.93.0.1")[1], mark=0, iif="fh0")
        fast = lookup(run, p, "input")
        ref = rt.resolve("input", None, f.raw_routes, dst=dst, src="10.93.0.1", mark=None, iif="fh0")
        assert (fast.table, fast.type, fast.dev, fast.gateway, fast.error, fast.rule) == \
            (ref.table, ref.type, ref.dev, ref.gateway, ref.error, ref.rule), dst
        again = lookup(SimpleNamespace(facts=f, lookups=[]), p, "input")  # remembered: the same answer
        assert again is fast and again.text == "", dst


@pytest.mark.parametrize(("text", "action"), [
    ("-A INPUT -m conntrack ! --ctstate INVALID -j ACCEPT", "accept"),  # excludes INVALID
    ("-A INPUT -m conntrack ! --ctstate INVALID -j DROP", "drop"),
    ("-A INPUT -m conntrack --ctstate INVALID -j ACCEPT", "accept"),  # not a drop: nothing to explain
    ("ct state != invalid drop", "drop"),
])
def test_no_invalid_note_for_a_rule_that_excludes_invalid_or_lets_it_through(text, action):
    e = _invalid("ACK")
    rule = Rule(table="filter", chain="INPUT", num=1, text=text, target=action.upper())
    e.verdict = Verdict(action, "filter", "INPUT", 1, rule, action)
    invalid_note(e, None, {"net.netfilter.nf_conntrack_tcp_loose": "0"})
    assert e.notes == []


def test_an_icmpv6_error_is_named_by_its_own_type_numbers():
    rule = Rule(table="filter", chain="INPUT", num=1, text="ct state invalid drop")
    for icmp_type, named in (("1", True), ("3", True), ("128", False)):  # unreachable, time exceeded, echo request
        ev = TraceEvent(table="filter", chain="INPUT", kind=StepKind.RULE, num=1,
                        fields={"PROTO": "ICMPv6", "TYPE": icmp_type, "SRC": "fd00::1", "DST": "fd00::2"})
        e = Explanation(Packet(1, [ev]), verdict=Verdict("drop", "filter", "INPUT", 1, rule, "dropped"))
        invalid_note(e)
        assert ("an ICMP error that belongs to no tracked connection" in e.notes[0]) is named, (icmp_type, e.notes)


@pytest.mark.parametrize(("v4", "v6", "dropped"), [("0", "1", False), ("1", "0", True)])
def test_ipv6_forwarding_is_decided_by_its_own_sysctl(tmp_path, v4, v6, dropped):
    """Review: an IPv6 packet was dropped for net.ipv4.ip_forward=0; ip6_forward reads
    net.ipv6.conf.all.forwarding only."""
    assert rt.forwarding({"net.ipv4.ip_forward": v4, "net.ipv6.conf.all.forwarding": v6}, "eth0", v6=True) == v6
    rules, sysctl = tmp_path / "v6.save", tmp_path / "sysctl.txt"
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    sysctl.write_text(f"net.ipv4.ip_forward = {v4}\nnet.ipv6.conf.all.forwarding = {v6}\n")
    p = _run("simulate", "-r", str(rules), "--sysctl", str(sysctl), "-p", "udp", "-s", "fd00::2", "-d", "fd00:1::9",
             "-i", "eth0", "-o", "eth1", "--json")
    pkt = json.loads(p.stdout)["packets"][0]
    if dropped:
        assert pkt["fate"] == "dropped" and pkt["drops"][0]["reason"] == "IP_INADDRERRORS", pkt
        assert pkt["drops"][0]["function"] == "ip6_forward"
        # dropped before any chain: the packet is still named (review: the header was `? ? -> ?`)
        assert (pkt["src"], pkt["dst"], pkt["proto"], pkt["in"]) == ("fd00::2", "fd00:1::9", "UDP", "eth0"), pkt
        tree = _run("simulate", "-r", str(rules), "--sysctl", str(sysctl), "-p", "udp", "-s", "fd00::2", "-d",
                    "fd00:1::9", "-i", "eth0", "-o", "eth1", "--no-color").stdout
        assert tree.startswith("packet 1  UDP [fd00::2]:") and "-> [fd00:1::9]:" in tree.splitlines()[0], tree
    else:
        assert pkt["fate"] == "forwarded" and not pkt.get("drops"), pkt


def test_remembered_route_decisions_are_worded_on_copies():
    """The simulator shares one decision per (point, dst, mark) across a batch; the CLI words each
    packet's on a copy, so one packet's text or mark never shows up on another's."""
    f = _facts()
    first, second = _sim("10.94.0.7"), _sim("10.94.0.7")
    assert first.routing[0] is not None and first.routing[0].text == ""
    from ruletrace.cli.simulate import _explain, with_fate
    from ruletrace.pipeline import load_rulesets

    rs = load_rulesets([str(F / "mark-policy.rules")])[0]
    res = simulate(rs, Probe(proto=17, src="10.93.0.1", dst="10.94.0.7", dport=9998, iif="fh0"), f)
    expl = _explain(res, rs)
    with_fate(expl, res, f.sysctls)
    assert expl.routing[0].text and res.routing[0].text == "" and expl.routing[0] is not res.routing[0]
    assert second.routing[0].text == ""
