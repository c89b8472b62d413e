"""``nft monitor trace`` text (also what ``nft -j monitor trace`` prints): nf_tables trace events.

Format: nftables src/netlink.c (``netlink_events_trace_cb``, ``trace_print_*``), nft 1.0.6::

    trace id 8c0ec022 ip filter INPUT packet: iif "eth0" ether saddr .. ip saddr 10.0.0.1 .. tcp dport 80 ..
    trace id 8c0ec022 ip filter INPUT rule meta l4proto tcp counter packets 0 bytes 0 jump WEB (verdict jump WEB)
    trace id 8c0ec022 ip filter WEB rule tcp dport 80 accept # handle 9 (verdict accept)   (nft -a)
    trace id 8c0ec022 ip filter INPUT policy accept meta mark 0x00000010

The trace id is exact per packet; ``# handle N`` is only there with ``nft -a monitor trace``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..fields import (
    NFT_ICMP_CODES,
    NFT_ICMP_TYPES,
    NFT_ICMPV6_TYPES,
    TCP_FLAG_WORDS,
    bounded_int,
)
from ..model import NFTRACE_ON, Origin, StepKind, TraceEvent, nft_rule_key
from ..rulesets.nft_model import FAMILIES
from .handles import MonitorState, monitor_event, read_monitor
from .records import note_record

SOURCE = "nft-monitor"

_LINE = re.compile(r"^trace id ([0-9a-f]+) (\S+) (\S+) (\S+) (packet: |rule |policy |verdict |return )(.*)$")
_HANDLE = re.compile(r" # handle ([0-9]{1,20})\Z")


def _rule_tail(rest: str) -> tuple[str, str | None, str, str] | None:
    """``text [# handle N] (verdict V) after`` -> (text, N, V, after); str methods: linear time.

    The rule text is everything before the first `` (verdict `` (nft prints no such text in a
    rule; a regular expression with a lazy prefix took quadratic time on lines full of them).
    """
    i = rest.find(" (verdict ")
    if i < 0:
        return None
    j = rest.find(")", i + 10)
    if j < 0:
        return None
    text = rest[:i]
    h = _HANDLE.search(text)
    hnum = None
    if h is not None:
        text, hnum = text[: h.start()], h[1]
    return text, hnum, rest[i + 10 : j], rest[j + 1 :].strip()

IPV6_HDR_LEN = 40
_FIELD_MAP = {
    ("ether", "saddr"): "MACSRC", ("ether", "daddr"): "MACDST",
    ("ip", "saddr"): "SRC", ("ip", "daddr"): "DST", ("ip", "ttl"): "TTL", ("ip", "id"): "ID",
    ("ip", "length"): "LEN",
    ("ip6", "saddr"): "SRC", ("ip6", "daddr"): "DST", ("ip6", "hoplimit"): "HOPLIMIT",
    ("ip6", "flowlabel"): "FLOWLBL",
    ("tcp", "sport"): "SPT", ("tcp", "dport"): "DPT", ("tcp", "window"): "WINDOW",
    ("tcp", "sequence"): "SEQ", ("tcp", "ackseq"): "ACK", ("tcp", "urgptr"): "URGP",
    ("udp", "sport"): "SPT", ("udp", "dport"): "DPT", ("udp", "length"): "ULEN",
    ("udplite", "sport"): "SPT", ("udplite", "dport"): "DPT",
    ("icmp", "id"): "ICMPID", ("icmp", "sequence"): "ICMPSEQ",
    ("icmpv6", "id"): "ICMPID", ("icmpv6", "sequence"): "ICMPSEQ",
}
_PROTO_OF = {"tcp": "TCP", "udp": "UDP", "udplite": "UDPLITE", "icmp": "ICMP", "icmpv6": "ICMPv6"}


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for i, part in enumerate(text.split('"')):
        if i % 2:
            out.append(part)  # a quoted interface name
        else:
            out.extend(part.split())
    return out


def packet_fields(text: str) -> dict[str, str]:
    """Kernel-log fields from nft's packet dump (``iif "eth0" ip saddr 1.2.3.4 tcp dport 80 …``)."""
    toks = _tokens(text)
    f: dict[str, str] = {}
    i, n = 0, len(toks)
    while i < n:
        t = toks[i]
        if t in ("iif", "oif") and i + 1 < n:
            f["IN" if t == "iif" else "OUT"] = toks[i + 1]
            i += 2
            continue
        if t.startswith("@"):  # raw payload "@ll,0,112 0x3ae0…" (no link header decoded): skip it
            i += 2
            continue
        if t == "meta" and i + 2 < n:
            if toks[i + 1] == "mark":
                f["MARK"] = _mark(toks[i + 2])
            i += 3
            continue
        if t == "icmpv6" and i + 2 < n and toks[i + 1] == "parameter-problem":
            word = bounded_int(toks[i + 2])
            if f.get("TYPE") in ("128", "129") and word is not None and word < 1 << 32:
                # nft 1.0.6 prints an echo's id and sequence as one 32-bit "parameter-problem"
                # word (the same bytes of the ICMPv6 header): id << 16 | sequence
                f["ICMPID"], f["ICMPSEQ"] = str(word >> 16), str(word & 0xFFFF)
            i += 3
            continue
        if i + 2 < n and t.isidentifier() and toks[i + 1].isidentifier():
            proto, key = t, toks[i + 1]
            val_i = i + 2
            if toks[val_i] == "==":
                val_i += 1
            val = toks[val_i] if val_i < n else ""
            j = val_i + 1
            while j + 1 < n and toks[j] == "|":  # "tcp flags == syn | ack"
                val += " | " + toks[j + 1]
                j += 2
            if proto in _PROTO_OF:
                f.setdefault("PROTO", _PROTO_OF[proto])
            name = _FIELD_MAP.get((proto, key))
            if name:
                f[name] = val
            elif (proto, key) == ("tcp", "flags"):
                words = {w.strip().upper() for w in val.split("|")}
                f["TCPFLAGS"] = " ".join(w for w in TCP_FLAG_WORDS if w in words)
            elif proto in ("icmp", "icmpv6") and key == "type":
                table = NFT_ICMP_TYPES if proto == "icmp" else NFT_ICMPV6_TYPES
                f["TYPE"] = str(table.get(val, val))
            elif proto in ("icmp", "icmpv6") and key == "code":
                f["CODE"] = str(NFT_ICMP_CODES.get(val, val))
            elif (proto, key) == ("ip6", "length") and bounded_int(val) is not None:
                f["LEN"] = str(int(val) + IPV6_HDR_LEN)  # nft prints the payload length
            i = j
            continue
        i += 1
    if "OUT" not in f and "IN" in f:
        f["OUT"] = ""
    if "IN" not in f and "OUT" in f:
        f["IN"] = ""
    return f


def _mark(text: str) -> str:
    n = bounded_int(text, 0)
    return text if n is None else f"{n:#x}"


def _verdict(text: str) -> str:
    """``jump WEB`` -> jump:WEB, ``accept`` -> accept."""
    parts = text.split()
    return ":".join(parts[:2]) if len(parts) > 1 and parts[0] in ("jump", "goto") else " ".join(parts)


def _step(st: MonitorState, n: int, line: str) -> TraceEvent | None:
    """The step one line of ``nft monitor trace`` shows, None for none (a packet dump, a bad line)."""
    m = _LINE.match(line)
    origin = Origin(st.name, n)
    if m is None:
        note_record(st.stats, event=False)
        st.tally.bad(origin, f"not `nft monitor trace` output: {line[:60]!r}")
        return None
    tid, fam, table, chain, what, rest = m.groups()
    if what == "packet: ":
        note_record(st.stats, event=False)
        st.packets[tid] = packet_fields(rest)
        st.dumped.add(tid)
        return None
    note_record(st.stats, event=True)
    fields = dict(st.packets.get(tid, {}))
    handle: int | None = None
    text: str | None = None
    if what == "rule ":
        t = _rule_tail(rest)
        if t is None:
            st.tally.bad(origin, "rule line without '(verdict …)'")
            return None
        text, hnum, vtext, after = t
        handle = bounded_int(hnum) if hnum else None
        verdict = _verdict(vtext)
        kind = StepKind.RULE
        if not st.keep_trace_rule and verdict == "continue" and NFTRACE_ON in text:
            return None  # the rule that switched tracing on: legacy TRACE does not report it
        text = nft_rule_key(text)
    elif what == "policy ":
        words = rest.split()
        verdict = words[0] if words else ""
        kind = StepKind.POLICY
        after = " ".join(words[1:])
    else:  # handle-less end of a chain ("verdict continue" / "return …"): the chain's return
        words = rest.split()
        verdict = _verdict(" ".join(words[:2]) if words[:1] in (["jump"], ["goto"]) else " ".join(words[:1]))
        kind = StepKind.RETURN if verdict in ("continue", "return") else StepKind.RULE
        after = ""
    if after and "meta mark" in after:
        mark = packet_fields(after).get("MARK")
        if mark is None:  # "meta mark" without a value: nothing to keep
            st.tally.bad(origin, "'meta mark' without a value")
        else:
            fields["MARK"] = mark
            st.packets.setdefault(tid, {})["MARK"] = mark
    return monitor_event(table, chain, kind, fields, tid=tid, dumped=st.dumped, family=FAMILIES.get(fam, fam),
                         handle=handle, verdict=verdict, origin=origin, source=SOURCE, raw=line, text=text)


def read_events(
    stream: BinaryIO, *, name: str, stats: Any = None, keep_trace_rule: bool = True
) -> Iterator[TraceEvent]:
    """Steps from ``nft monitor trace`` output, with implied user-chain returns added."""
    return read_monitor(stream, name=name, stats=stats, keep_trace_rule=keep_trace_rule, step=_step)
