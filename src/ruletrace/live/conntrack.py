"""The conntrack entry of a traced packet's flow: ``conntrack -L`` in the traced namespace.

Read when the packet is explained (a fraction of a second after it passed): state, original
and reply tuples (the reply tuple shows the NAT mapping), mark, zone, status flags, timeout.
"""

from __future__ import annotations

import shutil
import subprocess

from ..fields import bounded_int
from ..model import ConntrackEntry, Explanation

TIMEOUT = 5.0
PORTED = ("tcp", "udp", "sctp", "dccp", "udplite")


def parse(line: str, when: str) -> ConntrackEntry | None:
    """One line of ``conntrack -L -o extended`` (or without ``-o extended``)."""
    toks = line.split()
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
