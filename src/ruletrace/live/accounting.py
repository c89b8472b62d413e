"""What a live trace lost: the kernel's own count of traced packets against what arrived.

The rate cap (``-m limit`` on the TRACE rule) limits packets, not steps: a packet that crosses
1,000 matching rules makes 1,000 steps, and a burst of them can overflow the netlink socket.
The TRACE rule's counter is the number of packets the kernel traced; every packet of this
session that arrived with at least one step is counted, so ``traced - arrived`` packets were
lost entirely. Packets that arrived but were open while steps were lost (an overrun), or whose
path does not start where tracing starts, are counted as possibly incomplete.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..model import Rule, Ruleset
from . import session as ss


def new_stats() -> dict[str, Any]:
    return {
        "packets": 0,  # shown
        "events": 0,  # steps received
        "traced": 0,  # packets the kernel traced: the TRACE rules' counters (None: unreadable)
        "arrived": 0,  # this session's packets that arrived (shown or not)
        "arrived_before_reinstall": 0,
        "not_shown": 0,  # arrived after --count was reached, or after the end
        "ended": 0,  # of not_shown: still being received when the trace ended (counted, not explained)
        "empty": 0,  # arrived with no step past the session's own rules (nothing to explain)
        "unread": 0,  # steps still queued when the trace ended, not read (their packets: lost entirely)
        "unread_more": False,  # the count of unread steps stopped at its time bound: at least that many
        "incomplete": 0,  # arrived with a visibly incomplete path, or open during a loss
        "foreign": 0,  # packets of other sessions / not this session's flow, left out
        "skipped_by_cap": 0,  # packets of the flow the rate cap left out
        "overruns": 0,  # netlink ENOBUFS
        "lost_steps": 0,  # steps known to be lost (NFLOG sequence gaps)
        "dropped": 0,  # steps the reader process dropped: its buffer was full (reader.py)
        "damaged": 0,  # trace messages that could not be decoded (skipped, counted)
        "marked": 0,
        "changes": 0,
        "reinstalls": 0,
        "seen_by": None,  # both backends: backend -> the filter's packets its counter rules saw, when they differ
    }


def lost_packets(stats: dict[str, Any]) -> int | None:
    """Packets the kernel traced of which not one step arrived (None when the counters are unknown)."""
    if stats["traced"] is None:
        return None
    arrived = stats["arrived"] - (stats["arrived_before_reinstall"] if stats["reinstalls"] else 0)
    lost: int = max(stats["traced"] - arrived, 0)
    return lost


def summary(stats: dict[str, Any], shown: int, rate: int) -> str:
    """The one summary line at the end of a trace."""
    parts = [f"{shown} packet(s) shown, {stats['events']} trace step(s)"]
    lost = lost_packets(stats)
    if stats["traced"] is None:
        parts.append(f"{stats['arrived']} packet(s) arrived (the TRACE rule counters could not be read)")
    elif stats["traced"] or stats["arrived"]:
        since = " since the TRACE rules were re-installed" if stats["reinstalls"] else ""
        parts.append(f"the kernel traced {stats['traced']} packet(s){since}: "
                     f"{stats['arrived']} arrived, {lost} lost entirely{lost_why(stats) if lost else ''}")
    if stats.get("seen_by"):  # both backends, their counter rules disagree
        parts.append("the filter's packets seen per backend: "
                     + ", ".join(f"{b} {n}" for b, n in stats["seen_by"].items()))
    for key, text in _COUNTS:
        if stats.get(key):
            parts.append(text.format(n=stats[key], rate=rate, ended=stats["ended"],
                                     counted=stats["not_shown"] - stats["ended"],
                                     least="at least " if stats["unread_more"] else ""))
    return ", ".join(parts)


def lost_why(stats: dict[str, Any]) -> str:
    """Why packets were lost entirely, from what the session saw (said only as far as it knows)."""
    kernel = stats["overruns"] or stats["lost_steps"]
    if stats.get("dropped"):
        return (" (steps were dropped: the reader's buffer was full"
                + ("; the kernel dropped steps too" if kernel else "")
                + ("; steps were still queued when the trace ended" if stats["unread"] else "") + ")")
    if stats["unread"] and not kernel:
        return " (their steps were still queued when the trace ended)"
    if kernel and not stats["unread"]:
        return " (the kernel dropped their steps: the receive queue overflowed)"
    if kernel:
        return " (the kernel dropped steps, and steps were still queued when the trace ended)"
    return " (no step of theirs was received; the kernel reported no overflow)"


# the counts said only when not zero: stats key -> what is said ({n}: the count)
_COUNTS = (
    ("incomplete", "{n} arrived possibly incomplete"),
    ("not_shown", "{n} arrived but not shown ({counted} after --count, {ended} still arriving when the trace "
                  "ended: counted, not explained)"),
    ("empty", "{n} arrived with no step past this session's own rules (nothing to explain)"),
    ("unread", "{least}{n} step(s) still queued when the trace ended, not read"),
    ("skipped_by_cap", "{n} packet(s) of the flow not traced (over --rate-limit {rate}/s)"),
    ("overruns", "{n} netlink overrun(s)"),
    ("lost_steps", "{n} step(s) lost (NFLOG sequence gaps)"),
    ("dropped", "{n} step(s) dropped (the reader process's buffer was full)"),
    ("damaged", "{n} trace message(s) that could not be decoded, skipped"),
    ("foreign", "{n} packet(s) of other sessions/flows left out"),
    ("changes", "the ruleset changed {n} time(s)"),
)


def raw_rules(rs: Ruleset) -> Iterator[Rule]:
    for chain in ("PREROUTING", "OUTPUT"):
        ch = rs.chain("raw", chain)
        if ch is not None:
            yield from ch.rules


def missing_rules(rules: list[ss.PlannedRule], rulesets: dict[str, Ruleset], sid: str) -> list[ss.PlannedRule]:
    """The session's planned rules a snapshot no longer contains (matched by tag and chain)."""
    out = []
    for r in rules:
        tag = next(a for a in r.args if a.startswith(ss.TAG))
        rs = rulesets.get(r.family)
        if rs is None:
            continue  # nothing read for the family: cannot tell (and must not add a duplicate)
        ch = rs.chain(r.table, r.chain)
        texts = [x.text for x in ch.rules] if ch is not None else []
        if not any(_has_tag(t, tag) for t in texts):
            out.append(r)
    return out


def _has_tag(text: str, tag: str) -> bool:
    t = ss.rule_tag(text)
    return t is not None and ss.TAG + t[0] + (ss.SEEN_SUFFIX if t[1] else "") == tag
