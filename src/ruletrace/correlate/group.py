"""Group trace events into packets: one packet = one traversal of the hooks.

Events of many packets interleave; a packet's addresses change at NAT, its TTL when it is
forwarded, its mark mid-path. Grouping therefore keys on what stays the same along the path:
the event's ``ident`` (IP ID, length, TCP sequence, … chosen by the source), else the source's
exact packet id (nf_tables trace id). Two packets with the same key are told apart by their
exact ids where a traversal starts, and by position: a packet only moves forward through the hooks (PREROUTING or
OUTPUT, then INPUT or FORWARD, then POSTROUTING; tables in priority order within a hook), so
an event that lies *behind* the open packet's position starts a new packet — except a packet
that loops back: sent out on ``lo`` (POSTROUTING), it comes in on ``lo`` (PREROUTING ``IN=lo``).
nf_tables chains have names of their own, not hooks, and a monitor's rule events carry no rule
number: there a base chain the packet already ran starts a new packet when it opens again
(``reenters_base``), e.g. two identical IPv6 multicast reports the kernel gave the same trace id
(in an iptables-nft ``ip6 filter INPUT`` as in a native ``inet fw input``).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from ..fields import PartialIdent
from ..model import HOOK_TABLES, Packet, TraceEvent

# Hook rank along a traversal: PREROUTING/OUTPUT start, INPUT/FORWARD follow, POSTROUTING ends.
HOOK_RANK = {"PREROUTING": 0, "OUTPUT": 0, "INPUT": 1, "FORWARD": 1, "POSTROUTING": 2}
TABLE_INDEX = {hook: {t: i for i, t in enumerate(tables)} for hook, tables in HOOK_TABLES.items()}

DEFAULT_WINDOW = 50_000  # events after which an idle open packet is considered complete


# open packet state, a list for speed:
# [events, hook, table index, last num in hook, seen, id, exact packet id of the last event,
#  nf_tables base chains it ran (None until one opened)]
_EVENTS, _HOOK, _TI, _LAST, _SEEN, _ID, _PID, _BASES = range(8)


def starts_new(op: list[Any], hook: str, ti: int, num: int) -> bool:
    """The grouping position rule: True when an event at (hook, table index, num) lies behind
    the open packet's position (``op[1:4]`` = hook, table index, last rule number there), so it
    starts a new packet. kernel_log_paths' loop inlines it."""
    cur = op[_HOOK]
    if cur is None:
        return False
    if hook != cur:
        # same rank but another hook (INPUT vs FORWARD, OUTPUT vs PREROUTING) is another traversal
        return HOOK_RANK[hook] <= HOOK_RANK[cur]
    if ti != op[_TI]:
        return ti < op[_TI]  # type: ignore[no-any-return]  # op is a list of mixed fields, for speed
    last: int = op[_LAST]
    return last > 0 and num <= last


def reenters_base(bases: set[tuple[Any, str, str]] | None, ev: TraceEvent) -> bool:
    """The grouping rule for nf_tables chains (named freely, not after hooks): an event that opens a
    base chain's run (``ev.base``: the kernel dumps the packet once per base chain it runs) in a
    base chain the open packet already ran starts a new packet. One traversal runs a base chain
    once; the kernel's trace id alone does not tell two packets apart (it hashes the socket
    buffer's address, the flow hash and the input interface: a flow's next packet may get the same
    id, and identical packets, such as an IPv6 multicast report sent twice, the same ident too)."""
    return ev.base and bases is not None and (ev.family, ev.table, ev.chain) in bases


def loops_back(cur_hook: str | None, hook: str, in_iface: str | None) -> bool:
    """A packet sent out on ``lo`` comes back in on ``lo``: PREROUTING with ``IN=lo`` right after
    POSTROUTING continues the same packet (OUTPUT, POSTROUTING, PREROUTING, INPUT), not a new one."""
    return cur_hook == "POSTROUTING" and hook == "PREROUTING" and in_iface == "lo"


def bridge_passes_up(last: TraceEvent, ev: TraceEvent) -> bool:
    """A bridge-family event followed by an IP-family one of the same packet identity: the bridge
    passed the frame up to its own IP stack (bridge input hook, then ip prerouting), where
    nf_tables gives it a new trace id."""
    return last.family == "bridge" and ev.family not in ("bridge", "netdev", None)


def resolve_key(open_: OrderedDict[Any, Any], partials: dict[Any, None], key: Hashable) -> Hashable:
    """The key an event joins when ``open_`` has no packet under its own ``key``.

    Records cut short carry a ``fields.PartialIdent``, the first bytes of their packet's ident:
    such a key joins the most recently seen open packet whose ident it starts (or that starts
    it); a full ident joins an open packet that a partial one started, which then takes the full
    key. ``partials`` holds the open partial keys (the caller adds new ones); stale ones are
    dropped here. Without a match the key is its own.
    """
    if type(key) is PartialIdent:
        for k in reversed(open_):
            if isinstance(k, bytes) and (k.startswith(key) or key.startswith(k)):
                return k
        return key
    if partials and isinstance(key, bytes):
        for p in list(partials):
            if p not in open_:
                del partials[p]
            elif key.startswith(p):
                del partials[p]
                op = open_.pop(p)
                open_[key] = op
                return key
    return key


