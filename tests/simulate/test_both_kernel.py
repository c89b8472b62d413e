"""`simulate --netns` on a namespace whose rules live in both backends, against real packets.

Two namespaces of our own (prefix rtsb) joined by a veth pair; the server gets iptables-legacy rules
and a native nftables table (legacy first, so the nft chains, registered later, run first at equal
priority: what simulate assumes). A real SYN is sent and traced live with both backends; the
simulation must give the kernel's fate (the client's connect: connected, refused or timed out), the
live trace's steps in the same order with the same backend on each, and the combined verdict.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import BackgroundTrace
from tests.live.test_native_kernel import C_ADDR, S_ADDR, SRC, _skip_reason, pair, sh

pytestmark = pytest.mark.kernel
if _skip_reason():
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=_skip_reason())]

PREFIX = f"rtsb{os.getpid() % 1000}"
CLIENT, SERVER, VETH = PREFIX + "c", PREFIX + "s", PREFIX + "v"
PORT = 43000 + os.getpid() % 1000
PORT2 = PORT + 1  # where a DNAT sends it
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "RULETRACE_NO_DROP_REASONS": "1"}


def nft_input(body: str) -> str:
    return f"table inet filter {{\n\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;\n{body}\n\t}}\n}}\n"


NFT_DNAT = f"""table ip nat {{
	chain pre {{
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport {PORT} dnat to {S_ADDR}:{PORT2}
	}}
}}
"""
L = "iptables-legacy"
# name -> (legacy commands, nft ruleset, the real fate, the deciding backend)
CASES = {
    "legacy-drop+nft-accept": (f"{L} -P INPUT DROP", nft_input(f"\t\ttcp dport {PORT} accept"), "dropped", "legacy"),
    "nft-drop+legacy-accept": (f"{L} -A INPUT -p tcp --dport {PORT} -j ACCEPT", nft_input(f"\t\ttcp dport {PORT} drop"),
                               "dropped", "nft"),
    "both-accept": (f"{L} -A INPUT -p tcp --dport {PORT} -j ACCEPT", nft_input(f"\t\ttcp dport {PORT} accept"),
                    "delivered", "legacy"),
    "legacy-dnat": (f"{L} -t nat -A PREROUTING -p tcp --dport {PORT} -j DNAT --to-destination {S_ADDR}:{PORT2}",
                    nft_input(f"\t\ttcp dport {PORT} drop\n\t\ttcp dport {PORT2} accept"), "delivered", "nft"),
    "nft-dnat": (f"{L} -P INPUT DROP; {L} -A INPUT -p tcp --dport {PORT2} -j ACCEPT", NFT_DNAT, "delivered", "legacy"),
    # the classic: "I added an ACCEPT rule (iptables-nft) but nothing changes" (legacy's policy drops it)
    "iptables-nft-accept+legacy-drop": (f"{L} -P INPUT DROP", f"iptables-nft -A INPUT -p tcp --dport {PORT} -j ACCEPT",
                                        "dropped", "legacy"),
}
# IPv6: ip6tables-legacy beside an nft inet table (neighbour discovery let through by legacy)
C6, S6 = "fd00:79:3::1", "fd00:79:3::2"
L6 = "ip6tables-legacy -P INPUT DROP; ip6tables-legacy -A INPUT -p ipv6-icmp -j ACCEPT"
NFT6_DNAT = f"""table inet nat {{
	chain pre {{
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport {PORT} dnat ip6 to [{S6}]:{PORT2}
	}}
}}
"""
CASES6 = {
    "v6-legacy-drop+nft-accept": (L6, nft_input(f"\t\ttcp dport {PORT} accept"), "dropped", "legacy"),
    "v6-nft-dnat": (f"{L6}; ip6tables-legacy -A INPUT -p tcp --dport {PORT2} -j ACCEPT", NFT6_DNAT, "delivered",
                    "legacy"),
}


@contextlib.contextmanager
def listening(*ports: int, v6: bool = False):
    """A TCP listener on each port in the server namespace (killed by its own pid at the end)."""
    fam, any_addr = ("socket.AF_INET6", "::") if v6 else ("socket.AF_INET", "0.0.0.0")
    code = (f"import socket, time\nss = []\nfor p in {ports!r}:\n    s = socket.socket({fam}); s.setsockopt(socket.SOL_SOCKET, "
            f"socket.SO_REUSEADDR, 1); s.bind(('{any_addr}', p)); s.listen(); ss.append(s)\nprint('up', flush=True)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen(["ip", "netns", "exec", SERVER, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
        yield
    finally:
        p.kill()
        p.communicate(timeout=5)


def connect(port: int, addr: str = S_ADDR) -> str:
    """What the kernel did with a SYN from the client: delivered (connected), rejected (RST) or dropped."""
    fam = "socket.AF_INET6" if ":" in addr else "socket.AF_INET"
    code = (f"import socket\ns = socket.socket({fam}); s.settimeout(1.5)\ntry:\n    s.connect(('{addr}', {port}));"
            " print('delivered')\nexcept ConnectionRefusedError: print('rejected')\nexcept OSError: print('dropped')")
    return sh(f"{sys.executable} -c \"{code}\"", CLIENT).strip()


def steps(pkt: dict, key: str = "note") -> list[tuple]:
    return [(s[key] if key in s else s.get("note"), s["table"], s["chain"], s["kind"], s["num"]) for s in pkt["steps"]
            if s["table"] != "raw" and not s["table"].startswith("ruletrace_")]


@pytest.mark.parametrize("name", sorted(CASES) + sorted(CASES6))
def test_simulate_both_backends_like_the_kernel(name):
    v6 = name in CASES6
    legacy, nft, fate, decider = (CASES6 if v6 else CASES)[name]
    c_addr, s_addr = (C6, S6) if v6 else (C_ADDR, S_ADDR)
    with pair(CLIENT, SERVER, VETH), listening(PORT, PORT2, v6=v6):
        if v6:
            sh(f"ip addr add {C6}/64 dev {VETH}c nodad", CLIENT)
            sh(f"ip addr add {S6}/64 dev {VETH} nodad", SERVER)
        sh(legacy, SERVER)  # legacy first: the nft chains, registered later, run first at one priority
        if nft.startswith("iptables-nft"):
            sh(nft, SERVER)
        else:
            sh("nft -f -", SERVER, stdin=nft)
        t = BackgroundTrace("--netns", SERVER, "-p", "tcp", "-s", c_addr, "-6" if v6 else "-4", "--count", "1",
                            "--duration", "15", "--json", env=ENV, timeout=20)
        real = connect(PORT, s_addr)
        rc, out, err = t.communicate(20)
        assert rc == 0, err
        traced = json.loads(out.splitlines()[0])
        time.sleep(0.2)
        p = subprocess.run([sys.executable, "-m", "ruletrace", "simulate", "--netns", SERVER, "-p", "tcp", "-s", c_addr,
                            "-d", s_addr, "--dport", str(PORT), "--sport", "40000", "-i", VETH, "--json"],
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == (0 if fate == "delivered" else 3), p.stdout + p.stderr
    (sim,) = json.loads(p.stdout)["packets"]
    assert real == sim["fate"] == fate, (real, sim["fate"])
    # the live trace merges what each backend saw: a part that ends at an earlier hook (nft-dnat:
    # nf_tables holds only nat prerouting) let the packet through, the later one's word is the fate
    assert traced["fate"] == fate, traced
    assert not any(n.split(": ", 1)[-1].startswith("last seen") for n in traced["notes"]), traced["notes"]
    if name.endswith("nft-dnat"):  # the rewrite the legacy steps saw is the nft rule's, not conntrack's
        rule = "2" if v6 else "1"
        assert traced["verdict"]["reason"] == ("accepted (DNAT) by nft nat:pre rule 1, then accepted by legacy "
                                               f"filter:INPUT rule {rule}"), traced["verdict"]
        new = f"[{S6}]:{PORT2}" if v6 else f"{S_ADDR}:{PORT2}"
        assert [(c["what"], c["table"], c["chain"], c["num"], c["new"]) for c in traced["nat"]] == [
            ("DST", "nat", "pre", 1, new)], traced["nat"]
    assert steps(sim) == steps(traced), (steps(sim), steps(traced))  # same order, same backend on each step
    assert sim["simulation"]["decided_by"] == decider
    if name.endswith("legacy-drop+nft-accept") or name == "iptables-nft-accept+legacy-drop":
        chain = "INPUT" if name.startswith("iptables-nft") else "input"
        assert sim["verdict"]["reason"] == traced["verdict"]["reason"] == (
            f"accepted by nft filter:{chain} rule 1, then dropped by legacy filter:INPUT policy DROP")
    if "dnat" in name:
        assert sim["simulation"]["final"]["DPT"] == str(PORT2)
