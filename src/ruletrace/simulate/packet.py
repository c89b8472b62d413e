"""The packet a probe describes: its fields, every default stated as an assumption, and its path.

What the probe leaves out is assumed and said (source port 40000, a SYN for a new TCP
connection, an echo request, a length from the protocol's usual header, IN=eth0 later in the
walk); the path (input / forward / output) is the probe's, else found from the host's addresses.
The engine (engine.py) walks the packet made here.
"""

from __future__ import annotations

from typing import Any

from ..fields import show_address
from .hostfacts import HostFacts
from .probe import PORT_PROTOS, Probe, flags_text
from .state import Ctx, Pkt

# header bytes after the IP header of a probe without --length: TCP 32 (a SYN 40, with its
# options), UDP 8, ICMP / ICMPv6 echo 64
DEFAULT_PAYLOAD = {6: 32, 17: 8, 1: 64, 58: 64}
_NOTES: dict[Any, str] = {}  # the words of the packet's own assumptions, made once (few distinct ones)
_FLAGS_NOTE = {f: f"TCP flags not given: assumed {flags_text(f)}" for f in (0x02, 0x10)}
# (version, protocol, a SYN?) -> the length a probe without --length is given, and the note saying so
_LENGTHS: dict[tuple[int, int, bool], tuple[int, str]] = {}


def _note(key: Any, text: str) -> str:
    if len(_NOTES) < 1 << 12:
        _NOTES[key] = text
    return text


def make_packet(pr: Probe, f: HostFacts, v: int, addrs: tuple[int, int], no_chains: bool) -> tuple[Pkt, Ctx]:
    """The packet the probe describes and its walk context (path, assumptions); ``addrs``: (src, dst)
    as numbers; ``no_chains``: a native ruleset without a base chain of the packet's family."""
    p = Pkt()
    p.v = v
    p.src, p.dst = addrs
    proto = p.proto = pr.proto
    p.mark = pr.mark
    p.ctmark = pr.ctmark
    ctstate = p.ctstate = pr.ctstate
    p.tos = pr.tos
    p.uid, p.gid = pr.uid, pr.gid
    p.physin, p.physout = pr.physin, pr.physout
    p.mac = pr.mac_src
    known = f.knows_local()
    path, reason = choose_path(pr, f, p, known)
    c = Ctx(f, path, known)
    c.orig_dst = (v, p.dst)
    c.orig_src = (v, p.src)
    note = c.assumptions.__setitem__  # Ctx.note without its frame: note(text, None)
    if pr.path is None:
        text = _NOTES.get((path, reason)) or _note((path, reason), f"path {path}: {reason}")
        note(text, None)
    p.itype = p.icode = None
    if proto in PORT_PROTOS:
        sport, dport = pr.sport, pr.dport
        if sport is None:
            sport = 40000
            note("source port not given: assumed 40000", None)
        if dport is None:
            dport = 0
            note("destination port not given: assumed 0", None)
        p.sport, p.dport = sport, dport
    else:
        p.sport = p.dport = None
    if proto == 6:
        flags = pr.tcp_flags
        if flags is None:
            flags = 0x02 if ctstate == "NEW" else 0x10
            note(_FLAGS_NOTE[flags], None)
        p.tcpflags = flags
    else:
        p.tcpflags = None
        if proto == 1 or proto == 58:
            if pr.icmp_type is None:
                p.itype, p.icode = (128, 0) if proto == 58 else (8, 0)
                note(f"ICMP type not given: assumed echo-request ({p.itype}/0)", None)
            else:
                p.itype, p.icode = pr.icmp_type, pr.icmp_code or 0
    if pr.length is None:
        key = (v, proto, p.tcpflags == 0x02)
        dflt = _LENGTHS.get(key)
        if dflt is None:
            n = (20 if v == 4 else 40) + DEFAULT_PAYLOAD.get(proto, 0) + (8 if p.tcpflags == 0x02 else 0)
            dflt = (n, f"packet length not given: assumed LEN={n}")
            if len(_LENGTHS) < 1 << 12:
                _LENGTHS[key] = dflt
        p.length = dflt[0]
        note(dflt[1], None)
    else:
        p.length = pr.length
    p.ttl = pr.ttl if pr.ttl is not None else 64
    if ctstate != "NEW":
        note(f"conntrack state {ctstate}: the nat table is not traversed (only a connection's "
             "first packet is); a NAT mapping of the connection is not applied", None)
    if pr.mark:
        note(f"initial mark 0x{pr.mark:x} (--mark)", None)
    p.orig = (p.src, p.dst, p.sport, p.dport)
    if no_chains:
        fams = "ip6" if v == 6 else "ip"
        note(f"the ruleset has no base chain of family {fams} or inet on prerouting, input, forward, "
             "output or postrouting: no rule sees this packet", None)
    if not c.local_known:
        c.is_local(p, v, p.src)  # state the locality assumed for both addresses up front
        c.is_local(p, v, p.dst)
    return p, c


def choose_path(pr: Probe, f: HostFacts, p: Pkt, known: bool) -> tuple[str, str]:
    """The packet's path (input / forward / output) and why: given, or from the addresses; ``known``:
    f.knows_local(), asked just before (so f.local_seen holds answers for the facts as they are)."""
    if pr.path is not None:
        return pr.path, "given"
    if pr.iif is None and (p.src >> 24 == 127 if p.v == 4 else p.src == 1):
        return "output", f"SRC {show_address(pr.src)} is a loopback address: locally generated"
    if known:
        # f.is_local's remembered answers first (the caller has just checked the facts: knows_local)
        seen = f.local_seen
        src_local = seen.get((p.v, p.src))
        if src_local is None:
            src_local = f.is_local(p.v, p.src)
        dst_local = seen.get((p.v, p.dst))
        if dst_local is None:
            dst_local = f.is_local(p.v, p.dst)
        if dst_local and not (pr.iif is None and pr.oif and src_local):
            if src_local and pr.iif is None:
                return "output", "SRC and DST are local addresses and no -i: locally generated"
            return "input", f"DST {show_address(pr.dst)} is a local address"
        if src_local:
            return "output", f"SRC {show_address(pr.src)} is a local address"
        return "forward", "neither SRC nor DST is a local address"
    if pr.oif and pr.iif:
        return "forward", "-i and -o given, no local addresses: assumed routed through"
    if pr.oif:
        return "output", "-o given without -i, no local addresses: assumed locally generated"
    return "input", f"no local addresses given: assumed DST {show_address(pr.dst)} is local (use --path to change)"