def adopt_unseen_start(open_: OrderedDict[Any, Any], key: Hashable, ev: TraceEvent) -> list[Any] | None:
    """The open packet of ``ev``'s exact id whose start the input did not hold, now under ``key``.

    A monitor's paste that starts mid-packet (``nft monitor trace``, ``xtables-monitor``) gives the
    packet's first steps no packet dump: they carry no fields, no ident, and are grouped by
    their trace id alone. The id's first dump then gives its events an ident of their own: the
    packet goes on under that key (the position and base-chain rules still tell a new packet of
    the same id). None when no packet of ``ev``'s id is open under the id alone.
    """
    if type(key) is tuple and key[:1] == ("id",):
        return None
    idkey = ("id", ev.origin.path if ev.origin else None, ev.packet_id)
    op: list[Any] | None = open_.pop(idkey, None)
    if op is not None:
        open_[key] = op
    return op


def expired(open_: OrderedDict[Any, Any], limit: int) -> Iterator[list[Any]]:
    """Remove and yield the open packets last seen at or before event ``limit``, oldest first."""
    while open_:
        k, oldest = next(iter(open_.items()))
        if oldest[_SEEN] > limit:
            return
        del open_[k]
        yield oldest


def group_key(ev: TraceEvent) -> Hashable:
    """What events of one packet share: the source's ident, else the exact id, else fields."""
    ident: Hashable = ev.ident
    if ident is not None:
        return ident
    if ev.packet_id is not None:
        return ("id", ev.origin.path if ev.origin else None, ev.packet_id)
    f = ev.fields
    return (f.get("PROTO"), f.get("LEN"), f.get("ID"), f.get("SEQ"), f.get("FLOWLBL"), f.get("ICMPSEQ"))


def group_packets(
    events: Iterable[TraceEvent],
    *,
    window: int = DEFAULT_WINDOW,
    admit: Callable[[TraceEvent], bool] | None = None,
) -> Iterator[Packet]:
    """Yield packets in the order of their first event, each as soon as it is complete.

    A packet is complete when a later event restarts its key, or when ``window`` events
    passed without one for it; memory stays bounded by the number of packets in flight.
    ``admit(event)`` is asked before an event starts a new packet; False drops the event
    (used to complete open packets past the end of a byte range without starting new ones).
    """
    open_: OrderedDict[object, list[Any]] = OrderedDict()
    partials: dict[PartialIdent, None] = {}  # open keys that are partial idents (resolve_key)
    done: list[tuple[int, Packet]] = []  # finished packets waiting for lower ids to finish
    next_emit = 1
    next_id = 1
    counter = 0
    table_index = TABLE_INDEX
    push = heapq.heappush

    def finish(op: list[Any]) -> None:
        push(done, (op[_ID], Packet(op[_ID], op[_EVENTS])))

    for ev in events:
        counter += 1
        pid = ev.packet_id
        key = ev.ident
        if key is None or (pid is not None and not any(key)):
            key = group_key(ev) if key is None else ("id", ev.origin.path if ev.origin else None, pid)
        tables = table_index.get(ev.chain)
        ti = tables.get(ev.table) if tables is not None else None
        op = open_.get(key)
        if op is None and (partials or type(key) is PartialIdent):
            key = resolve_key(open_, partials, key)
            op = open_.get(key)
        if op is None and pid is not None and open_:
            op = adopt_unseen_start(open_, key, ev)
        if op is not None:
            if reenters_base(op[_BASES], ev):
                restart = True
            elif ti is not None:
                restart = (
                    starts_new(op, ev.chain, ti, ev.num or 0)
                    and not loops_back(op[_HOOK], ev.chain, ev.fields.get("IN"))
                ) or (
                    # another exact id where a traversal starts; mid-path a new id is the same
                    # packet (bridged packets get a new nf_tables trace id at FORWARD)
                    pid is not None and op[_PID] is not None and pid != op[_PID]
                    and HOOK_RANK[ev.chain] == 0 and op[_HOOK] is not None
                )
            else:
                # a frame a bridge passes up to its host gets a new nf_tables trace id when it
                # leaves the bridge hooks for the IP stack's: the same packet (bridge_passes_up)
                restart = (pid is not None and op[_PID] is not None and pid != op[_PID]
                           and not bridge_passes_up(op[_EVENTS][-1], ev))
            if restart:
                del open_[key]
                finish(op)
                op = None
            else:
                open_.move_to_end(key)
        if op is None:
            if admit is not None and not admit(ev):
                continue
            op = [[], None, -1, 0, 0, next_id, pid, None]
            next_id += 1
            open_[key] = op
            if type(key) is PartialIdent:
                partials[key] = None
        op[_EVENTS].append(ev)
        op[_SEEN] = counter
        op[_PID] = pid
        if ev.base:
            if op[_BASES] is None:
                op[_BASES] = set()
            op[_BASES].add((ev.family, ev.table, ev.chain))
        if ti is not None:
            if ev.chain != op[_HOOK] or ti != op[_TI]:
                op[_HOOK], op[_TI], op[_LAST] = ev.chain, ti, 0
            n = ev.num or 0
            if n > op[_LAST]:
                op[_LAST] = n
        if not counter & 1023:
            for oldest in expired(open_, counter - window):
                finish(oldest)
            while done and done[0][0] == next_emit:
                yield heapq.heappop(done)[1]
                next_emit += 1
    for op in open_.values():
        finish(op)
    open_.clear()
    while done:
        yield heapq.heappop(done)[1]
