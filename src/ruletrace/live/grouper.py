"""Live packets from trace steps: a packet is complete after ``idle`` seconds without a step."""

from __future__ import annotations

from collections import OrderedDict

from ..correlate.group import bridge_passes_up, group_packets
from ..model import Packet, TraceEvent

IDLE = 0.25  # seconds without a step after which a packet's path is taken as complete


class LiveGrouper:
    """Groups steps into packets; a packet is complete after ``idle`` seconds without a step.

    ``mark_open(reason)`` flags every packet still open (e.g. steps were lost in an overrun:
    those packets may be incomplete); while ``suspect`` is set, every packet that gets a step is
    flagged "overrun" too (after an overrun netlink drops every message until the receive queue
    was emptied, so the packets whose steps are still queued lose their tails).
    ``referenced()`` are the ruleset versions open packets use.
    A frame a bridge passes up to its host's IP stack gets a new nf_tables trace id there: its
    new id joins the open packet whose last step was the bridge's (``bridge_passes_up``, the
    offline reader's rule), so that both halves complete, and are grouped, together.
    """

    def __init__(self, idle: float = IDLE, *, by_ident: bool = False) -> None:
        self.idle = idle
        # both backends: legacy steps have no trace id, so a packet's steps of both are keyed by
        # what stays the same along its path, and each key's steps are one packet
        self.by_ident = by_ident
        self._open: OrderedDict[object, list[tuple[int, TraceEvent, int]]] = OrderedDict()
        self._last: dict[object, float] = {}
        self._flags: dict[object, set[str]] = {}
        self._alias: dict[object, object] = {}  # a trace id the bridge -> IP hop gave -> the packet's key
        self._seq = 0
        self._next_id = 1
        self.suspect = False

    def add(self, ev: TraceEvent, version: int, now: float) -> None:
        key = ("id", ev.packet_id) if ev.packet_id is not None and not self.by_ident else ev.ident
        if not self.by_ident and ev.packet_id is not None:
            key = self._alias.get(key, key)
            if key not in self._open and ev.ident is not None:
                for k in reversed(self._open):
                    last = self._open[k][-1][1]
                    if last.ident == ev.ident and bridge_passes_up(last, ev):
                        self._alias[key] = k
                        key = k
                        break
        if self.suspect:
            self._flags.setdefault(key, set()).add("overrun")
        self._seq += 1
        self._open.setdefault(key, []).append((self._seq, ev, version))
        self._last[key] = now

    def pending(self) -> int:
        return len(self._open)

    def mark_open(self, reason: str) -> int:
        for k in self._open:
            self._flags.setdefault(k, set()).add(reason)
        return len(self._open)

    def referenced(self) -> set[int]:
        return {v for steps in self._open.values() for _s, _e, v in steps}

    def flush(self, now: float, *, everything: bool = False) -> list[tuple[Packet, list[int], set[str]]]:
        """Packets whose last step is ``idle`` old (or all): ``(packet, versions of its steps, flags)``."""
        keys = [k for k in self._open if everything or now - self._last[k] >= self.idle]
        if not keys:
            return []
        if self._alias:
            done = set(keys)
            self._alias = {a: k for a, k in self._alias.items() if k not in done}
        batch: list[tuple[int, TraceEvent, int]] = []
        flags_of: dict[int, set[str]] = {}
        if self.by_ident:
            out = []
            for k in keys:
                steps = sorted(self._open.pop(k), key=lambda x: x[0])
                del self._last[k]
                pkt = Packet(self._next_id, [ev for _s, ev, _v in steps])
                self._next_id += 1
                out.append((pkt, [v for _s, _e, v in steps], self._flags.pop(k, set())))
            return out
        for k in keys:
            steps = self._open.pop(k)
            del self._last[k]
            flags = self._flags.pop(k, set())
            for _s, ev, _v in steps:
                flags_of[id(ev)] = flags
            batch += steps
        batch.sort(key=lambda x: x[0])
        version_of = {id(ev): v for _s, ev, v in batch}
        out = []
        for pkt in group_packets([ev for _s, ev, _v in batch]):
            pkt.id = self._next_id
            self._next_id += 1
            flags = set().union(*(flags_of[id(ev)] for ev in pkt.events))
            out.append((pkt, [version_of[id(ev)] for ev in pkt.events], flags))
        return out
