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
}


@contextlib.contextmanager
def listening(*ports: int):
    """A TCP listener on each port in the server namespace (killed by its own pid at the end)."""
    code = (f"import socket, time\nss = []\nfor p in {ports!r}:\n    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
            "socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', p)); s.listen(); ss.append(s)\nprint('up', flush=True)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen(["ip", "netns", "exec", SERVER, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
        yield
    finally:
        p.kill()
        p.communicate(timeout=5)


def connect(port: int) -> str:
    """What the kernel did with a SYN from the client: delivered (connected), rejected (RST) or dropped."""
    code = (f"import socket\ns = socket.socket(); s.settimeout(1.5)\ntry:\n    s.connect(('{S_ADDR}', {port}));"
            " print('delivered')\nexcept ConnectionRefusedError: print('rejected')\nexcept OSError: print('dropped')")
    return sh(f"{sys.executable} -c \"{code}\"", CLIENT).strip()


def steps(pkt: dict, key: str = "note") -> list[tuple]:
    return [(s[key] if key in s else s.get("note"), s["table"], s["chain"], s["kind"], s["num"]) for s in pkt["steps"]
            if s["table"] != "raw" and not s["table"].startswith("ruletrace_")]


@pytest.mark.parametrize("name", sorted(CASES))
def test_simulate_both_backends_like_the_kernel(name):
    legacy, nft, fate, decider = CASES[name]
    with pair(CLIENT, SERVER, VETH), listening(PORT, PORT2):
        sh(legacy, SERVER)  # legacy first: the nft chains, registered later, run first at one priority
        sh("nft -f -", SERVER, stdin=nft)
        t = BackgroundTrace("--netns", SERVER, "-p", "tcp", "-s", C_ADDR, "-4", "--count", "1", "--duration", "15",
                            "--json", env=ENV, timeout=20)
        real = connect(PORT)
        rc, out, err = t.communicate(20)
        assert rc == 0, err
        traced = json.loads(out.splitlines()[0])
        time.sleep(0.2)
        p = subprocess.run([sys.executable, "-m", "ruletrace", "simulate", "--netns", SERVER, "-p", "tcp", "-s", C_ADDR,
                            "-d", S_ADDR, "--dport", str(PORT), "--sport", "40000", "-i", VETH, "--json"],
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == (0 if fate == "delivered" else 3), p.stdout + p.stderr
    (sim,) = json.loads(p.stdout)["packets"]
    assert real == sim["fate"] == fate, (real, sim["fate"])
    # the live trace merges what each backend saw; when one backend's part ends before the packet's
    # end (nft-dnat: nf_tables saw only nat PREROUTING) it says unknown, not the fate
    assert traced["fate"] == (fate if name != "nft-dnat" else "unknown"), traced
    assert steps(sim) == steps(traced), (steps(sim), steps(traced))  # same order, same backend on each step
    assert sim["simulation"]["decided_by"] == decider
    if name == "legacy-drop+nft-accept":
        assert sim["verdict"]["reason"] == ("accepted by nft filter:input rule 1, then dropped by legacy "
                                            "filter:INPUT policy DROP")
    if "dnat" in name:
        assert sim["simulation"]["final"]["DPT"] == str(PORT2)
