"""``xtables-monitor --trace`` output (iptables-nft): PACKET lines and TRACE lines with handles.

Format: iptables/xtables-monitor.c (``trace_print_packet``, ``trace_print_rule``), iptables 1.8.9::

    PACKET: 2 ead7b103 IN=eth0 MACSRC=.. MACDST=.. MACPROTO=0800 SRC=.. DST=.. LEN=60 TOS=0x0 TTL=64 ID=5 DF SPORT=1 DPORT=2 SYN
     TRACE: 2 ead7b103 filter:INPUT:rule:0x6:JUMP:WEB  -4 -t filter -A INPUT -p tcp -j WEB
     TRACE: 2 ead7b103 filter:INPUT:policy:ACCEPT

``2``/``10`` is the NFPROTO family, ``ead7b103`` the nf_tables trace id, ``0x6`` the rule handle
(not the rule number: ``handles.resolve_handles`` maps it). No timestamps are printed.

On a host with native nf_tables tables (recorded in the lab, iptables 1.8.9) it reports their
steps too: inet (family 1) rules without any text; bridge (7) and netdev (5) packets as
``NH=<network header in hex>``, each byte of 0x80 or more printed sign-extended (``ffffffa8``);
and a native ``ip``/``ip6`` rule it cannot translate ends the output: the TRACE line is cut after
``-4 -t TABLE`` and xtables-monitor exits ("Parsing nftables rule failed"). The network header is
decoded here (the packet's addresses, length and id), and a frame a bridge passes up to its own
IP stack (a new trace id there) stays one packet, as with ``nft monitor trace``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..fields import TCP_FLAG_WORDS, bounded_int, packet_ident
from ..logtext import parse_fields
from ..model import Origin, StepKind, TraceEvent
from .handles import MonitorState, monitor_event, read_monitor
from .records import note_record

SOURCE = "xtables-monitor"
NFPROTO = {"2": "ipv4", "10": "ipv6", "7": "bridge", "3": "arp", "1": "inet", "5": "netdev"}

_PACKET = re.compile(r"^\s*PACKET: (\d+) ([0-9a-f]+) (.*)$")
_TRACE = re.compile(
    r"^\s*TRACE: (\d+) ([0-9a-f]+) ([^:\s]+):([^:\s]+):(rule|return|policy):(\S*)(?:\s+(.*))?$"
    # (no lazy group before "\s*$": that took quadratic time on a line with a long run of spaces)
)
_TCP_FLAGS = frozenset(TCP_FLAG_WORDS)


def nh_bytes(text: str) -> bytes:
    """``NH=`` hex as xtables-monitor prints it: a byte of 0x80 or more as ``ffffffXX`` (signed char)."""
    out = bytearray()
    i, n = 0, len(text)
    while i + 1 < n:
        if text.startswith("ffffff", i) and i + 8 <= n and text[i + 6] in "89abcdef":
            out.append(int(text[i + 6 : i + 8], 16))
            i += 8
        else:
            out.append(int(text[i : i + 2], 16))
            i += 2
    return bytes(out)


def packet_fields(text: str) -> dict[str, str]:
    """Kernel-log fields from a PACKET line's ``KEY=value`` text (SPORT/DPORT -> SPT/DPT, flags;
    a bridge or netdev packet's ``NH=`` network header decoded)."""
    f = parse_fields(text if text.startswith(("IN=", "OUT=")) else "IN= " + text)
    if "NH" in f and "SRC" not in f:
        from .nflog import DECODE_ERRORS, payload_fields

        try:
            if payload_fields(nh_bytes(f["NH"]), f):
                del f["NH"]  # (now said by the fields)
        except DECODE_ERRORS:
            pass  # (a header cut short: the fields read so far stay)
    for old, new in (("SPORT", "SPT"), ("DPORT", "DPT")):
        if old in f:
            f[new] = f.pop(old)
    extra = f.pop("EXTRA", "").split()
    flags = [w for w in extra if w in _TCP_FLAGS]
    rest = [w for w in extra if w not in _TCP_FLAGS]
    if flags:
        f["TCPFLAGS"] = " ".join(w for w in TCP_FLAG_WORDS if w in flags)
        f.setdefault("PROTO", "TCP")
    if rest:
        f["EXTRA"] = " ".join(rest)
    for key in ("MACSRC", "MACDST"):  # xtables-monitor prints octets with %x: "6e:f2:37:d3:7b:7"
        if key in f:
            f[key] = ":".join(o.rjust(2, "0") for o in f[key].split(":"))
    return f


# verdicts xtables-monitor prints as numbers (it names only some): netfilter NF_* and nf_tables NFT_*
_NUMERIC = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
            0xFFFFFFFF: "continue", 0xFFFFFFFE: "break", 0xFFFFFFFD: "jump", 0xFFFFFFFC: "goto",
            0xFFFFFFFB: "return"}


