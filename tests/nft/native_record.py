"""The tests' own native layouts (tests/fixtures/nft_native: zones, router, layered) as lab scenarios,
and the recorder for every native scenario's fixture.

Run as root: ``PYTHONPATH=src python3 -m tests.nft.native_record [SCENARIO ...]`` writes
tests/fixtures/nft_captures/<scenario>/ with ``ruletrace.lab.record_nft.record`` (lab namespaces
only; the root namespace is never touched). The lab's own scenarios (``ruletrace.lab.scenarios_nft``:
kube-nft, hooks, maps, inet6) are recorded the same way. The kernel test
(tests/kernel/test_nft_native_lab.py) records afresh into a temporary directory and compares.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ruletrace.lab import scenarios_nft
from ruletrace.lab.netns import Host, Lab
from ruletrace.lab.record_nft import record as lab_record
from ruletrace.lab.scenarios_nft import NftFlow, NftScenario, rename, trace_table

HERE = Path(__file__).resolve().parents[1] / "fixtures"
NATIVE = HERE / "nft_native"
OUT = HERE / "nft_captures"
CLIENT4, CLIENT6 = "10.77.0.1", "fd77::1"


def _pair(lab: Lab) -> dict[str, Host]:
    client, server = lab.host("client"), lab.host("server")
    c_if, s_if = lab.veth(client, "c0", server, "s0")
    rename(server.ns, s_if, "eth0")
    lab.addr(client, c_if, "10.77.0.1/24", "fd77::1/64")
    lab.addr(server, "eth0", "10.77.0.2/24", "fd77::2/64")
    return {"traced": server, "client": client}


def _router(lab: Lab) -> dict[str, Host]:
    client = lab.host("client")
    rtr = lab.host("rtr", {"net.ipv4.ip_forward": "1"})
    server = lab.host("server")
    c_if, r_wan = lab.veth(client, "c0", rtr, "rw")
    r_lan, s_if = lab.veth(rtr, "rl", server, "s0")
    rename(rtr.ns, r_wan, "wan")
    rename(rtr.ns, r_lan, "br-lan")
    lab.addr(client, c_if, "10.77.0.1/24")
    lab.addr(rtr, "wan", "10.77.0.2/24")
    lab.addr(rtr, "br-lan", "192.168.1.1/24")
    lab.addr(server, s_if, "192.168.1.10/24")
    lab.route(client, "192.168.1.0/24", "10.77.0.2")
    lab.route(server, "default", "192.168.1.1")
    return {"traced": rtr, "client": client, "server": server}


def _file(name: str):
    return lambda: (NATIVE / name).read_text()


_PAIR_TRACE = trace_table("inet", "prerouting", [f"ip saddr {CLIENT4}", f"ip6 saddr {CLIENT6}"])

SCENARIOS: dict[str, NftScenario] = {
    "zones": NftScenario(
        "zones", "firewalld-style zones", _file("zones.nft"), _pair, _PAIR_TRACE,
        [NftFlow("ssh4", "tcp", "client", "10.77.0.2", 22, 41022, "local"),
         NftFlow("web4", "tcp", "client", "10.77.0.2", 80, 41080, "local"),
         NftFlow("ping4", "ping", "client", "10.77.0.2", 4101, None, "local"),
         NftFlow("ssh6", "tcp", "client", "fd77::2", 22, 41622, "local"),
         NftFlow("web6", "tcp", "client", "fd77::2", 80, 41680, "local")],
        {"traced": ([22], [])}),
    "router": NftScenario(
        "router", "OpenWrt-fw4-style router", _file("router.nft"), _router,
        trace_table("inet", "prerouting", [f"ip saddr {CLIENT4}", "ip saddr 192.168.1.10"]),
        [NftFlow("fwd-web", "tcp", "client", "192.168.1.10", 80, 42080, "forward",
                 "wan -> lan, not dnat'ed: handle_reject"),
         NftFlow("dnat-web", "tcp", "client", "10.77.0.2", 8080, 42081, "forward",
                 "port forward: dnat to 192.168.1.10:80"),
         NftFlow("ping-router", "ping", "client", "10.77.0.2", 4201, None, "local", "input_wan Allow-Ping"),
         NftFlow("ssh-router", "tcp", "client", "10.77.0.2", 22, 42022, "local", "reject_from_wan drops"),
         NftFlow("lan-out", "tcp", "server", "10.77.0.1", 9000, 42900, "forward",
                 "lan -> wan: forward_lan, accept_to_wan, masquerade on wan")],
        {"server": ([80], []), "client": ([9000], [])}),
    "layered": NftScenario(
        "layered", "several tables of several families", _file("layered.nft"), _pair, _PAIR_TRACE,
        [NftFlow("ssh4", "tcp", "client", "10.77.0.2", 22, 43022, "local"),
         NftFlow("web4", "tcp", "client", "10.77.0.2", 81, 43081, "local"),
         NftFlow("ping4", "ping", "client", "10.77.0.2", 4301, None, "local"),
         NftFlow("ssh6", "tcp", "client", "fd77::2", 22, 43622, "local")],
        {"traced": ([22], [])}),
    **scenarios_nft.SCENARIOS,
}


def record(name: str, out: Path) -> dict:
    """Record one scenario into ``out`` (namespaces named with this helper's prefix rtnb)."""
    return lab_record(SCENARIOS[name], out, prefix=f"rtnb{os.getpid() % 1000}")


if __name__ == "__main__":
    for s in sys.argv[1:] or list(SCENARIOS):
        print(s, json.dumps(record(s, OUT / s)["flows"]))
