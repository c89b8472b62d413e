"""A live trace in a few words: one packet's line, and repeats of one path collapsed with a count.

``line_of(expl)`` is what the one-line view shows of a packet (``render.live`` lays it out);
``Repeats`` tells a packet whose path was already shown (a retransmission, the same flow again)
from a new one, and counts them. Both hold only strings and counts, never an explanation, so a
long trace costs memory per distinct path, not per packet.

Owners (issue 16 item 2, explain/owners.py) go in through ``decider_text`` / ``decider_words``:
the words of the deciding rule, for the line, the repeats and the exit summary alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..explain.owners import ELEMENT_EVIDENCE, deciding_owner
from ..fields import show_address
from ..kernel_facts import NETFILTER_DROP
from ..model import Explanation, Fate, StepKind
from .explain_miss import FAILED, MATCHED, UNKNOWN, WOULD
from .near_miss import INPUT_RULE, NEAR_MISS
from .summary import Decider, Summary, decider_owner, decider_table

MAX_PATHS = 10_000  # distinct paths remembered; past that, a new path is shown and not remembered


class LiveLine(NamedTuple):
    """One packet as the one-line view shows it; each field is plain text, empty when unknown."""

    time: str  # "15:07:37.123", local time of the packet's first step (or of its arrival)
    packet: str  # "TCP 10.0.0.2:40312 -> 10.0.0.1:22 [SYN]"
    iface: str  # "in eth0 out eth1"
    fate: str  # "DROPPED"
    decider: str  # "filter:WEB rule 1", "filter:INPUT policy DROP", "trace ends at nat:POSTROUTING"
    cause: str  # "mark 0x8000 set by nat:KUBE-MARK-DROP rule 1", "DNAT to 172.17.0.2:80", "-p tcp -j DROP"
    short: str  # the packet in fewer words, for a narrow terminal: no source port, flags or type
    owner: str = ""  # who made the deciding rule: "kubernetes ns/ingress-nginx:http" (owner_words)
    miss: str = ""  # trace --explain-miss: "miss WEB rule 2: `-s 10.9.0.0/16`" (miss_text)


def line_of(expl: Explanation, now: float | None = None) -> LiveLine:
    """The one-line view's words for one packet."""
    return LiveLine(_clock(expl, now), packet_text(expl), iface_text(expl), str(expl.fate).upper(),
                    decider_text(expl), cause_text(expl), packet_text(expl, short=True), owner_words(expl),
                    miss_text(expl))


def packet_time(expl: Explanation, now: float | None = None) -> float:
    """When the packet was traced: its first step's wall-clock stamp, else ``now`` (its arrival)."""
    ts = next((ev.ts for ev in expl.packet.events if ev.ts is not None), None)
    if ts is None or ts < 1e9:  # a kernel-log uptime stamp is no wall-clock time
        ts = time.time() if now is None else now
    return ts


def _clock(expl: Explanation, now: float | None) -> str:
    ts = packet_time(expl, now)
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def packet_text(expl: Explanation, *, short: bool = False) -> str:
    """The packet as first seen: protocol, endpoints (IPv6 compressed), TCP flags or ICMP type;
    ``short``: protocol, source address, destination address and port only."""
    f = expl.first
    words = [f.get("PROTO") or "?", _endpoint(f.get("SRC"), None if short else f.get("SPT")), "->",
             _endpoint(f.get("DST"), f.get("DPT"))]
    if short:
        return " ".join(words)
    if f.get("TCPFLAGS"):
        words.append(f"[{f['TCPFLAGS']}]")
    if f.get("TYPE"):
        words.append(f"type {f['TYPE']}" + (f"/{f['CODE']}" if f.get("CODE") else ""))
    return " ".join(words)


def iface_text(expl: Explanation) -> str:
    """The interfaces the packet was first seen with: "in eth0", "out eth1", both, or nothing."""
    f = expl.first
    return " ".join(f"{word} {f[key]}" for key, word in (("IN", "in"), ("OUT", "out")) if f.get(key))


def _endpoint(addr: str | None, port: str | None) -> str:
    a = show_address(addr) if addr else "?"
    if not port:
        return a
    return f"[{a}]:{port}" if ":" in a else f"{a}:{port}"


def decider_text(expl: Explanation) -> str:
    """What decided the packet's fate, in the words every live output uses.

    The one place to extend: an owner ("ns/svc:http") is appended here, so the line, the
    repeats and the exit summary all show it.
    """
    return decider_words(Summary.entry(expl)[1], with_owner=False)  # the line has an owner column


def owner_words(expl: Explanation) -> str:
    """Who made the deciding rule, where the host's names give one that names an object
    (explain/owners.py; from a cause link when the rule is plumbing): "kubernetes ns/svc:http"."""
    o = deciding_owner(expl)
    return f"{o.kind} {o.name}" if o is not None and o.specific else ""


def decider_words(d: Decider, *, with_owner: bool = True) -> str:
    """The deciding rule in words; ``with_owner``: who decided (``decider_owner``: as the tree says it)
    in brackets where it names an object."""
    if d.action is None:
        return f"trace ends at {d.last_seen}" if d.last_seen else "no verdict"
    where = f"{decider_table(d)}:{d.chain}"
    if d.rule is not None or d.policy is None:
        words = f"{where} rule {'?' if d.num is None else d.num}"
    else:
        words = f"{where} policy {d.policy}"
    o = decider_owner(d) if with_owner else None
    return f"{words} [{o.kind} {o.name}]" if o is not None and o.specific else words


