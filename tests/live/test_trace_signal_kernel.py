"""`ruletrace trace` ended by a signal shows every packet already received (namespaces fxl-*).

A ping is answered and the trace gets its signal at once, before the grouping's idle time has
completed either packet: after the cleanup both are explained and shown (as at a normal end),
the summary counts them as shown, none as lost, and the exit status is 128 + N.
"""

from __future__ import annotations

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

TAG = f"fxl-sg{os.getpid() % 10000}"
CLIENT, SERVER = TAG + "c", TAG + "s"
C_ADDR, S_ADDR = "10.77.41.1", "10.77.41.2"
SRC = str(Path(__file__).resolve().parents[2] / "src")
TOOLS = ("ip", "iptables-legacy", "iptables-nft", "ip6tables-legacy", "ip6tables-nft", "nft")

if os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS):
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason="needs root and " + ", ".join(TOOLS))]

PING = (
    "import socket, struct, sys\n"
    "def ck(b):\n s=sum(struct.unpack('!%dH' % (len(b)//2), b)); s=(s>>16)+(s&0xffff); return ~(s+(s>>16))&0xffff\n"
    "h=struct.pack('!BBHHH',8,0,0,0x4242,1)+b'fxl!'*4\n"
    "h=h[:2]+struct.pack('!H',ck(h))+h[4:]\n"
    "s=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2)\n"
    f"s.sendto(h, ('{S_ADDR}', 0))\n"
    "s.recv(100)\n"  # returns once the reply is in: every step of both packets is queued by then
)


def sh(cmd: str, ns: str) -> str:
    p = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"{cmd}: {p.stderr}"
    return p.stdout


def snapshot() -> str:
    text = sh("iptables-legacy-save; iptables-nft-save; nft list ruleset; cat /proc/net/netfilter/nf_log", SERVER)
    text = re.sub(r"packets \d+ bytes \d+", "packets bytes", re.sub(r"\[\d+:\d+\]", "[]", text))
    return "\n".join(x for x in text.splitlines() if not x.startswith("#"))


@pytest.fixture(scope="module")
def lab():
    def down():
        for ns in (CLIENT, SERVER):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    down()
    try:
        subprocess.run(["sh", "-c", f"ip netns add {CLIENT} && ip netns add {SERVER} && "
                        f"ip link add {TAG}a type veth peer name {TAG}b && "
                        f"ip link set {TAG}a netns {CLIENT} && ip link set {TAG}b netns {SERVER}"],
                       check=True, capture_output=True, timeout=30)
        sh(f"ip link set lo up; ip addr add {C_ADDR}/24 dev {TAG}a; ip link set {TAG}a up", CLIENT)
        sh(f"ip link set lo up; ip addr add {S_ADDR}/24 dev {TAG}b; ip link set {TAG}b up; "
           "iptables-legacy -t raw -S >/dev/null", SERVER)
        yield
    finally:
        down()


def load(backend: str) -> None:
    """One accepting rule for the echo request in the backend traced; the others empty."""
    for b in ("legacy", "nft"):
        sh(f"iptables-{b} -F; iptables-{b} -X; iptables-{b} -t raw -F", SERVER)
    sh("nft flush ruleset", SERVER)
    if backend in ("legacy", "both"):
        sh("iptables-legacy -A INPUT -p icmp --icmp-type echo-request -j ACCEPT", SERVER)
    if backend == "nft":
        sh("iptables-nft -A INPUT -p icmp --icmp-type echo-request -j ACCEPT", SERVER)
    if backend in ("native", "both"):
        sh("nft add table inet fxl; nft add chain inet fxl input '{ type filter hook input priority 0; }'; "
           "nft add rule inet fxl input icmp type echo-request accept; "
           "nft add chain inet fxl output '{ type filter hook output priority 0; }'; "
           "nft add rule inet fxl output icmp type echo-reply accept", SERVER)


@pytest.mark.parametrize(("backend", "sig"), [
    ("legacy", signal.SIGINT), ("legacy", signal.SIGTERM), ("legacy", signal.SIGHUP),
    ("nft", signal.SIGINT), ("native", signal.SIGTERM), ("both", signal.SIGHUP),
])
def test_a_signal_shows_the_packets_already_received(lab, tmp_path, backend, sig):
    load(backend)
    before = snapshot()
    env = {**os.environ, "PYTHONPATH": SRC, "RULETRACE_STATE_DIR": str(tmp_path / "state"),
           "RULETRACE_NO_DROP_REASONS": "1"}
    t = BackgroundTrace("--netns", SERVER, "--backend", "nft" if backend == "native" else backend,
                        "-4", "-p", "icmp", "--json", env=env, timeout=30)
    time.sleep(0.5)
    p = subprocess.run(["ip", "netns", "exec", CLIENT, sys.executable, "-c", PING], capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    t.p.send_signal(sig)  # at once: neither packet has been idle long enough to be complete
    rc, out, err = t.communicate(30)
    assert rc == 128 + sig, err
    pkts = [json.loads(line) for line in out.splitlines()]
    assert sorted((x["src"], x["dst"]) for x in pkts) == [(C_ADDR, S_ADDR), (S_ADDR, C_ADDR)], err
    request = next(x for x in pkts if x["src"] == C_ADDR)
    assert request["fate"] == "delivered", request
    summary = err.strip().splitlines()[-1]
    assert "2 packet(s) shown" in summary and "2 arrived, 0 lost entirely" in summary, err
    assert "not shown" not in summary, err
    assert err.index("cleaning up") < err.index("2 packet(s) shown")
    assert snapshot() == before
    assert not list((tmp_path / "state").glob("*.json"))
