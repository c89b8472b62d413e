"""The lab's native nftables scenarios: topology, layout (``nft -f`` text), tracing table, flows.

Each layout is written for the lab in the style of the product it stands for (lab/nft/*.nft;
none is a product's own output): kube-proxy's nftables mode, several tables on one hook with a
netdev ingress and a bridge-family table, named sets and maps on a gateway, IPv6 in an inet
table. ``record_nft.record`` loads a layout into the traced host together with the scenario's
tracing table (``meta nftrace set 1`` for the test flows only, at a priority before everything
else), sends the flows and keeps what the kernel reported. The tests' own layouts (zones,
router, layered: tests/nft/native_record.py) are scenarios of this kind too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .netns import Host, Lab, run

LAYOUTS = Path(__file__).resolve().parent / "nft"


@dataclass(frozen=True, slots=True)
class NftFlow:
    """One bounded exchange; its first packet's steps and fate are checked."""

    name: str
    kind: str  # tcp / udp / ping
    src: str  # role that sends
    dst: str  # address
    port: int  # destination port (tcp/udp) or ICMP echo id (ping)
    sport: int | None  # source port (tcp/udp)
    via: str  # local (delivered to the traced host) / forward (routed or bridged through it)
    note: str = ""


@dataclass(slots=True)
class NftScenario:
    name: str
    description: str
    layout: Callable[[], str]  # the ``nft -f`` text
    build: Callable[[Lab], dict[str, Host]]  # the topology; roles -> hosts (the traced one is "traced")
    trace: str  # the tracing table (``nft -f`` text)
    flows: list[NftFlow]
    listen: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)  # role -> tcp, udp
    title: str = ""
    iptables: Callable[[], str] | None = None  # iptables-nft-restore input loaded after the layout


def _layout(name: str) -> Callable[[], str]:
    return lambda: (LAYOUTS / name).read_text()


def rename(ns: str, old: str, new: str) -> None:
    """Give an interface inside a namespace the name a layout refers to (eth0, wan, …)."""
    run(["ip", "link", "set", old, "down"], ns=ns)
    run(["ip", "link", "set", old, "name", new], ns=ns)
    run(["ip", "link", "set", new, "up"], ns=ns)


def trace_table(family: str, hook: str, matches: list[str], *, device: str | None = None,
                priority: int = -350) -> str:
    """A table of our own that switches tracing on for the matching packets, before anything else."""
    dev = f' device "{device}"' if device else ""
    rules = "".join(f"\t\t{m} meta nftrace set 1\n" for m in matches)
    return (f"table {family} rttrace {{\n\tchain trace_{hook} {{\n"
            f"\t\ttype filter hook {hook}{dev} priority {priority}; policy accept;\n{rules}\t}}\n}}\n")


# --- kube-proxy, nftables mode ------------------------------------------------------------------

def _build_kube(lab: Lab) -> dict[str, Host]:
    client = lab.host("client")
    # the pods' bridge carries routed traffic only (no br_netfilter calls into ip tables)
    node = lab.host("node", {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "0"})
    c_if, n_if = lab.veth(client, "c0", node, "n0")
    rename(node.ns, n_if, "eth0")
    lab.addr(client, c_if, "10.78.0.1/24")
    lab.addr(node, "eth0", "10.78.0.2/24")
    pods, ports = {}, []
    for i in (5, 6, 7):  # one namespace per pod: a reply leaves from the address the dnat chose
        pod = pods[f"pod{i}"] = lab.host(f"pod{i}")
        port, p_if = lab.veth(node, f"v{i}", pod, "e0")
        ports.append(port)
        lab.addr(pod, p_if, f"10.244.1.{i}/24")
        lab.route(pod, "default", "10.244.1.1")
    cni = lab.bridge(node, "cni", ports)
    lab.addr(node, cni, "10.244.1.1/24")
    for net in ("10.96.0.0/16", "10.244.0.0/16"):
        lab.route(client, net, "10.78.0.2")
    lab.route(node, "10.96.0.0/16", "10.244.1.5")  # a ClusterIP without endpoints is still routed
    return {"traced": node, "client": client, **pods}


KUBE = NftScenario(
    title="kube-proxy nftables mode: service vmaps, numgen endpoints, dnat, masquerade, reject",
    name="kube-nft",
    description=(
        "A node with kube-proxy in nftables mode: service verdict maps on ip daddr . meta l4proto . "
        "th dport, numgen random mod N vmap to endpoint chains that dnat, mark-for-masquerade and "
        "masquerading, a NodePort through fib daddr type local, a service without endpoints "
        "rejected, a ClusterIP's wrong port rejected."),
    layout=_layout("kube.nft"),
    build=_build_kube,
    trace=trace_table("inet", "prerouting", ["ip saddr 10.78.0.1"]),
    listen={f"pod{i}": ([8080], [53]) for i in (5, 6, 7)},
    flows=[
        NftFlow("nodeport", "tcp", "client", "10.78.0.2", 30080, 44080, "forward",
                "NodePort: marked for masquerade, dnat to an endpoint, masqueraded"),
        NftFlow("clusterip", "tcp", "client", "10.96.5.7", 80, 44081, "forward", "ClusterIP from outside"),
        NftFlow("dns", "udp", "client", "10.96.0.10", 53, 44053, "forward", "UDP service, two endpoints"),
        NftFlow("no-endpoints", "tcp", "client", "10.96.9.9", 80, 44090, "forward",
                "service without endpoints: goto reject-chain"),
        NftFlow("wrong-port", "tcp", "client", "10.96.5.7", 81, 44091, "forward",
                "a ClusterIP's port no service has: cluster-ips-check rejects"),
        NftFlow("ping-node", "ping", "client", "10.78.0.2", 4401, None, "local"),
    ],
)


