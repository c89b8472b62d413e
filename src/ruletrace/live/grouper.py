"""Live packets from trace steps: a packet is complete after ``idle`` seconds without a step."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ..correlate.group import bridge_passes_up, group_packets
from ..fields import PartialIdent
from ..model import Packet, TraceEvent

IDLE = 0.25  # seconds without a step after which a packet's path is taken as complete


def _other_packet(a: Any, b: Any) -> bool:
    """Two full, different idents: ``group_packets`` (the reference) keys its packets by ident, so
    events under them are never one packet (a partial or empty ident may still join: not told)."""
    return (a is not None and b is not None and a != b and type(a) is not PartialIdent
            and type(b) is not PartialIdent and any(a) and any(b))


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
        # (every step of a live trace comes here: the common case, a known trace id whose open
        # packet has the same ident object, makes no call and no lookup it can skip)
        pid = ev.packet_id
        key: object
        steps = None
        if pid is not None and not self.by_ident:
            key = ("id", pid)
            if self._alias:
                key = self._alias.get(key, key)
            steps = self._open.get(key)
            ident = ev.ident
            if steps is not None:
                last_ident = steps[-1][1].ident
                if last_ident is not ident and _other_packet(last_ident, ident):
                    self._retire(key)
                    steps = None
            if steps is None and ident is not None:
                for k in reversed(self._open):
                    last = self._open[k][-1][1]
                    if last.ident == ident and bridge_passes_up(last, ev):
                        self._alias[key] = k
                        key = k
                        steps = self._open[k]
                        break
        else:
            key = ev.ident
            steps = self._open.get(key)
        if self.suspect:
            self._flags.setdefault(key, set()).add("overrun")
        self._seq += 1
        if steps is None:
            steps = self._open[key] = []
        steps.append((self._seq, ev, version))
        self._last[key] = now

    def _retire(self, key: object) -> None:
        """The kernel reused an open packet's trace id for another packet (same socket buffer
        address, same flow hash): the open one is complete, kept under a key of its own so that
        it is flushed when idle, in its turn, instead of waiting for the newcomer."""
        self._seq += 1
        old = ("retired", self._seq)
        self._open[old] = self._open.pop(key)
        self._last[old] = self._last.pop(key)
        if key in self._flags:
            self._flags[old] = self._flags.pop(key)
        self._alias = {a: k for a, k in self._alias.items() if k != key}

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
