"""What the trace readers share: the TRACE tag, the packet identity key and the skipped-record count."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..model import Origin, StepKind

# "TRACE: table:chain:type:num" as nf_log writes it (net/netfilter/nf_log_syslog.c, ipt_do_table)
TRACE_TAG = re.compile(rb"TRACE: ([A-Za-z0-9_-]+):([^\s:]+):(rule|return|policy):(\d+)")

# Fields that stay the same at every step of one packet: never addresses, ports, TTL, marks
# or interfaces (NAT, routing and MARK rewrite those between steps).
IDENT_FIELDS = ("PROTO", "LEN", "ID", "FLOWLBL", "SEQ", "ACK", "TCPFLAGS", "ICMPID", "ICMPSEQ", "ULEN")


@dataclass(slots=True)
class ReadStats:
    """Records a reader read, skipped (not a trace record) or rejected (broken), with reasons."""

    records: int = 0
    events: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def bad(self, origin: Origin, reason: str) -> None:
        """Count one broken record and keep its reason (the first few) for the summary."""
        self.skipped += 1
        if len(self.errors) < 20:
            self.errors.append(f"{origin}: {reason}")


def note_bad(stats: Any, origin: Origin, reason: str) -> None:
    """Count a broken record on any stats object (ours or the kernel-log reader's)."""
    if stats is None:
        return
    if hasattr(stats, "bad"):
        stats.bad(origin, reason)
    elif hasattr(stats, "skipped"):
        stats.skipped += 1


def note_record(stats: Any, *, event: bool) -> None:
    if stats is None:
        return
    if hasattr(stats, "records"):
        stats.records += 1
    if event and hasattr(stats, "events"):
        stats.events += 1


def parse_tag(prefix: bytes) -> tuple[str, str, StepKind, int] | None:
    """``(table, chain, kind, num)`` from a TRACE prefix, or None when it is not one."""
    m = TRACE_TAG.search(prefix)
    if m is None:
        return None
    return m[1].decode(), m[2].decode("utf-8", "replace"), StepKind(m[3].decode()), int(m[4])


def packet_ident(fields: dict[str, str]) -> tuple[str | None, ...]:
    """Identity of one packet from the fields that no rule changes along its path."""
    return tuple(fields.get(k) for k in IDENT_FIELDS)