def miss_text(expl: Explanation) -> str:
    """The --explain-miss block in a few words: the chain's first rule whose condition failed, with
    the condition (the block's own words, analyze/explain_miss.py); else the first rule that would
    match, is unknown or matched. Empty without the block."""
    ms = expl.misses
    if ms is None:
        return ""
    if not ms:
        return "miss: the chain has no rules"
    for result in (FAILED, WOULD, UNKNOWN, MATCHED):
        m = next((m for m in ms if m.result == result), None)
        if m is None:
            continue
        where = f"miss {m.chain} rule {m.num}" if m.rule is not None else f"miss {m.table}:{m.chain}"
        if result == FAILED:
            opt = m.reason.split("`")[1] if m.reason.count("`") >= 2 else ""
            return f"{where}: `{opt}` did not match" if opt else f"{where}: did not match"
        return f"{where}: {result}"
    return f"miss {ms[0].chain}: not reached"


def cause_text(expl: Explanation) -> str:
    """Why, in a few words: the kernel's drop reason, the mark or NAT that led to the rule, the
    rule's own conditions, or "no rule matched" for a policy."""
    # the kernel's own reason first, unless it only says netfilter dropped it where a rule or policy
    # of the trace already decided (a REJECT or DROP: NETFILTER_DROP); then the causes say more
    d = next((d for d in expl.drops if not (d.reason == NETFILTER_DROP and expl.fate in (Fate.DROPPED, Fate.REJECTED)
                                             and expl.verdict is not None)), None)
    if d is not None:
        return "kernel: " + (d.text or d.reason)
    parts: list[str] = []
    for link in expl.cause:
        if link.role == "mark set" and link.text:
            parts.append(link.text)
            break
    for c in expl.nat:
        if c.what in ("DST", "SRC") and c.new:
            parts.append(f"{'DNAT' if c.what == 'DST' else 'SNAT'} to {c.new}")
            break
    o = deciding_owner(expl)
    if o is not None and o.specific and o.detail and o.evidence.startswith('comment "'):
        # the host's own words ("ns/svc:http has no local endpoints"), less the name the owner column shows
        said = o.evidence[len('comment "'):-1]
        parts.insert(0, said[len(o.name):].lstrip() if said.startswith(o.name + " ") else said)
    elif o is not None and o.specific and o.detail and o.evidence.startswith(ELEMENT_EVIDENCE):
        parts.insert(0, o.detail)  # a verdict map's element named it: what the map says of it ("has no endpoints")
    v = expl.verdict
    if v is not None and not parts:
        if v.rule is not None:
            parts.append(v.rule.spec)  # whole: a terminal's line cuts it to the width (render/live.py), a pipe never
        elif v.kind is StepKind.RULE:  # the kernel named a rule the ruleset read does not hold
            parts.append("a rule not in the ruleset")
        else:
            parts.append("no rule matched")
    for link in expl.cause:  # analyze/near_miss.py: the rule one condition away, or INPUT opened in vain
        if link.role == NEAR_MISS:
            parts.append(f"nearly {link.table}:{link.chain} rule {link.num}")
            break
        if link.role == INPUT_RULE:
            parts.append(f"{link.table}:{link.chain} rule {link.num} does not apply: forwarded")
            break
    if expl.warnings:
        parts.append(f"{len(expl.warnings)} warning(s)")
    return "; ".join(parts)


class PathKey(NamedTuple):
    """What makes two packets 'the same' for the live view: the flow without its source port
    (a reconnect), and the path: fate, decider and every step."""

    proto: str
    src: str
    dst: str
    dport: str
    iface: str
    fate: Fate
    decider: Decider
    steps: Any  # _steps_key


def path_key(expl: Explanation) -> PathKey:
    f = expl.first
    return PathKey(f.get("PROTO", ""), show_address(f.get("SRC", "")), show_address(f.get("DST", "")),
                   f.get("DPT", ""), f.get("IN", "") + ">" + f.get("OUT", ""), expl.fate,
                   Summary.entry(expl)[1], _steps_key(expl))


def _steps_key(expl: Explanation) -> Any:
    """The path's steps: the Explainer's own key of the path where it set one (equal for equal
    step sequences, computed once per packet anyway), else each step's table:chain:kind:num."""
    if expl.path_key is not None:
        return expl.path_key
    return tuple(f"{s.table}:{s.chain}:{s.kind}:{s.num}" for s in expl.steps)


@dataclass(slots=True)
class Repeat:
    """One distinct path: its first packet's line and how many packets took it."""

    line: LiveLine
    first_id: int
    count: int = 1
    last_id: int = 0
    shown_count: int = 1  # the count the view last printed


@dataclass
class Repeats:
    """Distinct paths seen so far; ``add`` says whether a packet's path is new."""

    paths: dict[PathKey, Repeat] = field(default_factory=dict)
    summary: Summary = field(default_factory=Summary)
    forgotten: int = 0  # packets of paths not remembered (over MAX_PATHS)

    def add(self, expl: Explanation, now: float | None = None) -> tuple[Repeat, bool]:
        """``(its path, whether the path is new)``; counts the packet in ``summary`` too."""
        self.summary.add(expl)
        key = path_key(expl)
        rep = self.paths.get(key)
        if rep is not None:
            rep.count += 1
            rep.last_id = expl.packet.id
            return rep, False
        rep = Repeat(line_of(expl, now), expl.packet.id, last_id=expl.packet.id)
        if len(self.paths) < MAX_PATHS:
            self.paths[key] = rep
        else:
            self.forgotten += 1
        return rep, True

    def repeated(self) -> list[Repeat]:
        """Paths taken by more than one packet, most packets first."""
        return sorted((r for r in self.paths.values() if r.count > 1), key=lambda r: (-r.count, r.first_id))
