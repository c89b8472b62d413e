"""Record one scenario against the real kernel: rulesets, every capture format, observed outcome.

Legacy backend: one topology, three traffic passes (kernel log, NFLOG pcap, ulogd2 JSON: NFLOG
group 0 takes one listener at a time). nft backend: a fresh topology (legacy and nf_tables tables
in one namespace would both trace the same packet), one pass with both nf_tables monitors.
Conntrack is flushed and source ports change between passes so every pass starts NEW connections.
"""

from __future__ import annotations

import json
import platform
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RuletraceError
from . import capture
from .netns import Host, Lab, run, sweep
from .scenarios import Flow, Scenario

AGENT = Path(__file__).with_name("agent.py")
BACKENDS = ("legacy", "nft")
LEGACY_PASSES = ("kernel-log", "nflog", "ulogd")
NFT_PASSES = ("nft-trace",)
# which capture file each pass writes, relative to the output folder
PASS_FILES = {
    "kernel-log": ["kernel.log"],
    "nflog": ["nflog.pcap"],
    "ulogd": ["ulogd.json"],
    "nft-trace": ["xtables-monitor.txt", "nft-monitor.txt"],
}
RESTORE = {
    ("legacy", "ipv4"): "iptables-legacy-restore", ("legacy", "ipv6"): "ip6tables-legacy-restore",
    ("nft", "ipv4"): "iptables-nft-restore", ("nft", "ipv6"): "ip6tables-nft-restore",
}
SAVE = {k: v.replace("-restore", "-save") for k, v in RESTORE.items()}
REQUIRED_TOOLS = ("ip", "iptables-legacy-restore", "iptables-nft-restore", "ip6tables-legacy-restore",
                  "ip6tables-nft-restore", "tcpdump", "xtables-monitor", "nft", "ulogd", "conntrack",
                  "sysctl", "stdbuf")
SETTLE = 0.05  # seconds after a flow before counters are read: late FIN/ACKs are in by then


def missing_tools() -> list[str]:
    """Tools the lab needs that are not on PATH."""
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


@dataclass
class Recording:
    """What one ``record`` run produced (also written as outcome.json)."""

    scenario: str
    out: Path
    flows: list[dict[str, Any]] = field(default_factory=list)
    captures: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    prefixes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"schema": 1, "scenario": self.scenario, "prefixes": self.prefixes, "flows": self.flows,
                "captures": self.captures, "missing": self.missing}


def _snmp(h: Host) -> dict[str, int]:
    """The namespace's IP/ICMP/TCP/UDP MIB counters (``/proc/net/snmp`` and ``snmp6``)."""
    text = run(["cat", "/proc/net/snmp", "/proc/net/snmp6"], ns=h.ns).stdout
    out: dict[str, int] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if ":" in line and i + 1 < len(lines) and lines[i + 1].split(":")[0] == line.split(":")[0]:
            names, values = line.split()[1:], lines[i + 1].split()[1:]
            if names and not names[0].lstrip("-").isdigit():
                out.update({f"{line.split(':')[0]}{n}": int(v) for n, v in zip(names, values)})
        elif ":" not in line and len(line.split()) == 2:
            k, v = line.split()
            out[k] = int(v)
    return out


def _arrival_counters(flow: Flow, dst: str) -> tuple[str, ...]:
    """Counters that grow when the flow's packets reach the receiver's transport layer."""
    v6 = ":" in dst
    if flow.proto == "tcp":
        return ("TcpInSegs",)  # TCP MIB is shared by both families
    if flow.proto == "udp":
        return ("Udp6InDatagrams", "Udp6NoPorts") if v6 else ("UdpInDatagrams", "UdpNoPorts")
    return ("Icmp6InEchos",) if v6 else ("IcmpInEchos",)


def _send(h: Host, flow: Flow, dst: str, sport: int, ident: int) -> str:
    if flow.proto == "icmp":
        argv = ["ping", dst, "--ident", str(ident)]
    else:
        argv = [flow.proto, dst, str(flow.port), "--sport", str(sport)]
    p = run([sys.executable, str(AGENT), *argv, "--timeout", str(flow.timeout)], ns=h.ns,
            timeout=flow.timeout + 10)
    return str(json.loads(p.stdout)["result"])


