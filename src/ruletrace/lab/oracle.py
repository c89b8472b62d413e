"""The lab's ground truth: per-packet TRACE step sequences read straight from each capture.

Deliberately small and independent of ``ruletrace.sources``/``correlate`` (which it checks): it
reads only the step tag and the few header fields that tell packets apart.
Packets are contiguous in every capture (the kernel finishes one packet's hooks before the next
packet's start in these bounded, one-at-a-time flows); a packet starts at a raw-table event
that follows a non-raw one, or where the per-packet key (IP ID / TCP SEQ+ACK / ICMP id+seq)
changes. nf_tables captures need more care: see ``_group_by_trace_id``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fields import proto_name

Tag = tuple[str, str, str, int]  # table, chain, kind (rule/return/policy), rule number

_TRACE = re.compile(r"TRACE: (\S+?):(\S+):(rule|return|policy):(\d+)")
_KV = re.compile(r"([A-Z]+)=(\S*)")
NFULA_PAYLOAD = 9  # include/uapi/linux/netfilter/nfnetlink_log.h
NFULA_PREFIX = 10
PCAP_HDR = struct.Struct("IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
REC_HDR = struct.Struct("IIII")  # ts_sec, ts_usec, incl_len, orig_len
NFLOG_HDR = struct.Struct("!BBH")  # family, version, res_id (group)


@dataclass(slots=True)
class OPacket:
    """One packet's steps as the capture shows them, and the fields of its first event."""

    tags: list[Tag] = field(default_factory=list)
    first: Mapping[str, str | None] = field(default_factory=dict)
    key: tuple[Any, ...] = ()


def _group(events: Sequence[tuple[Tag, tuple[Any, ...], Mapping[str, str | None]]]) -> list[OPacket]:
    packets: list[OPacket] = []
    prev: Tag | None = None
    for tag, key, fields in events:
        start = (
            prev is None
            or key != packets[-1].key
            or (tag[0] == "raw" and prev[0] != "raw")
            or (tag[0] == "raw" and prev[0] == "raw" and tag[1] != prev[1]
                and {tag[1], prev[1]} <= {"PREROUTING", "OUTPUT"})
        )
        if start:
            packets.append(OPacket(first=fields, key=key))
        packets[-1].tags.append(tag)
        prev = tag
    return packets


def _group_by_trace_id(events: list[tuple[Tag, str, dict[str, str]]]) -> list[OPacket]:
    """Group nf_tables trace events into packets.

    The trace id is not enough alone, and contiguity is not either (both seen on 6.18):
    - a REJECT rule's event comes after the events of the reset/ICMP error it sent (nf_tables
      reports a rule once its verdict is known; legacy TRACE logs before the target runs);
    - for packets that came in through a bridge (br_netfilter), the id at FORWARD differs from
      the id at raw PREROUTING.
    So: a raw event after a non-raw one (or an unknown id at raw) starts a packet; another event
    joins the open packet of its id, or else the packet started last (and its id is noted).
    """
    packets: list[OPacket] = []
    open_by_id: dict[str, OPacket] = {}
    for tag, tid, fields in events:
        pkt = open_by_id.get(tid)
        if tag[0] == "raw" and (pkt is None or pkt.tags[-1][0] != "raw"):
            pkt = None
        if pkt is None and tag[0] != "raw" and packets:
            pkt = packets[-1]
        if pkt is None:
            pkt = OPacket(first=fields, key=(tid,))
            packets.append(pkt)
        open_by_id[tid] = pkt
        pkt.tags.append(tag)
    return packets


