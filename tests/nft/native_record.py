"""Record native nftables layouts against the kernel: `nft monitor trace` (plain and -a), every ruleset form,
and what really happened to each flow.

Run as root: ``PYTHONPATH=src python3 -m tests.nft.native_record [SCENARIO ...]`` writes
tests/fixtures/nft_captures/<scenario>/. The kernel test (tests/kernel/test_nft_native_lab.py)
records afresh into a temporary directory and compares. Everything runs in lab namespaces
(``ruletrace.lab.netns``); the root namespace is never touched.

Tracing is a table of our own (``table inet rttrace``, base chains at priority -350 setting
``meta nftrace set 1`` for the test flows only); it is part of the listing, as it is on a host.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ruletrace.lab.netns import Lab, run

HERE = Path(__file__).resolve().parents[1] / "fixtures"
NATIVE = HERE / "nft_native"
OUT = HERE / "nft_captures"
AGENT = Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "lab" / "agent.py"

CLIENT4, CLIENT6 = "10.77.0.1", "fd77::1"


def _trace_table(hooks: tuple[str, ...], match4: str, match6: str | None) -> str:
    chains = []
    for hook in hooks:
        rules = [f"\t\t{match4} meta nftrace set 1"] + ([f"\t\t{match6} meta nftrace set 1"] if match6 else [])
        chains.append(f"\tchain trace_{hook} {{\n\t\ttype filter hook {hook} priority -350; policy accept;\n"
                      + "\n".join(rules) + "\n\t}")
    return "table inet rttrace {\n" + "\n".join(chains) + "\n}\n"


def _rename(lab: Lab, ns: str, old: str, new: str) -> None:
    run(["ip", "link", "set", old, "down"], ns=ns)
    run(["ip", "link", "set", old, "name", new], ns=ns)
    run(["ip", "link", "set", new, "up"], ns=ns)


# scenario -> flows: (name, sender host, kind, dst, port/ident, sport)
SCENARIOS: dict[str, dict] = {
    "zones": {
        "ruleset": "zones.nft",
        "flows": [
            ("ssh4", "tcp", "10.77.0.2", 22, 41022),
            ("web4", "tcp", "10.77.0.2", 80, 41080),
            ("ping4", "ping", "10.77.0.2", 4101, None),
            ("ssh6", "tcp", "fd77::2", 22, 41622),
            ("web6", "tcp", "fd77::2", 80, 41680),
        ],
        "listen": [22],
    },
    "router": {
        "ruleset": "router.nft",
        "flows": [
            ("fwd-web", "tcp", "192.168.1.10", 80, 42080),  # wan -> lan: not dnat'ed: handle_reject
            ("dnat-web", "tcp", "10.77.0.2", 8080, 42081),  # dnat to 192.168.1.10:80, forwarded
            ("ping-router", "ping", "10.77.0.2", 4201, None),  # input_wan Allow-Ping
            ("ssh-router", "tcp", "10.77.0.2", 22, 42022),  # reject_from_wan: dropped
        ],
        "listen": [80],
    },
    "layered": {
        "ruleset": "layered.nft",
        "flows": [
            ("ssh4", "tcp", "10.77.0.2", 22, 43022),  # inet same accepts, then ip late, ip same
            ("web4", "tcp", "10.77.0.2", 81, 43081),
            ("ping4", "ping", "10.77.0.2", 4301, None),
            ("ssh6", "tcp", "fd77::2", 22, 43622),
        ],
        "listen": [22],
    },
}


def record(scenario: str, out: Path) -> dict:
    """Build the hosts, load the layout plus the tracing table, send the flows, write the captures."""
    sc = SCENARIOS[scenario]
    out.mkdir(parents=True, exist_ok=True)
    with Lab() as lab:
        client = lab.host("client")
        if scenario == "router":
            rtr = lab.host("rtr", {"net.ipv4.ip_forward": "1"})
            server = lab.host("server")
            c_if, r_wan = lab.veth(client, "c0", rtr, "rw")
            r_lan, s_if = lab.veth(rtr, "rl", server, "s0")
            _rename(lab, rtr.ns, r_wan, "wan")
            _rename(lab, rtr.ns, r_lan, "br-lan")
            lab.addr(client, c_if, "10.77.0.1/24")
            lab.addr(rtr, "wan", "10.77.0.2/24")
            lab.addr(rtr, "br-lan", "192.168.1.1/24")
            lab.addr(server, s_if, "192.168.1.10/24")
            run(["ip", "route", "add", "192.168.1.0/24", "via", "10.77.0.2"], ns=client.ns)
            run(["ip", "route", "add", "default", "via", "192.168.1.1"], ns=server.ns)
            target, listener = rtr, server
            trace = _trace_table(("prerouting",), f"ip saddr {CLIENT4}", None)
        else:
            server = lab.host("server")
            c_if, s_if = lab.veth(client, "c0", server, "s0")
            _rename(lab, server.ns, s_if, "eth0")
            lab.addr(client, c_if, "10.77.0.1/24", "fd77::1/64")
            lab.addr(server, "eth0", "10.77.0.2/24", "fd77::2/64")
            target, listener = server, server
            trace = _trace_table(("prerouting",), f"ip saddr {CLIENT4}", f"ip6 saddr {CLIENT6}")
        run(["nft", "-f", str(NATIVE / sc["ruleset"])], ns=target.ns)
        run(["nft", "-f", "-"], ns=target.ns, input=trace)
        log = lab.state / "listen.log"
        lab.spawn(listener, ["python3", str(AGENT), "listen", str(log), "--tcp", *map(str, sc["listen"])])
        mons = []
        for argv, name in ((["nft", "monitor", "trace"], "nft-monitor.txt"),
                           (["nft", "-a", "monitor", "trace"], "nft-monitor-a.txt")):
            f = open(out / name, "w")
            mons.append((lab.spawn(target, ["stdbuf", "-oL", *argv], stdout=f), f))
        time.sleep(0.6)
        flows = []
        for name, kind, dst, port, sport in sc["flows"]:
            argv = ["python3", str(AGENT), kind, dst]
            argv += [str(port), "--sport", str(sport)] if kind == "tcp" else ["--ident", str(port)]
            res = json.loads(run(argv, ns=client.ns).stdout)
            flows.append({"name": name, "kind": kind, "dst": dst, "port": port, "sport": sport,
                          "result": res["result"]})
            time.sleep(0.1)
        time.sleep(0.4)
        for p, f in mons:
            lab.stop(p)
            f.close()
        accepted = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        for fl in flows:
            fl["arrived"] = any(a.get("ev") == "accept" and a.get("peer_port") == fl["sport"] for a in accepted)
        for argv, name in ((["nft", "list", "ruleset"], "ruleset.nft"),
                           (["nft", "-a", "list", "ruleset"], "ruleset-a.nft"),
                           (["nft", "-j", "list", "ruleset"], "ruleset.json")):
            (out / name).write_text(run(argv, ns=target.ns).stdout)
    outcome = {"scenario": scenario, "host": "router" if scenario == "router" else "server",
               "flows": flows}
    (out / "outcome.json").write_text(json.dumps(outcome, indent=1) + "\n")
    return outcome


if __name__ == "__main__":
    for s in sys.argv[1:] or list(SCENARIOS):
        print(s, json.dumps(record(s, OUT / s)["flows"]))