# --- several tables on one hook, netdev ingress, bridge family -----------------------------------

def _build_hooks(lab: Lab) -> dict[str, Host]:
    client = lab.host("client")
    # bridged frames stay in the bridge family's hooks (no br_netfilter calls into ip tables)
    server = lab.host("server", {"net.bridge.bridge-nf-call-iptables": "0",
                                 "net.bridge.bridge-nf-call-ip6tables": "0"})
    peer = lab.host("peer")
    c_if, s_if = lab.veth(client, "c0", server, "s0")
    s2_if, p_if = lab.veth(server, "s1", peer, "p0")
    rename(server.ns, s_if, "eth0")
    rename(server.ns, s2_if, "eth1")
    run(["ip", "link", "add", "br0", "type", "bridge"], ns=server.ns)
    for port in ("eth0", "eth1"):
        run(["ip", "link", "set", port, "master", "br0"], ns=server.ns)
    run(["ip", "link", "set", "br0", "up"], ns=server.ns)
    lab.addr(client, c_if, "10.79.0.1/24")
    lab.addr(server, "br0", "10.79.0.2/24")
    lab.addr(peer, p_if, "10.79.0.3/24")
    return {"traced": server, "client": client, "peer": peer}


HOOKS = NftScenario(
    title="netdev ingress, a bridge-family table, ip/inet tables at three input priorities",
    name="hooks",
    description=(
        "A host whose address sits on a bridge: netdev ingress on the port, a bridge-family table "
        "(prerouting, input, forward), then ip and inet tables on the input hook at priorities -150, "
        "0 and 10 (an accept in one does not stop the next table's drop); bridged flows to a peer."),
    layout=_layout("hooks.nft"),
    build=_build_hooks,
    trace=trace_table("netdev", "ingress", ["ip saddr 10.79.0.1"], device="eth0", priority=-500),
    listen={"traced": ([22], []), "peer": ([8080, 25], [])},
    flows=[
        NftFlow("ssh", "tcp", "client", "10.79.0.2", 22, 45022, "local", "ip early and inet host accept"),
        NftFlow("web", "tcp", "client", "10.79.0.2", 80, 45080, "local", "inet host accepts, ip late drops"),
        NftFlow("smtp", "tcp", "client", "10.79.0.2", 25, 45025, "local", "bridge input drops"),
        NftFlow("telnet", "tcp", "client", "10.79.0.2", 23, 45023, "local", "netdev ingress drops"),
        NftFlow("ping", "ping", "client", "10.79.0.2", 4501, None, "local"),
        NftFlow("bridged-web", "tcp", "client", "10.79.0.3", 8080, 45180, "forward", "bridge forward accepts"),
        NftFlow("bridged-smtp", "tcp", "client", "10.79.0.3", 25, 45125, "forward",
                "bridge forward drops"),
    ],
)


# --- named sets and maps on a gateway ------------------------------------------------------------

def _build_maps(lab: Lab) -> dict[str, Host]:
    client = lab.host("client")
    gw = lab.host("gw", {"net.ipv4.ip_forward": "1"})
    backend = lab.host("backend")
    c_if, g_out = lab.veth(client, "c0", gw, "g0")
    g_in, b_if = lab.veth(gw, "g1", backend, "b0")
    rename(gw.ns, g_out, "eth0")
    rename(gw.ns, g_in, "eth1")
    lab.addr(client, c_if, "10.80.0.1/24")
    lab.addr(gw, "eth0", "10.80.0.2/24")
    lab.addr(gw, "eth1", "10.81.0.1/24")
    lab.addr(backend, b_if, "10.81.0.10/24", "10.81.0.11/24")
    for net in ("10.81.0.0/24", "10.82.0.0/24"):
        lab.route(client, net, "10.80.0.2")
    lab.route(backend, "default", "10.81.0.1")
    return {"traced": gw, "client": client, "backend": backend}