def _fields_kernel_log(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    proto_seen = False
    for k, v in _KV.findall(line.split("TRACE:", 1)[1]):
        if k == "PROTO":
            proto_seen = True
        if k in ("ID", "SEQ") and proto_seen and out.get("PROTO", "").startswith("ICMP"):
            k = "ICMP" + k
        out.setdefault(k, v)
    for flag in ("SYN", "ACK", "FIN", "RST", "PSH"):
        if f" {flag} " in line and "PROTO=TCP" in line:
            out.setdefault("FLAGS", "")
            out["FLAGS"] += flag
    return out


def _key(f: Mapping[str, str | None]) -> tuple[Any, ...]:
    return (f.get("ID"), f.get("PROTO"), f.get("SEQ"), f.get("ACK"), f.get("FLAGS"), f.get("ICMPID"),
            f.get("ICMPSEQ"), f.get("TYPE"))


def kernel_log(path: Path) -> list[OPacket]:
    """Packets of a kernel log (dmesg or syslog style lines)."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        m = _TRACE.search(line)
        if m:
            f = _fields_kernel_log(line)
            events.append(((m[1], m[2], m[3], int(m[4])), _key(f), f))
    return _group(events)


def _ip_fields(payload: bytes, family: int) -> dict[str, str]:
    f: dict[str, str] = {}
    if family == 2 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        f["ID"] = str(struct.unpack_from("!H", payload, 4)[0])
        proto, l4 = payload[9], payload[ihl:]
        f["SRC"] = ".".join(map(str, payload[12:16]))
        f["DST"] = ".".join(map(str, payload[16:20]))
    elif family == 10 and len(payload) >= 40:
        proto, l4 = payload[6], payload[40:]
    else:
        return f
    f["PROTO"] = proto_name(proto)
    if proto in (6, 17) and len(l4) >= 4:
        sp, dp = struct.unpack_from("!HH", l4)
        f["SPT"], f["DPT"] = str(sp), str(dp)
        if proto == 6 and len(l4) >= 14:
            seq, ack = struct.unpack_from("!II", l4, 4)
            f["SEQ"], f["ACK"] = str(seq), str(ack)
            f["FLAGS"] = str(l4[13])
    elif proto in (1, 58) and len(l4) >= 8:
        t, _, _, ident, seq = struct.unpack_from("!BBHHH", l4)
        f["TYPE"], f["ICMPID"], f["ICMPSEQ"] = str(t), str(ident), str(seq)
    return f


def nflog_pcap(path: Path) -> list[OPacket]:
    """Packets of a LINKTYPE_NFLOG pcap written by ``tcpdump -i nflog -w``."""
    data = path.read_bytes()
    order = "<" if data[:4] == bytes.fromhex("d4c3b2a1") else ">"
    rec, tlv = struct.Struct(order + REC_HDR.format), struct.Struct(order + "HH")
    off, events = 24, []
    while off + rec.size <= len(data):
        _, _, incl, _ = rec.unpack_from(data, off)
        body = data[off + rec.size : off + rec.size + incl]
        off += rec.size + incl
        family = body[0]
        pos, prefix, payload = NFLOG_HDR.size, "", b""
        while pos + tlv.size <= len(body):
            length, kind = tlv.unpack_from(body, pos)
            if length < tlv.size:
                break
            value = body[pos + tlv.size : pos + length]
            if kind == NFULA_PREFIX:
                prefix = value.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif kind == NFULA_PAYLOAD:
                payload = value
            pos += (length + 3) & ~3
        m = _TRACE.search(prefix)
        if m:
            f = _ip_fields(payload, family)
            events.append(((m[1], m[2], m[3], int(m[4])), _key(f), f))
    return _group(events)


def ulogd_json(path: Path) -> list[OPacket]:
    """Packets of ulogd2 JSON output (one object per line, TRACE prefix in ``oob.prefix``)."""
    events: list[tuple[Tag, tuple[Any, ...], dict[str, str | None]]] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        o = json.loads(line)
        m = _TRACE.search(o.get("oob.prefix", ""))
        if not m:
            continue
        proto = o.get("ip.protocol", o.get("ip6.nexthdr"))
        f = {"ID": str(o["ip.id"]) if "ip.id" in o else None, "PROTO": proto_name(proto) if isinstance(proto, int) else str(proto),
             "SPT": str(o.get("src_port")), "DPT": str(o.get("dest_port")),
             "SEQ": str(o.get("tcp.seq")), "ACK": str(o.get("tcp.ackseq")),
             "ICMPID": str(o.get("icmp.echoid", o.get("icmpv6.echoid"))),
             "ICMPSEQ": str(o.get("icmp.echoseq", o.get("icmpv6.echoseq"))),
             "TYPE": str(o.get("icmp.type", o.get("icmpv6.type")))}
        events.append(((m[1], m[2], m[3], int(m[4])), _key(f), f))
    return _group(events)


def nft_positions(ruleset_json: Path) -> dict[tuple[str, str, int], int]:
    """(table, chain, handle) -> rule number, and (table, chain, 0) -> rules + 1 (the policy step)."""
    pos: dict[tuple[str, str, int], int] = {}
    count: dict[tuple[str, str], int] = {}
    for item in json.loads(ruleset_json.read_text())["nftables"]:
        r = item.get("rule")
        if r:
            k = (r["table"], r["chain"])
            count[k] = count.get(k, 0) + 1
            pos[(r["table"], r["chain"], r["handle"])] = count[k]
        c = item.get("chain")
        if c:
            count.setdefault((c["table"], c["name"]), 0)
    for (t, c), n in count.items():
        pos[(t, c, 0)] = n + 1
    return pos


_NFT_LINE = re.compile(r"^trace id ([0-9a-f]+) \S+ (\S+) (\S+) (rule|policy) (.*)$")
_XT_LINE = re.compile(r"^\s*TRACE: \d+ ([0-9a-f]+) ([^:\s]+):([^:\s]+):(rule|policy):(\S*)\s*(.*)$")


def nft_monitor(path: Path, ruleset_json: Path) -> list[OPacket]:
    """Packets of ``nft -a monitor trace`` output; the TRACE rule's own event is left out."""
    return _monitor(path, ruleset_json, _nft_step)


def xtables_monitor(path: Path, ruleset_json: Path) -> list[OPacket]:
    """Packets of ``xtables-monitor --trace`` output (rule handles in hex); TRACE rules left out."""
    return _monitor(path, ruleset_json, _xt_step)


# a monitor line -> (trace id, table, chain, rule|policy, rule handle: 0 for a policy, None when not
# shown), or None for a line that is no step (or the step of the rule that switched tracing on)
_Step = tuple[str, str, str, str, int | None]


def _nft_step(line: str) -> _Step | None:
    m = _NFT_LINE.match(line)
    if not m or (m[4] == "rule" and "nftrace set 1" in m[5]):
        return None
    h = re.search(r"# handle (\d+)", m[5]) if m[4] == "rule" else None
    return m[1], m[2], m[3], m[4], (int(h[1]) if h else None) if m[4] == "rule" else 0


def _xt_step(line: str) -> _Step | None:
    m = _XT_LINE.match(line)
    if not m or (m[4] == "rule" and m[6].endswith("-j TRACE")):
        return None
    return m[1], m[2], m[3], m[4], int(m[5].split(":")[0], 16) if m[4] == "rule" else 0


def _monitor(path: Path, ruleset_json: Path, step: Callable[[str], _Step | None]) -> list[OPacket]:
    pos, events = nft_positions(ruleset_json), []
    for line in path.read_text(errors="replace").splitlines():
        got = step(line)
        if got is None:
            continue
        tid, table, chain, kind, handle = got
        num = -1 if handle is None else pos[(table, chain, handle)]
        events.append(((table, chain, kind, num), tid, {"trace_id": tid}))
    return _group_by_trace_id(events)


def read(path: Path) -> list[OPacket]:
    """Packets of any capture the lab writes, chosen by file name."""
    name = path.name
    if name == "kernel.log":
        return kernel_log(path)
    if name.endswith(".pcap"):
        return nflog_pcap(path)
    if name == "ulogd.json":
        return ulogd_json(path)
    if name == "nft-monitor.txt":
        return nft_monitor(path, path.with_name("ruleset-nft.json"))
    if name == "xtables-monitor.txt":
        return xtables_monitor(path, path.with_name("ruleset-nft.json"))
    raise ValueError(f"not a lab capture: {path}")


_NFT_PACKET = re.compile(r"^trace id ([0-9a-f]+) \S+ \S+ \S+ packet: (.*)$")


def nft_packet_fields(path: Path) -> dict[str, dict[str, str]]:
    """trace id -> SPT / DPT / ICMPID from the ``packet:`` lines of ``nft monitor trace`` output.

    nft 1.0.6 prints an ICMPv6 echo's identifier and sequence as one 32-bit
    ``icmpv6 parameter-problem N`` (the same four header bytes): the id is ``N >> 16``.
    """
    out: dict[str, dict[str, str]] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _NFT_PACKET.match(line)
        if not m or m[1] in out:
            continue
        words, f = m[2].split(), {}
        for i in range(len(words) - 2):
            a, b, v = words[i : i + 3]
            if a in ("tcp", "udp") and b in ("sport", "dport"):
                f["SPT" if b == "sport" else "DPT"] = v
            elif a in ("icmp", "icmpv6") and b == "id":
                f["ICMPID"] = v
            elif a == "icmpv6" and b == "parameter-problem" and v.isdigit():
                f.setdefault("ICMPID", str(int(v) >> 16))
        out[m[1]] = f
    return out
