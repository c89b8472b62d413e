"""Small builders for tests: trace events from TRACE tags and field dicts."""

from __future__ import annotations

from ruletrace.model import Origin, StepKind, TraceEvent


def ev(tag: str, ident=("p1",), *, line: int | None = None, packet_id=None, verdict=None, **fields: str) -> TraceEvent:
    """TraceEvent from 'table:chain:kind:num' plus kernel-log fields."""
    table, chain, kind, num = tag.split(":")
    return TraceEvent(
        table, chain, StepKind(kind), int(num),
        ident=ident, packet_id=packet_id, verdict=verdict,
        origin=Origin("test.log", line), source="test", fields=dict(fields), family="ipv4",
    )


def path(tags: str, ident=("p1",), **fields: str) -> list[TraceEvent]:
    """Events for a whitespace-separated list of tags, all with the same fields."""
    return [ev(t, ident, **fields) for t in tags.split()]