def _new_lines(path: Path, seen: dict[Path, int]) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    start = seen.get(path, 0)
    seen[path] = len(text)
    return [json.loads(x) for x in text[start:].splitlines() if x.strip()]


class _Run:
    """One topology with its ruleset loaded for one backend."""

    def __init__(self, lab: Lab, sc: Scenario, backend: str, log: Callable[[str], None]) -> None:
        self.lab, self.sc, self.backend, self.log = lab, sc, backend, log
        self.values = sc.build(lab)
        self.traced = lab.hosts[sc.traced]
        self.families = [f for f in ("ipv4", "ipv6") if sc.ruleset(f, self.values) is not None]
        for fam in self.families:
            run([RESTORE[backend, fam]], ns=self.traced.ns, input=sc.ruleset(fam, self.values))
        self.problems: dict[str, str] = {}  # capture file -> why it is incomplete
        self.listen_logs: dict[str, Path] = {}
        self.seen: dict[Path, int] = {}
        for role, (tcp, udp) in sc.listeners.items():
            path = lab.state / f"listen-{role}-{backend}.jsonl"
            self.listen_logs[role] = path
            argv = [sys.executable, str(AGENT), "listen", str(path)]
            lab.spawn(lab.hosts[role], argv + ["--tcp", *map(str, tcp), "--udp", *map(str, udp)])
            if not capture._wait_for(path, '"ready"'):
                raise RuletraceError(f"lab: listener in {role} did not start")
            self.seen[path] = path.stat().st_size

    def flush_conntrack(self) -> None:
        for h in self.lab.hosts.values():
            run(["conntrack", "-F"], ns=h.ns, check=False)

    def traffic(self, pass_no: int) -> list[dict[str, Any]]:
        """Send every flow once; observe whether its first packet arrived."""
        results = []
        for i, flow in enumerate(self.sc.flows):
            sport = 40000 + 100 * pass_no + i
            ident = 1000 + 100 * pass_no + i
            receiver = self.lab.hosts[flow.receiver]
            dst = self.sc.flow_dst(flow, self.values)
            counters = _arrival_counters(flow, dst)
            before = _snmp(receiver)
            result = _send(self.lab.hosts[flow.src], flow, dst, sport, ident)
            time.sleep(SETTLE)
            after = _snmp(receiver)
            delta = sum(after.get(c, 0) - before.get(c, 0) for c in counters)
            heard = []
            if flow.receiver in self.listen_logs:
                # by source port: DNAT may change the port the listener sees, MASQUERADE keeps ours
                heard = [e for e in _new_lines(self.listen_logs[flow.receiver], self.seen)
                         if e.get("peer_port") == sport]
            results.append({"sport": sport if flow.proto != "icmp" else None,
                            "icmp_id": ident if flow.proto == "icmp" else None,
                            "result": result, "arrived": delta > 0 or bool(heard),
                            "counter": "+".join(counters), "delta": delta,
                            "peer_seen": heard[0]["peer"] if heard else None})
        return results

    def save_rulesets(self, out: Path) -> None:
        for fam in self.families:
            six = "6" if fam == "ipv6" else ""
            text = run([SAVE[self.backend, fam]], ns=self.traced.ns).stdout
            name = f"ruleset{six}.rules" if self.backend == "legacy" else f"ruleset{six}-nft.rules"
            (out / name).write_text(text)
        if self.backend == "nft":
            (out / "ruleset-nft.json").write_text(run(["nft", "-j", "list", "ruleset"], ns=self.traced.ns).stdout)


def _count_events(path: Path) -> int:
    if path.suffix == ".pcap":
        return _pcap_records(path)
    text = path.read_text(errors="replace") if path.exists() else ""
    if path.name == "nft-monitor.txt":
        return sum(1 for x in text.splitlines() if x.startswith("trace id") and " packet: " not in x)
    if path.name == "xtables-monitor.txt":
        return sum(1 for x in text.splitlines() if x.lstrip().startswith("TRACE:"))
    return sum(1 for x in text.splitlines() if "TRACE:" in x)