MAPS = NftScenario(
    title="gateway: dnat to ip daddr map, meta/ct mark set from maps, ct mark vmap",
    name="maps",
    description=(
        "A gateway: virtual IPs translated by dnat to ip daddr map @vip-backend, meta mark set from "
        "a port map, ct mark set meta mark, a verdict map on the ct mark (accept or jump), a named "
        "port set that drops, forward policy drop for the rest."),
    layout=_layout("maps.nft"),
    build=_build_maps,
    trace=trace_table("inet", "prerouting", ["ip saddr 10.80.0.1"]),
    listen={"backend": ([80, 443, 22, 8080], [])},
    flows=[
        NftFlow("vip-web", "tcp", "client", "10.82.0.100", 80, 46080, "forward", "mark 0x10: accept"),
        NftFlow("vip-tls", "tcp", "client", "10.82.0.101", 443, 46443, "forward", "mark 0x20: jump tls"),
        NftFlow("vip-ssh", "tcp", "client", "10.82.0.100", 22, 46022, "forward", "no mark: admin port drop"),
        NftFlow("direct", "tcp", "client", "10.81.0.10", 8080, 46880, "forward", "forward policy drop"),
    ],
)


# --- IPv6 in an inet table -------------------------------------------------------------------------

def _build_inet6(lab: Lab) -> dict[str, Host]:
    client, server = lab.host("client"), lab.host("server")
    c_if, s_if = lab.veth(client, "c0", server, "s0")
    rename(server.ns, s_if, "eth0")
    lab.addr(client, c_if, "fd78::1/64", "10.83.0.1/24")
    lab.addr(server, "eth0", "fd78::2/64", "10.83.0.2/24")
    return {"traced": server, "client": client}


INET6 = NftScenario(
    title="IPv6 and IPv4 in one inet table: redirect, rejects, ct state vmap",
    name="inet6",
    description=(
        "IPv6 and IPv4 through one inet table: ct state vmap, ICMPv6 types, an address . port set "
        "with a jump, a redirect in an inet nat chain, reject with icmpv6 admin-prohibited and with "
        "a TCP reset, input policy drop."),
    layout=_layout("inet6.nft"),
    build=_build_inet6,
    trace=trace_table("inet", "prerouting", ["ip6 saddr fd78::1 meta l4proto tcp",
                                             "ip6 saddr fd78::1 icmpv6 type echo-request",
                                             "ip saddr 10.83.0.1"]),
    listen={"traced": ([22, 443], [])},
    flows=[
        NftFlow("ssh6", "tcp", "client", "fd78::2", 22, 47022, "local", "trusted source: services6 accepts"),
        NftFlow("redirect6", "tcp", "client", "fd78::2", 8443, 47443, "local", "redirect to :443, accepted"),
        NftFlow("smtp6", "tcp", "client", "fd78::2", 25, 47025, "local", "reject with icmpv6 admin-prohibited"),
        NftFlow("mysql6", "tcp", "client", "fd78::2", 3306, 47306, "local", "reject with tcp reset"),
        NftFlow("ping6", "ping", "client", "fd78::2", 4701, None, "local"),
        NftFlow("ssh4", "tcp", "client", "10.83.0.2", 22, 47122, "local", "IPv4 through the same table"),
    ],
)

# --- native tables and iptables-nft tables on one host ---------------------------------------------

def _build_mixed(lab: Lab) -> dict[str, Host]:
    client, server = lab.host("client"), lab.host("server")
    c_if, s_if = lab.veth(client, "c0", server, "s0")
    rename(server.ns, s_if, "eth0")
    lab.addr(client, c_if, "10.84.0.1/24")
    lab.addr(server, "eth0", "10.84.0.2/24")
    return {"traced": server, "client": client}


MIXED = NftScenario(
    title="native nftables beside iptables-nft tables on one host",
    name="mixed",
    description=(
        "A native inet table (input at filter + 10: ct state, a drop, a tcp reset) beside the tables "
        "iptables-nft made (filter with a user chain, multiport, comment, addrtype and REJECT; mangle "
        "MARK; nat REDIRECT): steps in iptables-nft's tables pair back to their iptables-nft-save lines."),
    layout=_layout("mixed.nft"),
    iptables=_layout("mixed.iptables"),
    build=_build_mixed,
    trace=trace_table("inet", "prerouting", ["ip saddr 10.84.0.1"]),
    listen={"traced": ([22, 80, 81, 82, 83], [])},
    flows=[
        NftFlow("ssh", "tcp", "client", "10.84.0.2", 22, 48022, "local", "iptables-nft ALLOWED accepts"),
        NftFlow("web", "tcp", "client", "10.84.0.2", 80, 48080, "local",
                "ALLOWED returns, filter INPUT policy accept, the native table drops"),
        NftFlow("web-alt", "tcp", "client", "10.84.0.2", 81, 48081, "local", "accepted by the commented rule"),
        NftFlow("closed", "tcp", "client", "10.84.0.2", 82, 48082, "local", "iptables-nft REJECT"),
        NftFlow("other", "tcp", "client", "10.84.0.2", 83, 48083, "local", "both policies accept"),
        NftFlow("redirect", "tcp", "client", "10.84.0.2", 8080, 48088, "local", "nat REDIRECT to 81, accepted"),
        NftFlow("reset", "tcp", "client", "10.84.0.2", 8081, 48089, "local", "native reject with tcp reset"),
    ],
)

SCENARIOS: dict[str, NftScenario] = {s.name: s for s in (KUBE, HOOKS, MAPS, INET6, MIXED)}
