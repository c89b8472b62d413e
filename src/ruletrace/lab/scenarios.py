"""The lab's scenarios: topology, ruleset (iptables-save text with ``$names``) and flows.

Each scenario re-creates one of the seed cases (shared/seeds/README.md) in namespaces:
k8s-nodeport (seed 003), docker-portmap (001, 004), openstack-router (002), filter-basics,
ipv6. Rulesets are templates: ``$name`` is replaced by the run's interface names and addresses.
"""

from __future__ import annotations

from collections.abc import Callable

from .netns import Lab
from .scenario import FORWARDING, Flow, Scenario
from .scenarios_k8s import K8S_NODEPORT

__all__ = ["FORWARDING", "SCENARIOS", "Flow", "Scenario", "get"]


# --- (b) docker-portmap: seeds 001, 004 -----------------------------------------------------------

_DOCKER_RULES = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -s $client/32 -j TRACE
-A PREROUTING -s 172.17.0.0/16 -j TRACE
-A OUTPUT -d $client/32 -j TRACE
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o $docker0 -j MASQUERADE
-A DOCKER -i $docker0 -j RETURN
-A DOCKER ! -i $docker0 -p tcp -m tcp --dport 10000 -j DNAT --to-destination 172.17.0.2:80
-A DOCKER ! -i $docker0 -p udp -m udp --dport 10001 -j DNAT --to-destination 172.17.0.2:5353
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o $docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o $docker0 -j DOCKER
-A FORWARD -i $docker0 ! -o $docker0 -j ACCEPT
-A FORWARD -i $docker0 -o $docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i $docker0 -o $docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i $docker0 -o $docker0 -p udp -m udp --dport 5353 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i $docker0 ! -o $docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o $docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""


def _build_docker(lab: Lab) -> dict[str, str]:
    client = lab.host("client")
    host = lab.host("host", {**FORWARDING, "net.bridge.bridge-nf-call-iptables": "1",
                             "net.bridge.bridge-nf-call-ip6tables": "1"})
    ctr1, ctr2 = lab.host("ctr1"), lab.host("ctr2")
    c_if, h_if = lab.veth(client, "c0", host, "h0")
    lab.addr(client, c_if, "192.168.50.2/24")
    lab.addr(host, h_if, "192.168.50.1/24")
    v1, e1 = lab.veth(host, "v1", ctr1, "e1")
    v2, e2 = lab.veth(host, "v2", ctr2, "e2")
    br = lab.bridge(host, "d0", [v1, v2])  # docker0
    lab.addr(host, br, "172.17.0.1/16")
    lab.addr(ctr1, e1, "172.17.0.2/16")
    lab.addr(ctr2, e2, "172.17.0.3/16")
    lab.route(ctr1, "default", "172.17.0.1")
    lab.route(ctr2, "default", "172.17.0.1")
    return {"client": "192.168.50.2", "host": "192.168.50.1", "docker0": br, "veth1": v1, "veth2": v2,
            "ctr1": "172.17.0.2", "ctr2": "172.17.0.3"}


