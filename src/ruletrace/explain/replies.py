"""A reply in the same trace proves that a request got through.

A packet whose trace stops without a decision (UNKNOWN) arrived after all when a later packet
of the trace answers it: a TCP segment back with ACK (SYN-ACK, data), a UDP datagram back, an
ICMP echo reply, or an ICMP error quoting it / a TCP RST. A RST or an ICMP error is also what a
REJECT rule sends, so those count only when the request's trace did not stop at a rule that
did not accept it (a REJECT, a rule the ruleset does not show, or a log with lines lost).

Looked up while the explanations stream by: UNKNOWN packets wait (in order) for at most
``window`` later packets; the index is a dict of flow 5-tuples, so the cost is a few dict
operations per packet. Packets are passed on in their order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from ..logtext import parse_fields
from ..model import HOOK_TABLES, Explanation, Fate, Packet, StepKind
from .fate import ENDS_TABLE, ROUTING_NOTE

DEFAULT_WINDOW = 5_000  # later packets an UNKNOWN packet waits for its reply
_ECHO = {"ICMP": ("8", "0"), "ICMPv6": ("128", "129")}  # request type, reply type
_ERRORS = {"ICMP": frozenset({"3", "4", "5", "11", "12"}), "ICMPv6": frozenset({"1", "2", "3", "4"})}


def _key(f: dict[str, str], reverse: bool) -> tuple[Any, ...] | None:
    proto = f.get("PROTO")
    src, dst = f.get("SRC"), f.get("DST")
    if proto is None or src is None or dst is None:
        return None
    if proto in _ECHO:
        i = f.get("ICMPID")
        return (proto, dst, src, i, f.get("ICMPSEQ")) if reverse else (proto, src, dst, i, f.get("ICMPSEQ"))
    sp, dp = f.get("SPT"), f.get("DPT")
    if sp is None or dp is None:
        return None
    return (proto, dst, dp, src, sp) if reverse else (proto, src, sp, dst, dp)


def request_keys(p: Packet) -> set[tuple[Any, ...]]:
    """The flow of a packet as first and as last seen (after DNAT)."""
    evs = p.events
    if not evs:
        return set()
    keys = {_key(evs[0].fields, False), _key(evs[-1].fields, False)}
    keys.discard(None)
    if evs[0].fields.get("PROTO") in _ECHO and evs[0].fields.get("TYPE") != _ECHO[evs[0].fields["PROTO"]][0]:
        return set()  # only echo requests get echo replies
    return keys  # type: ignore[return-value]  # None discarded above


def reply_keys(p: Packet) -> list[tuple[tuple[Any, ...], bool]]:
    """(request flow this packet answers, positive?) — positive: not a RST or an ICMP error."""
    evs = p.events
    if not evs:
        return []
    f = evs[0].fields
    proto = f.get("PROTO")
    if proto in _ECHO:
        typ = f.get("TYPE")
        if typ == _ECHO[proto][1]:
            k = _key(f, True)
            return [(k, True)] if k else []
        inner = f.get("INNER")
        if typ in _ERRORS[proto] and inner:
            k = _key(parse_fields(inner.strip("[] ")), False)
            return [(k, False)] if k else []
        return []
    k = _key(f, True)
    if k is None:
        return []
    if proto == "TCP":
        flags = (f.get("TCPFLAGS") or "").split()
        if "RST" in flags:
            return [(k, False)]
        return [(k, True)] if "ACK" in flags else []
    return [(k, True)]


def _first_hook(p: Packet) -> str | None:
    return next((ev.chain for ev in p.events if ev.chain in HOOK_TABLES), None)


def _resolve(req: Explanation, reply: Packet, positive: bool) -> bool:
    evs = req.packet.events
    if not positive and evs and evs[-1].kind is StepKind.RULE and (
        not req.steps or req.steps[-1].action not in ENDS_TABLE
    ):
        return False  # the trace stops at a rule that did not accept: it may be a REJECT
    if _first_hook(req.packet) == "OUTPUT":
        req.fate = Fate.SENT
    elif _first_hook(reply) == "OUTPUT":
        req.fate = Fate.DELIVERED
    else:
        req.fate = Fate.FORWARDED
    what = "reply" if positive else "RST or ICMP error"
    req.notes = [n for n in req.notes if n != ROUTING_NOTE]
    req.notes.append(f"the {what} in packet {reply.id} proves that it got through "
                     f"(its trace stops at {req.last_seen})")
    return True


def with_replies(items: Iterable[tuple[Packet, Explanation | None]],
                 window: int = DEFAULT_WINDOW) -> Iterator[Explanation]:
    """Pass the explanations on in order; an UNKNOWN one that a later packet answers becomes
    what the answer proves. Packets without an explanation (filtered out) still count as replies."""
    queue: deque[list[Any]] = deque()  # [position, explanation, its keys while it waits]
    waiting: dict[tuple[Any, ...], list[list[Any]]] = {}

    def unwait(item: list[Any]) -> None:
        for k in item[2] or ():
            lst = [x for x in waiting.get(k, ()) if x is not item]
            if lst:
                waiting[k] = lst
            else:
                waiting.pop(k, None)
        item[2] = None

    for n, (packet, e) in enumerate(items):
        if waiting:
            for k, positive in reply_keys(packet):
                for item in waiting.get(k, ()):
                    if item[2] is not None and _resolve(item[1], packet, positive):
                        unwait(item)
        if e is None:
            continue
        item = [n, e, None]
        if e.fate is Fate.UNKNOWN:
            keys = request_keys(packet)
            if keys:
                item[2] = keys
                for k in keys:
                    waiting.setdefault(k, []).append(item)
        queue.append(item)
        while queue and (queue[0][2] is None or n - queue[0][0] >= window):
            old = queue.popleft()
            unwait(old)
            yield old[1]
    while queue:
        yield queue.popleft()[1]
