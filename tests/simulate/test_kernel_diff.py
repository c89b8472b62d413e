"""Simulation vs the kernel: load a ruleset into a namespace, send the packet, compare TRACE steps."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ruletrace.model import Origin
from ruletrace.rulesets.iptables_save import parse
from ruletrace.simulate.engine import simulate, step_tags
from ruletrace.simulate.hostfacts import HostFacts, load_routes
from ruletrace.simulate.probe import Probe

from .kernel_host import TABLES_V4, KernelHost, unavailable

pytestmark = pytest.mark.kernel

_why = unavailable()


@pytest.fixture(scope="module")
def host():
    if _why:
        pytest.skip(_why)
    with KernelHost() as h:
        yield h


def full_ruleset(rules: dict[str, list[str]], policies: dict[tuple[str, str], str] | None = None,
                 user: dict[str, list[str]] | None = None) -> str:
    """All five tables, so the namespace's tables and the simulated ones are the same."""
    out = []
    for table, chains in TABLES_V4.items():
        out.append(f"*{table}")
        for ch in chains:
            out.append(f":{ch} {(policies or {}).get((table, ch), 'ACCEPT')} [0:0]")
        for ch in (user or {}).get(table, []):
            out.append(f":{ch} - [0:0]")
        out.extend(rules.get(table, []))
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def facts_for(h: KernelHost) -> HostFacts:
    f = HostFacts()
    for a in (h.server_ip, h.server_ip2):
        f.add_local(f"{h.vs}={a}/24")
    f.add_local(f"{h.vd}={h.fwd}.1/24")
    load_routes(
        f'[{{"dst": "{h.net}.0/24", "dev": "{h.vs}"}}, {{"dst": "{h.fwd}.0/24", "dev": "{h.vd}"}}]',
        f, origin=Origin("routes"))
    return f


def run_both(h: KernelHost, text: str, proto: str, dst: str, dport: int, *, output: bool = False):
    """(kernel steps, simulated steps, SimResult) for one packet."""
    saved = h.load(text)
    rs = parse(saved, origin=Origin("iptables-legacy-save"))
    sport = h.next_sport()
    pnum = {"tcp": 6, "udp": 17, "icmp": 1}[proto]
    if output:
        src = h.server_ip
        traces = h.send(proto, h.srv, dst, sport=sport, dport=dport, src=src)
        probe = Probe(proto=pnum, src=src, dst=dst, sport=sport if pnum != 1 else None,
                      dport=dport if pnum != 1 else None, path="output")
    else:
        traces = h.send(proto, h.cli, dst, sport=sport, dport=dport, src=h.client_ip)
        probe = Probe(proto=pnum, src=h.client_ip, dst=dst, sport=sport if pnum != 1 else None,
                      dport=dport if pnum != 1 else None, iif=h.vs)
    res = simulate(rs, probe, facts_for(h))
    kernel = [t.tag for t in traces]
    sim = step_tags(res.events[res.trace_start :])
    return kernel, sim, res, traces


TRACE_IN = "-A PREROUTING -s {client}/32 -j TRACE"