def _pcap_records(path: Path) -> int:
    """Number of records in a pcap file (24-byte file header, 16-byte record headers)."""
    data = path.read_bytes() if path.exists() else b""
    order = "<" if data[:4] == bytes.fromhex("d4c3b2a1") else ">"
    off, n = 24, 0
    while off + 16 <= len(data):
        (incl,) = struct.unpack_from(order + "I", data, off + 8)
        off += 16 + incl
        n += 1
    return n


def record(sc: Scenario, out: Path, backends: tuple[str, ...] = BACKENDS,
           log: Callable[[str], None] = lambda s: None) -> Recording:
    """Record a scenario into ``out`` for the given backends; the topology is always torn down."""
    if missing := missing_tools():
        raise RuletraceError(f"lab: missing tools: {', '.join(missing)}")
    for b in backends:
        if b not in BACKENDS:
            raise RuletraceError(f"lab: unknown backend {b!r} (legacy, nft)")
    out.mkdir(parents=True, exist_ok=True)
    sweep()
    capture.enable_all_netns_logging()
    rec = Recording(sc.name, out)
    per_flow: list[dict[str, Any]] = [
        {"name": f.name, "description": f.description, "proto": f.proto, "family": sc.family,
         "src": f.src, "receiver": f.receiver, "dport": f.port, "via": f.via, "passes": {}}
        for f in sc.flows
    ]
    pass_no = 0
    for backend in backends:
        with Lab() as lab:
            rec.prefixes[backend] = lab.prefix
            log(f"{sc.name}: {backend}: building topology {lab.prefix}")
            r = _Run(lab, sc, backend, log)
            names = lab.ifnames
            passes = LEGACY_PASSES if backend == "legacy" else NFT_PASSES
            for p in passes:
                r.flush_conntrack()
                log(f"{sc.name}: {backend}: pass {p}")
                results = _run_pass(r, p, pass_no, out, names)
                for pf, res in zip(per_flow, results):
                    pf["passes"][p] = res
                for f in PASS_FILES[p]:
                    rec.captures[f] = {"backend": backend, "pass": p, "prefix": lab.prefix,
                                       "events": _count_events(out / f)}
                pass_no += 1
            r.save_rulesets(out)
            rec.missing.update(r.problems)
    for pf in per_flow:
        arrived = {res["arrived"] for res in pf["passes"].values()}
        pf["arrived"] = arrived.pop() if len(arrived) == 1 else None  # None: passes disagreed
    rec.flows = per_flow
    if "legacy" in backends:
        rec.missing["kernel.log/nflog.pcap/ulogd.json (nft backend)"] = (
            "with iptables-nft, -j TRACE becomes meta nftrace set 1: the kernel reports nf_tables trace "
            "messages only, nothing goes through nf_log")
    if "nft" in backends:
        rec.missing["xtables-monitor.txt/nft-monitor.txt (legacy backend)"] = (
            "legacy xtables TRACE goes through nf_log only; nf_tables trace messages are not sent")
    (out / "outcome.json").write_text(json.dumps(rec.to_json(), indent=1) + "\n")
    (out / "README.md").write_text(_readme(sc, rec))
    return rec


def _run_pass(r: _Run, p: str, pass_no: int, out: Path, names: list[str]) -> list[dict[str, Any]]:
    lab, h = r.lab, r.traced
    if p == "kernel-log":
        kmsg = capture.Kmsg()
        try:
            results = r.traffic(pass_no)
            time.sleep(0.1)
            lines = kmsg.read(names)
        finally:
            kmsg.close()
        if kmsg.lost:
            r.problems["kernel.log"] = f"{kmsg.lost} burst(s) of kernel log records were overwritten before they were read"
        (out / "kernel.log").write_text("".join(x + "\n" for x in lines))
        return results
    if p == "nflog":
        with capture.nflog_binding(lab, h, r.families):
            with capture.tcpdump_nflog(lab, h, out / "nflog.pcap", lab.state / "tcpdump.err"):
                return r.traffic(pass_no)
    if p == "ulogd":
        (out / "ulogd.json").unlink(missing_ok=True)
        with capture.nflog_binding(lab, h, r.families):
            with capture.ulogd_json(lab, h, out / "ulogd.json", lab.state):
                return r.traffic(pass_no)
    with capture.nft_monitors(lab, h, out / "xtables-monitor.txt", out / "nft-monitor.txt", r.problems):
        return r.traffic(pass_no)


