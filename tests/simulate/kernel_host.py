"""A two-namespace test host for comparing simulations with the kernel's TRACE (prefix rts7).

server netns: veth to the client, veth to a third namespace as a forwarding destination, legacy
iptables with TRACE in raw. TRACE lines are read from /dev/kmsg and kept when they mention one
of this host's addresses.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass

TABLES_V4 = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}


def unavailable() -> str | None:
    """Why kernel tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables-legacy-restore, /dev/kmsg)"
    for tool in ("ip", "iptables-legacy-restore", "iptables-legacy-save"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not os.path.exists("/dev/kmsg"):
        return "no /dev/kmsg"
    return None


def _run(*args: str, input: str | None = None, check: bool = True) -> str:
    r = subprocess.run(args, input=input, capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


@dataclass
class Trace:
    table: str
    chain: str
    kind: str
    num: int
    fields: dict[str, str]

    @property
    def tag(self) -> tuple[str, str, str, int]:
        return (self.table, self.chain, self.kind, self.num)


def parse_trace(msg: str) -> Trace | None:
    """A kernel log TRACE message -> Trace (tag plus KEY=VALUE fields; bare words as flags)."""
    i = msg.find("TRACE: ")
    if i < 0:
        return None
    words = msg[i + 7 :].split()
    table, chain, kind, num = words[0].rsplit(":", 3)
    fields: dict[str, str] = {}
    flags = []
    for w in words[1:]:
        k, eq, v = w.partition("=")
        if eq:
            fields[k] = v
        elif w.isupper():
            flags.append(w)
    if flags:
        fields["FLAGS"] = " ".join(flags)
    return Trace(table, chain, kind, int(num), fields)


class KernelHost:
    """Namespaces rts7s-N (server) and rts7c-N (client) joined by a veth pair."""

    def __init__(self) -> None:
        n = random.randrange(1, 250)
        self.n = f"{os.getpid() % 10000}x{n}"
        self.srv = f"rts7s-{self.n}"
        self.cli = f"rts7c-{self.n}"
        self.vs = f"rts7s{n}"  # server side of the veth
        self.vc = f"rts7c{n}"
        self.far = f"rts7f-{self.n}"  # the forwarding destination's namespace
        self.vd = f"rts7d{n}"  # server side of the veth to it
        self.vf = f"rts7f{n}"
        self.net = f"10.207.{n}"
        self.fwd = f"10.208.{n}"
        self.server_ip = f"{self.net}.2"
        self.client_ip = f"{self.net}.1"
        self.server_ip2 = f"{self.net}.3"  # a second local address
        self.forward_ip = f"{self.fwd}.5"
        self.made = False
        self._kmsg: int | None = None
        self.sport = 20000 + random.randrange(0, 20000)

    def __enter__(self) -> KernelHost:
        try:
            self.setup()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def sh(self, ns: str, *args: str, input: str | None = None, check: bool = True) -> str:
        return _run("ip", "netns", "exec", ns, *args, input=input, check=check)

    def setup(self) -> None:
        self.made = True
        _run("ip", "netns", "add", self.srv)
        _run("ip", "netns", "add", self.cli)
        _run("ip", "netns", "add", self.far)
        _run("ip", "link", "add", self.vs, "netns", self.srv, "type", "veth", "peer", "name", self.vc,
             "netns", self.cli)
        s, c = self.srv, self.cli
        self.sh(s, "ip", "addr", "add", f"{self.server_ip}/24", "dev", self.vs)
        self.sh(s, "ip", "addr", "add", f"{self.server_ip2}/24", "dev", self.vs)
        self.sh(s, "ip", "link", "set", self.vs, "up")
        self.sh(s, "ip", "link", "set", "lo", "up")
        _run("ip", "link", "add", self.vd, "netns", self.srv, "type", "veth", "peer", "name", self.vf,
             "netns", self.far)
        self.sh(s, "ip", "addr", "add", f"{self.fwd}.1/24", "dev", self.vd)
        self.sh(s, "ip", "link", "set", self.vd, "up")
        self.sh(self.far, "ip", "addr", "add", f"{self.forward_ip}/24", "dev", self.vf)
        self.sh(self.far, "ip", "link", "set", self.vf, "up")
        self.sh(s, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.sh(c, "ip", "addr", "add", f"{self.client_ip}/24", "dev", self.vc)
        self.sh(c, "ip", "link", "set", self.vc, "up")
        self.sh(c, "ip", "link", "set", "lo", "up")
        self.sh(c, "ip", "route", "add", f"{self.fwd}.0/24", "via", self.server_ip)
        # the one root-namespace change allowed: log TRACE from other namespaces
        _run("sysctl", "-qw", "net.netfilter.nf_log_all_netns=1")
        self.sh(s, "sysctl", "-qw", "net.netfilter.nf_log.2=nf_log_ipv4", check=False)
        self.sh(c, "ping", "-c", "1", "-W", "2", self.server_ip, check=False)  # warm ARP
        self.sh(s, "ping", "-c", "1", "-W", "2", self.forward_ip, check=False)

    def cleanup(self) -> None:
        if self._kmsg is not None:
            os.close(self._kmsg)
            self._kmsg = None
        if not self.made:
            return
        for ns in (self.srv, self.cli, self.far):
            _run("ip", "netns", "del", ns, check=False)
        self.made = False

    def load(self, text: str) -> str:
        """Replace all tables in the server namespace; return iptables-legacy-save of the result."""
        self.sh(self.srv, "iptables-legacy-restore", input=text)
        self.sh(self.srv, "conntrack", "-F", check=False)
        return self.sh(self.srv, "iptables-legacy-save")

    def _open_kmsg(self) -> None:
        if self._kmsg is None:
            self._kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self._kmsg, 0, os.SEEK_END)

    def _read_traces(self, wait: float = 0.4) -> list[Trace]:
        out: list[Trace] = []
        deadline = time.monotonic() + wait
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                rec = os.read(self._kmsg, 8192)  # type: ignore[arg-type]
            except BlockingIOError:
                if out and time.monotonic() - idle_since > 0.15:
                    break
                time.sleep(0.01)
                continue
            except OSError:  # EPIPE: records overwritten; go on
                continue
            idle_since = time.monotonic()
            text = rec.decode("utf-8", "replace")
            msg = text.split(";", 1)[1] if ";" in text else text
            msg = msg.split("\n", 1)[0]
            if f"{self.net}." not in msg and f"{self.fwd}." not in msg:
                continue
            t = parse_trace(msg)
            if t is not None:
                out.append(t)
        return out

    def next_sport(self) -> int:
        self.sport += 1
        return self.sport

    def send(self, proto: str, src_ns: str, dst: str, *, sport: int | None = None, dport: int = 0,
             src: str | None = None) -> list[Trace]:
        """Send one packet from a namespace and return the TRACE lines it caused."""
        self._open_kmsg()
        code = _SENDER.format(proto=proto, dst=dst, sport=sport or 0, dport=dport, src=src or "")
        self.sh(src_ns, "python3", "-c", code, check=False)
        return self._read_traces()


_SENDER = """
import socket, time
proto, dst, sport, dport, src = {proto!r}, {dst!r}, {sport}, {dport}, {src!r}
if proto == "tcp":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, sport))
    s.setblocking(False)
    try:
        s.connect((dst, dport))
    except BlockingIOError:
        pass
    time.sleep(0.05)
    s.close()
elif proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, sport))
    s.sendto(b"x", (dst, dport))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if src:
        s.bind((src, 0))
    body = bytes([8, 0, 0, 0, 0x12, 0x34, 0, 1])
    c = sum(int.from_bytes(body[i:i+2], "big") for i in range(0, 8, 2))
    c = (c >> 16) + (c & 0xffff); c = ~c & 0xffff
    s.sendto(body[:2] + c.to_bytes(2, "big") + body[4:], (dst, 0))
"""