DOCKER_PORTMAP = Scenario(
    name="docker-portmap",
    title="Docker port mapping through a bridge (DNAT, DOCKER-USER, isolation, PHYSIN)",
    description=(
        "A docker host: bridge docker0 with two container namespaces; nat DOCKER DNATs host:10000/tcp to "
        "container:80 and host:10001/udp to container:5353; filter FORWARD (policy DROP) goes through "
        "DOCKER-USER and DOCKER-ISOLATION-STAGE-1/2 (RETURN) before DOCKER accepts. Also a container's "
        "UDP to the client (MASQUERADE, PHYSIN from br_netfilter), a bridged container-to-container "
        "datagram, and an unmapped port (seeds 001, 004)."
    ),
    traced="host",
    build=_build_docker,
    rules_v4=_DOCKER_RULES,
    listeners={"ctr1": ([80], [5353]), "ctr2": ([], [5353]), "client": ([], [9999])},
    flows=[
        Flow("tcp-10000", "client TCP to host:10000, DNAT to container 172.17.0.2:80", "tcp", "client",
             "$host", 10000, "forward", "ctr1"),
        Flow("udp-10001", "client UDP to host:10001, DNAT to container 172.17.0.2:5353 (echoed back)",
             "udp", "client", "$host", 10001, "forward", "ctr1"),
        Flow("tcp-10002", "client TCP to host:10002: no mapping, closed port on the host", "tcp",
             "client", "$host", 10002, "local", "host"),
        Flow("ctr-out", "container UDP to client:9999, MASQUERADE (echoed back)", "udp", "ctr1",
             "$client", 9999, "forward", "client"),
        Flow("ctr-ctr", "container to container UDP over the bridge (PHYSIN/PHYSOUT)", "udp", "ctr1",
             "$ctr2", 5353, "forward", "ctr2"),
    ],
)


# --- (c) openstack-router: seed 002 ---------------------------------------------------------------
# The l3 agent's nat POSTROUTING ACCEPT rule names the qg- device; the external traffic leaves by
# another device (br-ex), so "! -o qg-…" matches, ACCEPT ends nat POSTROUTING and SNAT never runs.

