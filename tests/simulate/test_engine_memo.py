"""The engine's remembered answers equal the answers they remember.

Each memo of the shared engine names its reference; here each is checked against it:

- ``HostFacts.is_local`` / ``addr_type`` (and ``Ctx.is_local``, which reads the same memo) against
  ``HostFacts._is_local`` / ``_addr_type``, the scans over the addresses and routes, on the lab
  scenarios' facts and hand-made ones with every address kind, and forgotten when facts change;
- the words made once: masquerade's note for an interface without an address (``targets.masquerade``)
  and the default length of a probe without one (``packet.make_packet``), against hand-written text;
- ``engine.SETUPS`` (a run's ruleset part: compiled form, native or not, netdev tables) against
  ``engine.setup``: a batch of probes simulated with one facts object and every memo warm gives
  what each probe gives alone, with fresh facts and no remembered setup — on the native lab
  scenarios, a generated kube-proxy ruleset in both modes, and the iptables fixtures.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin
from ruletrace.rulesets import load_rulesets
from ruletrace.rulesets.iptables_save import parse as parse_save
from ruletrace.rulesets.nft_text import parse as parse_nft
from ruletrace.simulate import engine
from ruletrace.simulate.engine import simulate
from ruletrace.simulate.hostfacts import HostFacts, load_addrs, load_routes, to_int
from ruletrace.simulate.probe import Probe

ROOT = Path(__file__).resolve().parents[2]
CAPS = ROOT / "tests" / "fixtures" / "nft_captures"
RULESETS = ROOT / "tests" / "fixtures" / "rulesets"


def _scenario_facts(d: Path) -> HostFacts:
    f = HostFacts()
    load_addrs((d / "addrs.json").read_text(), f, origin=Origin("addrs.json"))
    load_routes((d / "routes.json").read_text(), f, origin=Origin("routes.json"))
    return f


def _rich_facts() -> HostFacts:
    """Every kind of answer: local addresses (with a broadcast), local, broadcast, blackhole,
    unreachable and prohibit routes, IPv6."""
    f = HostFacts()
    load_addrs(json.dumps([
        {"ifname": "eth0", "addr_info": [{"local": "10.0.0.1", "prefixlen": 24, "broadcast": "10.0.0.255"}]},
        {"ifname": "eth1", "addr_info": [{"local": "fd00::1", "prefixlen": 64}]}]), f, origin=Origin("addrs"))
    load_routes(json.dumps([
        {"dst": "default", "dev": "eth0", "gateway": "10.0.0.254"},
        {"dst": "10.9.0.0/16", "dev": "lo", "type": "local", "table": "local"},
        {"dst": "10.0.0.255", "dev": "eth0", "type": "broadcast", "table": "local"},
        {"dst": "10.66.0.0/16", "type": "blackhole"}, {"dst": "10.67.0.0/16", "type": "unreachable"},
        {"dst": "10.68.0.0/16", "type": "prohibit"}, {"dst": "fd66::/16", "type": "blackhole"}]),
        f, origin=Origin("routes"))
    return f


def _addresses(f: HostFacts, rng: random.Random) -> list[tuple[int, int]]:
    out = [to_int(a) for a in ("0.0.0.0", "127.0.0.1", "127.9.9.9", "255.255.255.255", "224.0.0.5", "10.0.0.255",
                               "10.9.3.4", "10.66.1.1", "10.67.1.1", "10.68.1.1", "8.8.8.8", "::", "::1", "ff02::1",
                               "fd66::5", "fd00::1", "fd00::2")]
    for la in f.local:
        out += [(la.version, la.addr), (la.version, la.addr + 1), (la.version, la.addr - 1)]
        if la.broadcast is not None:
            out.append((la.version, la.broadcast))
    for r in f.routes:
        out += [(r.version, r.net), (r.version, r.net | (rng.getrandbits(32 if r.version == 4 else 128) & ~r.mask))]
    out += [(4, rng.getrandbits(32)) for _ in range(300)] + [(6, rng.getrandbits(128)) for _ in range(100)]
    return out


def _all_facts() -> list[Callable[[], HostFacts]]:
    return [HostFacts, _rich_facts, *(lambda d=d: _scenario_facts(d) for d in sorted(CAPS.iterdir()) if d.is_dir())]


def test_is_local_and_addr_type_equal_their_scans() -> None:
    rng = random.Random(14)
    for make in _all_facts():
        f = make()
        addrs = _addresses(f, rng)
        for _ in range(2):  # the first pass remembers, the second reads back
            for v, a in addrs:
                assert f.is_local(v, a) == f._is_local(v, a), (v, a)
                assert f.addr_type(v, a) == f._addr_type(v, a), (v, a)
        assert f.local_seen  # the answers were remembered


def test_remembered_answers_are_forgotten_when_facts_change() -> None:
    f = HostFacts()
    v, a = to_int("10.5.0.1")
    assert not f.is_local(v, a) and f.addr_type(v, a) == "UNICAST"
    f.add_local("eth0=10.5.0.1/24")
    assert f.is_local(v, a) and f.addr_type(v, a) == "LOCAL"
    b = to_int("10.44.0.1")[1]
    assert f.addr_type(4, b) == "UNICAST"
    load_routes('[{"dst": "10.44.0.0/16", "type": "blackhole"}]', f, origin=Origin("routes"))
    assert f.addr_type(4, b) == "BLACKHOLE" and not f.is_local(4, b)
    load_routes('[{"dst": "10.44.0.0/16", "type": "local", "dev": "lo", "table": "local"}]', f, origin=Origin("r"))
    assert f.is_local(4, b) and f.addr_type(4, b) == "LOCAL"



def test_routing_decisions_are_forgotten_when_routes_change() -> None:
    """routestep's remembered decision (per point, dst, mark) follows the routes: a blackhole
    route added to facts already used gives what fresh facts with it give."""
    rs = parse_nft("table inet f {\n chain fwd {\n type filter hook forward priority 0; policy accept;\n }\n}\n",
                   origin=Origin("t"))
    base = [{"dst": "default", "dev": "eth0", "gateway": "10.0.0.254"}]
    hole = [{"dst": "10.44.0.0/16", "type": "blackhole"}]

    def facts(routes: list[dict[str, Any]]) -> HostFacts:
        f = HostFacts()
        load_addrs(json.dumps([{"ifname": "eth0", "addr_info": [{"local": "10.0.0.1", "prefixlen": 24}]}]), f,
                   origin=Origin("addrs"))
        load_routes(json.dumps(routes), f, origin=Origin("routes"))
        return f

    probe = Probe(proto=6, src="192.168.1.5", dst="10.44.0.9", dport=80, iif="eth1")
    warm = facts(base)
    assert [d.type for d in simulate(rs, probe, warm).routing] == ["unicast"]
    load_routes(json.dumps(hole), warm, origin=Origin("more routes"))
    got = simulate(rs, probe, warm)
    assert [d.type for d in got.routing] == ["blackhole"] and got.kernel_drop is not None  # by hand
    cold = facts(base)
    load_routes(json.dumps(hole), cold, origin=Origin("more routes"))
    assert _outcome(rs, probe, warm) == _outcome(rs, probe, cold)


def _outcome(rs: Any, probe: Probe, facts: HostFacts, **kw: Any) -> tuple[Any, ...]:
    try:
        r = simulate(rs, probe, facts, **kw)
    except RuletraceError as e:
        return ("error", str(e))
    return ([(e.table, e.chain, str(e.kind), e.num, e.family, e.raw, getattr(e, "handle", None),
              getattr(e, "verdict", None)) for e in r.events],
            r.fate, r.verdict, r.assumptions, r.branches, r.hooks, r.trace_start, r.final_snapshot, r.path,
            r.assumed_out, r.guessed, r.kernel_drop, r.routing, r.socket, r.facts, r.depends_on)


def _warm_equals_cold(rs: Any, probes: list[Probe], make_facts: Callable[[], HostFacts], **kw: Any) -> int:
    """Simulate the probes in a row with one facts object (every memo warm), then each alone with fresh
    facts and no remembered setup: the same outcomes. Returns the steps taken."""
    engine.SETUPS.clear()
    warm_facts = make_facts()
    warm = [_outcome(rs, p, warm_facts, **kw) for p in probes]
    steps = 0
    for p, w in zip(probes, warm):
        engine.SETUPS.clear()
        cold = _outcome(rs, p, make_facts(), **kw)
        assert cold == w, p
        steps += len(cold[0]) if cold[0] != "error" else 0
    return steps


@pytest.mark.parametrize("sc", sorted(p.name for p in CAPS.iterdir() if p.is_dir()))
def test_lab_scenarios_warm_equal_cold(sc: str) -> None:
    d = CAPS / sc
    rss = parse_nft((d / "ruleset-a.nft").read_text(), origin=Origin("ruleset-a.nft"))
    flows = json.loads((d / "outcome.json").read_text())["flows"]
    ifaces = [i["ifname"] for i in json.loads((d / "addrs.json").read_text())] + [None]
    probes = []
    for fl in flows:
        v6 = ":" in fl["dst"]
        proto = {"tcp": 6, "udp": 17}.get(fl["kind"], 58 if v6 else 1)
        for src in (("fd77::99", fl["dst"]) if v6 else ("10.77.0.99", fl["dst"])):
            for iif in ifaces:
                for state in ("NEW", "ESTABLISHED"):
                    probes.append(Probe(proto=proto, src=src, dst=fl["dst"], sport=fl["sport"], iif=iif, ctstate=state,
                                        dport=fl["port"] if fl["kind"] != "ping" else None))
    assert _warm_equals_cold(rss, probes, lambda: _scenario_facts(d))
    assert _warm_equals_cold(rss, probes[:40], lambda: _scenario_facts(d), index=False)


def _gen_kube() -> Any:
    spec = importlib.util.spec_from_file_location("gen_kube", ROOT / "bench" / "gen_kube.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_kube"] = mod  # dataclasses look the module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def test_kube_both_modes_warm_equal_cold() -> None:
    gen = _gen_kube()
    cluster = gen.build(40, 5)

    def facts() -> HostFacts:
        f = HostFacts()
        f.add_local(f"eth0={gen.NODE_IP}/24")
        load_routes('[{"dst": "default", "dev": "eth0", "gateway": "192.168.10.1"},'
                    '{"dst": "10.244.0.0/16", "dev": "flannel.1"}, {"dst": "10.244.1.0/24", "dev": "cni0"}]',
                    f, origin=Origin("routes"))
        return f

    probes = []
    for i, s in enumerate(cluster.services):
        probes += [Probe(proto=6, src=f"10.244.1.{2 + i % 200}", dst=s.vip, sport=20000 + i, dport=s.port, iif="cni0"),
                   Probe(proto=17, src="198.51.100.4", dst=s.vip, sport=20000 + i, dport=s.port + 1, iif="eth0"),
                   Probe(proto=6, src=gen.NODE_IP, dst=s.vip, sport=20000 + i, dport=s.port)]
        if s.nodeport:
            probes.append(Probe(proto=6, src="203.0.113.9", dst=gen.NODE_IP, sport=30000 + i, dport=s.nodeport,
                                iif="eth0"))
    nft = parse_nft(gen.nft_ruleset_text(cluster), origin=Origin("kube.nft"))
    ipt = parse_save("".join(gen.ruleset_lines(cluster)), origin=Origin("kube.rules"))
    for rs in (nft, ipt):
        assert _warm_equals_cold(rs, probes, facts)
        assert _warm_equals_cold(rs, probes[:30], facts, index=False)
    # one after the other, as a caller with two rulesets would: each run gets its own setup
    mixed = [(rs, p) for p in probes[:20] for rs in (nft, ipt)]
    f = facts()
    for rs, p in mixed:
        w = _outcome(rs, p, f)
        engine.SETUPS.clear()
        assert _outcome(rs, p, facts()) == w


@pytest.mark.parametrize("name", sorted(p.name for p in RULESETS.iterdir() if p.suffix in (".save", ".list")))
def test_iptables_fixtures_warm_equal_cold(name: str) -> None:
    rs = load_rulesets(str(RULESETS / name))

    def facts() -> HostFacts:
        f = HostFacts()
        f.add_local("eth0=10.0.0.1/24")
        f.add_local("docker0=172.17.0.1/16")
        return f

    probes = [Probe(proto=proto, src=src, dst=dst, dport=dport, iif=iif)
              for dst in ("10.0.0.1", "172.17.0.5", "8.8.8.8", "127.0.0.1")
              for src in ("10.0.0.9", "172.17.0.2", "10.0.0.1")
              for proto, dport in ((6, 22), (6, 80), (17, 53), (1, None))
              for iif in ("eth0", "docker0", None)]
    _warm_equals_cold(rs, probes, facts)
    _warm_equals_cold(rs, probes, facts, index=False)


def test_words_made_once_are_the_words() -> None:
    rs = parse_save("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                    ":POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n",
                    origin=Origin("t.rules"))
    f = HostFacts()
    f.add_local("eth0=10.0.0.1/24")
    load_routes('[{"dst": "10.1.0.0/16", "dev": "eth1"}]', f, origin=Origin("routes"))
    masq = "nat:POSTROUTING:1: MASQUERADE uses the address of eth1, which is not known (give --addrs): SRC left as is"
    lengths = {(6, None): 60, (6, 0x10): 52, (17, None): 28, (1, None): 84}
    for _ in range(2):  # made, then read back
        for (proto, flags), n in lengths.items():
            r = simulate(rs, Probe(proto=proto, src="10.0.0.9", dst="10.1.2.3", iif="eth0", tcp_flags=flags,
                                   dport=80 if proto != 1 else None), f)
            assert masq in r.assumptions
            assert f"packet length not given: assumed LEN={n}" in r.assumptions
            assert r.final["LEN"] == str(n)
    r = simulate(rs, Probe(proto=6, src="fd00::9", dst="fd01::3", iif="eth0", dport=80), HostFacts())
    assert "packet length not given: assumed LEN=80" in r.assumptions
