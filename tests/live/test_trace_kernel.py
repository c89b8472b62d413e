"""`ruletrace trace` / `cleanup` against the real kernel, in network namespaces of our own (prefix rtt8).

Never touches the root namespace: every trace runs with ``--netns`` into the lab's server namespace.
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

from ruletrace.lab.capture import enable_all_netns_logging
from tests.helpers import BackgroundTrace

pytestmark = pytest.mark.kernel

PREFIX = f"rtt8{os.getpid() % 1000}"
CLIENT, SERVER = PREFIX + "c", PREFIX + "s"
C_ADDR, S_ADDR = "10.88.7.1", "10.88.7.2"
PORT = 52000 + os.getpid() % 1000
SRC = str(Path(__file__).resolve().parents[2] / "src")
# drop reasons (a bpftrace child, ~1 s of CPU to attach) are tested in tests/fate; these tests
# are about the rules and the cleanup
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "RULETRACE_NO_DROP_REASONS": "1"}

TOOLS = ("ip", "iptables-legacy", "iptables-nft", "ip6tables-legacy", "ip6tables-nft", "nft")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    return None


if _skip_reason():
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=_skip_reason())]


def sh(cmd: str, ns: str | None = None, check: bool = True) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + ["sh", "-c", cmd]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and p.returncode:
        raise AssertionError(f"{cmd}: {p.stderr}")
    return p.stdout


def snapshot(ns: str = SERVER) -> str:
    """Everything a session may change: both backends' rulesets, the nft ruleset, nf_log bindings."""
    text = sh("iptables-legacy-save; ip6tables-legacy-save; iptables-nft-save; ip6tables-nft-save; "
              "nft list ruleset; cat /proc/net/netfilter/nf_log", ns)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    lines = [re.sub(r"\[\d+:\d+\]", "[]", re.sub(r"counter packets \d+ bytes \d+", "counter", x)) for x in lines]
    return "\n".join(lines)


SCENARIO = {
    # a TCP SYN to PORT is dropped by filter WEB rule 1 (reached by a jump); ICMP echo is marked in
    # mangle and accepted by filter INPUT rule 2
    "rules": [
        "-t mangle -A PREROUTING -p icmp -j MARK --set-mark 0x10",
        "-N WEB",
        f"-A INPUT -p tcp --dport {PORT} -j WEB",
        "-A INPUT -p icmp -m mark --mark 0x10 -j ACCEPT",
        f"-A WEB -p tcp -s {C_ADDR} -j DROP",
    ],
}


@pytest.fixture(scope="module")
def lab():
    def down():
        for ns in (CLIENT, SERVER):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    down()
    try:
        sh(f"ip netns add {CLIENT} && ip netns add {SERVER} && "
           f"ip link add {PREFIX}vc type veth peer name {PREFIX}vs && "
           f"ip link set {PREFIX}vc netns {CLIENT} && ip link set {PREFIX}vs netns {SERVER}")
        sh(f"ip link set lo up; ip addr add {C_ADDR}/24 dev {PREFIX}vc; ip link set {PREFIX}vc up", CLIENT)
        sh(f"ip link set lo up; ip addr add {S_ADDR}/24 dev {PREFIX}vs; ip link set {PREFIX}vs up", SERVER)
        yield
    finally:
        down()
        for st in Path("/run/ruletrace").glob("*.json") if Path("/run/ruletrace").is_dir() else []:
            try:
                if json.loads(st.read_text()).get("netns", {}).get("name") == SERVER:
                    st.unlink()
            except (OSError, ValueError):
                pass


def load_scenario(backend: str) -> None:
    """Fresh rules in the server namespace for one backend, the other backend empty."""
    other = "nft" if backend == "legacy" else "legacy"
    for fam in ("iptables", "ip6tables"):
        for b in (backend, other):
            for t in ("raw", "mangle", "filter"):
                sh(f"{fam}-{b} -t {t} -F; {fam}-{b} -t {t} -X", SERVER, check=False)
    sh("nft flush ruleset", SERVER, check=False)
    for r in SCENARIO["rules"]:
        sh(f"iptables-{backend} {r}", SERVER)
    # legacy tables, once used, stay instantiated (empty) in the namespace: touch raw up front so
    # that the comparison is about rules and bindings
    sh("iptables-legacy -t raw -S >/dev/null; ip6tables-legacy -t raw -S >/dev/null", SERVER, check=False)


