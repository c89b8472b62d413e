"""Closed ports against the kernel: `simulate --netns` reads the namespace's listening sockets and
predicts what a real SYN / datagram gets there: a connection (a socket listens), a TCP reset or an
ICMP port unreachable (none does)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.live.test_native_kernel import C_ADDR, S_ADDR, _skip_reason, pair, sh
from tests.simulate.test_both_kernel import CLIENT, ENV, PORT, SERVER, VETH, connect, listening

pytestmark = pytest.mark.kernel
if _skip_reason():
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=_skip_reason())]

CLOSED = PORT + 7


def udp_probe(port: int) -> str:
    """A datagram from the client on a connected UDP socket: 'refused' when ICMP port unreachable came back."""
    code = (f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)\n"
            f"s.connect(('{S_ADDR}', {port})); s.send(b'x')\ntry:\n    s.recv(10); print('answered')\n"
            "except ConnectionRefusedError: print('refused')\nexcept OSError: print('silent')")
    return sh(f"{sys.executable} -c \"{code}\"", CLIENT).strip()


def simulate(proto: str, port: int) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "ruletrace", "simulate", "--netns", SERVER, "-p", proto, "-s", C_ADDR,
                        "-d", S_ADDR, "--dport", str(port), "-i", VETH, "--json"],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode in (0, 6), p.stdout + p.stderr
    (pkt,) = json.loads(p.stdout)["packets"]
    return p.returncode, pkt


def test_closed_ports_like_the_kernel():
    with pair(CLIENT, SERVER, VETH), listening(PORT):
        sh(f"iptables-legacy -A INPUT -p tcp --dport {CLOSED} -j ACCEPT", SERVER)  # rules let both through
        real_open, real_closed, real_udp = connect(PORT), connect(CLOSED), udp_probe(CLOSED)
        (rc_open, sim_open), (rc_closed, sim_closed), (rc_udp, sim_udp) = (
            simulate("tcp", PORT), simulate("tcp", CLOSED), simulate("udp", CLOSED))
    assert (real_open, real_closed, real_udp) == ("delivered", "rejected", "refused")  # refused: RST / ICMP
    assert rc_open == 0 and sim_open["fate"] == "delivered" and "drops" not in sim_open
    assert sim_open["simulation"]["socket"].startswith("a tcp socket listens on 0.0.0.0:")
    assert rc_closed == rc_udp == 6
    assert sim_closed["fate"] == sim_udp["fate"] == "delivered"
    assert [d["reason"] for d in sim_closed["drops"]] == [d["reason"] for d in sim_udp["drops"]] == ["NO_SOCKET"]
    assert sim_closed["verdict"]["reason"] == (f"delivered to the stack, answered with a TCP reset (no socket "
                                               f"listens on tcp/{CLOSED})")
    assert sim_udp["simulation"]["socket"] == (f"delivered to the stack, answered with ICMP port unreachable "
                                               f"(no socket listens on udp/{CLOSED})")
