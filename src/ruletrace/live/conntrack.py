"""The conntrack entry of a traced packet's flow: ``conntrack -L`` in the traced namespace.

Read when the packet is explained (a fraction of a second after it passed): state, original
and reply tuples (the reply tuple shows the NAT mapping), mark, zone, status flags, timeout.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import deque
from typing import TYPE_CHECKING

from ..fields import bounded_int
from ..model import ConntrackEntry, Explanation
from .dropmon import die_with_parent

if TYPE_CHECKING:
    from .session import TraceSpec

TIMEOUT = 5.0
PORTED = ("tcp", "udp", "sctp", "dccp", "udplite")


def parse(line: str, when: str) -> ConntrackEntry | None:
    """One line of ``conntrack -L -o extended`` (or without ``-o extended``)."""
    toks = line.split()
    if toks and toks[0] in ("[NEW]", "[UPDATE]", "[DESTROY]"):  # conntrack -E
        toks = toks[1:]
    if not toks:
        return None
    i = 2 if toks[0] in ("ipv4", "ipv6") else 0
    if len(toks) < i + 3:
        return None
    e = ConntrackEntry(when, proto=toks[i], text=line.strip())
    e.timeout = bounded_int(toks[i + 2]) if toks[i + 2].isdigit() else None
    tuples: list[list[str]] = []
    for t in toks[i + 3:]:
        if t.startswith("[") and t.endswith("]"):
            e.status.append(t[1:-1])
        elif "=" in t:
            k, v = t.split("=", 1)
            if k == "src":
                tuples.append([])
            if k in ("src", "dst", "sport", "dport", "type", "code", "id") and tuples:
                tuples[-1].append(t)
            elif k == "mark":
                e.mark = v
            elif k == "zone":
                e.zone = v
        elif t.isupper() and e.state is None:
            e.state = t
    if tuples:
        e.original = " ".join(tuples[0])
    if len(tuples) > 1:
        e.reply = " ".join(tuples[1])
    if e.state is None and e.proto != "tcp":
        e.state = "UNREPLIED" if "UNREPLIED" in e.status else "ASSURED" if "ASSURED" in e.status else "NEW/REPLIED"
    return e


def available() -> bool:
    return shutil.which("conntrack") is not None


def entry(expl: Explanation, when: str = "after the packet") -> ConntrackEntry | None:
    """The entry whose original tuple is the packet's as first seen, or None when there is none."""
    if not expl.packet.events:
        return None
    f = expl.packet.events[0].fields
    proto = (f.get("PROTO") or "").lower()
    src, dst = f.get("SRC"), f.get("DST")
    if not (proto and src and dst):
        return None
    fam = "ipv6" if ":" in src else "ipv4"
    argv = ["conntrack", "-L", "-f", fam, "-p", proto, "-s", src, "-d", dst, "-o", "extended"]
    if proto in PORTED and f.get("SPT") and f.get("DPT"):
        argv += ["--sport", f["SPT"], "--dport", f["DPT"]]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in p.stdout.splitlines():
        e = parse(line, when)
        if e is not None:
            return e
    return None


KEEP = 1024  # NEW events remembered (the oldest go first)


def _tuple(text: str) -> dict[str, str]:
    return dict(t.split("=", 1) for t in text.split() if "=" in t)


class Events:
    """``conntrack -E -e NEW`` beside a trace: each traced flow's entry as the kernel made it
    (state, timeout, tuples and status when the entry was confirmed). The child dies with us
    (PR_SET_PDEATHSIG) and is stopped on every exit path; lines are kept in a bounded deque."""

    def __init__(self, spec: TraceSpec) -> None:
        self.argv = ["conntrack", "-E", "-e", "NEW", "-o", "extended"]
        if spec.proto and spec.proto.lower() in PORTED + ("icmp", "icmpv6"):
            self.argv += ["-p", spec.proto.lower()]
        self.entries: deque[ConntrackEntry] = deque(maxlen=KEEP)
        self.proc: subprocess.Popen[str] | None = None
        self.error = ""
        self._lock = threading.Lock()

    def start(self) -> bool:
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, preexec_fn=die_with_parent)
        except OSError as e:
            self.error = f"conntrack -E: {e.strerror or e}"
            return False
        threading.Thread(target=self._read, daemon=True).start()
        return True

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            e = parse(line, "first seen")
            if e is not None:
                with self._lock:
                    self.entries.append(e)

    def first(self, expl: Explanation) -> ConntrackEntry | None:
        """The NEW event of the packet's flow (its original tuple is the packet as first seen)."""
        if not expl.packet.events:
            return None
        f = expl.packet.events[0].fields
        want = {"src": f.get("SRC"), "dst": f.get("DST")}
        if f.get("SPT") and f.get("DPT"):
            want.update(sport=f["SPT"], dport=f["DPT"])
        with self._lock:
            for e in self.entries:
                t = _tuple(e.original)
                if all(t.get(k) == v for k, v in want.items()) and (e.proto or "") == (f.get("PROTO") or "").lower():
                    return e
        return None

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=3)
