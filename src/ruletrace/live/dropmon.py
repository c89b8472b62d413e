"""Kernel drop reasons of traced packets: ``skb:kfree_skb`` through a ``bpftrace`` child process.

The BPF program is bounded: it keeps only packets of the traced namespace (the namespace's
inode number), of the traced families, protocol, ports and plain IPv4 addresses, and prints
at most the session's ``--rate-limit`` drops a second (the same cap as the TRACE rules; the rest
are counted). Python then matches each drop to a traced packet by protocol, addresses, ports
and the IPv4 ID / IPv6 flow label, and names the reason in words (``ruletrace.kernel_facts``).

The child is always detached: it dies with ruletrace (PR_SET_PDEATHSIG, even on SIGKILL of
ruletrace), and :meth:`DropMonitor.stop` ends it on every normal exit path. When bpftrace,
BTF or tracefs is missing, or the kernel is locked down, :func:`availability` says why and
tracing goes on without drop reasons.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import kernel_facts as kf
from ..fields import bounded_int
from ..model import Explanation, KernelDrop

if TYPE_CHECKING:
    from .session import TraceSpec

BTF = "/sys/kernel/btf/vmlinux"
LOCKDOWN = "/sys/kernel/security/lockdown"
READY_TIMEOUT = 30.0  # seconds for bpftrace to compile and attach (a few on a busy host)
KEEP = 2000  # drops kept unmatched at most (oldest go first)
FIRST_GRACE = 0.6  # seconds a packet waits for its drop while bpftrace has reported fewer than WARM
WARM = 3
IGNORED = {"inet_rtm_getroute", "inet6_rtm_getroute"}  # the skb of a route lookup (ip route get), not a packet
PR_SET_PDEATHSIG = 1
PROTO_NUM = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "udplite": 136,
             "dccp": 33, "gre": 47, "esp": 50, "ah": 51}
PROTO_NAME = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 132: "SCTP", 136: "UDPLITE", 33: "DCCP",
              47: "GRE", 50: "ESP", 51: "AH"}
FIX = ["apt-get install bpftrace   # drop reasons in `ruletrace trace` (needs BTF: /sys/kernel/btf/vmlinux)"]


@dataclass(slots=True)
class Availability:
    ok: bool
    why: str = ""
    fix: list[str] = field(default_factory=list)


def availability() -> Availability:
    """Can this host report drop reasons? (bpftrace on PATH, BTF, tracefs, no lockdown, root)"""
    if shutil.which("bpftrace") is None:
        return Availability(False, "bpftrace not found on PATH", list(FIX))
    if not os.path.exists(BTF):
        return Availability(False, f"the kernel has no BTF ({BTF} missing)",
                            ["use a kernel built with CONFIG_DEBUG_INFO_BTF=y"])
    try:
        with open(LOCKDOWN) as f:
            mode = f.read()
        if "[confidentiality]" in mode:
            return Availability(False, "the kernel is locked down (confidentiality): BPF may not read kernel memory",
                                ["boot with lockdown=integrity or none (or without Secure Boot lockdown)"])
    except OSError:
        pass
    if not kf.read_reason_names():
        return Availability(False, "tracefs is not mounted or has no skb:kfree_skb tracepoint",
                            ["mount -t tracefs nodev /sys/kernel/tracing"])
    if os.geteuid() != 0:
        return Availability(False, "not root: bpftrace needs root (CAP_BPF and CAP_PERFMON)", ["run with sudo"])
    return Availability(True)


def _single_port(p: str | None) -> int | None:
    if not p or ":" in p or p.startswith("!"):
        return None
    return bounded_int(p.strip())


def _plain_v4(a: str | None) -> int | None:
    """A plain IPv4 address (no network, no negation) as the u32 the kernel reads from the header."""
    if not a or a.startswith("!"):
        return None
    try:
        ip = ipaddress.ip_address(a.removesuffix("/32"))
    except ValueError:
        return None
    return int.from_bytes(ip.packed, "little") if ip.version == 4 else None


def script(spec: TraceSpec, ns_inum: int, rate: int) -> str:
    """The bpftrace program for a trace spec (session.TraceSpec) in the namespace ``ns_inum``."""
    v4, v6 = "ipv4" in spec.families, "ipv6" in spec.families
    proto = PROTO_NUM.get((spec.proto or "").lower())
    sp, dp = _single_port(spec.sport), _single_port(spec.dport)
    s4, d4 = _plain_v4(spec.src), _plain_v4(spec.dst)
    flow = []
    if proto is not None:
        flow.append(f"if ($p != {proto}) {{ return; }}")
    if sp is not None:
        flow.append(f"if ($sp != {sp}) {{ return; }}")
    if dp is not None:
        flow.append(f"if ($dp != {dp}) {{ return; }}")
    flow_s = "\n    ".join(flow)
    v4_addr = "".join([f"if (*(uint32 *)($ip + 12) != {s4}) {{ return; }} " if s4 is not None else "",
                       f"if (*(uint32 *)($ip + 16) != {d4}) {{ return; }}" if d4 is not None else ""])
    ports = ("$sp = (uint16)0; $dp = (uint16)0;\n"
             "    if ($p == 6 || $p == 17 || $p == 132 || $p == 136 || $p == 33) "
             "{ $sp = bswap(*(uint16 *)$l4); $dp = bswap(*(uint16 *)($l4 + 2)); }")
    body4 = f"""  if ($v == 4) {{
    {v4_addr}
    $p = *(uint8 *)($ip + 9);
    $l4 = $ip + (*(uint8 *)$ip & 15) * 4;
    {ports}
    {flow_s}
    if (@n > {rate}) {{ @over = @over + 1; return; }}
    @n = @n + 1;
    printf("D %d %s 4 %d %s %s %d %d %d\\n", args->reason, ksym(args->location), $p,
      ntop(2, *(uint32 *)($ip + 12)), ntop(2, *(uint32 *)($ip + 16)), $sp, $dp, bswap(*(uint16 *)($ip + 4)));
  }}""" if v4 else ""
    body6 = f"""  if ($v == 6) {{
    $h6 = (struct ipv6hdr *)$ip;
    $p = *(uint8 *)($ip + 6);
    $l4 = $ip + 40;
    {ports}
    {flow_s}
    if (@n > {rate}) {{ @over = @over + 1; return; }}
    @n = @n + 1;
    printf("D %d %s 6 %d %s %s %d %d %d\\n", args->reason, ksym(args->location), $p,
      ntop(10, $h6->saddr.in6_u.u6_addr8), ntop(10, $h6->daddr.in6_u.u6_addr8), $sp, $dp,
      bswap(*(uint32 *)$ip) & 0xfffff);
  }}""" if v6 else ""
    return f"""BEGIN {{ @n = 0; @over = 0; printf("READY\\n"); }}
