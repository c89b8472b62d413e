"""Native nftables simulation offline: fixtures give real paths, expressions evaluate, fast == reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruletrace.model import Origin, StepKind
from ruletrace.rulesets import load_rulesets
from ruletrace.rulesets.nft_text import parse
from ruletrace.simulate.engine import simulate
from ruletrace.simulate.hostfacts import HostFacts
from ruletrace.simulate.probe import Probe

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nft_native"


def _facts() -> HostFacts:
    f = HostFacts()
    f.add_local("eth0=10.0.0.1/24")
    f.add_local("eth1=192.168.1.1/24")
    return f


def tags(res) -> list[tuple[str, str, str, int]]:
    return [(e.table, e.chain, str(e.kind), e.num) for e in res.events]


@pytest.mark.parametrize("name", ["zones.nft", "router.nft", "kubeproxy.nft", "docker.nft", "layered.nft"])
def test_native_ruleset_never_predicts_an_empty_path(name: str) -> None:
    # regression: a native listing was simulated as iptables rules and predicted no step at all
    rss = load_rulesets(str(FIXTURES / name))
    res = simulate(rss, Probe(proto=6, src="10.0.0.9", dst="10.0.0.1", dport=22, iif="eth0"), _facts())
    assert res.events, res.assumptions
    assert all(e.table in {t for rs in rss for t in rs.tables} for e in res.events)


def test_kube_service_vmap_numgen_dnat() -> None:
    rss = load_rulesets(str(FIXTURES / "kubeproxy.nft"))
    f = _facts()
    f.values["numgen"] = 2
    res = simulate(rss, Probe(proto=6, src="10.0.0.9", dst="10.96.5.7", dport=80, iif="eth0"), f)
    chains = [e.chain for e in res.events]
    assert "services" in chains and "endpoint-C3-ns1/web/tcp/http__10.244.2.7/8080" in chains
    assert res.final["DST"] == "10.244.2.7" and res.final["DPT"] == "8080"
    assert res.branches and "--assume" in res.branches[0].note


def test_accept_goes_on_to_the_next_base_chain_and_a_later_one_drops() -> None:
    text = """table ip a {
  chain in { type filter hook input priority 0; policy accept; tcp dport 80 accept; }
}
table ip b {
  chain in { type filter hook input priority 10; policy accept; jump sub; }
  chain sub { tcp dport 1 accept; }
}
table inet c {
  chain in { type filter hook input priority 20; policy drop; }
}
"""
    rss = parse(text, origin=Origin("t"))
    res = simulate(rss, Probe(proto=6, src="10.0.0.9", dst="10.0.0.1", dport=80, iif="eth0"), _facts())
    # b's sub chain ends without a step (the kernel logs none for a regular chain's implicit end)
    assert tags(res) == [("a", "in", "rule", 1), ("b", "in", "rule", 1), ("b", "in", "policy", 2),
                         ("c", "in", "policy", 1)]
    assert str(res.fate) == "dropped"


def test_equal_priority_runs_the_later_chain_first_and_nat_at_its_hook() -> None:
    text = """table ip a {
  chain pre { type filter hook prerouting priority -120; policy accept; }
  chain nat1 { type nat hook prerouting priority -200; policy accept; tcp dport 80 dnat to 10.0.0.1:8080; }
}
table ip b {
  chain pre { type filter hook prerouting priority -120; policy accept; }
  chain raw { type filter hook prerouting priority -300; policy accept; ct state invalid counter; }
}
"""
    rss = parse(text, origin=Origin("t"))
    res = simulate(rss, Probe(proto=6, src="10.0.0.9", dst="10.0.0.1", dport=80, iif="eth0"), _facts())
    assert tags(res)[:4] == [("b", "raw", "rule", 1), ("b", "raw", "policy", 2), ("b", "pre", "policy", 1),
                             ("a", "pre", "policy", 1)]
    assert tags(res)[4] == ("a", "nat1", "rule", 1)
    assert res.final["DPT"] == "8080"


def test_unknown_expression_is_stated_and_assumed_no_match() -> None:
    rss = parse("table ip t {\n chain in { type filter hook input priority 0; policy accept; "
                "osf name \"Linux\" drop; }\n}\n", origin=Origin("t"))
    res = simulate(rss, Probe(proto=6, src="10.0.0.9", dst="10.0.0.1", dport=80, iif="eth0"), _facts())
    assert [e.kind for e in res.events] == [StepKind.POLICY]
    assert any("cannot evaluate 'osf name \"Linux\"'" in a and "assumed no match" in a for a in res.assumptions)
    f = _facts()
    f.assume["t:in:1"] = True
    res = simulate(rss, Probe(proto=6, src="10.0.0.9", dst="10.0.0.1", dport=80, iif="eth0"), f)
    assert str(res.fate) == "dropped"


@pytest.mark.parametrize("rule,dport,hit", [
    ("tcp dport { 22, 8000-8999 } accept", 8500, True),
    ("tcp dport != 22 accept", 22, False),
    ("ct state new,established accept", 1, True),
    ("ct state established accept", 1, False),
    ("tcp flags syn / fin,syn,rst,ack accept", 1, True),
    ("tcp flags & (syn | ack) == syn accept", 1, True),
    ("meta l4proto . th dport { tcp . 443 } accept", 443, True),
    ("ip daddr 10.0.0.0/24 iifname \"eth*\" accept", 1, True),
    ("fib daddr type local accept", 1, True),
    ("@th,16,16 443 accept", 443, True),
    ("meta mark set 0x10 meta mark 0x10 accept", 1, True),
    ("limit rate over 10/second accept", 1, False),
])
def test_expressions(rule: str, dport: int, hit: bool) -> None:
    rss = parse("table inet t {\n chain in { type filter hook input priority 0; policy drop; "
                f"{rule}; }}\n}}\n", origin=Origin("t"))
    res = simulate(rss, Probe(proto=6, src="10.0.0.9", dst="10.0.0.1", dport=dport, iif="eth0"), _facts())
    assert (str(res.fate) == "delivered") == hit, res.assumptions


# --- the fast walk (hashed look-ups) equals the reference (scanned look-ups) -------------------------

_KEYS = ["10.0.0.1 . tcp . 80", "10.0.0.1 . udp . 53", "10.0.0.0/24 . tcp . 1-1000", "10.0.0.2 . tcp . 80"]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_KEYS), min_size=1, max_size=4, unique=True),
       st.lists(st.sampled_from(["accept", "drop", "jump s", "goto s", "return"]), min_size=4, max_size=4),
       st.sampled_from([80, 53, 500, 2000]), st.sampled_from([6, 17]), st.sampled_from(["10.0.0.1", "10.0.0.2"]))
def test_fast_equals_reference(keys, verdicts, dport, proto, dst) -> None:
    elems = ", ".join(f"{k} : {v}" for k, v in zip(keys, verdicts))
    text = ("table ip t {\n map m { type ipv4_addr . inet_proto . inet_service : verdict; flags interval; "
            f"elements = {{ {elems} }}; }}\n"
            " chain in { type filter hook input priority 0; policy drop;\n"
            "  ip daddr . meta l4proto . th dport vmap @m; accept; }\n"
            " chain s { th dport 80 return; counter; }\n}\n")
    rss = parse(text, origin=Origin("t"))
    probe = Probe(proto=proto, src="10.0.0.9", dst=dst, dport=dport, iif="eth0")
    fast = simulate(rss, probe, _facts())
    ref = simulate(rss, probe, _facts(), index=False)
    assert tags(fast) == tags(ref) and fast.fate == ref.fate
