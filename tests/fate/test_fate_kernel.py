"""`ruletrace trace` names the kernel's own drop reason, against the real kernel (issue 15).

Each scenario (lab/scenarios_fate.py) makes the host's kernel drop a UDP datagram outside
netfilter; the trace runs with ``--netns`` in the host's namespace and must report the reason
name bpftrace saw, plus the routing decision. Nothing is changed in the root namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ruletrace.render.json import expand
from tests.helpers import BackgroundTrace

pytestmark = pytest.mark.kernel

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables, BPF)"
    missing = [t for t in ("ip", "iptables-nft", "nft", "bpftrace", "conntrack") if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    from ruletrace.live.dropmon import availability

    av = availability()
    return None if av.ok else f"drop reasons unavailable here: {av.why}"


if _skip_reason():
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=_skip_reason())]


def _bpftrace_pids(ns: str | None = None) -> set[str]:
    """bpftrace processes; with ``ns``, only those filtering on that namespace (the script names its
    inode): another test run's bpftrace on this machine must not count as ours."""
    pids = set(subprocess.run(["pgrep", "-x", "bpftrace"], capture_output=True, text=True).stdout.split())
    if ns is None:
        return pids
    inum = str(os.stat(f"/run/netns/{ns}").st_ino)
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if inum.encode() in f.read():
                    out.add(pid)
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def fl():
    from ruletrace.lab import scenarios_fate as sf
    from ruletrace.lab.netns import Lab

    with Lab() as lab:
        yield sf.build(lab)


class Trace(BackgroundTrace):
    """`ruletrace trace --netns HOST` in the background."""

    def __init__(self, ns: str, *args: str, env: dict | None = None, proto: str = "udp") -> None:
        super().__init__("--netns", ns, "--backend", "nft", "-4", "-p", proto, "--json", *args,
                         env=env or ENV, timeout=60)

    def finish(self, timeout: float = 30) -> tuple[int, list[dict], str]:
        rc, out, err = self.communicate(timeout)
        return rc, [json.loads(x) for x in out.splitlines()], err


@pytest.mark.parametrize("name", ["closed-udp", "forward-off", "no-route", "rp-filter", "ttl-expired",
                                  "tcp-closed", "policy-route", "ct-invalid"])
