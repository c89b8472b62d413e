"""The generated native walk (nft_gen.py) predicts exactly what the plain walk (nft_walk.py) does.

``simulate(...)`` runs the generated code with hashed look-ups; ``simulate(..., index=False)`` the
reference: nft_walk.NftCompiled.run_hook / walk with every set and map scanned. Both must give the
same steps (table, chain, kind, number, family, packet, handle, verdict), fate, verdict,
assumptions, branches, hooks, final packet, routing and kernel drops — on every native lab
scenario's ruleset, the nft fixtures, a generated kube-proxy nftables ruleset, and the randomized
rulesets of the kernel differential test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin
from ruletrace.rulesets import load_rulesets
from ruletrace.rulesets.nft_text import parse
from ruletrace.simulate.engine import simulate
from ruletrace.simulate.hostfacts import HostFacts, load_addrs, load_routes
from ruletrace.simulate.nft_walk import nft_compiled
from ruletrace.simulate.probe import Probe

from .test_nft_kernel_diff import nft_rulesets

ROOT = Path(__file__).resolve().parents[2]
CAPS = ROOT / "tests" / "fixtures" / "nft_captures"
NATIVE = ROOT / "tests" / "fixtures" / "nft_native"


def outcome(rss, probe: Probe, facts: HostFacts, **kw) -> tuple:
    try:
        r = simulate(rss, probe, facts, **kw)
    except RuletraceError as e:
        return ("error", str(e))
    return ([(e.table, e.chain, str(e.kind), e.num, e.family, e.raw, e.handle, e.verdict) for e in r.events],
            r.fate, r.verdict, r.assumptions, r.branches, r.hooks, r.trace_start, r.final_snapshot, r.path,
            r.assumed_out, r.guessed, r.kernel_drop, r.routing)


def same(rss, probe: Probe, make_facts) -> tuple:
    fast = outcome(rss, probe, make_facts())
    ref = outcome(rss, probe, make_facts(), index=False)
    assert fast == ref, (probe, fast, ref)
    return fast


def generated(rss, v6: bool = False) -> bool:
    """Whether the fast runs went through generated code (not the reference's run_hook)."""
    cc = nft_compiled(rss, v6)
    return bool(cc.hooks) and not any(isinstance(fn, partial) for fn in cc.hooks.values())


# --- the recorded lab scenarios ---------------------------------------------------------------------


def _scenario_facts(d: Path) -> HostFacts:
    f = HostFacts()
    load_addrs((d / "addrs.json").read_text(), f, origin=Origin("addrs.json"))
    load_routes((d / "routes.json").read_text(), f, origin=Origin("routes.json"))
    return f


@pytest.mark.parametrize("sc", sorted(p.name for p in CAPS.iterdir() if p.is_dir()))
def test_lab_scenarios(sc: str) -> None:
    d = CAPS / sc
    rss = parse((d / "ruleset-a.nft").read_text(), origin=Origin("ruleset-a.nft"))
    flows = json.loads((d / "outcome.json").read_text())["flows"]
    ifaces = [i["ifname"] for i in json.loads((d / "addrs.json").read_text())] + [None]
    n = 0
    for fl in flows:
        v6 = ":" in fl["dst"]
        proto = {"tcp": 6, "udp": 17}.get(fl["kind"], 58 if v6 else 1)
        src = "fd77::99" if v6 else "10.77.0.99"
        for iif in ifaces:
            for state in ("NEW", "ESTABLISHED"):
                for numgen in (None, 0, 1):
                    def facts(numgen=numgen) -> HostFacts:
                        f = _scenario_facts(d)
                        if numgen is not None:
                            f.values["numgen"] = numgen
                        return f
                    probe = Probe(proto=proto, src=src, dst=fl["dst"], sport=fl["sport"],
                                  dport=fl["port"] if fl["kind"] != "ping" else None, iif=iif, ctstate=state)
                    n += bool(same(rss, probe, facts)[0])
                    assert generated(rss, v6)
    assert n  # some probes took steps


# --- the nft fixtures -------------------------------------------------------------------------------


def _facts() -> HostFacts:
    f = HostFacts()
    f.add_local("eth0=10.0.0.1/24")
    f.add_local("eth1=192.168.1.1/24")
    return f


@pytest.mark.parametrize("name", sorted(p.name for p in NATIVE.glob("*.nft")))
def test_fixtures(name: str) -> None:
    rss = load_rulesets(str(NATIVE / name))
    for dst in ("10.0.0.1", "192.168.1.7", "10.96.5.7", "8.8.8.8"):
        for proto, dport in ((6, 22), (6, 80), (17, 53), (1, None)):
            for iif in ("eth0", "eth1", None):
                for mark in (0, 0x4000):
                    same(rss, Probe(proto=proto, src="10.0.0.9", dst=dst, dport=dport, iif=iif, mark=mark), _facts)
    assert generated(rss)


# --- a generated kube-proxy nftables ruleset ------------------------------------------------------------


def _gen_kube():
    spec = importlib.util.spec_from_file_location("gen_kube", ROOT / "bench" / "gen_kube.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_kube"] = mod  # dataclasses look the module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def test_kube_nft() -> None:
    gen = _gen_kube()
    cluster = gen.build(60, 3)
    rss = parse(gen.nft_ruleset_text(cluster), origin=Origin("kube.nft"))

    def facts(numgen: int | None = None) -> HostFacts:
        f = HostFacts()
        f.add_local(f"eth0={gen.NODE_IP}/24")
        load_routes('[{"dst": "default", "dev": "eth0", "gateway": "192.168.10.1"},'
                    '{"dst": "10.244.0.0/16", "dev": "flannel.1"}, {"dst": "10.244.1.0/24", "dev": "cni0"}]',
                    f, origin=Origin("routes"))
        if numgen is not None:
            f.values["numgen"] = numgen
        return f

    steps = 0
    for i, s in enumerate(cluster.services):
        probes = [Probe(proto=6, src=f"10.244.1.{2 + i % 200}", dst=s.vip, sport=20000 + i, dport=s.port, iif="cni0"),
                  Probe(proto=6, src="10.244.0.3", dst=s.vip, sport=20000 + i, dport=s.port, iif="flannel.1"),
                  Probe(proto=17, src="198.51.100.4", dst=s.vip, sport=20000 + i, dport=s.port + 1, iif="eth0")]
        if s.nodeport:
            probes.append(Probe(proto=6, src="203.0.113.9", dst=gen.NODE_IP, sport=30000 + i, dport=s.nodeport,
                                iif="eth0"))
        for probe in probes:
            for numgen in (None, 1, 2):
                steps += len(same(rss, probe, partial(facts, numgen))[0])
    assert steps and generated(rss)


# --- the randomized rulesets of the kernel differential test ------------------------------------------

_ADDRS = {"SERVER2": "10.97.0.3", "CLIENT": "10.97.1.2", "SERVER": "10.97.0.2", "FWD": "10.98.0.2"}


def _random_facts() -> HostFacts:
    f = HostFacts()
    f.add_local("rts7s=10.97.0.2/24")
    f.add_local("rts7s=10.97.0.3/24")
    f.add_local("rts7d=10.98.0.1/24")
    load_routes('[{"dst": "10.97.1.0/24", "dev": "rts7s"}, {"dst": "10.98.0.0/24", "dev": "rts7d"}]', f,
                origin=Origin("routes"))
    return f


@settings(max_examples=150, deadline=None, derandomize=True)
@given(nft_rulesets(), st.sampled_from(["NEW", "ESTABLISHED"]), st.sampled_from([0, 1, 0x3]))
def test_random_rulesets(drawn, state: str, mark: int) -> None:
    text, proto, dport, dst = drawn
    for k, v in (*_ADDRS.items(), ("DPORT", str(dport))):
        text = text.replace(k, v)
    rss = parse(text, origin=Origin("random.nft"))
    probe = Probe(proto=6 if proto == "tcp" else 17, src=_ADDRS["CLIENT"],
                  dst=_ADDRS["FWD"] if dst == "forward" else _ADDRS["SERVER"], sport=40001, dport=dport,
                  iif="rts7s", ctstate=state, mark=mark)
    same(rss, probe, _random_facts)


def test_an_expression_it_cannot_read_is_the_reference_s_own() -> None:
    # an unknown expression: the generated walk calls the reference's item (it states the assumption)
    rss = parse("table ip t {\n chain in { type filter hook input priority 0; policy drop;\n"
                "  osf name \"Linux\" accept; tcp dport 22 accept; }\n}\n", origin=Origin("t"))
    res = same(rss, Probe(proto=6, src="10.0.0.9", dst="10.0.0.1", dport=22, iif="eth0"), _facts)
    assert any("cannot evaluate" in a for a in res[3]) and generated(rss)


# --- control flow: every verdict, in rules and in verdict maps, several nat chains on a hook --------------

_M = ["", "tcp dport 80", "ip saddr 10.0.0.0/24", "ip saddr != 10.0.0.0/24", "meta mark & 0x1 == 0x1",
      "ct state new", "iifname \"eth*\"", "th dport { 22, 80 }", "ip daddr . th dport @s", "fib daddr type local",
      "numgen random mod 2 == 1", "limit rate 10/second", "osf name \"x\"", "meta mark 0x2", "tcp flags syn"]
_V = ["accept", "drop", "return", "continue", "jump c1", "goto c2", "counter", "meta mark set meta mark | 0x2",
      "meta nftrace set 1", "reject", "th dport vmap { 80 : jump c1, 22 : goto c2, 53 : return, 443 : accept }",
      "th dport vmap { 80 : continue, 22 : drop, 53 : jump c2 }", "ip daddr . th dport vmap @v",
      "meta l4proto . th dport vmap @lv"]
_SETS = """ set s { type ipv4_addr . inet_service; elements = { 10.0.0.1 . 80, 10.0.0.1 . 22 } }
 map v { type ipv4_addr . inet_service : verdict; elements = { 10.0.0.1 . 80 : return, 10.0.0.1 . 22 : goto c1 } }
 map lv { type inet_proto . inet_service : verdict; flags interval; elements = { tcp . 1-100 : jump c2, udp . 53 : drop } }
"""


@st.composite
def flow_rulesets(draw):
    tables = []
    for t in range(draw(st.integers(1, 3))):
        body = [_SETS]
        for name in ("b0", "b1", "c1", "c2"):
            if name.startswith("b"):
                hook = draw(st.sampled_from(["input", "prerouting", "forward", "postrouting"]))
                head = (f"type filter hook {hook} priority {draw(st.sampled_from([-10, 0, 0]))}; "
                        f"policy {draw(st.sampled_from(['accept', 'drop']))};")
            else:
                head = ""
            rules = []
            for _ in range(draw(st.integers(0, 4))):
                v = draw(st.sampled_from(_V))
                if name == "c2" and ("c1" in v or "c2" in v or "@" in v):
                    v = "return"
                if name == "c1" and ("c1" in v or "@v" in v):
                    v = "goto c2"
                if "reject" in v and (hook in ("prerouting", "postrouting") or name[0] == "c"):
                    v = "drop"
                rules.append(f"{draw(st.sampled_from(_M))} {v}".strip())
            body.append(f" chain {name} {{ {head} " + "".join(f"{r}; " for r in rules) + "}")
        for hook, prio in (("prerouting", "dstnat"), ("postrouting", "srcnat")):
            for n in range(draw(st.integers(0, 2))):
                stmt = draw(st.sampled_from(["dnat to 10.0.0.7", "tcp dport 80 dnat to 10.0.0.8:8080", "accept",
                                             "snat to 10.0.0.1", "masquerade", "drop", "return"]))
                wrong = ("snat", "masq") if hook == "prerouting" else ("dnat",)
                if any(w in stmt for w in wrong):
                    stmt = "counter"
                body.append(f" chain n{hook}{n} {{ type nat hook {hook} priority {prio}; policy accept; {stmt}; }}")
        tables.append(f"table ip r{t} {{\n" + "\n".join(body) + "\n}\n")
    return "".join(tables)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(flow_rulesets(), st.sampled_from([(6, 80), (6, 22), (17, 53), (6, 443)]),
       st.sampled_from(["10.0.0.1", "192.168.1.50"]), st.sampled_from([0, 1]), st.sampled_from([None, 0, 1]))
def test_control_flow(text: str, pd, dst: str, mark: int, numgen) -> None:
    rss = parse(text, origin=Origin("flow.nft"))

    def facts() -> HostFacts:
        f = _facts()
        if numgen is not None:
            f.values["numgen"] = numgen
        return f

    same(rss, Probe(proto=pd[0], src="10.0.0.9", dst=dst, dport=pd[1], iif="eth0", mark=mark), facts)
    assert generated(rss)


@pytest.mark.parametrize("verdict", ["accept", "drop", "return", "continue", "jump c1", "goto c1", "queue"])
@pytest.mark.parametrize("how", ["{v}", "tcp dport 80 {v}", "tcp dport vmap {{ 80 : {v} }}",
                                 "ip daddr . tcp dport vmap @m"])
@pytest.mark.parametrize("where", ["base", "jumped"])
def test_each_verdict_then_the_rules_after_it(verdict: str, how: str, where: str) -> None:
    rule = how.format(v=verdict)
    c0 = f"{rule}; counter; meta mark set 0x7; jump c1; return;"
    text = ("table ip t {\n"
            f" map m {{ type ipv4_addr . inet_service : verdict; elements = {{ 10.0.0.1 . 80 : {verdict} }} }}\n"
            " chain in { type filter hook input priority 0; policy drop; "
            + (c0 if where == "base" else "jump c0; counter; accept;") + " }\n"
            f" chain c0 {{ {c0} }}\n chain c1 {{ meta mark 0x7 return; counter; }}\n"
            " chain n { type nat hook prerouting priority dstnat; policy accept; counter; }\n"
            # registered later, runs first (equal priority): its mapping ends the nat chains of the hook
            " chain n2 { type nat hook prerouting priority dstnat; policy accept; tcp dport 80 dnat to 10.0.0.1:80; }\n}\n")
    rss = parse(text, origin=Origin("t"))
    res = same(rss, Probe(proto=6, src="10.0.0.9", dst="10.0.0.1", dport=80, iif="eth0"), _facts)
    assert res[0] and generated(rss)
