"""Group trace events into packets: one packet = one traversal of the hooks.

Events of many packets interleave; a packet's addresses change at NAT, its TTL when it is
forwarded, its mark mid-path. Grouping therefore keys on what stays the same along the path:
the source's exact packet id where it has one (nf_tables trace id), else the event's
``ident`` (IP ID, length, TCP sequence, … chosen by the source). Two packets with the same key
are told apart by position: a packet only moves forward through the hooks (PREROUTING or
OUTPUT, then INPUT or FORWARD, then POSTROUTING; tables in priority order within a hook), so
an event that lies *behind* the open packet's position starts a new packet.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..model import HOOK_TABLES, Packet, TraceEvent

# Hook rank along a traversal: PREROUTING/OUTPUT start, INPUT/FORWARD follow, POSTROUTING ends.
_HOOK_RANK = {"PREROUTING": 0, "OUTPUT": 0, "INPUT": 1, "FORWARD": 1, "POSTROUTING": 2}
_TABLE_INDEX = {hook: {t: i for i, t in enumerate(tables)} for hook, tables in HOOK_TABLES.items()}

DEFAULT_WINDOW = 50_000  # events after which an idle open packet is considered complete


@dataclass(slots=True)
class _Open:
    packet: Packet
    hook: str | None = None  # built-in chain (hook) the packet is in
    table_index: int = -1
    last_num: int = 0  # last event number seen in the built-in chain (same table)
    seen: int = 0  # global event counter at the last event


def _position(ev: TraceEvent) -> tuple[str, int] | None:
    """(hook, table index) of an event in a built-in chain; None for user chains / unknown."""
    tables = _TABLE_INDEX.get(ev.chain)
    if tables is None:
        return None
    ti = tables.get(ev.table)
    if ti is None:
        return None
    return ev.chain, ti


def _starts_new(op: _Open, ev: TraceEvent) -> bool:
    """True when ``ev`` cannot continue the open packet: it lies behind its position."""
    pos = _position(ev)
    if pos is None or op.hook is None:
        return False
    hook, ti = pos
    cur = op.hook
    if hook != cur:
        rank, cur_rank = _HOOK_RANK[hook], _HOOK_RANK[cur]
        # same rank but another hook (INPUT vs FORWARD, OUTPUT vs PREROUTING) is another traversal
        return rank <= cur_rank
    if ti != op.table_index:
        return ti < op.table_index
    return op.last_num > 0 and (ev.num or 0) <= op.last_num


def _advance(op: _Open, ev: TraceEvent) -> None:
    pos = _position(ev)
    if pos is None:
        return
    hook, ti = pos
    if hook != op.hook or ti != op.table_index:
        op.hook, op.table_index, op.last_num = hook, ti, 0
    op.last_num = max(op.last_num, ev.num or 0)


def _key(ev: TraceEvent):
    if ev.packet_id is not None:
        return ("id", ev.origin.path if ev.origin else None, ev.packet_id)
    if ev.ident is not None:
        return ev.ident
    f = ev.fields
    return (f.get("PROTO"), f.get("LEN"), f.get("ID"), f.get("SEQ"), f.get("FLOWLBL"), f.get("ICMPSEQ"))


def group_packets(events: Iterable[TraceEvent], *, window: int = DEFAULT_WINDOW) -> Iterator[Packet]:
    """Yield packets in the order of their first event, each as soon as it is complete.

    A packet is complete when a later event restarts its key, or when ``window`` events
    passed without one for it; memory stays bounded by the number of packets in flight.
    """
    open_: OrderedDict[object, _Open] = OrderedDict()
    done: list[tuple[int, Packet]] = []  # finished packets waiting for lower ids to finish
    open_ids: set[int] = set()
    next_emit = 1
    next_id = 1
    counter = 0

    def finish(op: _Open) -> None:
        open_ids.discard(op.packet.id)
        heapq.heappush(done, (op.packet.id, op.packet))

    def drain() -> Iterator[Packet]:
        nonlocal next_emit
        while done and done[0][0] == next_emit:
            yield heapq.heappop(done)[1]
            next_emit += 1
        # ids that were finished out of order while lower ones are still open wait in `done`

    for ev in events:
        counter += 1
        key = _key(ev)
        op = open_.get(key)
        if op is not None and _starts_new(op, ev):
            del open_[key]
            finish(op)
            op = None
        if op is None:
            op = _Open(Packet(next_id))
            open_ids.add(next_id)
            next_id += 1
            open_[key] = op
        else:
            open_.move_to_end(key)
        op.packet.events.append(ev)
        op.seen = counter
        _advance(op, ev)
        if counter & 1023 == 0:
            limit = counter - window
            while open_:
                k, oldest = next(iter(open_.items()))
                if oldest.seen > limit:
                    break
                del open_[k]
                finish(oldest)
            # a packet that is still open blocks emission of later ones; flush very old ones
            yield from drain()
    for op in open_.values():
        finish(op)
    open_.clear()
    while done:
        yield heapq.heappop(done)[1]