def send_syn() -> None:
    """One TCP SYN client -> server (dropped: the connect times out before any retransmission)."""
    sh(f"python3 -c \"import socket; s=socket.socket(); s.settimeout(0.4)\ntry: s.connect(('{S_ADDR}', {PORT}))"
       f"\nexcept OSError: pass\"", CLIENT)


def send_ping() -> None:
    """One ICMP echo request client -> server (raw socket; no ping binary needed)."""
    code = (
        "import socket, struct\n"
        "def ck(b):\n s=sum(struct.unpack('!%dH' % (len(b)//2), b)); s=(s>>16)+(s&0xffff); return ~(s+(s>>16))&0xffff\n"
        "h=struct.pack('!BBHHH',8,0,0,0x4242,1)+b'rtt8'*4\n"
        "h=h[:2]+struct.pack('!H',ck(h))+h[4:]\n"
        "s=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(0.5)\n"
        f"s.sendto(h, ('{S_ADDR}', 0))\n"
        "try: s.recv(100)\nexcept OSError: pass\n"
    )
    p = subprocess.run(["ip", "netns", "exec", CLIENT, sys.executable, "-c", code], capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr


class Tracer(BackgroundTrace):
    """`ruletrace trace --netns SERVER …` running in the background."""

    def __init__(self, *args: str) -> None:
        super().__init__("--netns", SERVER, *args, env=ENV, timeout=20)

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        return self.communicate(timeout)


def ruletrace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruletrace", *args], capture_output=True, text=True,
                          env=ENV, timeout=60)


def shape(pkt: dict) -> tuple:
    """What must agree between the live and the offline explanation of a packet."""
    v = pkt["verdict"] or {}
    return (pkt["proto"], pkt["fate"], v.get("action"), v.get("table"), v.get("chain"), v.get("num"),
            tuple(f"{s['table']}:{s['chain']}:{s['kind']}:{s['num']}" for s in pkt["steps"]))