def _verdict(word: str) -> str:
    """``CONTINUE`` -> continue, ``JUMP:WEB`` -> jump:WEB, ``ACCEPT`` -> accept, ``0xfffffffb`` -> return."""
    head, _, target = word.partition(":")
    if head.startswith("0x"):
        n = bounded_int(head, 16)
        if n is not None:
            head = _NUMERIC.get(n, head)
    head = head.lower()
    return f"{head}:{target}" if target else head


def rule_text(text: str) -> str:
    """The rule as iptables-save prints it: ``-4 -t filter -A INPUT -j WEB`` -> ``-A INPUT -j WEB``."""
    words = text.split(" ")
    i = 0
    while i < len(words) and words[i] in ("-4", "-6", ""):
        i += 1
    if i + 1 < len(words) and words[i] == "-t":
        i += 2
    return " ".join(words[i:]).strip()


def _step(st: MonitorState, n: int, line: str) -> TraceEvent | None:
    """The step one TRACE line shows; None for a PACKET line (kept in ``st``) or any other line."""
    m = _TRACE.match(line)
    if m is None:
        p = _PACKET.match(line)
        note_record(st.stats, event=False)
        if p is not None:
            fields = st.packets[p[2]] = packet_fields(p[3].strip())
            _passed_up(st, p[1], p[2], fields)
            st.dumped.add(st.aliases[p[2]][0] if p[2] in st.aliases else p[2])
        elif not (line.startswith(("EVENT:", " EVENT:")) or "xtables-monitor" in line):
            # (EVENT: ruleset changes without a --trace filter, and the tool's own notices, are passed over)
            st.tally.bad(Origin(st.name, n), f"not xtables-monitor --trace output: {line[:60]!r}")
        return None
    note_record(st.stats, event=True)
    nfproto, tid, table, chain, kind, spec, text = m.groups()
    handle: int | None = None
    verdict: str | None
    if kind == "policy":
        verdict = _verdict(spec)
    else:
        hexnum, _, vword = spec.partition(":")
        handle = bounded_int(hexnum, 16)
        if handle is None:
            st.tally.bad(Origin(st.name, n), f"bad rule handle {hexnum!r}")
            return None
        verdict = _verdict(vword) if vword else None
    text = (text or "").strip()
    if not st.keep_trace_rule and verdict == "continue" and text.endswith("-j TRACE"):
        return None  # the rule that switched tracing on: legacy TRACE does not report it
    if text and "-A " not in text and st.stats is not None:
        st.stats.warnings.append(
            f"{st.name}:{n}: xtables-monitor printed only {text!r} for {table}:{chain} rule handle {handle}: it "
            "cannot translate that native nf_tables rule and stops there ('Parsing nftables rule failed' on "
            "its stderr), so the packets after it are missing; trace native tables with nft monitor trace")
        text = ""
    fields = dict(st.packets.get(tid, {}))
    alias = st.aliases.get(tid)
    return monitor_event(table, chain, StepKind(kind), fields, tid=alias[0] if alias else tid, dumped=st.dumped,
                         ident=alias[1] if alias else None, family=NFPROTO.get(nfproto, nfproto), handle=handle,
                         verdict=verdict, origin=Origin(st.name, n), source=SOURCE, raw=line,
                         text=rule_text(text) if text else None)


_SAME_PACKET = ("SRC", "DST", "LEN", "ID")
_MAX_ALIASES = 1024


def _passed_up(st: MonitorState, family: str, tid: str, fields: dict[str, str]) -> None:
    """A dump of an IP family right after a bridge-family dump of the same packet (addresses,
    length, id) under another trace id: the bridge passed the frame up to its own IP stack, where
    nf_tables gave it a new trace id; its steps go on with the bridge packet (its trace id and
    identity) until a dump of that id shows another packet."""
    last, st.last_dump = st.last_dump, (family, tid, fields)
    alias = st.aliases.get(tid) if st.aliases else None
    if alias is not None and alias[2] != packet_ident(fields):
        del st.aliases[tid]  # the trace id names another packet now
    if (last is not None and last[0] == "7" and family in ("1", "2", "10") and last[1] != tid
            and all(fields.get(k) for k in _SAME_PACKET)
            and all(last[2].get(k) == fields.get(k) for k in _SAME_PACKET)):
        first = st.aliases.get(last[1])
        st.aliases[tid] = (first[0] if first else last[1], first[1] if first else packet_ident(last[2]),
                           packet_ident(fields))
        if len(st.aliases) > _MAX_ALIASES:  # a packet's IP steps follow its bridge steps at once: the oldest go
            del st.aliases[next(iter(st.aliases))]


def read_events(
    stream: BinaryIO, *, name: str, stats: Any = None, keep_trace_rule: bool = False
) -> Iterator[TraceEvent]:
    """TRACE steps from ``xtables-monitor --trace`` output, with implied user-chain returns added."""
    return read_monitor(stream, name=name, stats=stats, keep_trace_rule=keep_trace_rule, step=_step)
