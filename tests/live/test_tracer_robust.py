"""`ruletrace trace` under stress, against the real kernel, in network namespaces of our own (prefix rtr).

--count / --duration 0, a second signal during cleanup, two sessions in one namespace, loss
accounting under a flood through 1,000 matching rules, legacy rule churn, and a restore that
removes the session's TRACE rules. Never touches the root namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import BackgroundTrace

from .test_trace_kernel import ENV, _skip_reason

pytestmark = pytest.mark.kernel
if _skip_reason():
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=_skip_reason())]

PREFIX = f"rtr{os.getpid() % 10000}"
CLIENT, SERVER = PREFIX + "c", PREFIX + "s"
C_ADDR, S_ADDR = "10.88.9.1", "10.88.9.2"
PORT = 53000 + os.getpid() % 1000
PING = (
    "import socket, struct, sys, time\n"
    "def ck(b):\n s=sum(struct.unpack('!%dH' % (len(b)//2), b)); s=(s>>16)+(s&0xffff); return ~(s+(s>>16))&0xffff\n"
    "s=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
    "for i in range(int(sys.argv[2])):\n"
    " h=struct.pack('!BBHHH',8,0,0,0x4242,i)+b'rtr0'*4\n"
    " h=h[:2]+struct.pack('!H',ck(h))+h[4:]\n"
    " s.sendto(h, (sys.argv[1], 0))\n"
    " if len(sys.argv) > 3: time.sleep(float(sys.argv[3]))\n"
)


def sh(cmd: str, ns: str | None = None, check: bool = True) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + ["sh", "-c", cmd]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and p.returncode:
        raise AssertionError(f"{cmd}: {p.stderr}")
    return p.stdout


def snapshot() -> str:
    text = sh("iptables-legacy-save; ip6tables-legacy-save; iptables-nft-save; ip6tables-nft-save; "
              "nft list ruleset; cat /proc/net/netfilter/nf_log", SERVER)
    lines = [x for x in text.splitlines() if not x.startswith("#")]
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[]", re.sub(r"counter packets \d+ bytes \d+", "counter", x))
                     for x in lines)


@pytest.fixture(scope="module")
def lab():
    def down():
        for ns in (CLIENT, SERVER):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    down()
    try:
        sh(f"ip netns add {CLIENT} && ip netns add {SERVER} && "
           f"ip link add {PREFIX}a type veth peer name {PREFIX}b && "
           f"ip link set {PREFIX}a netns {CLIENT} && ip link set {PREFIX}b netns {SERVER}")
        sh(f"ip link set lo up; ip addr add {C_ADDR}/24 dev {PREFIX}a; ip link set {PREFIX}a up", CLIENT)
        sh(f"ip link set lo up; ip addr add {S_ADDR}/24 dev {PREFIX}b; ip link set {PREFIX}b up", SERVER)
        yield
    finally:
        down()
        d = Path("/run/ruletrace")
        for st in d.glob("*.json") if d.is_dir() else []:
            try:
                if json.loads(st.read_text()).get("netns", {}).get("name") == SERVER:
                    st.unlink()
            except (OSError, ValueError):
                pass


def load(backend: str, rules: list[str] = (), restore: str = "") -> None:
    """Fresh rules in the server namespace for one backend, the other backend empty."""
    for fam in ("iptables", "ip6tables"):
        for b in ("legacy", "nft"):
            for t in ("raw", "mangle", "filter"):
                sh(f"{fam}-{b} -t {t} -F; {fam}-{b} -t {t} -X", SERVER, check=False)
    sh("nft flush ruleset", SERVER, check=False)
    for r in rules:
        sh(f"iptables-{backend} {r}", SERVER)
    if restore:
        sh(f"iptables-{backend}-restore <<'EOF'\n{restore}EOF", SERVER)
    sh("iptables-legacy -t raw -S >/dev/null; ip6tables-legacy -t raw -S >/dev/null", SERVER, check=False)


def ping(n: int = 1, gap: float | None = None) -> None:
    args = [S_ADDR, str(n)] + ([str(gap)] if gap is not None else [])
    p = subprocess.run(["ip", "netns", "exec", CLIENT, sys.executable, "-c", PING, *args], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr


def syn() -> None:
    sh(f"python3 -c \"import socket; s=socket.socket(); s.settimeout(0.3)\ntry: s.connect(('{S_ADDR}', {PORT}))"
       f"\nexcept OSError: pass\"", CLIENT)


class Trace(BackgroundTrace):
    def __init__(self, *args: str) -> None:
        super().__init__("--netns", SERVER, "--json", *args, env=ENV, timeout=30)

    def finish(self, timeout: float = 60) -> tuple[int, list[dict], str]:
        rc, out, err = self.communicate(timeout)
        return rc, [json.loads(x) for x in out.splitlines()], err


def summary(err: str) -> str:
    lines = [x for x in err.splitlines() if "packet(s) shown" in x]
    assert len(lines) == 1, err
    return lines[0]


def test_duration_zero_stops_at_once(lab):
    load("nft", ["-A INPUT -p icmp -j ACCEPT"])
    before = snapshot()
    p = subprocess.run([sys.executable, "-m", "ruletrace", "trace", "--netns", SERVER, "-p", "icmp",
                        "--duration", "0"], capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 1 and "0 packet(s) shown" in p.stderr, p.stderr
    assert snapshot() == before
    p = subprocess.run([sys.executable, "-m", "ruletrace", "trace", "--netns", SERVER, "-p", "icmp",
                        "--duration", "-1"], capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 2 and "--duration" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_count_stops_exactly(lab, backend):
    load(backend, ["-A INPUT -p icmp -j ACCEPT"])
    t = Trace("--backend", backend, "-p", "icmp", "-4", "--direction", "in", "--count", "3", "--duration", "20")
    ping(6)  # one burst: all six complete within the same idle period
    rc, pkts, err = t.finish()
    assert rc == 0 and len(pkts) == 3, err
    line = summary(err)
    assert "3 packet(s) shown" in line and "6 arrived" in line, line


def test_second_signal_during_cleanup_keeps_the_summary(lab):
    load("legacy", ["-A INPUT -p icmp -j ACCEPT"])
    before = snapshot()
    t = Trace("--backend", "legacy", "-p", "icmp", "--duration", "30")
    t.p.send_signal(signal.SIGTERM)
    for _ in range(8):  # more signals while it cleans up
        time.sleep(0.02)
        if t.p.poll() is None:
            t.p.send_signal(signal.SIGINT)
    _rc, _pkts, err = t.finish()
    assert "Traceback" not in err, err
    summary(err)
    assert snapshot() == before, err


def test_two_nft_sessions_show_only_their_own_packets(lab):
    load("nft", ["-A INPUT -p icmp -j ACCEPT", f"-A INPUT -p tcp --dport {PORT} -j DROP"])
    icmp = Trace("--backend", "nft", "-p", "icmp", "-4", "--direction", "in", "--duration", "6")
    tcp = Trace("--backend", "nft", "-p", "tcp", "--dport", str(PORT), "-4", "--direction", "in",
                "--duration", "6")
    ping(2, 0.05)
    syn()
    _rc1, p1, e1 = icmp.finish()
    _rc2, p2, e2 = tcp.finish()
    assert [p["proto"] for p in p1] == ["ICMP", "ICMP"], e1
    assert [p["proto"] for p in p2] == ["TCP"], e2
    assert not any("possibly incomplete" in w for p in p1 + p2 for w in p["warnings"])


def kernel_count(backend: str, comment: str) -> int:
    """Packets the kernel counted on the filter INPUT rule with this comment (read after the trace)."""
    for line in sh(f"iptables-{backend}-save -c -t filter", SERVER).splitlines():
        if f"--comment {comment}" in line:
            return int(re.match(r"\[(\d+):", line)[1])
    raise AssertionError(f"no rule {comment} in filter INPUT")


def losses(line: str) -> dict[str, int]:
    """The summary's figures: traced, arrived, lost, not shown, incomplete, over the cap, overruns, lost steps."""
    m = re.search(r"the kernel traced (\d+) packet\(s\): (\d+) arrived, (\d+) lost entirely", line)
    assert m, line

    def num(pattern: str) -> int:
        x = re.search(pattern, line)
        return int(x[1]) if x else 0

    return {"traced": int(m[1]), "arrived": int(m[2]), "lost": int(m[3]),
            "not_shown": num(r"(\d+) arrived but not shown"), "incomplete": num(r"(\d+) arrived possibly incomplete"),
            "over_cap": num(r"(\d+) packet\(s\) of the flow not traced"), "overruns": num(r"(\d+) netlink overrun"),
            "lost_steps": num(r"(\d+) step\(s\) lost"),
            "empty": num(r"(\d+) arrived with no step past"), "unread": num(r"(\d+) step\(s\) still queued")}


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_flood_through_1000_rules_counts_what_was_lost(lab, backend):
    """Each packet makes ~1,000 steps: the socket overflows; the loss is the TRACE counter minus what arrived,
    and the TRACE counter is what the kernel's own rule counter says went through."""
    n = 400
    restore = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + "".join(
        f"-A INPUT -p icmp -m comment --comment r{i}\n" for i in range(1000)) + "COMMIT\n"
    load(backend, restore=restore)
    via = ["--via", "netlink"] if backend == "legacy" else []
    t = Trace("--backend", backend, *via, "-p", "icmp", "-4", "--direction", "in",
              "--rate-limit", "5000", "--duration", "12")
    ping(n)  # every packet is traced: the cap is far above the burst
    _rc, pkts, err = t.finish(timeout=120)
    line = summary(err)
    x = losses(line)
    assert x["traced"] == n == kernel_count(backend, "r0"), line  # the kernel's counts: every packet sent
    assert x["arrived"] == len(pkts) + x["not_shown"] + x["empty"] and x["lost"] == x["traced"] - x["arrived"], line
    assert x["lost"] == 0 or x["overruns"] or x["lost_steps"] or x["unread"], line  # a loss comes with its cause
    marked = sum(any("possibly incomplete" in w for w in p["warnings"]) for p in pkts)
    assert marked <= x["incomplete"] <= marked + x["not_shown"], line  # not shown ones count too
    short = [p for p in pkts if len(p["steps"]) < 1000]  # a complete path has the 1,000 rules and more
    flagged = [p for p in short if any("possibly incomplete" in w for w in p["warnings"])]
    assert len(flagged) == len(short), (len(short), len(flagged), line)  # every visibly short path is marked


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_burst_over_the_rate_cap_is_counted(lab, backend):
    """A burst far over --rate-limit: the packets the cap left out are the kernel's count minus the traced ones."""
    n = 300
    load(backend, ["-A INPUT -p icmp -m comment --comment cap0 -j ACCEPT"])
    t = Trace("--backend", backend, "-p", "icmp", "-4", "--direction", "in", "--rate-limit", "20",
              "--duration", "8")
    ping(n)  # ~300 packets in well under a second: the limit (20/s, burst 20) traces a few dozen
    _rc, pkts, err = t.finish()
    line = summary(err)
    x = losses(line)
    kernel = kernel_count(backend, "cap0")
    assert kernel == n, line
    assert 20 <= x["traced"] < n and x["over_cap"] == kernel - x["traced"], line
    assert x["lost"] == x["traced"] - x["arrived"] and x["arrived"] == len(pkts) + x["not_shown"] + x["empty"], line
    assert "over --rate-limit 20/s" in line, line