_OPENSTACK_RULES = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -s $vm/32 -j TRACE
-A PREROUTING -s $ext/32 -j TRACE
-A OUTPUT -d $ext/32 -j TRACE
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:quantum-l3-agent-OUTPUT - [0:0]
:quantum-l3-agent-POSTROUTING - [0:0]
:quantum-l3-agent-PREROUTING - [0:0]
:quantum-l3-agent-float-snat - [0:0]
:quantum-l3-agent-snat - [0:0]
:quantum-postrouting-bottom - [0:0]
-A PREROUTING -j quantum-l3-agent-PREROUTING
-A OUTPUT -j quantum-l3-agent-OUTPUT
-A POSTROUTING -j quantum-l3-agent-POSTROUTING
-A POSTROUTING -j quantum-postrouting-bottom
-A quantum-l3-agent-OUTPUT -d $fip/32 -j DNAT --to-destination $vm
-A quantum-l3-agent-POSTROUTING ! -i $qg ! -o $qg -m conntrack ! --ctstate DNAT -j ACCEPT
-A quantum-l3-agent-POSTROUTING -s 10.0.0.0/24 -d 192.168.1.1/32 -j ACCEPT
-A quantum-l3-agent-PREROUTING -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.168.1.1:8775
-A quantum-l3-agent-PREROUTING -d $fip/32 -j DNAT --to-destination $vm
-A quantum-l3-agent-float-snat -s $vm/32 -j SNAT --to-source $fip
-A quantum-l3-agent-snat -j quantum-l3-agent-float-snat
-A quantum-l3-agent-snat -s 10.0.0.0/24 -j SNAT --to-source $router_ext
-A quantum-postrouting-bottom -j quantum-l3-agent-snat
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:quantum-filter-top - [0:0]
:quantum-l3-agent-FORWARD - [0:0]
:quantum-l3-agent-INPUT - [0:0]
:quantum-l3-agent-OUTPUT - [0:0]
:quantum-l3-agent-local - [0:0]
-A INPUT -j quantum-l3-agent-INPUT
-A FORWARD -j quantum-filter-top
-A FORWARD -j quantum-l3-agent-FORWARD
-A OUTPUT -j quantum-filter-top
-A OUTPUT -j quantum-l3-agent-OUTPUT
-A quantum-filter-top -j quantum-l3-agent-local
-A quantum-l3-agent-INPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 9697 -j ACCEPT
COMMIT
"""


def _build_openstack(lab: Lab) -> dict[str, str]:
    vm, router, ext = lab.host("vm"), lab.host("router", FORWARDING), lab.host("ext")
    v_if, tap = lab.veth(vm, "v0", router, "tap")
    x_if, brx = lab.veth(ext, "x0", router, "brx")  # the router's external device (br-ex)
    qg = lab.spare_device(router, "qg")  # the device the l3 agent's rule names
    lab.addr(vm, v_if, "10.0.0.4/24")
    lab.addr(router, tap, "10.0.0.1/24")
    lab.addr(router, brx, "192.168.0.15/24", "192.168.0.16/32")
    lab.addr(ext, x_if, "192.168.0.19/24")  # no route back to 10.0.0.0/24: only SNATed replies work
    lab.route(vm, "default", "10.0.0.1")
    return {"vm": "10.0.0.4", "fip": "192.168.0.16", "router_ext": "192.168.0.15", "ext": "192.168.0.19",
            "qg": qg, "tap": tap, "brx": brx}


OPENSTACK_ROUTER = Scenario(
    name="openstack-router",
    title="OpenStack router: POSTROUTING ACCEPT skips SNAT; floating-IP DNAT works",
    description=(
        "A Neutron (quantum) l3-agent router namespace with a floating IP. The VM's traffic to the "
        "outside leaves by br-ex, not the qg- device the rule names, so nat quantum-l3-agent-POSTROUTING "
        "rule 1 (! -i qg ! -o qg, ! --ctstate DNAT, ACCEPT) ends nat POSTROUTING and the SNAT in "
        "quantum-postrouting-bottom never runs: the packet leaves with the private source address and "
        "no reply comes back. Traffic to the floating IP is DNATed to the VM and works (seed 002)."
    ),
    traced="router",
    build=_build_openstack,
    rules_v4=_OPENSTACK_RULES,
    listeners={"ext": ([80], []), "vm": ([22], [])},
    flows=[
        Flow("vm-ping", "VM ICMP echo to an outside host: forwarded without SNAT", "icmp", "vm", "$ext",
             None, "forward", "ext"),
        Flow("vm-tcp", "VM TCP to outside host:80: SYN forwarded without SNAT, SYN-ACK never returns",
             "tcp", "vm", "$ext", 80, "forward", "ext"),
        Flow("fip-ssh", "outside host TCP to floating IP:22, DNAT to the VM", "tcp", "ext", "$fip", 22,
             "forward", "vm"),
    ],
)


# --- (d) filter-basics ------------------------------------------------------------------------------

_FILTER_RULES = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -s $client/32 -j TRACE
-A OUTPUT -d $client/32 -j TRACE
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:ALLOWED - [0:0]
:LOGDROP - [0:0]
:SERVICES - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -m conntrack --ctstate INVALID -j DROP
-A INPUT -j SERVICES
-A INPUT -p tcp -m tcp --dport 25 -j LOGDROP
-A INPUT -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset
-A INPUT -p udp -m udp --dport 54 -j REJECT --reject-with icmp-port-unreachable
-A ALLOWED -j ACCEPT
-A LOGDROP -j LOG --log-prefix "rtl-drop: " --log-level 4
-A LOGDROP -j DROP
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -p tcp -m multiport --dports 9000,9001 -j ALLOWED
-A SERVICES -s 10.10.0.0/24 -p tcp -m multiport --dports 22,80,8080 -j ALLOWED
-A SERVICES -p udp -m udp --dport 53 -j ALLOWED
-A SERVICES -p icmp -m icmp --icmp-type 8 -j ALLOWED
-A SERVICES -p tcp -m tcp --dport 25 -j RETURN
COMMIT
"""


def _client_server(client_addr: str, server_addr: str, prefix: int) -> Callable[[Lab], dict[str, str]]:
    """A lab builder: a client and a server on one veth pair, with these addresses."""

    def build(lab: Lab) -> dict[str, str]:
        client, server = lab.host("client"), lab.host("server")
        c_if, s_if = lab.veth(client, "c0", server, "s0")
        lab.addr(client, c_if, f"{client_addr}/{prefix}")
        lab.addr(server, s_if, f"{server_addr}/{prefix}")
        return {"client": client_addr, "server": server_addr}

    return build