def offline_legacy(ruleset: str, tmp: Path) -> list[dict]:
    """The same rules and traffic through the kernel log and `ruletrace explain`."""
    sh(f"cat > {tmp}/rs.save <<'EOF'\n{ruleset}\nEOF\niptables-legacy-restore < {tmp}/rs.save", SERVER)
    sh("echo nf_log_ipv4 > /proc/sys/net/netfilter/nf_log/2", SERVER)
    enable_all_netns_logging()  # a namespace's TRACE lines reach the kernel log only with this set
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)
    send_syn()
    send_ping()
    time.sleep(0.3)
    lines = []
    while True:
        try:
            rec = os.read(fd, 8192)
        except BlockingIOError:
            break
        if b"TRACE: " in rec and f"SRC={C_ADDR} ".encode() in rec:
            lines.append(rec.decode(errors="replace").rstrip("\n"))
    os.close(fd)
    (tmp / "kern.log").write_text("\n".join(lines) + "\n")
    p = ruletrace("explain", "--json", "-r", str(tmp / "rs.save"), str(tmp / "kern.log"))
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["packets"]


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_live_trace_explains_like_offline(lab, backend, tmp_path):
    load_scenario(backend)
    before = snapshot()
    monitor = None
    if backend == "nft":  # the offline path: `nft monitor trace` listening next to us
        with open(tmp_path / "monitor.txt", "w") as mon_out:
            monitor = subprocess.Popen(["ip", "netns", "exec", SERVER, "nft", "-a", "monitor", "trace"],
                                       stdout=mon_out, stderr=subprocess.DEVNULL)
    t = Tracer("--backend", backend, "-s", C_ADDR, "--direction", "in", "-4", "--count", "2",
               "--duration", "15", "--json")
    ruleset = sh(f"iptables-{backend}-save", SERVER)  # the ruleset while tracing (our rules in it)
    nft_json = sh("nft -j list ruleset", SERVER)  # nf_tables: the same with rule handles
    assert "ruletrace:" in ruleset
    send_syn()
    send_ping()
    rc, out, err = t.finish()
    assert rc == 0, err
    live = [json.loads(line) for line in out.splitlines()]
    assert [p["proto"] for p in live] == ["TCP", "ICMP"], err
    tcp, icmp = live
    for p in live:  # each JSON line stands alone: when, which session, which schema
        assert p["schema"] == 2 and re.fullmatch(r"[0-9a-f]{32}", p["session"]), p
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", p["time"]), p["time"]
    assert tcp["session"] == icmp["session"] and tcp["time"] <= icmp["time"]
    assert (tcp["fate"], tcp["verdict"]["table"], tcp["verdict"]["chain"], tcp["verdict"]["num"]) == (
        "dropped", "filter", "WEB", 1)
    assert tcp["src"] == C_ADDR and tcp["dport"] == PORT
    assert (icmp["fate"], icmp["verdict"]["chain"], icmp["verdict"]["num"]) == ("delivered", "INPUT", 2)
    assert not any("ruletrace:" in text for p in live for text in p["tables"]["rules"].values())  # own rules hidden
    assert snapshot() == before  # cleaned up exactly
    if monitor is not None:
        time.sleep(0.2)
        monitor.terminate()
        monitor.wait(5)
        (tmp_path / "rs.json").write_text(nft_json)
        p = ruletrace("explain", "--json", "-r", str(tmp_path / "rs.json"), str(tmp_path / "monitor.txt"))
        assert p.returncode == 0, p.stderr
        offline = json.loads(p.stdout)["packets"]
    else:
        offline = offline_legacy(ruleset, tmp_path)
        load_scenario(backend)
        assert snapshot() == before
    assert [shape(p) for p in offline] == [shape(p) for p in live]


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_live_one_line_view(lab, backend):
    """The default view: one line per packet, three SYNs of one path collapsed into one line with
    ×3, no commands on stderr, and the summary of fates and deciders at the end."""
    load_scenario(backend)
    before = snapshot()
    t = Tracer("--backend", backend, "-s", C_ADDR, "--direction", "in", "-4", "--count", "4",
               "--duration", "20", "--width", "80")
    for _ in range(3):
        send_syn()  # a new connection each time (another source port): the same path
    send_ping()
    rc, out, err = t.finish()
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 3, out
    syn, ping, again = lines
    clock = r"\d\d:\d\d:\d\d\.\d{3}"
    assert re.fullmatch(rf"{clock}  TCP {C_ADDR}:\d+ -> {S_ADDR}:{PORT} \[SYN\]  in {PREFIX}vs  "
                        rf"DROPPED  filter:WEB rule 1  -s {C_ADDR}(/32)? -p tcp( -m tcp)? -j DROP", syn), syn
    assert re.fullmatch(rf"{clock}  ICMP {C_ADDR} -> {S_ADDR} type 8/0  in {PREFIX}vs  DELIVERED  "
                        r"filter:INPUT rule 2  mark 0x10 set by mangle:PREROUTING rule 1", ping), ping
    assert again.startswith(syn[:13]) and again.endswith("  ×3") and again[:-4] == syn, (syn, again)
    assert len(syn) > 80  # not a terminal: never cut, never wrapped, whatever --width says
    assert "run:" not in err and "netlink:" not in err, err  # the commands only with -v / --dry-run
    assert "ruletrace: 4 packet(s): 3 dropped, 1 delivered" in err, err
    assert "ruletrace: decided by: filter:WEB rule 1 ×3, filter:INPUT rule 2 ×1" in err, err
    assert "ruletrace: 2 packet(s) took a path already shown (1 path(s) repeated)" in err, err
    assert "4 packet(s) shown" in err, err  # then what the kernel traced and what arrived
    assert snapshot() == before


