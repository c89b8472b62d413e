"""Receiving a live trace's steps and counting what arrived, what was not shown and what was lost:
a mixin of ``tracer.Tracer`` (which sets the state declared in ``modes.NftModes`` and here).

Steps are read in batches from the session's source (NFLOG listener, nf_tables trace socket, or
kernel log) and grouped into packets; at the end the steps still under way are taken in and
counted (``_finish``), and what is still queued after that is read without decoding and counted
as unread (``_count_unread``): the summary says which loss had which cause (accounting.py).
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import RuletraceError
from ..model import Packet, TraceEvent
from . import accounting as acc
from . import ownpackets
from . import session as ss
from .churn import RulesetVersions
from .grouper import LiveGrouper

QUICK_INTERVAL = 0.02  # seconds at least between two legacy size checks (xtgen.quick, ~0.6 ms a table)
DRAIN_MAX = 2.0  # seconds at most to take in steps still under way when the trace ends
UNREAD_MAX = 1.0  # seconds at most to count the steps still queued after that


class Receiving(RulesetVersions):
    """Methods of ``Tracer`` that receive steps and count packets."""

    source: Any
    nft_source: Any
    mode: str
    idle: float
    dry_run: bool
    _losses: int
    _last_quick: float
    _counted: bool

    # --- receiving --------------------------------------------------------------------

    def _poll(self, timeout: float) -> list[tuple[TraceEvent, int]]:
        if self.both:
            import select

            select.select([self.source, self.nft_source], [], [], timeout)
            return self._poll_nft(self.nft_source, 0) + self._poll_legacy(0)
        if self.mode == "nftrace":
            return self._poll_nft(self.source, timeout)
        return self._poll_legacy(timeout)

    def _poll_legacy(self, timeout: float) -> list[tuple[TraceEvent, int]]:
        evs = self.source.poll(timeout)
        now = time.monotonic()
        if evs and self._fp is not None and now - self._last_quick >= QUICK_INTERVAL:
            self._last_quick = now
            # the steps just read may predate a change noticed now: the version before stays a candidate
            if self._legacy_changed(full=False) and self.refresh():
                self._ambiguous.add(self.versions.latest_n)
        v = self.versions.latest_n
        return [(ev, v) for ev in evs]

    def _source_losses(self) -> int:
        """Times steps were lost so far (netlink overruns, NFLOG sequence gaps, kernel log overwrites)."""
        src = self.source
        if src is None:
            return self._losses
        nsrc = self.nft_source
        self.stats["overruns"] = getattr(src, "overruns", 0) + getattr(nsrc, "overruns", 0)
        self.stats["lost_steps"] = getattr(src, "lost_steps", 0)
        # steps the reader process dropped (its buffer full: reader.py)
        reader = _reader_of(src)
        self.stats["dropped"] = reader.dropped if reader is not None else 0
        lost: int = (self.stats["overruns"] + getattr(src, "gaps", 0) + getattr(src, "lost", 0)
                     + self.stats["dropped"])
        return lost

    def clock(self) -> float:
        """The time by which packets go idle: now, or with a reader process (reader.py) the time
        up to which every step the kernel queued has been received (a backlog does not age)."""
        reader = _reader_of(self.source)
        return reader.clock if reader is not None else time.monotonic()

    def _seen(self) -> float:
        """When the steps just received were read: now, or with a reader process the child's stamp
        of the newest datagram handed out (never before ``clock()``): a packet's age counts from it."""
        reader = _reader_of(self.source)
        return reader.seen if reader is not None else time.monotonic()

    def _receive(self, grouper: LiveGrouper, timeout: float) -> int:
        batch = self._poll(timeout)
        now = self._seen()
        for ev, v in batch:
            grouper.add(ev, v, now)
        self.stats["events"] += len(batch)
        losses = self._source_losses()
        if losses > self._losses:  # steps were dropped: every packet open now may miss some,
            self._losses = losses  # and so may every packet whose steps are still queued
            self.stats["marked"] += grouper.mark_open("overrun")
            grouper.suspect = True
        elif not batch:
            grouper.suspect = False  # the queue ran empty: the kernel delivers again
        return len(batch)

    def _behind(self) -> bool:
        """Whether steps are still queued to be read (a reader process's backlog, or the socket's)."""
        import select

        for src in (self.source, self.nft_source):
            reader = _reader_of(src)
            if reader is not None:
                if reader.behind():
                    return True
            elif hasattr(src, "behind"):  # a source that says it itself
                if src.behind():
                    return True
            elif src is not None and hasattr(src, "fileno"):
                try:
                    if select.select([src], [], [], 0)[0]:
                        return True
                except (OSError, ValueError, TypeError, AttributeError):  # closed, or no file behind it
                    continue
        return False

    def _judge(self, pkt: Packet, versions: list[int], flags: set[str]) -> ownpackets.Verdict | None:
        if self.both:
            j = self._judge_both(pkt, versions)
        elif self.native:
            from .nftnative import judge

            j = judge(pkt, versions, self.sid, self.spec, others=self._other_tables, handles=self._own_handles)
        else:
            others = any(ss.TAG in r.text and ss.TAG + self.sid not in r.text
                         for rs in self.versions.latest.rulesets.values() for r in acc.raw_rules(rs))
            j = ownpackets.judge(pkt, versions, self._ruleset, self.sid, self.spec, nft=self.mode == "nftrace",
                                others=others)
        if not j.own:
            self.stats["foreign"] += 1
            return None
        if "overrun" in flags:
            j.incomplete.append("steps were lost while it was traced (netlink overrun or lost kernel "
                                "log records): its path may be incomplete")
        if "ended" in flags:
            j.incomplete.append("the trace ended while steps were still queued to be read: its path may be "
                                "incomplete")
        self.stats["arrived"] += 1
        self.stats["incomplete"] += bool(j.incomplete)
        return j

    def _finish(self, grouper: LiveGrouper) -> None:
        """Read the TRACE counters, then take in the steps still under way, to count what was lost."""
        self._count()
        quiet = time.monotonic() + self.idle
        deadline = time.monotonic() + DRAIN_MAX
        while time.monotonic() < min(quiet, deadline):
            if self._receive(grouper, 0.05):
                quiet = time.monotonic() + self.idle
        if self._behind():  # the open packets' further steps may be among those still queued
            grouper.mark_open("ended")
        self._count_left(grouper.flush(0, everything=True), ended=True)
        self._count_unread()

    def _count_left(self, packets: list[tuple[Packet, list[int], set[str]]], *, ended: bool) -> None:
        """Packets that arrived but will not be explained: counted by why."""
        for pkt, versions, flags in packets:
            j = self._judge(pkt, versions, flags)
            if j is None:
                continue
            if not j.events:
                self.stats["empty"] += 1
            else:
                self.stats["not_shown"] += 1
                self.stats["ended"] += ended

    def _count_unread(self) -> None:
        """Steps still queued after the drain: read, counted, not decoded (at most UNREAD_MAX s)."""
        deadline = time.monotonic() + UNREAD_MAX
        from .netlink import NetlinkSocket
        from .reader import ReaderSocket

        for src in (self.source, self.nft_source):
            if isinstance(src, (NetlinkSocket, ReaderSocket)):  # an nf_tables trace socket: its trace events
                from .nftrace import NFNL_SUBSYS_NFTABLES, NFT_MSG_TRACE

                n, more = src.discard(deadline, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE)
            elif hasattr(src, "discard"):  # the NFLOG listener: its steps
                n, more = src.discard(deadline)
            else:  # the kernel log: nothing queued to count
                continue
            self.stats["unread"] += n
            self.stats["unread_more"] = self.stats["unread_more"] or more
        self._source_losses()  # a reader process's last overrun / drop counts came with its end

    def _count(self) -> None:
        if self._counted or self.dry_run or self.backend is None:
            return
        self._counted = True
        if self.native:
            self._count_native()
            return
        for fam in self.spec.families:
            try:
                seen, traced = ss.rule_counters(self.backend, fam, self.sid)
            except RuletraceError:
                self.stats["traced"] = None
                return
            self.stats["skipped_by_cap"] += max(seen - traced, 0)
            if self.stats["traced"] is not None:
                self.stats["traced"] += traced


def _reader_of(src: Any) -> Any:
    """The reader process's socket (reader.ReaderSocket) of a source, or None: the source itself
    (nf_tables traced alone), or the NFLOG listener's socket. Not ``getattr(src, "sock", src)``:
    a ReaderSocket has a ``sock`` too (the netlink socket it drains)."""
    from .reader import ReaderSocket

    if isinstance(src, ReaderSocket):
        return src
    inner = getattr(src, "sock", None)
    return inner if isinstance(inner, ReaderSocket) else None
