"""Benchmark input: a kube-proxy-style iptables-save ruleset and the kernel-log TRACE lines for NodePort SYNs.

The ruleset follows what kube-proxy's iptables mode writes (pkg/proxy/iptables/proxier.go): nat
KUBE-SERVICES / KUBE-NODEPORTS / KUBE-EXT-* / KUBE-SVC-* / KUBE-SEP-* / KUBE-MARK-MASQ /
KUBE-MARK-DROP / KUBE-POSTROUTING and filter KUBE-FORWARD / KUBE-FIREWALL / KUBE-SERVICES /
KUBE-EXTERNAL-SERVICES / KUBE-NODEPORTS. It mixes layouts of several kube-proxy releases so the
log has several kinds of path:

- ``ext``     externalTrafficPolicy=Cluster, >= 1.24: KUBE-NODEPORTS -> KUBE-EXT-* -> KUBE-SVC-*; forwarded
- ``legacy``  < 1.24: KUBE-NODEPORTS rule k marks for masquerade, rule k+1 jumps to KUBE-SVC-*; forwarded
- ``noeps``   NodePort service without endpoints: rejected in filter KUBE-EXTERNAL-SERVICES
- ``xlb``     externalTrafficPolicy=Local, no local endpoint (< 1.25, seed 003): KUBE-XLB-* ->
              KUBE-MARK-DROP, dropped in filter KUBE-FIREWALL by mark 0x8000
- ``cluster`` ClusterIP only (no NodePort: never in the log)

The TRACE lines are what nf_log prints for legacy xtables (net/ipv4/netfilter/ip_tables.c
trace_packet(), net/netfilter/nf_log_syslog.c): a rule is logged when it matches, before its
target runs (so a DNAT or MARK shows up from the NEXT line on); the TRACE rule itself is not
logged (nf_trace is set by its target); falling off a user chain logs ``return:<rules+1>``, off a
built-in chain ``policy:<rules+1>``; MARK= is printed only when the mark is nonzero; every line ends
with a space, as nf_log writes it.
Checked on kernel 6.18: one SYN of each kind sent through a namespace loaded with a generated
ruleset gave exactly these tags, MARK, TTL and IN/OUT/MAC (there, POSTROUTING lines of a forwarded
packet keep IN= and MAC=; the older kernel of seed 001 printed them with an empty IN= and no MAC).

    python3 bench/gen_kube.py --services 10000 --packets 100000 --out bench/out
    python3 bench/gen_kube.py --small --out /tmp/k      # 60 services, 400 packets

writes OUT/kube.rules and OUT/kube.log. Output is a pure function of the arguments and ``--seed``.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import hashlib
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

GEN_VERSION = 3  # bump when the output for the same arguments changes (run_all.py caches on it)

DEFAULT_SERVICES = 10_000
DEFAULT_PACKETS = 100_000
SMALL_SERVICES = 60
SMALL_PACKETS = 400

NODE = "node1"
NODE_IP = "192.168.10.11"
NODE_MAC = "52:54:00:6b:1c:0a"
GATEWAY_MAC = "52:54:00:12:35:02"
POD_CIDR = "10.244.0.0/16"
LOCAL_POD_PREFIX = "10.244.1."  # this node's pod /24, behind cni0; other pods via flannel.1
NODEPORT_RANGE = (30000, 40000)  # kube-apiserver --service-node-port-range=30000-39999
HEALTHCHECK_BASE = 40000

MASQ_MARK = "0x4000"  # KUBE-MARK-MASQ
DROP_MARK = "0x8000"  # KUBE-MARK-DROP

# share of services per kind, and number of endpoints with its weight
KIND_WEIGHTS = (("cluster", 40), ("ext", 45), ("legacy", 8), ("noeps", 4), ("xlb", 3))
ENDPOINT_WEIGHTS = ((1, 35), (2, 35), (3, 18), (5, 8), (8, 4))
PORTS = ((80, "http", 8080), (443, "https", 8443), (53, "dns-tcp", 53), (6379, "redis", 6379),
         (5432, "postgres", 5432), (9090, "metrics", 9090), (8080, "web", 8080), (3306, "mysql", 3306))
NAMESPACES = ("default", "kube-system", "monitoring", "ingress-nginx", "payments", "search", "checkout",
              "catalog", "identity", "logging", "data", "ml-serving")
WORDS = ("api", "web", "cache", "db", "auth", "queue", "gateway", "frontend", "backend", "worker",
         "store", "index", "feed", "cart", "users", "orders", "billing", "events", "stream", "proxy")

SYSLOG_START = (2026, 11, 23, 3, 34, 1)  # wall clock of the first line (UTC, no DST)
UPTIME_START_US = 12_345_678_901


def chain_hash(seed: int, *parts: str) -> str:
    """16 upper-case base32 characters, as kube-proxy's portProtoHash (sha256 + base32, cut to 16)."""
    h = hashlib.sha256(("\0".join((str(seed),) + parts)).encode()).digest()
    return base64.b32encode(h).decode()[:16]


