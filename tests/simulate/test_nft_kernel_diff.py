"""Native nftables simulation vs the kernel: load with ``nft -f``, send real packets, compare ``nft monitor trace``.

Steps compare as (table, chain, rule|policy, handle): the handles come from ``nft -a list
ruleset`` read back from the kernel, the prediction is made on that listing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ruletrace.model import Origin, StepKind
from ruletrace.rulesets.nft_text import parse
from ruletrace.simulate.engine import simulate
from ruletrace.simulate.probe import Probe

from .nft_kernel_host import NftHost, trace_prefix, unavailable
from .test_kernel_diff import facts_for

pytestmark = pytest.mark.kernel
FIXTURES = Path(__file__).parent.parent / "fixtures" / "nft_native"
_why = unavailable()


@pytest.fixture(scope="module")
def host():
    if _why:
        pytest.skip(_why)
    with NftHost() as h:
        yield h


def sim_steps(res) -> list[tuple[str, str, str, int | None]]:
    return [(e.table, e.chain, "rule" if e.kind == StepKind.RULE else "policy", e.handle)
            for e in res.events[res.trace_start :]]


def run_both(h: NftHost, text: str, proto: str, dport: int, dst: str | None = None):
    listing = h.load_nft(trace_prefix(h.client_ip) + text)
    rss = parse(listing, origin=Origin("nft -a list ruleset"))
    sport = h.next_sport()
    dst = dst or h.server_ip
    kernel = h.send_nft(proto, h.cli, dst, sport=sport, dport=dport, src=h.client_ip)
    pnum = {"tcp": 6, "udp": 17, "icmp": 1}[proto]
    probe = Probe(proto=pnum, src=h.client_ip, dst=dst, sport=sport if pnum != 1 else None,
                  dport=dport if pnum != 1 else None, iif=h.vs)
    res = simulate(rss, probe, facts_for(h))
    return kernel, sim_steps(res), res, listing


# --- every native fixture, with packets that take its main paths --------------------------------

FIXTURE_PACKETS = {
    "zones.nft": [("tcp", 22), ("udp", 5353), ("tcp", 80), ("icmp", 0)],
    "router.nft": [("tcp", 8080), ("udp", 68), ("tcp", 443)],
    "kubeproxy.nft": [("tcp", 80), ("udp", 53)],
    "docker.nft": [("tcp", 8080), ("tcp", 81)],
    "layered.nft": [("tcp", 22), ("tcp", 23), ("udp", 9999), ("tcp", 8500), ("icmp", 0)],
}


@pytest.mark.parametrize("name", sorted(FIXTURE_PACKETS))
def test_fixture_paths(host: NftHost, name: str) -> None:
    text = (FIXTURES / name).read_text()
    for proto, dport in FIXTURE_PACKETS[name]:
        kernel, sim, res, _listing = run_both(host, text, proto, dport)
        assert kernel, f"{name} {proto}/{dport}: the kernel traced nothing"
        assert sim == kernel, f"{name} {proto}/{dport}: assumptions {res.assumptions}"


def test_accept_does_not_stop_the_next_base_chain(host: NftHost) -> None:
    text = """table ip t1 {
  chain in { type filter hook input priority 0; policy accept; jump sub; tcp dport 7301 accept; }
  chain sub { tcp dport 1 drop; }
}
table ip t2 {
  chain in { type filter hook input priority 0; policy accept; jump sub2; }
  chain sub2 { tcp dport 7301 return; counter; }
}
table ip t3 {
  chain in { type filter hook input priority 10; policy accept; tcp dport 7301 drop; }
}
"""
    kernel, sim, res, _ = run_both(host, text, "tcp", 7301)
    assert [s[:3] for s in kernel] == [
        ("rtstrace", "pre", "policy"), ("t2", "in", "rule"), ("t2", "sub2", "rule"), ("t2", "in", "policy"),
        ("t1", "in", "rule"), ("t1", "in", "rule"), ("t3", "in", "rule")]
    assert sim == kernel
    assert str(res.fate) == "dropped"


# --- randomized: small rulesets of several tables and base chains -------------------------------
# every table declares the same named sets and maps; packets go to the server or, routed, to the
# forwarding destination; some tables have nat chains (dnat in prerouting, snat/masquerade after)

_MATCHES = ["", "tcp dport DPORT", "udp dport 7000-7100", "meta l4proto tcp", "ip saddr CLIENT",
            "ip daddr != SERVER", "ip saddr 10.0.0.0/8", "iifname \"rts7*\"", "iifname != \"lo\"",
            "meta mark & 0x1 == 0x1", "ct state new", "ct state established,related",
            "th dport { 1, 2, DPORT }", "fib daddr type local", "ip daddr . th dport { SERVER . DPORT }",
            "ct mark 0x0", "meta protocol ip", "ip saddr @src", "ip saddr != @src", "ip daddr . th dport @svc",
            "meta l4proto . th dport @lp", "ct status dnat", "oifname \"rts7d*\"", "meta mark 0x3",
            "ct mark 0x5", "ip daddr FWD", "fib saddr . iif oif missing"]
_VERDICTS = ["accept", "drop", "return", "jump c1", "goto c2", "meta mark set meta mark | 0x1", "counter",
             "ct mark set 0x5", "", "th dport vmap { DPORT : jump c1, 1 : drop }", "th dport vmap @pv",
             "meta mark set th dport map @pm", "ct mark set meta mark", "reject", "meta l4proto tcp reject with tcp reset",
             "ip daddr . meta l4proto . th dport vmap @cv"]
_SETS = """  set src { type ipv4_addr; flags interval; elements = { CLIENT, 192.0.2.0/24 } }
  set svc { type ipv4_addr . inet_service; elements = { SERVER . DPORT, FWD . DPORT } }
  set lp { type inet_proto . inet_service; elements = { tcp . DPORT, udp . 7050 } }
  map pv { type inet_service : verdict; elements = { DPORT : accept, 7999 : drop } }
  map pm { type inet_service : mark; elements = { DPORT : 0x3 } }
  map cv { type ipv4_addr . inet_proto . inet_service : verdict; elements = { SERVER . tcp . DPORT : goto c2, FWD . udp . DPORT : drop } }