def test_drop_reason_named_live(fl, name):
    sc = fl.prepare(name)
    before = _bpftrace_pids(fl.host.ns)
    t = Trace(fl.host.ns, "-s", sc.src, "-d", sc.dst, "--count", "1", "--duration", "20", proto=sc.proto)
    assert "drop reasons on" in "".join(t.err)
    fl.send(sc)
    rc, pkts, err = t.finish()
    assert rc == 0, err
    (pkt,) = pkts
    assert pkt["src"] == sc.src and pkt["dst"] == sc.dst
    assert [d["reason"] for d in pkt.get("drops", [])] == [sc.reason], (pkt, err)
    d = pkt["drops"][0]
    if sc.function:
        assert d["function"] == sc.function
    assert d["fields"]["SRC"] == sc.src and d["fields"]["DPT"] == "9998"
    assert d["text"].endswith(sc.reason + (f" in {d['function']}" if d["function"] else ""))
    route = pkt["routing"][0]
    assert route["point"] == "input"
    if name == "closed-udp":
        assert "no socket listens on udp/9998" in d["text"]
        assert (route["type"], route["table"]) == ("local", "local"), route
    elif name == "forward-off":
        assert "forwarding is disabled on this host (net.ipv4.ip_forward=0)" in d["text"]
        assert route["sysctls"]["net.ipv4.ip_forward"] == "0"
    elif name == "no-route":
        assert route["error"] and route["type"] == "unreachable", route
    elif name == "rp-filter":
        assert route["sysctls"][f"net.ipv4.conf.{fl.h_if}.rp_filter"] == "1"
    elif name == "ttl-expired":
        assert "TTL 1 expired while forwarding" in d["text"]
        assert (route["type"], route["dev"], route["table"]) == ("unicast", fl.spare, "main"), route
    elif name == "tcp-closed":
        assert "no socket listens on tcp/9998" in d["text"] and "answered with a TCP RST" in d["text"]
        assert route["type"] == "local"
        first, end = pkt["conntrack"]  # the entry as conntrack made it; the RST removed it (never assured)
        assert (first["when"], first["state"], first["status"]) == ("first seen", "SYN_SENT", ["UNREPLIED"]), first
        assert first["reply"].startswith(f"src={sc.dst} dst={sc.src} sport=9998"), first
        assert (end["when"], end["state"]) == ("end", None) and "no entry" in end["text"], end
        assert pkt["fate"] == "delivered" and "every rule let it through, then the kernel dropped it (NO_SOCKET in " \
            "tcp_v4_rcv)" in pkt["notes"], pkt
    elif name == "policy-route":
        assert (route["mark"], route["mark_set"]) == ("0x1", "mangle:PREROUTING rule 1"), route
        assert (route["rule"], route["table"], route["type"]) == ("100: from all fwmark 0x1 lookup 100", "100",
                                                                  "unreachable"), route
        assert route["text"].startswith("after PREROUTING: mark 0x1 set in mangle:PREROUTING rule 1 → ip rule "
                                        "100: from all fwmark 0x1 lookup 100 → table 100 → unreachable"), route
    elif name == "ct-invalid":
        assert pkt["fate"] == "dropped" and pkt["verdict"]["chain"] == "INPUT", pkt
        assert ("conntrack state INVALID: a TCP packet without SYN (ACK) starts no connection when "
                "net.netfilter.nf_conntrack_tcp_loose=0") in " ".join(pkt["notes"]), pkt["notes"]
    if name in ("forward-off", "no-route", "rp-filter", "ttl-expired", "policy-route"):  # ends after PREROUTING
        assert (pkt["fate"], pkt["verdict"]) == ("dropped", None), pkt
        assert any(n.startswith("last seen in PREROUTING: the kernel dropped it") for n in pkt["notes"]), pkt
    assert _bpftrace_pids(fl.host.ns) <= before  # the child went with the trace


def test_bpftrace_dies_with_a_killed_ruletrace(fl):
    sc = fl.prepare("closed-udp")
    before = _bpftrace_pids(fl.host.ns)
    t = Trace(fl.host.ns, "-s", sc.src, "--duration", "60")
    assert _bpftrace_pids(fl.host.ns) - before, "bpftrace should run while tracing"
    t.p.send_signal(signal.SIGKILL)
    t.p.communicate(timeout=10)
    deadline = time.monotonic() + 5
    while _bpftrace_pids(fl.host.ns) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (_bpftrace_pids(fl.host.ns) - before)  # PR_SET_PDEATHSIG: no BPF program left attached
    subprocess.run([sys.executable, "-m", "ruletrace", "cleanup", "--netns", fl.host.ns], env=ENV,
                   capture_output=True, timeout=60)