_build_filter = _client_server("10.10.0.2", "10.10.0.1", 24)


def _tcp(name: str, port: int, what: str) -> Flow:
    return Flow(name, f"client TCP to server:{port} ({what})", "tcp", "client", "$server", port, "local",
                "server")


FILTER_BASICS = Scenario(
    name="filter-basics",
    title="Plain filter chains: policy DROP, user chains, RETURN, REJECT, LOG, multiport, conntrack",
    description=(
        "A server with INPUT policy DROP: a SERVICES user chain (multiport, explicit RETURN) jumps to "
        "ALLOWED; LOGDROP logs and drops; REJECT with tcp-reset and icmp-port-unreachable; replies to "
        "the server's own connection come back as ESTABLISHED."
    ),
    traced="server",
    build=_build_filter,
    rules_v4=_FILTER_RULES,
    listeners={"server": ([22], [53]), "client": ([9000], [])},
    flows=[
        Flow("ping", "client ICMP echo to server", "icmp", "client", "$server", None, "local", "server"),
        _tcp("tcp-22", 22, "listening, allowed by multiport"),
        _tcp("tcp-8080", 8080, "allowed, closed port: RST from the stack"),
        _tcp("tcp-23", 23, "REJECT tcp-reset"),
        _tcp("tcp-25", 25, "RETURN from SERVICES, then LOG and DROP"),
        _tcp("tcp-3306", 3306, "no rule: policy DROP"),
        Flow("udp-53", "client UDP to server:53 (listening, echoed back)", "udp", "client", "$server", 53,
             "local", "server"),
        Flow("udp-54", "client UDP to server:54 (REJECT icmp-port-unreachable)", "udp", "client",
             "$server", 54, "local", "server"),
        Flow("out-9000", "server TCP to client:9000 (locally generated; replies ESTABLISHED)", "tcp",
             "server", "$client", 9000, "output", "client"),
    ],
)


# --- (e) ipv6 -----------------------------------------------------------------------------------------

_V6_RULES = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -s $client/128 -p tcp -j TRACE
-A PREROUTING -s $client/128 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j TRACE
-A OUTPUT -d $client/128 -p tcp -j TRACE
-A OUTPUT -d $client/128 -p ipv6-icmp -m icmp6 --icmpv6-type 129 -j TRACE
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:ICMP6 - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p ipv6-icmp -j ICMP6
-A INPUT -p tcp -m multiport --dports 22,80 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset
-A ICMP6 -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT
-A ICMP6 -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT
-A ICMP6 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT
COMMIT
"""


_build_v6 = _client_server("fd00:10::2", "fd00:10::1", 64)


IPV6 = Scenario(
    name="ipv6",
    title="ip6tables: ICMPv6 echo and TCP against INPUT policy DROP",
    description=(
        "A server with ip6tables INPUT policy DROP: an ICMP6 user chain accepts neighbour discovery and "
        "echo requests, multiport accepts TCP 22, REJECT tcp-reset answers 23, anything else is dropped "
        "by the policy."
    ),
    traced="server",
    build=_build_v6,
    rules_v6=_V6_RULES,
    listeners={"server": ([22], [])},
    flows=[
        Flow("ping6", "client ICMPv6 echo to server", "icmp", "client", "$server", None, "local", "server"),
        _tcp("tcp6-22", 22, "listening, allowed by multiport"),
        _tcp("tcp6-23", 23, "REJECT tcp-reset"),
        _tcp("tcp6-25", 25, "no rule: policy DROP"),
    ],
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (K8S_NODEPORT, DOCKER_PORTMAP, OPENSTACK_ROUTER, FILTER_BASICS, IPV6)
}


def get(name: str) -> Scenario:
    """The scenario called ``name``."""
    from ..errors import RuletraceError

    try:
        return SCENARIOS[name]
    except KeyError:
        raise RuletraceError(f"unknown lab scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
