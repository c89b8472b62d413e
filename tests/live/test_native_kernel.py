"""`ruletrace trace` on native nftables hosts (issue 13 item 5), against the real kernel.

Two namespaces of our own (prefix rtnl) joined by a veth pair; the server namespace gets a
firewalld-style, an OpenWrt-fw4-style or a kube-proxy-nftables-style ruleset loaded with
`nft -f` (written here in each product's style). The live session must give the kernel's fate
with the rule text and positions `ruletrace explain` gives for `nft -a monitor trace` +
`nft -a -s list ruleset` of the same packets, and leave `nft list ruleset` byte-identical
(counters aside) after exit, after each stop signal, and after SIGKILL + `ruletrace cleanup`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import BackgroundTrace

pytestmark = pytest.mark.kernel

PREFIX = f"rtnl{os.getpid() % 1000}"
CLIENT, SERVER, VETH = PREFIX + "c", PREFIX + "s", PREFIX + "vs"
C_ADDR, S_ADDR = "10.79.3.1", "10.79.3.2"
PORT = 41000 + os.getpid() % 1000  # accepted / forwarded
CLOSED = PORT + 1  # rejected
SRC = str(Path(__file__).resolve().parents[2] / "src")
TOOLS = ("ip", "nft", "iptables-legacy", "iptables-nft")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nft)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


if _skip_reason():
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=_skip_reason())]

FIREWALLD = f"""
table inet firewalld {{
	chain filter_INPUT {{
		type filter hook input priority filter + 10; policy accept;
		ct state {{ established, related }} accept
		ct status dnat accept
		iifname "lo" accept
		ct state invalid drop
		jump filter_INPUT_ZONES
		reject with icmpx admin-prohibited
	}}
	chain filter_INPUT_ZONES {{
		iifname "{VETH}" goto filter_IN_public
		goto filter_IN_public
	}}
	chain filter_IN_public {{
		jump filter_IN_public_pre
		jump filter_IN_public_allow
		meta l4proto {{ icmp, ipv6-icmp }} accept
	}}
	chain filter_IN_public_pre {{
	}}
	chain filter_IN_public_allow {{
		tcp dport 22 ct state {{ new, untracked }} accept
		tcp dport {PORT} ct state {{ new, untracked }} accept
	}}
}}
"""

FW4 = f"""
table inet fw4 {{
	chain input {{
		type filter hook input priority filter; policy drop;
		iifname "lo" accept comment "!fw4: Accept traffic from loopback"
		ct state vmap {{ established : accept, related : accept }} comment "!fw4: Handle inbound flows"
		tcp flags syn / fin,syn,rst,ack jump syn_flood comment "!fw4: Rate limit TCP syn packets"
		iifname "{VETH}" jump input_wan comment "!fw4: Handle wan IPv4/IPv6 input traffic"
	}}
	chain syn_flood {{
		limit rate 25/second burst 50 packets return comment "!fw4: Accept SYN packets below rate-limit"
		drop comment "!fw4: Drop excess packets"
	}}
	chain input_wan {{
		meta nfproto ipv4 udp dport 68 counter accept comment "!fw4: Allow-DHCP-Renew"
		tcp dport {PORT} counter accept comment "!fw4: Allow-Web"
		jump reject_from_wan
	}}
	chain reject_from_wan {{
		iifname "{VETH}" counter reject comment "!fw4: reject wan IPv4/IPv6 traffic"
	}}
}}
"""

KUBE = f"""
table ip kube-proxy {{
	comment "rules for kube-proxy"
	map service-ips {{
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = {{ {S_ADDR} . tcp . {PORT} : goto service-web }}
	}}
	chain nat-prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}}
	chain services {{
		ip daddr . meta l4proto . th dport vmap @service-ips
	}}
	chain service-web {{
		ip daddr {S_ADDR} tcp dport {PORT} ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 1 vmap {{ 0 : goto endpoint-web }}
	}}
	chain endpoint-web {{
		ip saddr {S_ADDR} jump mark-for-masquerade
		meta l4proto tcp dnat to {S_ADDR}:{CLOSED}
	}}
	chain mark-for-masquerade {{
		meta mark set meta mark | 0x00004000
	}}
	chain filter-input {{
		type filter hook input priority -110; policy accept;
		ct state new tcp dport {CLOSED} ip saddr {C_ADDR} reject
	}}
}}
"""

# layout -> (ruleset, [(port, fate, (table, chain, num) of the decider)])
LAYOUTS = {
    "firewalld": (FIREWALLD, [(PORT, "delivered", ("firewalld", "filter_IN_public_allow", 2)),
                              (CLOSED, "rejected", ("firewalld", "filter_INPUT", 6))]),
    "fw4": (FW4, [(PORT, "delivered", ("fw4", "input_wan", 2)), (CLOSED, "rejected", ("fw4", "reject_from_wan", 1))]),
    "kube": (KUBE, [(PORT, "rejected", ("kube-proxy", "filter-input", 1))]),
}


def sh(cmd: str, ns: str | None = SERVER, check: bool = True, stdin: str | None = None) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + ["sh", "-c", cmd]
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if check and p.returncode:
        raise AssertionError(f"{cmd}: {p.stderr}")
    return p.stdout


def snapshot(ns: str = SERVER) -> str:
    """Everything a session may change: the nft ruleset, both iptables backends, nf_log bindings."""
    text = sh("nft list ruleset; iptables-legacy-save; iptables-nft-save; cat /proc/net/netfilter/nf_log", ns)
    lines = [x for x in text.splitlines() if not x.startswith("#")]
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[]", re.sub(r"counter packets \d+ bytes \d+", "counter", x))
                     for x in lines)


@contextlib.contextmanager
def pair(client: str, server: str, veth: str):
    """Two namespaces joined by a veth pair (client side ``veth``c, server side ``veth``), always removed."""
    def down():
        for ns in (client, server):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    down()
    try:
        sh(f"ip netns add {client} && ip netns add {server} && ip link add {veth}c type veth peer name {veth}"
           f" && ip link set {veth}c netns {client} && ip link set {veth} netns {server}", ns=None)
        sh(f"ip link set lo up; ip addr add {C_ADDR}/24 dev {veth}c; ip link set {veth}c up", client)
        sh(f"ip link set lo up; ip addr add {S_ADDR}/24 dev {veth}; ip link set {veth} up", server)
        yield
    finally:
        down()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    with pair(CLIENT, SERVER, VETH):
        yield {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "RULETRACE_NO_DROP_REASONS": "1", "RULETRACE_STATE_DIR": str(state)}


def load(layout: str) -> None:
    sh("nft flush ruleset")
    sh("nft -f -", stdin=LAYOUTS[layout][0])


def send_syn(port: int, client: str = CLIENT) -> None:
    sh(f"python3 -c \"import socket; s=socket.socket(); s.settimeout(0.4)\ntry: s.connect(('{S_ADDR}', {port}))"
       f"\nexcept OSError: pass\"", client)


def ruletrace(env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruletrace", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def trace(env: dict, *args: str) -> BackgroundTrace:
    return BackgroundTrace("--netns", SERVER, *args, env=env, timeout=20)


def shape(pkt: dict) -> tuple:
    v = pkt["verdict"] or {}
    steps = tuple((s["table"], s["chain"], s["kind"], s["num"], s.get("rule"))
                  for s in pkt["steps"] if not s["table"].startswith("ruletrace_"))
    return pkt["fate"], v.get("table"), v.get("chain"), v.get("num"), steps


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_native_live_fate_and_numbers_like_nft_monitor(lab, layout, tmp_path):
    load(layout)
    before = snapshot()
    expected = LAYOUTS[layout][1]
    with open(tmp_path / "monitor.txt", "w") as mon_out:
        monitor = subprocess.Popen(["ip", "netns", "exec", SERVER, "nft", "-a", "monitor", "trace"],
                                   stdout=mon_out, stderr=subprocess.DEVNULL)
    try:
        t = trace(lab, "-p", "tcp", "-s", C_ADDR, "--direction", "in", "-4", "--count", str(len(expected)),
                  "--duration", "15", "--json")
        assert any("the whole nf_tables ruleset" in line for line in t.err), t.err
        (tmp_path / "rs.txt").write_text(sh("nft -a -s list ruleset"))  # with our table: the monitor saw it
        for port, _fate, _decider in expected:
            send_syn(port)
        rc, out, err = t.communicate(20)
        time.sleep(0.2)
    finally:
        monitor.terminate()
        monitor.wait(5)
    assert rc == 0, err
    live = [json.loads(line) for line in out.splitlines()]
    got = [(p["dport"], p["fate"], (p["verdict"]["table"], p["verdict"]["chain"], p["verdict"]["num"]))
           for p in live]
    assert got == expected, err
    assert not any(s["table"].startswith("ruletrace_") for p in live for s in p["steps"])  # own table hidden
    assert snapshot() == before  # exactly as found
    p = ruletrace(lab, "explain", "--json", "-r", str(tmp_path / "rs.txt"), str(tmp_path / "monitor.txt"))
    assert p.returncode == 0, p.stderr
    offline = [x for x in json.loads(p.stdout)["packets"] if x["src"] == C_ADDR and x["dport"] in (PORT, CLOSED)]
    assert [shape(x) for x in offline] == [shape(x) for x in live]
    # every rule step has the listing's text
    assert all(x["tables"]["rules"][s["rule"]] for x in live for s in x["steps"] if s["kind"] == "rule"), live


def test_native_sigkill_then_cleanup_restores_exactly(lab):
    load("firewalld")
    before = snapshot()
    t = trace(lab, "-p", "tcp", "--dport", str(PORT), "--duration", "30")
    during = snapshot()
    assert during != before and "ruletrace_" in during
    t.p.kill()
    assert t.communicate(10)[0] == -signal.SIGKILL
    assert snapshot() == during
    p = ruletrace(lab, "trace", "--netns", SERVER, "-p", "udp", "--duration", "0.3")
    assert "its process is gone" in p.stderr, p.stderr
    assert snapshot() == during  # listed, not removed unasked
    p = ruletrace(lab, "cleanup", "--netns", SERVER)
    assert p.returncode == 0 and "nft delete table inet ruletrace_" in p.stderr, p.stderr
    assert snapshot() == before
    assert "nothing to clean up" in ruletrace(lab, "cleanup", "--netns", SERVER).stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_native_signals_clean_up(lab, sig):
    load("fw4")
    before = snapshot()
    t = trace(lab, "-p", "tcp", "--dport", str(PORT), "--duration", "30")
    assert snapshot() != before
    t.p.send_signal(sig)
    _rc, _out, err = t.communicate(20)
    assert snapshot() == before, err
    assert "cleaning up" in err


def test_native_orphan_table_only_with_force_and_exact_shape(lab):
    """A session's table without a state file goes only with --force; a look-alike stays."""
    load("fw4")
    before = snapshot()
    sid, fake = "5eed" * 8, "f00d" * 8
    from ruletrace.live import nftnative as nn
    from ruletrace.live.nfthooks import EarlyHooks
    from ruletrace.live.session import TraceSpec

    spec = TraceSpec(proto="udp", dport="53")
    spec.validate()
    early = EarlyHooks({VETH: -360}, -350)  # the netdev and bridge tables of a session too
    sh("nft -f -", stdin=nn.table_script(spec, sid, early))
    fakes = nn.own_scripts(spec, fake, early)
    lookalike = "".join(text.replace("policy accept;", "policy accept;\n\t\ttcp dport 22 accept", 1)
                        for text in fakes.values())
    sh("nft -f -", stdin=lookalike)
    p = ruletrace(lab, "cleanup", "--netns", SERVER)
    assert p.returncode == 0 and "--force" in p.stderr, p.stderr
    assert sh("nft list tables").count(f"ruletrace_{sid}") == 3
    p = ruletrace(lab, "cleanup", "--netns", SERVER, "--force")
    assert p.returncode == 0, p.stderr
    tables = sh("nft list tables")
    assert f"ruletrace_{sid}" not in tables and tables.count(f"ruletrace_{fake}") == 3  # not ours: never touched
    for fam in fakes:
        sh(f"nft delete table {fam} ruletrace_{fake}")
    assert snapshot() == before