def _path_without_bpftrace(tmp_path: Path) -> Path:
    """A folder of links to every program on PATH but bpftrace: the host as if it had none."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        for f in Path(d).glob("*") if Path(d).is_dir() else []:
            if f.name != "bpftrace" and not (bindir / f.name).exists():
                (bindir / f.name).symlink_to(f)
    return bindir


def test_without_bpftrace_tracing_goes_on(fl, tmp_path):
    """PATH without bpftrace: the trace says drop reasons are off and why, and still explains."""
    sc = fl.prepare("closed-udp")
    bindir = _path_without_bpftrace(tmp_path)
    env = {**ENV, "PATH": str(bindir)}
    t = Trace(fl.host.ns, "-s", sc.src, "--count", "1", "--duration", "20", env=env)
    assert "drop reasons off: bpftrace not found on PATH" in "".join(t.err)
    fl.send_udp(sc)
    rc, pkts, err = t.finish()
    assert rc == 0, err
    (pkt,) = pkts
    assert "drops" not in pkt and pkt["routing"][0]["type"] == "local"
    p = subprocess.run([sys.executable, "-m", "ruletrace", "doctor", "--no-color"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert "drop reasons" in p.stdout and "apt-get install bpftrace" in p.stdout, p.stdout


@pytest.mark.parametrize("name", ["forward-off", "no-route", "rp-filter", "ttl-expired", "policy-route",
                                  "ct-invalid"])
def test_simulate_netns_agrees_with_the_kernel(fl, name):
    """`simulate --netns HOST` (rules, addresses, routes, ip rules and sysctls read from the namespace)
    predicts the fate and the drop reason a real packet gets there (traced live in the same run)."""
    sc = fl.prepare(name)
    t = Trace(fl.host.ns, "-s", sc.src, "-d", sc.dst, "--count", "1", "--duration", "20", proto=sc.proto)
    fl.send(sc)
    rc, pkts, err = t.finish()
    assert rc == 0, err
    (real,) = pkts
    args = ["-p", sc.proto, "-s", sc.src, "-d", sc.dst, "--dport", "9998", "-i", fl.h_if, "--json"]
    args += {"ttl-expired": ["--ttl", "1"], "ct-invalid": ["--tcp-flags", "ACK", "--ctstate", "INVALID"]}.get(name, [])
    p = subprocess.run([sys.executable, "-m", "ruletrace", "simulate", "--netns", fl.host.ns, *args], env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stdout + p.stderr  # 3: dropped
    (sim,) = json.loads(p.stdout)["packets"]
    assert sim["fate"] == real["fate"] == "dropped", (sim, real)
    if name == "ct-invalid":  # a rule's drop: the same rule, and the kernel says netfilter dropped it
        assert (sim["verdict"]["chain"], sim["verdict"]["num"]) == (real["verdict"]["chain"], real["verdict"]["num"])
        assert real["drops"][0]["reason"] == "NETFILTER_DROP" and "drops" not in sim
        assert any(n.startswith("conntrack state INVALID: a TCP packet without SYN (ACK) starts no connection when "
                                "net.netfilter.nf_conntrack_tcp_loose=0") for n in sim["notes"]), sim["notes"]
    else:  # a drop outside the rules: the reason the kernel gave, and the same routing decision
        assert sim["drops"][0]["reason"] == real["drops"][0]["reason"] == sc.reason, (sim["drops"], real["drops"])
        s_route, r_route = sim["routing"][0], real["routing"][0]
        keys = ("type", "table", "rule", "mark", "dev")
        assert {k: s_route[k] for k in keys} == {k: r_route[k] for k in keys}, (s_route, r_route)
    sources = [s["path"] for s in json.loads(p.stdout)["sources"]]
    assert f"netns {fl.host.ns}: ip -j rule" in sources


@pytest.mark.parametrize("name", ["dnat-forward", "dnat-output"])
def test_route_after_dnat_is_the_kernels(fl, name):
    """The routing decision is made for the packet as NAT left it: after a DNAT in nat PREROUTING the
    lookup is for the new destination; after one in nat OUTPUT the packet is routed again. The device
    the explanation names is the one the kernel's own trace shows the packet leaving by."""
    sc = fl.prepare(name)
    t = Trace(fl.host.ns, "-s", sc.src, "-d", sc.dst, "--count", "1", "--duration", "20")
    fl.send(sc)
    rc, pkts, err = t.finish()
    assert rc == 0, err
    (pkt,) = pkts
    assert any(c["what"] == "DST" and c["new"].startswith(sf_routed()) for c in pkt["nat"]), pkt["nat"]
    whole = expand(pkt)["steps"]  # each step with all its fields (schema 2 writes what changed)
    out_at = {s["chain"]: s["fields"].get("OUT") for s in whole if s["fields"].get("OUT")}
    routes = {r["point"]: r for r in pkt["routing"]}
    if name == "dnat-forward":
        assert set(routes) == {"input"}, routes
        assert (routes["input"]["dev"], routes["input"]["table"]) == (fl.spare, "main"), routes
        assert out_at["FORWARD"] == routes["input"]["dev"]  # the kernel's choice, from its trace
    else:
        assert (routes["output"]["dev"], routes["reroute"]["dev"]) == (fl.h_if, fl.spare), routes
        assert out_at["OUTPUT"] == fl.h_if and out_at["POSTROUTING"] == routes["reroute"]["dev"], out_at
        assert routes["reroute"]["text"].startswith("re-routed after NAT/mark: ip rule 32766: from all lookup main"
                                                    " → table main → dev "), routes["reroute"]


