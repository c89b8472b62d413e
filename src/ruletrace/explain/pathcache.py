"""Each distinct path explained once: the detailed explanation cached per path and field changes.

``Explainer.explain`` (explain.py) is the reference: it walks a path once (its plan is cached per
step sequence) but then annotates every packet again — NAT rewrites, mark changes, the cause
chain, owners, notes — reading the packet's fields at each step. On a busy node thousands of
packets take one path with the same rewrites, so that annotation is the same for all of them
apart from a few values copied from the packet.

``PathCache`` keys a finished explanation by (the path's step signature, the *field-change
signature* of the packet) and makes the next packet with the same key from it:

- the field-change signature holds every field value the annotations compare or branch on: at
  each step where the logged fields differ from the step before, the address change, the mark
  change (``causes.address_change`` / ``causes.mark_change``: the one home of those rules), the
  port before it, the event source and rule handles there; and the first step's PROTO, TCPFLAGS
  and TYPE (the INVALID note). Fields that stay the same along the path (the client address,
  its port) are not in it: no annotation compares them;
- what is copied from the packet is made again for it: its events in the steps, and the
  SNAT/MASQUERADE stated after the last step (``causes.leaving_snat``: it names the packet's own
  source).

The result equals ``Explainer.explain(packet)`` (tests/explain/test_pathcache.py proves it on
every fixture, example and lab capture, and on a generated kube-proxy log). Explanations are
handed out with their own lists: a caller may append notes or causes to one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model import Explanation, Packet, Step, TraceEvent
from .causes import LEAVING_NOTE, address_change, leaving_snat, mark_change

CACHE_MAX = 100_000  # cached explanations; the cache starts over when full
_NO_PACKET = Packet(0)  # the templates' explanation holds only fate, verdict and last_seen


def field_signature(events: list[TraceEvent]) -> tuple[Any, ...]:
    """Every field value of a packet that its annotation compares or branches on (see the module doc)."""
    changes = []
    prev: TraceEvent | None = None
    for i, ev in enumerate(events):
        if prev is not None and (ev.raw is not prev.raw or ev.raw is None):  # as causes._nat_changes
            fa, fb = prev.fields, ev.fields
            d = address_change(fa, fb, "DST", "DPT")
            s = address_change(fa, fb, "SRC", "SPT")
            m = mark_change(prev, ev)
            if d is not None or s is not None or m is not None:
                changes.append((i, d, s, m, fa.get("DPT") if d else None, fa.get("SPT") if s else None,
                                ev.source, prev.handle, ev.handle))
        prev = ev
    f = events[0].fields if events else {}
    return tuple(changes), f.get("PROTO"), f.get("TCPFLAGS"), f.get("TYPE")


def _copy(s: Step) -> Step:
    # without its event: a template holds no packet (its events and parsed fields: ~50 KB a path)
    return Step(None, s.rule, s.policy, s.returned_to,  # type: ignore[arg-type]  # the event comes with each copy
                s.depth, s.action, s.warning, s.note, s.hook, s.priority)


class _Template:
    __slots__ = ("cause", "expl", "leaving", "marks", "nat", "notes", "steps", "warnings")

    def __init__(self, e: Explanation) -> None:
        self.expl = e  # fate, verdict, last_seen (never changed by the callers before this copy)
        self.steps = e.steps
        self.nat = list(e.nat)
        self.leaving = any(c.note == LEAVING_NOTE for c in e.nat)
        self.marks = list(e.marks)
        self.cause = list(e.cause)
        self.warnings = list(e.warnings)
        self.notes = list(e.notes)


class PathCache:
    """Detailed explanations made once per (path, field-change signature); see the module doc."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], _Template] = {}
        self.hits = 0
        self.misses = 0

    def explain(self, packet: Packet, path_sig: tuple[Any, ...], full: Callable[[], Explanation]) -> Explanation:
        """The explanation of ``packet``, whose path has the signature ``path_sig`` (``Explainer``'s);
        ``full()`` makes it the reference way (called once per key)."""
        events = packet.events
        if not events:
            return full()
        key = (path_sig, field_signature(events))
        t = self._cache.get(key)
        if t is None:
            self.misses += 1
            e = full()
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            t = self._cache[key] = _Template(e)
            t.expl = Explanation(_NO_PACKET, fate=e.fate, verdict=e.verdict, last_seen=e.last_seen, shared=e.shared)
            t.steps = [_copy(s) for s in e.steps]  # a caller may change a Step it was given
            return e
        self.hits += 1
        steps = [
            Step(ev, s.rule, s.policy, s.returned_to, s.depth, s.action, s.warning, s.note, s.hook, s.priority)
            for ev, s in zip(events, t.steps)
        ]
        nat = t.nat
        if t.leaving:
            nat = [leaving_snat(steps[c.step], c.step) if c.note == LEAVING_NOTE and c.step is not None else c
                   for c in nat]
        else:
            nat = list(nat)
        x = t.expl
        return Explanation(packet, steps, x.fate, x.verdict, nat, list(t.marks), list(t.cause),
                           list(t.warnings), list(t.notes), x.last_seen, shared=x.shared)