"""
_NAT = {"prerouting": ["dnat to FWD", "meta l4proto tcp dnat to FWD:8080", "meta l4proto udp redirect to :8081",
                       "accept"],
        "postrouting": ["masquerade", "snat to SERVER2", "accept"]}


@st.composite
def nft_rulesets(draw):
    dport = draw(st.sampled_from([7001, 7050, 7200]))
    proto = draw(st.sampled_from(["tcp", "udp"]))
    dst = draw(st.sampled_from(["server", "server", "forward"]))
    tables = []
    for t in range(draw(st.integers(1, 3))):
        fam = draw(st.sampled_from(["ip", "inet"]))
        chains = []
        for b in range(draw(st.integers(1, 2))):
            hook = draw(st.sampled_from(["input", "prerouting", "forward", "postrouting"]))
            prio = draw(st.sampled_from([-150, 0, 0, 10]))
            pol = draw(st.sampled_from(["accept", "accept", "drop"]))
            chains.append((f"b{b}", f"type filter hook {hook} priority {prio}; policy {pol};", hook))
        chains += [("c1", "", None), ("c2", "", None)]
        body = []
        for name, head, _hook in chains:
            rules = []
            for _ in range(draw(st.integers(0, 3))):
                m = draw(st.sampled_from(_MATCHES))
                v = draw(st.sampled_from(_VERDICTS))
                if name in ("c1", "c2") and ("c1" in v or "c2" in v or "@cv" in v):
                    v = "return" if name == "c1" or "c2" in v else v
                if name == "c2" and ("c1" in v or "@cv" in v):
                    v = "counter"
                if "reject" in v and _hook in ("prerouting", "postrouting", None):
                    v = "drop"  # reject only in input, forward and output (c1, c2: jumped from any)
                if "fib saddr" in m and _hook in ("postrouting", None):
                    m = "fib daddr type local"  # iif is not known in postrouting (c1, c2: any hook)
                rules.append(f"{m} {v}".strip())
            rules = [r for r in rules if r]
            body.append(f"  chain {name} {{ {head} " + "".join(f"{r}; " for r in rules) + "}")
        if fam == "ip" and draw(st.booleans()):
            for hook, stmts in _NAT.items():
                m = draw(st.sampled_from(["", "tcp dport DPORT", "ip daddr SERVER", "ip saddr @src"]))
                prio = "dstnat" if hook == "prerouting" else "srcnat"
                body.append(f"  chain n_{hook} {{ type nat hook {hook} priority {prio}; policy accept; "
                            f"{m} {draw(st.sampled_from(stmts))}; }}")
        tables.append(f"table {fam} r{t} {{\n{_SETS}" + "\n".join(body) + "\n}\n")
    return "".join(tables), proto, dport, dst


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(nft_rulesets())
def test_random_nft_rulesets(host: NftHost, drawn) -> None:
    text, proto, dport, dst = drawn
    for k, v in (("SERVER2", host.server_ip2), ("CLIENT", host.client_ip), ("SERVER", host.server_ip),
                 ("FWD", host.forward_ip), ("DPORT", str(dport))):
        text = text.replace(k, v)
    kernel, sim, res, listing = run_both(host, text, proto, dport,
                                         dst=host.forward_ip if dst == "forward" else None)
    assert kernel, "the kernel traced nothing"
    assert sim == kernel, (listing, res.assumptions)
    if sim and sim[-1][2] == "rule" and "reject" in (res.events[-1].verdict or ""):
        assert str(res.fate) == "rejected"