def test_live_one_line_view_on_a_terminal(lab):
    """On a terminal (a pty of 80 columns, stdout and stderr both on it): each line fits in one
    row, and a repeat rewrites its own row with the count instead of printing another."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    load_scenario("nft")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "ruletrace", "trace", "--netns", SERVER, "--backend", "nft",
                          "-s", C_ADDR, "--direction", "in", "-4", "--count", "3", "--duration", "20",
                          "--no-color", "--width", "200"],  # wider than the terminal: rows still fit it
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                         env={**ENV, "COLUMNS": "80", "TERM": "xterm"})
    os.close(slave)
    seen = b""

    def read_until(done, timeout: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            ready, _w, _x = select.select([master], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                return
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            seen += chunk

    try:
        read_until(lambda: b"tracing (" in seen, 20)
        assert b"tracing (" in seen, seen.decode(errors="replace")
        for _ in range(3):
            send_syn()
        read_until(lambda: False, 20)  # to the end of the output (the child closes the terminal)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    text = seen.decode(errors="replace").replace("\r\n", "\n")
    assert text.count("\x1b[1A\x1b[2K") == 2, text  # the second and third SYN rewrote the first's row
    rows = [r.split("\x1b[2K")[-1] for r in text.split("\n")]
    packet_rows = [r for r in rows if " DROPPED " in r]
    assert [r.endswith("×2") for r in packet_rows] == [False, True, False] and packet_rows[2].endswith("×3"), rows
    assert all(len(r) <= 80 for r in packet_rows), rows  # messages are never cut: the terminal folds them
    assert re.search(rf"TCP {C_ADDR}(:\d+)? -> {S_ADDR}:{PORT}.* DROPPED +filter:WEB rule 1", packet_rows[0])


def test_live_verbose_shows_trees_and_commands(lab):
    load_scenario("nft")
    t = Tracer("--backend", "nft", "-s", C_ADDR, "--direction", "in", "-4", "--count", "1",
               "--duration", "20", "-v")
    send_syn()
    rc, out, err = t.finish()
    assert rc == 0, err
    assert out.startswith("packet 1  TCP ") and "DROPPED by filter:WEB rule 1" in out, out
    assert "ruletrace: run: iptables-nft -w 2 -t raw -I PREROUTING 1" in err, err


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_sigkill_then_cleanup_restores_exactly(lab, backend):
    load_scenario(backend)
    before = snapshot()
    t = Tracer("--backend", backend, "-p", "tcp", "--dport", str(PORT), "--duration", "30")
    during = snapshot()
    assert during != before and "ruletrace:" in during
    t.p.kill()
    assert t.finish()[0] == -signal.SIGKILL
    assert snapshot() == during  # SIGKILL: nothing could be undone
    # the next run lists the leftovers and changes nothing without being asked (no terminal here)
    p = ruletrace("trace", "--netns", SERVER, "--backend", backend, "-p", "udp", "--duration", "0.3")
    assert "its process is gone" in p.stderr and "ruletrace cleanup" in p.stderr, p.stderr
    assert snapshot() == during
    p = ruletrace("cleanup", "--netns", SERVER)
    assert p.returncode == 0, p.stderr
    assert "undid" in p.stderr
    assert snapshot() == before
    assert "nothing to clean up" in ruletrace("cleanup", "--netns", SERVER).stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_clean_up(lab, sig):
    load_scenario("legacy")
    before = snapshot()
    t = Tracer("--backend", "legacy", "-p", "tcp", "--dport", str(PORT), "--duration", "30")
    assert snapshot() != before
    t.p.send_signal(sig)
    rc, _out, err = t.finish()
    assert snapshot() == before, err
    assert "cleaning up" in err
    assert rc == 128 + sig, err  # as a shell reports a command a signal ended, after the cleanup


def test_dry_run_changes_nothing(lab):
    load_scenario("nft")
    before = snapshot()
    p = ruletrace("trace", "--netns", SERVER, "-p", "tcp", "--dport", str(PORT), "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "would run: iptables-nft -w 2 -t raw -I PREROUTING 1 -p tcp --dport" in p.stderr
    assert snapshot() == before
    assert ruletrace("trace", "--netns", SERVER).returncode == 2  # no filter, no --all


def test_doctor_sees_leftover_and_backend(lab):
    load_scenario("nft")
    sid = "5eed" * 8  # the exact shape of a session's TRACE rule, no state file, no live session
    sh(f"iptables-nft -t raw -A PREROUTING -p udp -m limit --limit 50/second --limit-burst 50 "
       f"-m comment --comment ruletrace:{sid} -j TRACE", SERVER)
    p = ruletrace("doctor", "--netns", SERVER, "--no-color")
    assert "nft" in p.stdout and "orphaned" in p.stdout and "ruletrace cleanup --force" in p.stdout, p.stdout
    p = ruletrace("cleanup", "--netns", SERVER)
    assert p.returncode == 0 and "--force" in p.stderr, p.stderr
    assert sid in sh("iptables-nft-save", SERVER)  # without --force a rule without a state file stays
    assert ruletrace("cleanup", "--netns", SERVER, "--force").returncode == 0
    assert "ruletrace:" not in sh("iptables-nft-save", SERVER)


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_rule_churn_is_detected_and_used(lab, backend):
    """A rule inserted mid-trace shifts the numbers: the packet is explained against the new ruleset."""
    load_scenario(backend)
    t = Tracer("--backend", backend, "-s", C_ADDR, "-p", "tcp", "--direction", "in", "-4", "--count", "1",
               "--duration", "15", "--json")
    sh(f"iptables-{backend} -I INPUT 1 -p udp --dport 9 -j ACCEPT", SERVER)
    time.sleep(0.3)
    send_syn()
    rc, out, err = t.finish()
    assert rc == 0, err
    (pkt,) = [json.loads(line) for line in out.splitlines()]
    steps = [f"{s['table']}:{s['chain']}:{s['kind']}:{s['num']}" for s in pkt["steps"]]
    assert "filter:INPUT:rule:2" in steps and pkt["verdict"]["chain"] == "WEB", steps
    assert not pkt["warnings"], pkt["warnings"]
    assert any("filter:INPUT +1 -0" in n for n in pkt["notes"]), pkt["notes"]
    assert "the ruleset changed during the trace" in err


def test_live_explain_miss(lab):
    """trace --explain-miss INPUT: a live ping (accepted by INPUT rule 2) is told why INPUT rule 1
    did not take it, on its line (a hint), in JSON (the block); a chain not in the live ruleset is
    one error line, exit 2, and the session is still cleaned up."""
    load_scenario("legacy")
    before = snapshot()
    t = Tracer("--backend", "legacy", "-s", C_ADDR, "--direction", "in", "-4", "--count", "1",
               "--duration", "15", "--json", "--explain-miss", "filter:INPUT")
    send_ping()
    rc, out, err = t.finish()
    assert rc == 0, err
    (pkt,) = [json.loads(line) for line in out.splitlines()]
    rows = [(m["chain"], m["num"], m["result"]) for m in pkt["explain_miss"]]
    assert rows == [("INPUT", 1, "failed"), ("INPUT", 2, "matched")], pkt["explain_miss"]
    assert "`-p tcp` did not match: the packet's protocol is ICMP" in pkt["explain_miss"][0]["reason"]
    t = Tracer("--backend", "legacy", "-s", C_ADDR, "--direction", "in", "-4", "--count", "1",
               "--duration", "15", "--explain-miss", "INPUT")
    send_ping()
    rc, out, err = t.finish()
    assert rc == 0, err
    assert out.rstrip().endswith("miss INPUT rule 1: `-p tcp` did not match"), out
    assert snapshot() == before
    p = ruletrace("trace", "--netns", SERVER, "--backend", "legacy", "-s", C_ADDR, "-4", "--count", "1",
                  "--explain-miss", "NOPE")
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if "NOPE" in line]
    assert errors == ["ruletrace: error: --explain-miss: no chain NOPE in table filter of the live ruleset "
                      "(backend legacy, 1 ruleset(s) read)"], p.stderr
    assert "Traceback" not in p.stderr
    assert snapshot() == before  # set up, refused, cleaned up