def sf_routed() -> str:
    from ruletrace.lab import scenarios_fate as sf

    return sf.ROUTED_DST


def test_without_bpftrace_the_causes_are_ranked_from_the_namespace(fl, tmp_path):
    """No drop reason (bpftrace absent): a packet last seen in PREROUTING gets its likely causes,
    ranked from the traced namespace's routes, ip rules and sysctls, the proven one first."""
    sc = fl.prepare("forward-off")
    bindir = _path_without_bpftrace(tmp_path)
    t = Trace(fl.host.ns, "-s", sc.src, "-d", sc.dst, "--count", "1", "--duration", "20",
              env={**ENV, "PATH": str(bindir)})
    fl.send(sc)
    rc, pkts, err = t.finish()
    assert rc == 0, err
    (pkt,) = pkts
    assert "drops" not in pkt and pkt["fate"] == "unknown"
    causes = [n for n in pkt["notes"] if n.startswith("likely cause")]
    assert causes and causes[0].startswith("likely cause 1/") and \
        "forwarding is disabled (net.ipv4.conf." in causes[0] and "IP_INADDRERRORS" in causes[0], pkt["notes"]
    assert causes[-1].endswith("the log was cut after PREROUTING")


DROP_SCENARIOS = ["closed-udp", "forward-off", "no-route", "rp-filter", "ttl-expired", "tcp-closed", "policy-route",
                  "ct-invalid"]


def _dump_host(fl, d: Path) -> list[str]:
    """The host namespace's facts as an admin would save them: ruleset, addresses, routes, ip rules, sysctls."""
    from ruletrace.lab.netns import run

    ns = fl.host.ns
    # the lab's rules are iptables-nft ones: iptables-save shows their matches (nft -j shows them as opaque xt)
    files = {"ruleset.rules": ["iptables-nft-save"], "addr.json": ["ip", "-j", "addr"],
             "route.json": ["ip", "-j", "route", "show", "table", "all"], "rule.json": ["ip", "-j", "rule"],
             "sysctl.txt": ["sysctl", "-a"]}
    for f, argv in files.items():
        (d / f).write_text(run(argv, ns=ns, check=f != "sysctl.txt").stdout)
    rules = ["-r", str(d / "ruleset.rules")] if (d / "ruleset.rules").read_text().strip() else []  # none: no file
    return [*rules, "--addrs", str(d / "addr.json"), "--routes", str(d / "route.json"),
            "--rules", str(d / "rule.json"), "--sysctl", str(d / "sysctl.txt")]