def test_native_dry_run_and_doctor(lab):
    load("kube")
    before = snapshot()
    p = ruletrace(lab, "trace", "--netns", SERVER, "-p", "tcp", "--dport", str(PORT), "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "would run: nft -f -" in p.stderr and "priority -350" in p.stderr and "meta nftrace set 1" in p.stderr
    assert snapshot() == before
    p = ruletrace(lab, "trace", "--netns", SERVER, "-p", "tcp", "--raw-match", "-m mark --mark 1")
    assert p.returncode == 2 and "--raw-match" in p.stderr
    p = ruletrace({**lab, "COLUMNS": "250"}, "doctor", "--netns", SERVER, "--no-color")
    assert re.search(r"ip kube-proxy: 6 chains, 8 rules .*kube-proxy", p.stdout), p.stdout


# --- both backends at once (issue 13 item 6) ---------------------------------------------------

NFT_ACCEPT = f"""
table inet filter {{
	chain input {{
		type filter hook input priority filter; policy accept;
		tcp dport {PORT} accept
	}}
}}
"""
LEGACY_DROP = "iptables-legacy -t raw -S >/dev/null; iptables-legacy -P INPUT DROP"


IPTABLES_NFT_ACCEPT = (f"iptables-nft -A INPUT -p tcp --dport {PORT} -j ACCEPT; "
                       "iptables-nft -t mangle -A PREROUTING -p tcp -j MARK --set-mark 0x5")


@pytest.mark.parametrize("order", ["nft-first", "legacy-first", "iptables-nft"])
def test_both_backends_legacy_policy_drop_is_the_fate(lab, order):
    """nft `table inet filter` (or iptables-nft) accepts tcp/PORT, legacy `-P INPUT DROP`: the packet
    is DROPPED by the legacy policy, whichever runs first at priority 0 (the hook registered last
    runs first)."""
    client, server, veth = f"{PREFIX}bc", f"{PREFIX}bs", f"{PREFIX}bv"
    nft_runs_first = order != "legacy-first"
    with pair(client, server, veth):
        if order == "iptables-nft":  # the classic: "I added an ACCEPT rule but nothing changes"
            sh(LEGACY_DROP, server)
            sh(IPTABLES_NFT_ACCEPT, server)
        elif nft_runs_first:
            sh(LEGACY_DROP, server)
            sh("nft -f -", server, stdin=NFT_ACCEPT)
        else:
            sh("nft -f -", server, stdin=NFT_ACCEPT)
            sh(LEGACY_DROP, server)
        before = snapshot(server)
        args = ("--netns", server, "-p", "tcp", "--dport", str(PORT), "-4", "--count", "1", "--duration", "15",
                "--json")
        t = BackgroundTrace(*args, env=lab, timeout=20)
        # the one start line shown without -v names both trace sources (legacy mode + nftrace)
        assert any(line.startswith("ruletrace: tracing (") and "+nftrace" in line for line in t.err), t.err
        send_syn(PORT, client)
        rc, out, err = t.communicate(20)
        assert rc == 0, err
        # one switch (the nft table's rule) for both backends: the one SYN counted once
        assert "the kernel traced 1 packet(s): 1 arrived, 0 lost entirely" in err, err
        (pkt,) = [json.loads(line) for line in out.splitlines()]
        v = pkt["verdict"]
        assert (pkt["fate"], v["action"], v["table"], v["chain"], v["rule"]) == (
            "dropped", "drop", "filter", "INPUT", None), pkt
        steps = [(s["note"], s["table"], s["chain"], s["kind"], s["num"]) for s in pkt["steps"]]
        legacy_drop = ("legacy xtables", "filter", "INPUT", "policy", 1)
        chain = "INPUT" if order == "iptables-nft" else "input"
        nft_accept = ("nf_tables", "filter", chain, "rule", 1)
        assert steps[-1] == legacy_drop, steps
        if nft_runs_first:
            assert v["reason"] == f"accepted by nft filter:{chain} rule 1, then dropped by legacy filter:INPUT policy DROP"
            assert steps.index(nft_accept) < steps.index(legacy_drop)
        else:  # the legacy policy dropped it before the nft chain could see it
            assert nft_accept not in steps and v["reason"].startswith("legacy: "), pkt
        if order == "iptables-nft":  # the mark the legacy steps saw change is the nft mangle rule's
            assert [(m["table"], m["chain"], m["num"], m["new"]) for m in pkt["marks"]] == [
                ("mangle", "PREROUTING", 1, "0x5")], pkt["marks"]
        assert snapshot(server) == before, err
        if order == "nft-first":  # one backend traced: its accept is not the packet's fate
            t = BackgroundTrace(*args[:-5], "--backend", "nft", *args[-5:], env=lab, timeout=20)
            send_syn(PORT, client)
            rc, out, err = t.communicate(20)
            (pkt,) = [json.loads(line) for line in out.splitlines()]
            assert pkt["fate"] == "unknown" and pkt["verdict"] is None, pkt
            assert any(w.startswith("fate incomplete: legacy xtables") for w in pkt["warnings"]), pkt
            assert snapshot(server) == before, err
        # SIGKILL, then cleanup: legacy TRACE rules, the nft table and the nf_log bindings all restored
        t = BackgroundTrace(*args[:4], "--duration", "30", env=lab, timeout=20)
        assert snapshot(server) != before
        t.p.kill()
        t.communicate(10)
        p = ruletrace(lab, "cleanup", "--netns", server)
        assert p.returncode == 0, p.stderr
        assert snapshot(server) == before


def test_native_rule_churn_and_two_sessions(lab):
    """A rule inserted mid-trace shifts the positions: the packet is explained against the new
    ruleset; a second session with an overlapping filter shows the same packet (each session's
    own tracing rule matched it), each left out of the other's steps."""
    load("fw4")
    before = snapshot()
    a = trace(lab, "-p", "tcp", "-s", C_ADDR, "-4", "--count", "1", "--duration", "15", "--json")
    b = trace(lab, "-p", "tcp", "--dport", str(PORT), "-4", "--count", "1", "--duration", "15", "--json")
    sh("nft insert rule inet fw4 input_wan tcp dport 9 accept")
    time.sleep(0.3)
    send_syn(PORT)
    for t in (a, b):
        rc, out, err = t.communicate(20)
        assert rc == 0, err
        (pkt,) = [json.loads(line) for line in out.splitlines()]
        assert (pkt["fate"], pkt["verdict"]["chain"], pkt["verdict"]["num"]) == ("delivered", "input_wan", 3), pkt
        assert pkt["tables"]["rules"][pkt["verdict"]["rule"]] == f'tcp dport {PORT} counter accept comment "!fw4: Allow-Web"'
        assert not any(s["table"].startswith("ruletrace_") for s in pkt["steps"])
        assert any("inet fw4:input_wan +1 -0" in n for n in pkt["notes"]), pkt["notes"]
    sh("nft delete rule inet fw4 input_wan handle "
       + re.search(r"tcp dport 9 accept # handle (\d+)", sh("nft -a list chain inet fw4 input_wan"))[1])
    assert snapshot() == before


EDGE = f"""
table netdev edge {{
	chain ingress-veth {{
		type filter hook ingress device "{VETH}" priority -400; policy accept;
		tcp dport {CLOSED} counter drop comment "closed at the edge"
	}}
}}
table bridge lan {{
	chain pre {{
		type filter hook prerouting priority dstnat; policy accept;
	}}
}}
"""


def test_native_netdev_ingress_traced_counted_once_and_recreated_after_a_flush(lab):
    """A netdev ingress drop is traced from the session's own netdev table (before the device's
    chain), the packet counted once although it crosses two session chains' hooks; a flush
    removes the session's three tables: they are re-created, and removed at the end."""
    sh("nft flush ruleset")
    sh("nft -f -", stdin=FIREWALLD + EDGE)
    before = snapshot()
    t = trace(lab, "-p", "tcp", "-s", C_ADDR, "--direction", "in", "-4", "--count", "2", "--duration", "20",
              "--json")
    assert sh("nft list tables").count("ruletrace_") == 3  # inet, netdev, bridge
    chains = sh("nft list table netdev " + re.search(r"ruletrace_[0-9a-f]{32}", sh("nft list tables"))[0])
    assert f'device "{VETH}" priority -410' in chains
    send_syn(CLOSED)
    sh("nft flush ruleset")
    time.sleep(1.0)
    assert sh("nft list tables").count("ruletrace_") == 3  # re-created
    sh("nft -f -", stdin=FIREWALLD)
    send_syn(PORT)
    rc, out, err = t.communicate(20)
    assert rc == 0, err
    pkts = [json.loads(line) for line in out.splitlines()]
    assert len(pkts) == 2, (pkts, err)
    first, second = pkts
    assert (first["fate"], first["verdict"]["table"], first["verdict"]["chain"], first["verdict"]["num"]) == (
        "dropped", "edge", "ingress-veth", 1), first
    assert [s["table"] for s in first["steps"]] == ["edge"]
    assert (second["dport"], second["fate"], second["verdict"]["chain"], second["verdict"]["num"]) == (
        PORT, "delivered", "filter_IN_public_allow", 2), second
    assert "removed this session's table(s)" in err and "re-creating" in err, err
    assert "lost entirely" in err and ", 0 lost entirely" in err, err
    assert "ruletrace_" not in sh("nft list tables")
    after = snapshot()  # what the flush and the reload left, and nothing of the session's
    sh("nft flush ruleset")
    sh("nft -f -", stdin=FIREWALLD)
    assert snapshot() == after and after != before