EXAMPLE_BUDGET = 200_000  # bytes per bundled example folder
# captures dropped first when an example is over budget (ulogd JSON is ~1.3 KB per event)
DROP_ORDER = ("ulogd.json", "xtables-monitor.txt", "nflog.pcap")


def write_example(sc: Scenario, out: Path, budget: int = EXAMPLE_BUDGET) -> dict[str, Any]:
    """Make a recording folder a bundled example: example.json, within the size budget."""
    omitted: dict[str, str] = {}

    def size() -> int:
        return sum(f.stat().st_size for f in out.iterdir() if f.is_file())

    for name in DROP_ORDER:
        if size() <= budget:
            break
        f = out / name
        if f.exists():
            omitted[name] = f"left out of the bundled example to keep it under {budget // 1000} KB " \
                            f"({f.stat().st_size} bytes); `ruletrace lab record {sc.name} DIR` makes it"
            f.unlink()
    six = "6" if sc.family == "ipv6" else ""
    captures = {n: fmt for n, fmt in (("kernel.log", "kernel-log"), ("nflog.pcap", "nflog-pcap"),
                                      ("ulogd.json", "ulogd-json"), ("nft-monitor.txt", "nft-monitor"),
                                      ("xtables-monitor.txt", "xtables-monitor")) if (out / n).exists()}
    meta = {"title": sc.title, "description": sc.description, "ruleset": f"ruleset{six}.rules",
            "log": "kernel.log", "captures": captures, "nft_ruleset": "ruleset-nft.json",
            "outcome": "outcome.json", "omitted": omitted}
    (out / "example.json").write_text(json.dumps(meta, indent=1) + "\n")
    if omitted:
        with open(out / "README.md", "a") as readme:
            readme.write("\n## Left out of the bundled example\n" + "".join(f"- {k}: {v}\n" for k, v in omitted.items()))
    return meta


def _version(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((p.stdout or p.stderr).strip().splitlines() or ["?"])[0]


def _readme(sc: Scenario, rec: Recording) -> str:
    rows = "\n".join(f"| {f} | {c['backend']} | {c['pass']} | {c['events']} |"
                     for f, c in rec.captures.items())
    flows = "\n".join(
        f"| {f['name']} | {f['description']} | {f['via']} | "
        f"{', '.join(sorted({r['result'] for r in f['passes'].values()}))} | "
        f"{ {True: 'yes', False: 'no', None: 'passes disagree'}[f['arrived']]} |"
        for f in rec.flows)
    missing = "\n".join(f"- {k}: {v}" for k, v in rec.missing.items()) or "- none"
    return f"""# {sc.name}: {sc.title}

{sc.description}

Recorded by `ruletrace lab record {sc.name} DIR` against the real kernel, in network namespaces
(run prefixes {', '.join(f'{b}={p}' for b, p in rec.prefixes.items())}). Regenerate with that command;
do not edit these files by hand.

## Flows (first packet of each; outcome.json has every pass)
| flow | what | path | socket result | arrived |
|---|---|---|---|---|
{flows}

## Captures
| file | backend | pass | TRACE events (pcap: records) |
|---|---|---|---|
{rows}

Rulesets: `ruleset*.rules` (iptables-legacy-save inside the namespace, TRACE rules included),
`ruleset*-nft.rules` and `ruleset-nft.json` (iptables-nft-save and `nft -j list ruleset`).
Each pass flushes conntrack and uses new source ports (outcome.json `sport`).

Not captured:
{missing}

## Versions
- kernel: {platform.release()}
- {_version(['iptables-legacy', '-V'])}; {_version(['iptables-nft', '-V'])}
- {_version(['nft', '-v'])}; {_version(['tcpdump', '--version'])}; ulogd {_version(['ulogd', '-V'])}
"""