def probability(n_left: int) -> str:
    """The ``--probability`` text iptables-save prints for kube-proxy's 1/n (libxt_statistic keeps p*2^31)."""
    fixed = round(0x80000000 / n_left)
    return f"{fixed / 0x80000000:.11f}"


@dataclass(slots=True)
class Endpoint:
    ip: str
    port: int
    chain: str  # KUBE-SEP-*

    @property
    def out(self) -> str:
        return "cni0" if self.ip.startswith(LOCAL_POD_PREFIX) else "flannel.1"


@dataclass(slots=True)
class Service:
    name: str  # "ns/svc:port", the comment kube-proxy writes
    kind: str
    vip: str
    port: int
    target_port: int
    svc_chain: str  # KUBE-SVC-*
    front_chain: str = ""  # KUBE-EXT-* or KUBE-XLB-*
    nodeport: int | None = None
    healthcheck: int | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    # rule numbers filled in while the ruleset is written
    nodeport_rule: int = 0  # nat KUBE-NODEPORTS rule that matches the NodePort (legacy: the MARK-MASQ one)
    reject_rule: int = 0  # filter KUBE-EXTERNAL-SERVICES rule (noeps)


@dataclass(slots=True)
class Cluster:
    """The generated services and the rule counts the trace needs."""

    seed: int
    services: list[Service]
    chains: dict[str, dict[str, list[str]]]  # table -> chain -> rule lines, in save order
    policies: dict[str, dict[str, str]]  # table -> built-in chain -> policy

    def count(self, table: str, chain: str) -> int:
        return len(self.chains[table][chain])

    def rule_count(self) -> int:
        return sum(len(r) for t in self.chains.values() for r in t.values())