@pytest.mark.parametrize("name", DROP_SCENARIOS)
def test_offline_names_the_live_cause(fl, name, tmp_path):
    """The same packet, explained offline from what an admin saves (``nft -a monitor trace`` taken beside the
    live trace, ``iptables-nft-save``, ``ip -j addr``, ``ip -j route show table all``, ``ip -j rule``,
    ``sysctl -a``), names the cause the kernel gave live.

    Routing drops (forward-off, no-route, rp-filter, ttl-expired, policy-route): the first-ranked likely
    cause carries the kernel's reason name. ct-invalid: the same rule drops it, with the same INVALID
    explanation. closed-udp / tcp-closed: the dumps hold no socket list, so offline cannot know that no
    socket listens: where INPUT is traced (tcp-closed's rule; an empty chain left by an earlier scenario) it is
    "delivered"; where nothing is traced after PREROUTING (closed-udp on a host without rules) it is "unknown",
    its first cause saying NO_SOCKET is unknown from the dumps, never a routing cause."""
    sc = fl.prepare(name)
    mon = subprocess.Popen(["ip", "netns", "exec", fl.host.ns, "nft", "-a", "monitor", "trace"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        t = Trace(fl.host.ns, "-s", sc.src, "-d", sc.dst, "--count", "1", "--duration", "20", proto=sc.proto)
        fl.send(sc)
        rc, pkts, err = t.finish()
        time.sleep(0.3)
    finally:
        mon.terminate()
        log, _ = mon.communicate(timeout=10)
    assert rc == 0, err
    (live,) = pkts
    assert [d["reason"] for d in live["drops"]] == [sc.reason], live
    (tmp_path / "trace.txt").write_text(log)
    p = subprocess.run([sys.executable, "-m", "ruletrace", "explain", str(tmp_path / "trace.txt"), "-f", "nft-monitor",
                        *_dump_host(fl, tmp_path), "-m", f"src={sc.src}", "--json"], env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode in (0, 3), p.stdout + p.stderr  # 3: a packet was dropped
    (off,) = json.loads(p.stdout)["packets"]
    causes = [n for n in off["notes"] if n.startswith("likely cause")]
    keys = ("type", "table", "rule", "mark", "dev")
    assert {k: off["routing"][0][k] for k in keys} == {k: live["routing"][0][k] for k in keys}, (off, live)
    in_input = any(st["chain"] == "INPUT" for st in off["steps"])  # an (empty) INPUT chain left by a scenario before
    if name == "closed-udp" and not in_input:  # nothing traced after PREROUTING, no socket list: cannot know
        assert (off["fate"], live["fate"]) == ("unknown", "dropped") and "drops" not in off, off
        assert "last seen in PREROUTING: the routing step delivers it here; its end is not in the trace" in \
            off["notes"], off["notes"]
        assert causes[0].startswith("likely cause 1/2: the routing step delivers it here") and \
            "NO_SOCKET: the dumps hold no socket list, so unknown" in causes[0], causes
    elif name in ("closed-udp", "tcp-closed"):  # INPUT let it through: delivered; the socket is beyond the dumps
        assert not causes, off  # (the live run names NO_SOCKET: asserted above)
        # iptables-nft-save lists every built-in chain of a table, also those the kernel never created (nat INPUT
        # left by the dnat scenarios): offline then waits for it and says so, rather than guessing
        assert off["fate"] == "delivered" or (off["fate"], off["notes"]) == (
            "unknown", ["last seen in filter INPUT: the trace stops before the hook's last table (nat) decided"]), off
        assert "NO_SOCKET" not in json.dumps(off) and "drops" not in off, off
    elif name == "ct-invalid":  # a rule's drop: the same rule, explained the same way
        assert off["fate"] == live["fate"] == "dropped" and not causes, off
        assert (off["verdict"]["chain"], off["verdict"]["num"]) == (live["verdict"]["chain"], live["verdict"]["num"])
        invalid = [n for n in live["notes"] if n.startswith("conntrack state INVALID")]
        assert invalid and invalid[0].split(", and")[0] in " ".join(off["notes"]), (off["notes"], invalid)
    else:  # routing drops: the first-ranked cause carries the reason name the kernel gave
        assert off["fate"] == "unknown" and causes and causes[0].startswith("likely cause 1/"), off["notes"]
        assert f": {sc.reason}" in causes[0], (causes, live["drops"])
        assert causes[-1].endswith("the log was cut after PREROUTING")
