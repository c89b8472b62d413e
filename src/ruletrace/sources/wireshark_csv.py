"""Wireshark "Export Packet Dissections > As CSV" (or ``tshark -T fields -E header=y``) of an NFLOG capture.

The GUI writes one quoted row per frame under its column titles ("No.", "Time", "Source",
"Destination", "Protocol", "Length", "Info", plus user-added ones); tshark names columns by
field (``nflog.prefix``, ``ip.id``). The TRACE tag only comes from a Prefix column
(``nflog.prefix``): without it there is nothing to read.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import RuletraceError
from ..fields import packet_ident, tcp_flags_ordered
from ..model import Origin, TraceEvent
from .records import Tally, note_record, sane_ts
from .tag import from_prefix as parse_tag

SOURCE = "wireshark-csv"

# column title or tshark field name (lower case) -> kernel-log field name / our role
COLUMNS: dict[str, str] = {
    "prefix": "prefix", "nflog.prefix": "prefix",
    "no.": "no", "frame.number": "no",
    "time": "time", "_ws.col.time": "time", "frame.time_epoch": "epoch", "epoch time": "epoch",
    "source": "SRC", "_ws.col.source": "SRC", "ip.src": "SRC", "ipv6.src": "SRC",
    "destination": "DST", "_ws.col.destination": "DST", "ip.dst": "DST", "ipv6.dst": "DST",
    "protocol": "protocol", "_ws.col.protocol": "protocol",
    "info": "info", "_ws.col.info": "info",
    "identification": "ID", "ip.id": "ID",
    "flow label": "FLOWLBL", "ipv6.flow": "FLOWLBL",
    "time to live": "TTL", "ip.ttl": "TTL", "hop limit": "HOPLIMIT", "ipv6.hlim": "HOPLIMIT",
    "total length": "LEN", "ip.len": "LEN",
    "sequence number (raw)": "SEQ", "tcp.seq_raw": "SEQ",
    "acknowledgment number (raw)": "ACK", "tcp.ack_raw": "ACK",
    "source port": "SPT", "tcp.srcport": "SPT", "udp.srcport": "SPT", "src port": "SPT",
    "destination port": "DPT", "tcp.dstport": "DPT", "udp.dstport": "DPT", "dest port": "DPT",
    "ifindex_indev": "IN", "nflog.ifindex_indev": "IN",
    "ifindex_outdev": "OUT", "nflog.ifindex_outdev": "OUT",
    "ifindex_physindev": "PHYSIN", "nflog.ifindex_physindev": "PHYSIN",
    "uid": "UID", "nflog.uid": "UID", "gid": "GID", "nflog.gid": "GID",
}
_INFO_PORTS = re.compile(r"(?<![0-9])([0-9]{1,5}) (?:→|->|>) ([0-9]{1,5})(?![0-9])")  # bounded: linear
_INFO_FLAGS = re.compile(r"\[([A-Z, ]+)\]")
_INFO_ICMP = re.compile(r"id=0x([0-9a-f]+), seq=(\d+)")
_HEX_FIELDS = frozenset({"ID", "FLOWLBL"})  # Wireshark shows these as 0x…


def read_events(
    stream: BinaryIO, *, name: str, stats: Any = None, ifmap: dict[int, str] | None = None
) -> Iterator[TraceEvent]:
    """TRACE events from a Wireshark/tshark CSV export that has the NFLOG prefix column."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    rows = csv.reader(text)
    try:
        header = next(rows)
    except StopIteration:
        raise RuletraceError("empty CSV file", origin=Origin(name, 1)) from None
    except csv.Error as e:
        raise RuletraceError(f"not a CSV header: {e}", origin=Origin(name, 1)) from None
    roles: list[str | None] = [COLUMNS.get(h.strip().lower()) for h in header]
    if "prefix" not in roles:
        raise RuletraceError(
            "this CSV has no NFLOG prefix column, so no TRACE tag to read. In Wireshark, right-click "
            "the 'Prefix' field of Linux Netfilter NFLOG > Apply as Column, then export again "
            f"(columns found: {', '.join(h for h in header if h)})",
            origin=Origin(name, 1),
        )
    tally = Tally(stats)
    for n, row in _rows(rows, name, stats, tally):
        if not row or not any(row):
            continue
        origin = Origin(name, n)
        if len(row) != len(header):
            note_record(stats, event=False)
            tally.bad(origin, f"{len(row)} columns where the header has {len(header)}")
            continue
        vals: dict[str, str] = {}
        for role, v in zip(roles, row):
            if role and v and role not in vals:  # duplicate titles ("Source Port" of TCP and UDP)
                vals[role] = v
        tag = parse_tag(vals.get("prefix", "").encode())
        note_record(stats, event=tag is not None)
        if tag is None:
            continue
        table, chain, kind, num = tag
        try:
            fields = _fields(vals, ifmap)
            ts = float(vals["epoch"]) if "epoch" in vals else float(vals["time"]) if "time" in vals else None
            ts = sane_ts(ts)
        except ValueError as e:
            tally.bad(origin, f"bad value: {e}")
            continue
        yield TraceEvent(
            table, chain, kind, num,
            ts=ts,
            family="ipv6" if ":" in fields.get("SRC", "") else "ipv4" if "SRC" in fields else None,
            ident=packet_ident(fields),
            origin=origin,
            source=SOURCE,
            fields=fields,
        )
    tally.finish()


def _rows(rows: Any, name: str, stats: Any, tally: Tally) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of the data rows; a row the csv module refuses (a field over its
    128 KiB limit, a NUL) is counted as broken and reading goes on with the next one."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as e:
            note_record(stats, event=False)
            tally.bad(Origin(name, rows.line_num), f"unreadable CSV row: {e}")
            continue
        yield rows.line_num, row


def _fields(vals: dict[str, str], ifmap: dict[int, str] | None) -> dict[str, str]:
    f: dict[str, str] = {}
    for key in ("IN", "OUT", "PHYSIN"):
        v = vals.get(key)
        if v:
            idx = int(v, 0)
            f[key] = ifmap.get(idx, f"if{idx}") if ifmap else f"if{idx}"
        elif key != "PHYSIN":
            f[key] = ""
    for key in ("SRC", "DST", "LEN", "TTL", "HOPLIMIT", "ID", "FLOWLBL", "SPT", "DPT", "SEQ", "ACK", "UID", "GID"):
        v = vals.get(key)
        if v:
            f[key] = str(int(v, 16)) if key in _HEX_FIELDS and v.startswith("0x") else v
    proto = vals.get("protocol", "")
    info = vals.get("info", "")
    if proto in ("TCP", "UDP", "ICMP", "ICMPv6"):
        f["PROTO"] = proto
    m = _INFO_PORTS.search(info)
    if m and "SPT" not in f:
        f["SPT"], f["DPT"] = m[1], m[2]
    if proto == "TCP" or "[SYN" in info or "[ACK" in info or "[RST" in info:
        f.setdefault("PROTO", "TCP")
        fl = _INFO_FLAGS.search(info.replace("[TCP ", "{"))
        if fl:
            words = {w.strip() for w in fl[1].split(",")}
            f["TCPFLAGS"] = tcp_flags_ordered(words)
    icmp = _INFO_ICMP.search(info)
    if icmp:
        f["ICMPID"], f["ICMPSEQ"] = str(int(icmp[1], 16)), icmp[2]
        if "Echo (ping) reply" in info:  # "… (request in 20)" follows on replies
            f["TYPE"] = "0"
        elif "Echo (ping) request" in info:
            f["TYPE"] = "8"
    return f