interval:s:1 {{ @n = 0; }}
tracepoint:skb:kfree_skb
{{
  $skb = (struct sk_buff *)args->skbaddr;
  $ns = (uint32)0;
  if ($skb->dev != 0) {{ $ns = $skb->dev->nd_net.net->ns.inum; }}
  else if ($skb->sk != 0) {{ $ns = $skb->sk->__sk_common.skc_net.net->ns.inum; }}
  if ($ns != {ns_inum}) {{ return; }}
  $ip = $skb->head + $skb->network_header;
  $v = *(uint8 *)$ip >> 4;
{body4}
{body6}
}}
END {{ printf("O %d\\n", @over); clear(@n); clear(@over); }}
"""


def die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


@dataclass(slots=True)
class Drop:
    """One freed packet as bpftrace reported it."""

    reason: str
    function: str
    family: str
    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    ident: int  # IPv4 ID / IPv6 flow label
    at: float


def parse_line(line: str, names: dict[int, str], now: float = 0.0) -> Drop | None:
    parts = line.split()
    if len(parts) != 10 or parts[0] != "D":
        return None
    nums = [bounded_int(parts[i]) for i in (1, 3, 4, 7, 8, 9)]
    if any(n is None for n in nums):
        return None
    reason, ver, proto, sport, dport, ident = (n or 0 for n in nums)  # none is None (checked above)
    return Drop(names.get(reason, f"reason {reason}"), parts[2], "ipv4" if ver == 4 else "ipv6",
                PROTO_NAME.get(proto, str(proto)), parts[5], parts[6], sport, dport, ident, now)


def _int(v: str | None, base: int = 10) -> int | None:
    if v is None:
        return None
    return bounded_int(v, 16) if v.lower().startswith("0x") else bounded_int(v, base)


def _fits(d: Drop, f: dict[str, str]) -> bool:
    """Is ``d`` the packet whose step fields are ``f``? (protocol, addresses, ports, ID/flow label)"""
    if (f.get("PROTO") or "").upper() != d.proto.upper():
        return False
    ident = _int(f.get("ID") if d.family == "ipv4" else f.get("FLOWLBL"))
    if ident is not None and ident != d.ident:
        return False
    if d.proto in ("TCP", "UDP", "SCTP", "UDPLITE", "DCCP"):
        if _int(f.get("SPT")) != d.sport or _int(f.get("DPT")) != d.dport:
            return False
    return f.get("SRC") == d.src and f.get("DST") == d.dst


class DropMonitor:
    """bpftrace running beside a trace; drops read by a thread, matched to packets on demand."""

    def __init__(self, spec: TraceSpec, ns_inum: int, *, rate: int) -> None:
        self.names = kf.read_reason_names()
        self.text = script(spec, ns_inum, rate)
        self.proc: subprocess.Popen[str] | None = None
        self.drops: deque[Drop] = deque(maxlen=KEEP)
        self.over = 0  # drops the rate cap kept back
        self.seen = 0
        self.error = ""
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._err: list[str] = []

    def start(self, timeout: float = READY_TIMEOUT) -> bool:
        """Start bpftrace and wait until its probes are attached; False (and ``error``) if not."""
        try:
            self.proc = subprocess.Popen(["bpftrace", "-B", "line", "-e", self.text], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         preexec_fn=die_with_parent)
        except OSError as e:
            self.error = f"bpftrace: {e.strerror or e}"
            return False
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.1)  # let the stderr reader take in the message
                why = [e for e in self._err if "RLIMIT_MEMLOCK" not in e and e.strip()]
                self.error = ("bpftrace did not start: " + (why[0].strip()[:300] if why else
                              f"exit status {self.proc.poll()}" if self.proc.poll() is not None else
                              f"not attached after {timeout:.0f}s"))
                self.stop()
                return False
        return True

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("READY"):
                self._ready.set()
            elif line.startswith("D "):
                d = parse_line(line, self.names, time.monotonic())
                if d is not None and d.function not in IGNORED:
                    with self._lock:
                        self.drops.append(d)
                        self.seen += 1
            elif line.startswith("O "):
                self.over = bounded_int(line.split()[1]) or 0

    def _read_err(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self._err) < 50:
                self._err.append(line)

    def take(self, expl: Explanation, sysctls: dict[str, str] | None = None) -> list[KernelDrop]:
        """The drops of this packet (removed from the pool), named in words.

        bpftrace's first reports arrive late (measured: ~0.27 s for the first drop, ~0 after):
        until it has reported a few, a packet without a match waits up to ``FIRST_GRACE``.
        """
        out = self._take(expl, sysctls)
        deadline = time.monotonic() + FIRST_GRACE
        while not out and self.seen < WARM and time.monotonic() < deadline:
            time.sleep(0.02)
            out = self._take(expl, sysctls)
        return out

    def _take(self, expl: Explanation, sysctls: dict[str, str] | None) -> list[KernelDrop]:
        steps = [ev.fields for ev in expl.packet.events]
        out: list[KernelDrop] = []
        with self._lock:
            keep: deque[Drop] = deque(maxlen=KEEP)
            for d in self.drops:
                if not out and any(_fits(d, f) for f in steps):  # one packet is freed once
                    out.append(self._named(d, steps, sysctls))
                else:
                    keep.append(d)
            self.drops = keep
        return out

    @staticmethod
    def _named(d: Drop, steps: list[dict[str, str]], sysctls: dict[str, str] | None) -> KernelDrop:
        iface = next((f.get("IN") for f in steps if f.get("IN")), None)
        ttl = next((f.get("TTL") or f.get("HOPLIMIT") for f in reversed(steps) if f.get("TTL") or f.get("HOPLIMIT")),
                   None)
        text = kf.sentence(d.reason, d.function, proto=d.proto, port=d.dport or None, dst=d.dst, iface=iface,
                           sysctls=sysctls, ttl=ttl)
        fields = {"SRC": d.src, "DST": d.dst, "PROTO": d.proto}
        if d.sport or d.dport:
            fields.update(SPT=str(d.sport), DPT=str(d.dport))
        fields["ID" if d.family == "ipv4" else "FLOWLBL"] = str(d.ident)
        return KernelDrop(d.reason, d.function, text, fields)

    def stop(self) -> None:
        """End bpftrace (its probes go with it); safe to call more than once."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGINT)  # bpftrace runs END and detaches
        try:
            p.wait(timeout=3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=3)
        time.sleep(0.05)  # the reader takes in the END line