CASES = [
    # (name, rules, user chains, policies, proto, dst key, dport)
    ("policy-accept", {}, {}, {}, "tcp", "server", 5001),
    ("filter-drop-dport", {"filter": ["-A INPUT -p tcp -m tcp --dport 5002 -j DROP",
                                      "-A INPUT -p tcp -j ACCEPT"]}, {}, {}, "tcp", "server", 5002),
    ("jump-return", {"filter": ["-A INPUT -j C1", "-A INPUT -p udp -j ACCEPT",
                                "-A C1 -p tcp -m tcp --dport 1:100 -j DROP", "-A C1 -p udp -j RETURN",
                                "-A C1 -j LOG"]}, {"filter": ["C1"]}, {}, "udp", "server", 5003),
    ("goto-returns-to-caller", {"filter": ["-A INPUT -j C1", "-A INPUT -m comment --comment x -j ACCEPT",
                                           "-A C1 -g C2", "-A C2 -p tcp -m tcp --dport 9 -j DROP"]},
     {"filter": ["C1", "C2"]}, {}, "tcp", "server", 5004),
    ("unconditional-is-policy", {"filter": ["-A INPUT -p icmp -j ACCEPT", "-A INPUT -j DROP"]}, {}, {},
     "tcp", "server", 5005),
    ("unconditional-return", {"filter": ["-A INPUT -j C1", "-A C1 -j RETURN"]}, {"filter": ["C1"]}, {},
     "tcp", "server", 5006),
    ("builtin-return-policy", {"filter": ["-A INPUT -p tcp -j RETURN", "-A INPUT -j ACCEPT"]}, {},
     {("filter", "INPUT"): "DROP"}, "tcp", "server", 5007),
    ("mark-then-match", {"mangle": ["-A PREROUTING -p tcp -j MARK --set-xmark 0x8000/0x8000"],
                         "filter": ["-A INPUT -m mark --mark 0x8000/0x8000 -j DROP"]}, {}, {},
     "tcp", "server", 5008),
    ("seed003-nodeport-mark-drop",
     {"nat": ["-A PREROUTING -j KUBE-NODEPORTS",
              "-A KUBE-NODEPORTS -p tcp -m tcp --dport 5009 -j KUBE-MARK-DROP",
              "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000"],
      "filter": ["-A INPUT -j KUBE-FIREWALL", "-A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP"]},
     {"nat": ["KUBE-NODEPORTS", "KUBE-MARK-DROP"], "filter": ["KUBE-FIREWALL"]}, {}, "tcp", "server", 5009),
    ("dnat-to-forward", {"nat": ["-A PREROUTING -p tcp -m tcp --dport 5010 -j DNAT --to-destination {fwd}:80"],
                         "filter": ["-A FORWARD -p tcp -m tcp --dport 80 -j ACCEPT"]}, {},
     {("filter", "FORWARD"): "DROP"}, "tcp", "server", 5010),
    ("forward-conntrack-dnat-state", {"filter": ["-A FORWARD -m conntrack --ctstate DNAT -j DROP",
                                                 "-A FORWARD -m conntrack --ctstate NEW -j ACCEPT"]}, {}, {},
     "udp", "forward", 5011),
    ("addrtype-local", {"filter": ["-A INPUT -m addrtype --dst-type LOCAL -p udp -j ACCEPT"],
                        "nat": ["-A PREROUTING -m addrtype --dst-type LOCAL -j C", "-A C -p udp -j RETURN"]},
     {"nat": ["C"]}, {}, "udp", "server2", 5012),
    ("raw-ctstate-invalid", {"raw": ["-A PREROUTING -m conntrack --ctstate INVALID -j ACCEPT"]}, {}, {},
     "tcp", "server", 5013),
    ("notrack-skips-nat", {"raw": ["-A PREROUTING -p udp -j NOTRACK"],
                           "filter": ["-A INPUT -m state --state UNTRACKED -j ACCEPT"]}, {}, {},
     "udp", "server", 5014),
    ("redirect", {"nat": ["-A PREROUTING -p tcp -m tcp --dport 5015 -j REDIRECT --to-ports 8080"],
                  "filter": ["-A INPUT -p tcp -m tcp --dport 8080 -j DROP"]}, {}, {}, "tcp", "server", 5015),
    ("icmp-type", {"filter": ["-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP"]}, {}, {}, "icmp", "server", 0),
    ("multiport-connmark", {"mangle": ["-A PREROUTING -p tcp -m multiport --dports 1,5017:5020 "
                                       "-j CONNMARK --set-xmark 0x7/0xffffffff",
                                       "-A PREROUTING -j CONNMARK --restore-mark --nfmask 0xffffffff "
                                       "--ctmask 0xffffffff"],
                            "filter": ["-A INPUT -m connmark --mark 0x7 -m mark --mark 0x7 -j REJECT"]}, {}, {},
     "tcp", "server", 5018),
]