def test_legacy_churn_each_packet_against_its_version(lab):
    """Insert and delete a rule above the one that decides, sending a packet right after each change."""
    load("legacy", ["-A INPUT -p icmp -j ACCEPT"])
    t = Trace("--backend", "legacy", "-p", "icmp", "-4", "--direction", "in", "--duration", "25")
    for i in range(10):
        if i % 2 == 0:
            sh("iptables-legacy -I INPUT 1 -p udp --dport 9 -j ACCEPT", SERVER)
        else:
            sh("iptables-legacy -D INPUT 1", SERVER)
        ping(1)
        time.sleep(0.6)
    t.p.send_signal(signal.SIGINT)
    _rc, pkts, err = t.finish()
    assert len(pkts) == 10, err
    for i, p in enumerate(pkts):
        assert (p["verdict"]["chain"], p["verdict"]["num"]) == ("INPUT", 2 if i % 2 == 0 else 1), (i, p["notes"])
        assert "-p icmp" in p["tables"]["rules"].get(p["steps"][-1].get("rule"), ""), (i, p["steps"][-1], p["notes"])


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_restore_with_raw_reinstalls_the_trace_rules(lab, backend):
    restore = f"printf '*raw\\n:PREROUTING ACCEPT [0:0]\\n:OUTPUT ACCEPT [0:0]\\nCOMMIT\\n' | iptables-{backend}-restore"
    load(backend, ["-A INPUT -p icmp -j ACCEPT"])
    sh(restore, SERVER)
    expected = snapshot()  # the restore's own effect (nf_tables: it creates the raw table)
    load(backend, ["-A INPUT -p icmp -j ACCEPT"])
    t = Trace("--backend", backend, "-p", "icmp", "-4", "--direction", "in", "--duration", "6")
    sh(restore, SERVER)
    deadline = time.monotonic() + 8
    while "ruletrace:" not in sh(f"iptables-{backend}-save -t raw", SERVER) and time.monotonic() < deadline:
        time.sleep(0.2)
    ping(1)
    _rc, pkts, err = t.finish()
    assert "re-installing" in err, err
    assert [p["proto"] for p in pkts] == ["ICMP"], err
    assert snapshot() == expected, err