def _pick(rng: random.Random, weighted: tuple[tuple[object, int], ...]) -> object:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def make_services(n: int, seed: int) -> list[Service]:
    """The services of the cluster, deterministic for (n, seed)."""
    rng = random.Random(seed)
    kinds: list[str] = [_pick(rng, KIND_WEIGHTS) for _ in range(n)]  # type: ignore[misc]
    with_np = sum(k != "cluster" for k in kinds)
    if with_np > NODEPORT_RANGE[1] - NODEPORT_RANGE[0]:
        raise SystemExit(f"too many NodePort services ({with_np}) for the range {NODEPORT_RANGE}")
    nodeports = iter(rng.sample(range(*NODEPORT_RANGE), with_np))
    pod = 2  # pod IPs handed out in order over 10.244.0.0/16
    out: list[Service] = []
    for i, kind in enumerate(kinds):
        ns = NAMESPACES[i % len(NAMESPACES)]
        svc = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{i}"
        port, pname, tport = rng.choice(PORTS)
        name = f"{ns}/{svc}:{pname}"
        vip_n = 10 + i  # 10.96.0.0/12 service CIDR
        vip = f"10.{96 + (vip_n >> 16)}.{(vip_n >> 8) & 255}.{vip_n & 255}"
        s = Service(name=name, kind=kind, vip=vip, port=port, target_port=tport,
                    svc_chain="KUBE-SVC-" + chain_hash(seed, name, "tcp"))
        if kind != "cluster":
            s.nodeport = next(nodeports)
        if kind == "ext":
            s.front_chain = "KUBE-EXT-" + chain_hash(seed, name, "tcp")
        elif kind == "xlb":
            s.front_chain = "KUBE-XLB-" + chain_hash(seed, name, "tcp")
            s.healthcheck = HEALTHCHECK_BASE + i
        if kind != "noeps":
            used: set[str] = set()
            for _ in range(_pick(rng, ENDPOINT_WEIGHTS)):  # type: ignore[call-overload]
                # xlb: no endpoint on this node (that is what makes it drop); others: 1 in 8 local
                if kind != "xlb" and rng.random() < 0.125:
                    ip = f"{LOCAL_POD_PREFIX}{rng.randrange(2, 255)}"  # a pod may back several services
                    if ip in used:
                        continue
                else:
                    pod += 1
                    while (pod >> 8) == 1 or (pod & 255) in (0, 255):  # skip this node's /24, .0, .255
                        pod += 1
                    ip = f"10.244.{pod >> 8}.{pod & 255}"
                used.add(ip)
                ep = f"{ip}:{tport}"
                s.endpoints.append(Endpoint(ip, tport, "KUBE-SEP-" + chain_hash(seed, name, "tcp", ep)))
        out.append(s)
    return out


