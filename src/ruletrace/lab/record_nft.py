"""Record a native nftables scenario (scenarios_nft.py) against the kernel.

Writes into the output folder: ``nft-monitor.txt`` (``nft monitor trace``),
``nft-monitor-a.txt`` (``nft -a monitor trace``) and ``xtables-monitor.txt``
(``xtables-monitor --trace``), all running during the same traffic; the
ruleset after the run in every form (``ruleset.nft`` = ``nft list ruleset``, ``ruleset-a.nft`` =
``nft -a list ruleset``, ``ruleset.json`` = ``nft -j list ruleset``, and ``iptables-nft-save.txt``
when the scenario loads iptables-nft rules too); the traced host's addresses and routes (``addrs.json`` = ``ip -j addr``, ``routes.json`` = ``ip -j -4 route`` and ``ip -j -6 route`` in one list); and
what each flow's sender saw plus whether the receiver accepted it (``outcome.json``).
Everything happens in the run's namespaces (``Lab``); they are gone when ``record`` returns.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .netns import Host, Lab, run
from .scenarios_nft import NftScenario

AGENT = Path(__file__).resolve().parent / "agent.py"
MONITORS = ((["nft", "monitor", "trace"], "nft-monitor.txt"), (["nft", "-a", "monitor", "trace"], "nft-monitor-a.txt"),
            (["xtables-monitor", "--trace"], "xtables-monitor.txt"))
LISTINGS = ((["nft", "list", "ruleset"], "ruleset.nft"), (["nft", "-a", "list", "ruleset"], "ruleset-a.nft"),
            (["nft", "-j", "list", "ruleset"], "ruleset.json"))


def record(sc: NftScenario, out: Path, *, prefix: str | None = None,
           session: Callable[[Host], AbstractContextManager[Any]] | None = None) -> dict[str, Any]:
    """Build the topology, load the layout and the tracing table, send the flows, write the captures.

    ``session(traced host)``: a context that switches tracing on instead of the scenario's tracing
    table (a live ``ruletrace trace`` session); it is entered before the monitors start and left
    after they stopped, while the namespaces still exist."""
    out.mkdir(parents=True, exist_ok=True)
    lab = Lab(prefix=prefix) if prefix else Lab()
    with lab:
        hosts = sc.build(lab)
        target = hosts["traced"]
        run(["nft", "-f", "-"], ns=target.ns, input=sc.layout())
        if sc.iptables is not None:
            run(["iptables-nft-restore"], ns=target.ns, input=sc.iptables())
        if session is None:
            run(["nft", "-f", "-"], ns=target.ns, input=sc.trace)
        with session(target) if session is not None else contextlib.nullcontext():
            flows = _run_flows(sc, lab, hosts, out)
        for argv, name in LISTINGS:
            (out / name).write_text(run(argv, ns=target.ns).stdout)
        if sc.iptables is not None:
            (out / "iptables-nft-save.txt").write_text(run(["iptables-nft-save"], ns=target.ns).stdout)
        (out / "addrs.json").write_text(run(["ip", "-j", "addr"], ns=target.ns).stdout)
        routes = [r for v in ("-4", "-6") for r in json.loads(run(["ip", "-j", v, "route"], ns=target.ns).stdout)]
        (out / "routes.json").write_text(json.dumps(routes) + "\n")
    outcome = {"scenario": sc.name, "flows": flows}
    (out / "outcome.json").write_text(json.dumps(outcome, indent=1) + "\n")
    return outcome


def _run_flows(sc: NftScenario, lab: Lab, hosts: dict[str, Host], out: Path) -> list[dict[str, Any]]:
    """Listeners and monitors up, the flows sent one at a time, the monitors stopped; what each flow saw."""
    target = hosts["traced"]
    logs = {}
    for role, (tcp, udp) in sc.listen.items():
        logs[role] = lab.state / f"listen-{role}.log"
        argv = ["python3", str(AGENT), "listen", str(logs[role])]
        argv += ["--tcp", *map(str, tcp)] if tcp else []
        argv += ["--udp", *map(str, udp)] if udp else []
        lab.spawn(hosts[role], argv)
    mons = []
    for argv, name in MONITORS:
        f = open(out / name, "w")
        mons.append((lab.spawn(target, ["stdbuf", "-oL", *argv], stdout=f), f))
    time.sleep(0.6)
    flows = []
    for fl in sc.flows:
        argv = ["python3", str(AGENT), fl.kind, fl.dst]
        if fl.kind == "ping":
            argv += ["--ident", str(fl.port)]
        else:
            argv += [str(fl.port), "--sport", str(fl.sport), "--timeout", "0.8"]
        res = json.loads(run(argv, ns=hosts[fl.src].ns).stdout)
        flows.append({"name": fl.name, "kind": fl.kind, "src": fl.src, "dst": fl.dst, "port": fl.port,
                      "sport": fl.sport, "via": fl.via, "result": res["result"]})
        time.sleep(0.1)
    time.sleep(0.4)
    for p, f in mons:
        lab.stop(p)
        f.close()
    seen = [json.loads(x) for log in logs.values() if log.exists() for x in log.read_text().splitlines()]
    for flow in flows:
        flow["arrived"] = any(a.get("ev") in ("accept", "recv") and a.get("peer_port") == flow["sport"]
                              for a in seen) if flow["sport"] else False
    return flows