def _dst(h: KernelHost, key: str) -> str:
    return {"server": h.server_ip, "server2": h.server_ip2, "forward": h.forward_ip}[key]


def _fmt(rules: dict[str, list[str]], h: KernelHost) -> dict[str, list[str]]:
    return {t: [r.format(fwd=h.forward_ip, client=h.client_ip) for r in rs] for t, rs in rules.items()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fixed_case(host: KernelHost, case) -> None:
    name, rules, user, pol, proto, dst, dport = case
    rules = _fmt(rules, host)
    rules.setdefault("raw", [])
    rules["raw"] = [TRACE_IN.format(client=host.client_ip)] + rules["raw"]
    kernel, sim, res, _ = run_both(host, full_ruleset(rules, pol, user), proto, _dst(host, dst), dport)
    assert kernel, f"{name}: the kernel logged no TRACE line"
    assert sim == kernel, f"{name}: assumptions {res.assumptions}"


def test_output_path(host: KernelHost) -> None:
    rules = {"raw": [f"-A OUTPUT -d {host.client_ip}/32 -j TRACE"],
             "nat": ["-A POSTROUTING -o rts7+ -p udp -j SNAT --to-source " + host.server_ip2],
             "filter": ["-A OUTPUT -p udp -m udp --dport 5101 -j LOG"]}
    kernel, sim, res, traces = run_both(host, full_ruleset(rules), "udp", host.client_ip, 5101, output=True)
    assert kernel and sim == kernel, res.assumptions
    assert traces[-1].fields["OUT"] == host.vs


def test_dnat_changes_dst_in_fields(host: KernelHost) -> None:
    rules = {"raw": [TRACE_IN.format(client=host.client_ip)],
             "nat": [f"-A PREROUTING -p tcp -m tcp --dport 5102 -j DNAT --to-destination {host.forward_ip}:81"]}
    kernel, sim, res, traces = run_both(host, full_ruleset(rules), "tcp", host.server_ip, 5102)
    assert sim == kernel
    sim_ev = res.events[res.trace_start :]
    for k, s in zip(traces, sim_ev):
        for f in ("IN", "OUT", "SRC", "DST", "SPT", "DPT", "PROTO"):
            assert s.fields.get(f) == k.fields.get(f), (k.tag, f)


# --- randomized: small rulesets and packets --------------------------------------------------

_MATCHES = [
    "", "-p tcp", "-p udp", "-p tcp -m tcp --dport {dport}", "-p udp -m udp --dport 7000:7100",
    "-s {client}/32", "-d {server}/32", "! -d {server}/32", "-s 10.0.0.0/8", "-i rts7+", "! -i lo",
    "-m mark --mark 0x1/0x1", "-m conntrack --ctstate NEW", "-m state --state ESTABLISHED",
    "-p tcp -m multiport --dports 1,2,{dport}", "-m addrtype --dst-type LOCAL", "-m comment --comment hi",
]
_TARGETS = ["ACCEPT", "DROP", "RETURN", "C1", "C2", "MARK --set-xmark 0x1/0x1", "LOG", "-g C2", ""]


@st.composite
def rulesets(draw):
    dport = draw(st.sampled_from([7001, 7050, 7200]))
    proto = draw(st.sampled_from(["tcp", "udp"]))
    rules: dict[str, list[str]] = {}
    for table, chains in (("filter", ["INPUT", "C1", "C2"]), ("mangle", ["PREROUTING", "INPUT"]),
                          ("nat", ["PREROUTING", "INPUT"])):
        lines = []
        for ch in chains:
            for _ in range(draw(st.integers(0, 3))):
                m = draw(st.sampled_from(_MATCHES))
                t = draw(st.sampled_from(_TARGETS))
                if ch in ("C1", "C2") and t in ("C1", "C2", "-g C2"):
                    t = "RETURN"  # no loops
                if table != "filter" and t in ("C1", "C2", "-g C2"):
                    t = "LOG"
                if table == "nat" and t == "DROP":
                    t = "ACCEPT"
                tgt = t if t.startswith("-g") else (f"-j {t}" if t else "")
                lines.append(f"-A {ch} {m} {tgt}".replace("  ", " ").strip())
        rules[table] = lines
    pol = draw(st.sampled_from(["ACCEPT", "DROP"]))
    return rules, pol, proto, dport


@pytest.mark.slow
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rulesets())
def test_random_rulesets(host: KernelHost, drawn) -> None:
    rules, pol, proto, dport = drawn
    fmt = {t: [r.format(client=host.client_ip, server=host.server_ip, dport=dport) for r in rs]
           for t, rs in rules.items()}
    fmt["raw"] = [TRACE_IN.format(client=host.client_ip)]
    text = full_ruleset(fmt, {("filter", "INPUT"): pol}, {"filter": ["C1", "C2"]})
    kernel, sim, _res, _ = run_both(host, text, proto, host.server_ip, dport)
    assert kernel, "the kernel logged no TRACE line"
    assert sim == kernel, text


