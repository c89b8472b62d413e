"""``simulate`` speed on a kube-proxy ruleset: simulated packets per second, indexed, and the linear walk.

Bar (issue 7): >= 20,000 packets/s on the generated 10,000-service ruleset (~100,000 rules),
with the same steps, packet at each step, fate, verdict and assumptions as the plain linear walk
(checked here on a sample). Speed is CPU time of this process, best of --repeat passes. The ruleset comes
from bench/gen_kube.py (same generator as the explain bench); the probes are a mix of NodePort
SYNs from outside, ClusterIP SYNs from pods, and packets that match no service.

    python3 bench/bench_simulate.py                     # 10,000 services, 20,000 probes, best of 3
    python3 bench/bench_simulate.py --services 1000 --probes 5000
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import gen_kube
import timing  # noqa: F401  (puts src/ and bench/ on sys.path)

from ruletrace.model import Origin
from ruletrace.rulesets.iptables_save import parse
from ruletrace.rulesets.nft_text import parse as parse_nft
from ruletrace.simulate.compiled import compiled
from ruletrace.simulate.engine import simulate, step_tags
from ruletrace.simulate.hostfacts import HostFacts, load_routes
from ruletrace.simulate.nft_walk import nft_compiled
from ruletrace.simulate.probe import Probe

BAR_PPS = 20_000


def facts() -> HostFacts:
    """The generated node: NODE_IP on eth0, local pods behind cni0, other pods via flannel.1."""
    f = HostFacts()
    f.add_local(f"eth0={gen_kube.NODE_IP}/24")
    load_routes('[{"dst": "default", "dev": "eth0", "gateway": "192.168.10.1"},'
                '{"dst": "10.244.0.0/16", "dev": "flannel.1"}, {"dst": "10.244.1.0/24", "dev": "cni0"}]',
                f, origin=Origin("bench routes"))
    return f


def probes(cluster: gen_kube.Cluster, n: int, seed: int = 7) -> list[Probe]:
    rng = random.Random(seed)
    out: list[Probe] = []
    nodeport = [s for s in cluster.services if s.nodeport]
    for i in range(n):
        r = rng.random()
        sport = 10000 + i % 50000
        if r < 0.45 and nodeport:
            s = rng.choice(nodeport)
            out.append(Probe(proto=6, src=f"203.0.113.{rng.randrange(1, 255)}", dst=gen_kube.NODE_IP,
                             sport=sport, dport=s.nodeport, iif="eth0"))
        elif r < 0.9:
            s = rng.choice(cluster.services)
            out.append(Probe(proto=6, src=f"10.244.1.{rng.randrange(2, 250)}", dst=s.vip, sport=sport,
                             dport=s.port, iif="cni0"))
        else:
            out.append(Probe(proto=17, src=f"198.51.100.{rng.randrange(1, 255)}", dst=f"10.96.{rng.randrange(256)}.3",
                             sport=sport, dport=rng.randrange(1, 65535), iif="eth0"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=gen_kube.DEFAULT_SERVICES)
    ap.add_argument("--probes", type=int, default=20_000)
    ap.add_argument("--check", type=int, default=500, help="probes compared with the linear walk")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes over the probes (the best counts)")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    cluster = gen_kube.build(a.services, a.seed)
    text = "".join(gen_kube.ruleset_lines(cluster))
    rs = parse(text, origin=Origin("kube.rules"))
    t_parse = time.perf_counter() - t0
    f = facts()
    ps = probes(cluster, a.probes)

    t0 = time.perf_counter()
    compiled(rs, False).compile_all()  # a CLI run compiles only the chains its packet reaches
    t_warm = time.perf_counter() - t0
    for p in ps[:200]:
        simulate(rs, p, f)

    # CPU time of this process (the machine is shared: wall time counts other programs' turns),
    # best of --repeat passes over the whole probe set
    t_run = float("inf")
    for _ in range(a.repeat):
        t0 = time.process_time()
        steps = 0
        for p in ps:
            steps += len(simulate(rs, p, f).events)
        t_run = min(t_run, time.process_time() - t0)
    pps = len(ps) / t_run

    mismatches = 0
    check = ps[: a.check]
    t0 = time.perf_counter()
    for p in check:
        x, y = simulate(rs, p, f), simulate(rs, p, f, index=False)
        if (step_tags(x.events) != step_tags(y.events) or x.fate != y.fate or x.assumptions != y.assumptions
                or [e.raw for e in x.events] != [e.raw for e in y.events] or x.final != y.final
                or (x.verdict and x.verdict.reason) != (y.verdict and y.verdict.reason)):
            mismatches += 1
    t_lin = (time.perf_counter() - t0) / max(len(check), 1)

    print(f"ruleset: {rs.rule_count():,} rules ({a.services:,} services), parsed in {t_parse:.2f} s; "
          f"all chains compiled in {t_warm:.2f} s")
    print(f"simulate: {len(ps):,} probes in {t_run:.2f} s CPU (best of {a.repeat}) = {pps:,.0f} packets/s "
          f"({steps / len(ps):.1f} steps a packet)")
    print(f"linear walk + indexed on {len(check)} probes: {t_lin * 1e3:.2f} ms a pair; {mismatches} mismatches")
    ok_speed = pps >= BAR_PPS
    print(f"{'PASS' if ok_speed else 'FAIL'} speed: {pps:,.0f} packets/s (bar >= {BAR_PPS:,})")
    print(f"{'PASS' if mismatches == 0 else 'FAIL'} indexed == linear on {len(check)} probes")
    nft_ok = _nft(cluster, ps, f, a, pps)
    return 0 if ok_speed and mismatches == 0 and nft_ok else 1


def _nft(cluster: gen_kube.Cluster, ps: list[Probe], f: HostFacts, a: argparse.Namespace, ipt_pps: float) -> bool:
    """The same services in kube-proxy's nftables mode, walked natively: the generated walk (nft_gen.py:
    chains as Python functions, verdict maps as dict look-ups), checked against the plain walk
    (nft_walk.py, every set and map scanned) on --check probes."""
    t0 = time.perf_counter()
    rss = parse_nft(gen_kube.nft_ruleset_text(cluster), origin=Origin("kube.nft"))
    t_parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    nft_compiled(rss, False).compile_all()
    t_warm = time.perf_counter() - t0
    for p in ps[:200]:
        simulate(rss, p, f)
    t_run = float("inf")
    for _ in range(a.repeat):
        t0 = time.process_time()
        steps = 0
        for p in ps:
            steps += len(simulate(rss, p, f).events)
        t_run = min(t_run, time.process_time() - t0)
    pps = len(ps) / t_run
    mismatches = 0
    for p in ps[: a.check]:
        x, y = simulate(rss, p, f), simulate(rss, p, f, index=False)
        if (step_tags(x.events) != step_tags(y.events) or x.fate != y.fate or x.assumptions != y.assumptions
                or [(e.raw, e.handle, e.verdict) for e in x.events] != [(e.raw, e.handle, e.verdict) for e in y.events]
                or x.final != y.final or x.branches != y.branches or x.verdict != y.verdict):
            mismatches += 1
    print(f"nft ruleset: {sum(r.rule_count() for r in rss):,} rules, parsed in {t_parse:.2f} s; "
          f"all chains compiled in {t_warm:.2f} s")
    print(f"simulate nft: {len(ps):,} probes in {t_run:.2f} s CPU (best of {a.repeat}) = {pps:,.0f} packets/s "
          f"({steps / len(ps):.1f} steps a packet); {pps / ipt_pps:.2f}x the iptables walk of this run")
    ok = pps >= BAR_PPS and pps > ipt_pps and mismatches == 0
    print(f"{'PASS' if pps >= BAR_PPS else 'FAIL'} nft speed: {pps:,.0f} packets/s (bar >= {BAR_PPS:,})")
    print(f"{'PASS' if pps > ipt_pps else 'FAIL'} nft faster than the iptables walk of this run "
          f"({pps:,.0f} vs {ipt_pps:,.0f} packets/s)")
    print(f"{'PASS' if mismatches == 0 else 'FAIL'} nft generated walk == plain walk (scanned look-ups) "
          f"on {a.check} probes")
    return ok


if __name__ == "__main__":
    sys.exit(main())