def build(n: int, seed: int) -> Cluster:
    """Services plus every table's chains and rule lines (the text iptables-legacy-save prints)."""
    services = make_services(n, seed)
    policies = {
        "raw": {"PREROUTING": "ACCEPT", "OUTPUT": "ACCEPT"},
        "mangle": {c: "ACCEPT" for c in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")},
        "nat": {c: "ACCEPT" for c in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")},
        "filter": {c: "ACCEPT" for c in ("INPUT", "FORWARD", "OUTPUT")},
    }
    chains: dict[str, dict[str, list[str]]] = {t: {c: [] for c in p} for t, p in policies.items()}

    def add(table: str, chain: str, spec: str) -> int:
        rules = chains[table].setdefault(chain, [])
        rules.append(f"-A {chain} {spec}")
        return len(rules)

    lo, hi = NODEPORT_RANGE
    add("raw", "PREROUTING",
        f"-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m multiport --dports {lo}:{hi - 1} -j TRACE")

    nat = "nat"
    add(nat, "PREROUTING", '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    add(nat, "OUTPUT", '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    add(nat, "POSTROUTING", '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING')
    add(nat, "KUBE-MARK-DROP", f"-j MARK --set-xmark {DROP_MARK}/{DROP_MARK}")
    add(nat, "KUBE-MARK-MASQ", f"-j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}")
    add(nat, "KUBE-POSTROUTING", f"-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN")
    add(nat, "KUBE-POSTROUTING", f"-j MARK --set-xmark {MASQ_MARK}/0x0")
    add(nat, "KUBE-POSTROUTING",
        '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully')
    chains[nat]["KUBE-SERVICES"] = []
    chains[nat]["KUBE-NODEPORTS"] = []

    flt = "filter"
    add(flt, "INPUT", '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS')
    add(flt, "INPUT", "-m conntrack --ctstate NEW -m comment --comment "
        '"kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES')
    add(flt, "INPUT", "-j KUBE-FIREWALL")
    add(flt, "FORWARD", '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD')
    portals = '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    add(flt, "FORWARD", portals)
    add(flt, "FORWARD", "-m conntrack --ctstate NEW -m comment --comment "
        '"kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES')
    add(flt, "OUTPUT", portals)
    add(flt, "OUTPUT", "-j KUBE-FIREWALL")
    add(flt, "KUBE-FIREWALL", '! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet '
        'connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP')
    add(flt, "KUBE-FIREWALL", '-m comment --comment "kubernetes firewall for dropping marked packets" '
        f"-m mark --mark {DROP_MARK}/{DROP_MARK} -j DROP")
    add(flt, "KUBE-FORWARD", "-m conntrack --ctstate INVALID -j DROP")
    add(flt, "KUBE-FORWARD", '-m comment --comment "kubernetes forwarding rules" '
        f"-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT")
    add(flt, "KUBE-FORWARD", '-m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    for c in ("KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-SERVICES"):
        chains[flt].setdefault(c, [])

    for s in services:
        q = f'"{s.name}"'
        if s.kind == "noeps":
            none = f'-m comment --comment "{s.name} has no endpoints"'
            add(flt, "KUBE-SERVICES", f"-d {s.vip}/32 -p tcp {none} -m tcp --dport {s.port} "
                "-j REJECT --reject-with icmp-port-unreachable")
            s.reject_rule = add(flt, "KUBE-EXTERNAL-SERVICES", f"-p tcp {none} -m addrtype --dst-type LOCAL "
                                f"-m tcp --dport {s.nodeport} -j REJECT --reject-with icmp-port-unreachable")
            continue
        add(nat, "KUBE-SERVICES", f'-d {s.vip}/32 -p tcp -m comment --comment "{s.name} cluster IP" '
            f"-m tcp --dport {s.port} -j {s.svc_chain}")
        svc = chains[nat].setdefault(s.svc_chain, [])
        add(nat, s.svc_chain, f'! -s {POD_CIDR} -d {s.vip}/32 -p tcp -m comment --comment "{s.name} cluster '
            f'IP" -m tcp --dport {s.port} -j KUBE-MARK-MASQ')
        n = len(s.endpoints)
        for j, ep in enumerate(s.endpoints):
            stat = "" if j == n - 1 else f"-m statistic --mode random --probability {probability(n - j)} "
            add(nat, s.svc_chain, f'-m comment --comment "{s.name} -> {ep.ip}:{ep.port}" {stat}-j {ep.chain}')
            add(nat, ep.chain, f"-s {ep.ip}/32 -m comment --comment {q} -j KUBE-MARK-MASQ")
            add(nat, ep.chain,
                f"-p tcp -m comment --comment {q} -m tcp -j DNAT --to-destination {ep.ip}:{ep.port}")
        del svc
        if s.kind == "ext":
            s.nodeport_rule = add(nat, "KUBE-NODEPORTS", f"-p tcp -m comment --comment {q} -m tcp "
                                  f"--dport {s.nodeport} -j {s.front_chain}")
            add(nat, s.front_chain, f'-m comment --comment "masquerade traffic for {s.name} external '
                'destinations" -j KUBE-MARK-MASQ')
            add(nat, s.front_chain, f"-j {s.svc_chain}")
        elif s.kind == "legacy":
            s.nodeport_rule = add(nat, "KUBE-NODEPORTS", f"-p tcp -m comment --comment {q} -m tcp "
                                  f"--dport {s.nodeport} -j KUBE-MARK-MASQ")
            add(nat, "KUBE-NODEPORTS",
                f"-p tcp -m comment --comment {q} -m tcp --dport {s.nodeport} -j {s.svc_chain}")
        elif s.kind == "xlb":
            s.nodeport_rule = add(nat, "KUBE-NODEPORTS", f"-p tcp -m comment --comment {q} -m tcp "
                                  f"--dport {s.nodeport} -j {s.front_chain}")
            xlb = s.front_chain
            add(nat, xlb, f'-s {POD_CIDR} -m comment --comment "Redirect pods trying to reach external '
                f'loadbalancer VIP to clusterIP" -j {s.svc_chain}')
            add(nat, xlb, f'-m comment --comment "masquerade LOCAL traffic for {s.name} LB IP" '
                "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ")
            add(nat, xlb, f'-m comment --comment "route LOCAL traffic for {s.name} LB IP to service chain" '
                f"-m addrtype --src-type LOCAL -j {s.svc_chain}")
            add(nat, xlb, f'-m comment --comment "{s.name} has no local endpoints" -j KUBE-MARK-DROP')
            add(flt, "KUBE-NODEPORTS", f'-p tcp -m comment --comment "{s.name} health check node port" '
                f"-m tcp --dport {s.healthcheck} -j ACCEPT")
    add(nat, "KUBE-SERVICES", '-m comment --comment "kubernetes service nodeports; NOTE: this must be the '
        'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    return Cluster(seed=seed, services=services, chains=chains, policies=policies)


def ruleset_lines(c: Cluster) -> Iterator[str]:
    """The ruleset as iptables-legacy-save prints it: built-in chains first, then user chains by name."""
    yield f"# Generated by bench/gen_kube.py v{GEN_VERSION} (seed {c.seed}, {len(c.services)} services)\n"
    for table in ("raw", "mangle", "nat", "filter"):
        builtin = list(c.policies[table])
        users = sorted(ch for ch in c.chains[table] if ch not in c.policies[table])
        yield f"*{table}\n"
        for ch in builtin:
            yield f":{ch} {c.policies[table][ch]} [0:0]\n"
        for ch in users:
            yield f":{ch} - [0:0]\n"
        for ch in builtin + users:
            for r in c.chains[table][ch]:
                yield r + "\n"
        yield "COMMIT\n"
    yield "# Completed\n"


# ---- trace log --------------------------------------------------------------------------------

# which variant of the packet's fields a line shows: before routing (mark 0 / 0x4000 / 0x8000), forwarded
# (OUT set, TTL-1, DST:DPT of the endpoint) with and without the masquerade mark
PRE, PRE_MASQ, PRE_DROP, FWD_MASQ, FWD = range(5)


def nft_ruleset_text(c: Cluster) -> str:
    """The same services as kube-proxy's nftables mode lays them out (``nft list ruleset`` text):
    verdict maps on ``ip daddr . meta l4proto . th dport`` and ``meta l4proto . th dport``, a
    ``numgen random mod N vmap`` per service, an endpoint chain per endpoint (mark + dnat)."""
    svc_elems, np_elems, noep_elems, chains = [], [], [], []
    for s in c.services:
        sname = f"service-{s.svc_chain[10:18]}-{s.name.replace(':', '/')}"
        if not s.endpoints:
            noep_elems.append(f"{s.vip} . tcp . {s.port} : goto reject-chain")
            continue
        svc_elems.append(f"{s.vip} . tcp . {s.port} : goto {sname}")
        if s.nodeport:
            np_elems.append(f"tcp . {s.nodeport} : goto external-{sname}")
            chains.append(f"\tchain external-{sname} {{\n\t\tjump mark-for-masquerade\n"
                          f"\t\tgoto {sname}\n\t}}\n")
        eps = []
        for k, ep in enumerate(s.endpoints):
            ename = f"endpoint-{ep.chain[10:18]}-{ep.ip}/{ep.port}"
            eps.append(f"{k} : goto {ename}")
            chains.append(f"\tchain {ename} {{\n\t\tip saddr {ep.ip} jump mark-for-masquerade\n"
                          f"\t\tmeta l4proto tcp dnat to {ep.ip}:{ep.port}\n\t}}\n")
        chains.append(f"\tchain {sname} {{\n\t\tip daddr {s.vip} tcp dport {s.port} ip saddr != 10.244.0.0/16 "
                      f"jump mark-for-masquerade\n\t\tnumgen random mod {len(eps)} vmap {{ {', '.join(eps)} }}\n\t}}\n")

    def vmap(name: str, typ: str, elems: list[str]) -> str:
        body = f"\t\telements = {{ {', '.join(elems)} }}\n" if elems else ""
        return f"\tmap {name} {{\n\t\ttype {typ} : verdict\n{body}\t}}\n"

    head = (vmap("service-ips", "ipv4_addr . inet_proto . inet_service", svc_elems)
            + vmap("service-nodeports", "inet_proto . inet_service", np_elems)
            + vmap("no-endpoint-services", "ipv4_addr . inet_proto . inet_service", noep_elems)
            + "\tchain filter-forward {\n\t\ttype filter hook forward priority -110; policy accept;\n"
            "\t\tct state new jump service-endpoints-check\n\t}\n"
            "\tchain filter-input {\n\t\ttype filter hook input priority -110; policy accept;\n"
            "\t\tct state new jump service-endpoints-check\n\t}\n"
            "\tchain service-endpoints-check {\n\t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t}\n"
            "\tchain reject-chain {\n\t\treject\n\t}\n"
            "\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
            "\t\tjump services\n\t}\n"
            "\tchain nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            "\t\tjump masquerading\n\t}\n"
            f"\tchain masquerading {{\n\t\tmeta mark & {MASQ_MARK} == 0x0 return\n"
            f"\t\tmeta mark set meta mark ^ {MASQ_MARK}\n\t\tmasquerade fully-random\n\t}}\n"
            f"\tchain mark-for-masquerade {{\n\t\tmeta mark set meta mark | {MASQ_MARK}\n\t}}\n"
            "\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n"
            "\t\tfib daddr type local meta l4proto . th dport vmap @service-nodeports\n\t}\n")
    return "table ip kube-proxy {\n" + head + "".join(chains) + "}\n"


def trace_steps(c: Cluster, s: Service, ep: int) -> list[tuple[str, int]]:
    """(``table:chain:type:num``, field variant) for each TRACE line of a NodePort SYN to ``s``.

    ``ep`` is the index of the endpoint whose statistic rule matched (ext / legacy).
    """
    ns_last = c.count("nat", "KUBE-SERVICES")  # the nodeports rule is the last one
    head = [("raw:PREROUTING:policy:2", PRE),  # the TRACE rule (1) is not logged itself
            ("mangle:PREROUTING:policy:1", PRE),
            ("nat:PREROUTING:rule:1", PRE),
            (f"nat:KUBE-SERVICES:rule:{ns_last}", PRE)]
    fwd = [("mangle:FORWARD:policy:1", FWD_MASQ),
           ("filter:FORWARD:rule:1", FWD_MASQ),
           ("filter:KUBE-FORWARD:rule:2", FWD_MASQ),
           ("mangle:POSTROUTING:policy:1", FWD_MASQ),
           ("nat:POSTROUTING:rule:1", FWD_MASQ),
           ("nat:KUBE-POSTROUTING:rule:2", FWD_MASQ),  # MARK --set-xmark 0x4000/0x0 clears the mark
           ("nat:KUBE-POSTROUTING:rule:3", FWD)]
    np_end = c.count("nat", "KUBE-NODEPORTS") + 1
    to_input = [(f"nat:KUBE-SERVICES:return:{ns_last + 1}", -1),
                ("nat:PREROUTING:policy:2", -1),
                ("mangle:INPUT:policy:1", -1),
                ("filter:INPUT:rule:1", -1),
                (f"filter:KUBE-NODEPORTS:return:{c.count('filter', 'KUBE-NODEPORTS') + 1}", -1),
                ("filter:INPUT:rule:2", -1)]
    if s.kind in ("ext", "legacy"):
        e = s.endpoints[ep]
        if s.kind == "ext":
            mid = [(f"nat:KUBE-NODEPORTS:rule:{s.nodeport_rule}", PRE),
                   (f"nat:{s.front_chain}:rule:1", PRE),
                   ("nat:KUBE-MARK-MASQ:rule:1", PRE),
                   ("nat:KUBE-MARK-MASQ:return:2", PRE_MASQ),
                   (f"nat:{s.front_chain}:rule:2", PRE_MASQ)]
        else:
            mid = [(f"nat:KUBE-NODEPORTS:rule:{s.nodeport_rule}", PRE),
                   ("nat:KUBE-MARK-MASQ:rule:1", PRE),
                   ("nat:KUBE-MARK-MASQ:return:2", PRE_MASQ),
                   (f"nat:KUBE-NODEPORTS:rule:{s.nodeport_rule + 1}", PRE_MASQ)]
        mid += [(f"nat:{s.svc_chain}:rule:{ep + 2}", PRE_MASQ),  # rule 1 is the cluster-IP masquerade
                (f"nat:{e.chain}:rule:2", PRE_MASQ)]  # rule 1 (-s endpoint) does not match a client
        return head + mid + fwd
    if s.kind == "noeps":
        tail = [(f"nat:KUBE-NODEPORTS:return:{np_end}", PRE)] + [(t, PRE) for t, _ in to_input]
        return head + tail + [(f"filter:KUBE-EXTERNAL-SERVICES:rule:{s.reject_rule}", PRE)]
    # xlb: XLB rules 1-3 need a pod or local source; rule 4 marks for drop
    ext_end = c.count("filter", "KUBE-EXTERNAL-SERVICES") + 1
    mid = [(f"nat:KUBE-NODEPORTS:rule:{s.nodeport_rule}", PRE),
           (f"nat:{s.front_chain}:rule:4", PRE),
           ("nat:KUBE-MARK-DROP:rule:1", PRE),
           ("nat:KUBE-MARK-DROP:return:2", PRE_DROP),
           (f"nat:{s.front_chain}:return:5", PRE_DROP),
           (f"nat:KUBE-NODEPORTS:return:{np_end}", PRE_DROP)]
    mid += [(t, PRE_DROP) for t, _ in to_input]
    mid += [(f"filter:KUBE-EXTERNAL-SERVICES:return:{ext_end}", PRE_DROP),
            ("filter:INPUT:rule:3", PRE_DROP),
            ("filter:KUBE-FIREWALL:rule:2", PRE_DROP)]
    return head + mid


def _clients(rng: random.Random, n: int) -> list[str]:
    nets = ("203.0.113.", "198.51.100.", "192.0.2.")
    out = {f"{rng.choice(nets)}{rng.randrange(1, 255)}" for _ in range(n)}
    out |= {f"10.20.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}" for _ in range(n)}
    return sorted(out)


def packet_lines(c: Cluster, s: Service, *, ep: int, src: str, spt: int, ip_id: int, seq: int,
                 tsval: int = 0) -> list[str]:
    """The text after ``TRACE: `` of each line of one SYN to ``s``'s NodePort; ``ep``: the endpoint picked."""
    mac = f"MAC={NODE_MAC}:{GATEWAY_MAC}:08:00"
    # nf_log ends every field with a space, so a kernel line ends with one too
    tail = (f"LEN=60 TOS=0x00 PREC=0x00 TTL={{ttl}} ID={ip_id} DF PROTO=TCP SPT={spt} DPT={{dpt}} "
            f"SEQ={seq} ACK=0 WINDOW=64240 RES=0x00 SYN URGP=0 "
            f"OPT (020405B40402080A{tsval:08X}0000000001030307) ")  # MSS 1460, SACK, TS, NOP, wscale 7
    pre = f"IN=eth0 OUT= {mac} SRC={src} DST={NODE_IP} " + tail.format(ttl=64, dpt=s.nodeport)
    variants = [pre, pre + f"MARK={MASQ_MARK} ", pre + f"MARK={DROP_MARK} ", "", ""]
    if s.endpoints and s.kind in ("ext", "legacy"):
        e = s.endpoints[ep]
        fwd = f"IN=eth0 OUT={e.out} {mac} SRC={src} DST={e.ip} " + tail.format(ttl=63, dpt=e.port)
        variants[FWD_MASQ] = fwd + f"MARK={MASQ_MARK} "
        variants[FWD] = fwd

    return [f"{tag} {variants[v]}\n" for tag, v in trace_steps(c, s, ep)]


def _syslog_stamp(sec: int) -> str:
    t = time.gmtime(calendar.timegm(SYSLOG_START + (0, 0, 0)) + sec)
    return f"{time.strftime('%b', t)} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def write_log(c: Cluster, packets: int, out: TextIO, seed: int) -> int:
    """Write ``packets`` NodePort SYN traces, 1-3 packets interleaved; return the number of lines."""
    rng = random.Random(seed * 7919 + 1)
    targets = [s for s in c.services if s.nodeport is not None]
    clients = _clients(rng, 2048)
    seqs: set[int] = set()
    active: list[list[str]] = []  # lines still to write, reversed (pop from the end)
    started = 0
    written = 0
    t_us = 0
    up0 = UPTIME_START_US
    last_sec = -1
    prefix = ""
    buf: list[str] = []
    want = 1
    while started < packets or active:
        while started < packets and len(active) < want:
            seq = rng.getrandbits(32)
            while seq in seqs:
                seq = rng.getrandbits(32)
            seqs.add(seq)
            s = targets[int(rng.random() * len(targets))]
            src = clients[int(rng.random() * len(clients))]
            ip_id = (0x5A5A + started * 40503) & 0xFFFF  # unique within any 65536 consecutive packets
            ep = int(rng.random() * len(s.endpoints)) if s.endpoints else 0
            lines = packet_lines(c, s, ep=ep, src=src, spt=rng.randrange(32768, 61000), ip_id=ip_id, seq=seq,
                                 tsval=rng.getrandbits(32))
            lines.reverse()
            active.append(lines)
            started += 1
            want = 1 + int(rng.random() * 3)
        i = int(rng.random() * len(active))
        lines = active[i]
        t_us += 4 + int(rng.random() * 40)
        sec = t_us // 1_000_000
        if sec != last_sec:
            last_sec = sec
            prefix = f"{_syslog_stamp(sec)} {NODE} kernel: ["
        up = up0 + t_us
        buf.append(f"{prefix}{up // 1_000_000:5d}.{up % 1_000_000:06d}] TRACE: {lines.pop()}")
        if not lines:
            active.pop(i)
        if len(buf) >= 4096:
            out.writelines(buf)
            written += len(buf)
            buf.clear()
    out.writelines(buf)
    return written + len(buf)


def generate(out_dir: Path, services: int, packets: int, seed: int) -> dict[str, object]:
    """Write OUT/kube.rules and OUT/kube.log; return what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    c = build(services, seed)
    rules = out_dir / "kube.rules"
    with rules.open("w", encoding="ascii") as f:
        f.writelines(ruleset_lines(c))
    t1 = time.perf_counter()
    log = out_dir / "kube.log"
    with log.open("w", encoding="ascii", buffering=1 << 20) as f:
        lines = write_log(c, packets, f, seed)
    t2 = time.perf_counter()
    return {"services": services, "packets": packets, "seed": seed, "rules": c.rule_count(),
            "log_lines": lines, "rules_bytes": rules.stat().st_size, "log_bytes": log.stat().st_size,
            "rules_s": round(t1 - t0, 2), "log_s": round(t2 - t1, 2), "version": GEN_VERSION}


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--services", type=int,
                    help=f"services (default {DEFAULT_SERVICES}; --small: {SMALL_SERVICES})")
    ap.add_argument("--packets", type=int,
                    help=f"NodePort SYNs (default {DEFAULT_PACKETS}; --small: {SMALL_PACKETS})")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="a small cluster for tests")
    ap.add_argument("--out", type=Path, required=True, help="directory for kube.rules and kube.log")
    a = ap.parse_args(argv)
    services = a.services or (SMALL_SERVICES if a.small else DEFAULT_SERVICES)
    packets = a.packets if a.packets is not None else (SMALL_PACKETS if a.small else DEFAULT_PACKETS)
    info = generate(a.out, services, packets, a.seed)
    print(" ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