# --- issue 14: what the simulator got wrong, checked on the kernel ------------------------------

def _sim_output(host: KernelHost, text: str, proto: str, src: str, dst: str, dport: int):
    saved = host.load(text)
    rs = parse(saved, origin=Origin("iptables-legacy-save"))
    sport = host.next_sport()
    traces = host.send(proto, host.srv, dst, sport=sport, dport=dport, src=src)
    probe = Probe(proto={"tcp": 6, "udp": 17}[proto], src=src, dst=dst, sport=sport, dport=dport)
    res = simulate(rs, probe, facts_for(host))
    return traces, res


def test_loopback_masquerade_and_addrtype(host: KernelHost) -> None:
    """A packet to another local address: OUTPUT and its INPUT half over lo are one packet;
    --src-type UNICAST is false for the host's own address; --limit-iface-in on lo does not see
    an address of the veth as LOCAL; MASQUERADE on lo takes the first global address."""
    rules = {"raw": [f"-A OUTPUT -d {host.server_ip}/32 -p udp -j TRACE",
                     f"-A PREROUTING -i lo -d {host.server_ip}/32 -p udp -j TRACE"],
             "nat": ["-A POSTROUTING -o lo -p udp -j MASQUERADE"],
             "filter": ["-A OUTPUT -m addrtype --src-type UNICAST -j LOG",
                        "-A INPUT -m addrtype --dst-type LOCAL --limit-iface-in -j LOG"]}
    traces, res = _sim_output(host, full_ruleset(rules), "udp", host.server_ip2, host.server_ip, 5201)
    kernel = [t.tag for t in traces if t.fields.get("PROTO") == "UDP"]
    sim = step_tags(res.events[res.trace_start :])
    # the kernel logs the INPUT half's raw PREROUTING TRACE rule itself: our TRACE rule fired in OUTPUT
    assert kernel and sim == kernel, res.assumptions
    last = [t for t in traces if t.fields.get("PROTO") == "UDP"][-1]
    assert last.fields["IN"] == "lo" and last.fields["SRC"] == host.server_ip  # masqueraded
    assert res.events[-1].fields["SRC"] == host.server_ip
    assert str(res.fate) == "delivered"


def test_dnat_in_nat_output_keeps_out_until_postrouting(host: KernelHost) -> None:
    rules = {"raw": [f"-A OUTPUT -d {host.client_ip}/32 -p udp -j TRACE"],
             "nat": [f"-A OUTPUT -p udp -m udp --dport 5202 -j DNAT --to-destination {host.forward_ip}"],
             "filter": ["-A OUTPUT -j LOG"]}
    traces, res = _sim_output(host, full_ruleset(rules), "udp", host.server_ip, host.client_ip, 5202)
    assert [t.tag for t in traces] == step_tags(res.events[res.trace_start :]), res.assumptions
    for k, s in zip(traces, res.events[res.trace_start :]):
        assert (s.fields.get("OUT"), s.fields.get("DST")) == (k.fields.get("OUT"), k.fields.get("DST")), k.tag
    assert traces[-1].fields["OUT"] == host.vd and traces[0].fields["OUT"] == host.vs
