"""ulogd2 output: JSON lines (``ulogd_output_JSON``) and LOGEMU text (kernel-log look-alike).

Keys: ulogd2 filter/raw2packet/ulogd_raw2packet_BASE.c and input/packet/ulogd_inppkt_NFLOG.c.
Only ``oob.prefix`` carries the TRACE tag; ``oob.time.sec``/``oob.time.usec`` are the packet's
time (the ``timestamp`` key may lack its zone).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ..fields import TCP_FLAG_BITS, packet_ident, proto_name
from ..model import Origin, TraceEvent
from .nflog import FAMILIES
from .records import Tally, note_record, sane_ts
from .tag import from_prefix as parse_tag

SOURCE = "ulogd-json"
LOGEMU_SOURCE = "ulogd-logemu"

IP_CE, IP_DF, IP_MF, IP_OFFSET = 0x8000, 0x4000, 0x2000, 0x1FFF  # ip.fragoff holds the flags too
IPTOS_TOS_MASK, IPTOS_PREC_MASK = 0x1E, 0xE0
IPV6_HDR_LEN = 40
# ulogd's tcp.* flag keys ("tcp.syn"), in the kernel log's order
TCP_FLAG_KEYS = tuple((n, "tcp." + n.lower()) for n in TCP_FLAG_BITS)

_loads: Callable[[bytes | str], Any]
try:  # orjson is optional and ~4x faster on JSON lines (notes/formats.md)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads


def read_events(
    stream: BinaryIO, *, name: str, stats: Any = None, ifmap: dict[int, str] | None = None
) -> Iterator[TraceEvent]:
    """TRACE events from ulogd2 JSON lines; lines that are not JSON objects are counted as broken."""
    tally = Tally(stats)
    for n, line in enumerate(stream, 1):
        line = line.strip()
        if not line:
            continue
        origin = Origin(name, n)
        try:
            obj = _loads(line)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            note_record(stats, event=False)
            tally.bad(origin, "not a JSON object (ulogd JSON has one object per line)")
            continue
        prefix = obj.get("oob.prefix")
        if not isinstance(prefix, str):
            note_record(stats, event=False)
            tally.bad(origin, "no \"oob.prefix\" key: not an NFLOG packet record of ulogd's JSON output")
            continue
        tag = parse_tag(prefix.encode("utf-8", "replace"))
        note_record(stats, event=tag is not None)
        if tag is None:
            continue  # an ordinary NFLOG rule's packet
        try:
            fields = record_fields(obj, ifmap)
            ts = _stamp(obj.get("oob.time.sec"), obj.get("oob.time.usec"))
            fam = obj.get("oob.family")
            family = None if fam is None else FAMILIES.get(fam, str(fam)) if isinstance(fam, int) else str(fam)
        except (TypeError, ValueError, OverflowError) as e:  # a list, a string, inf where a number belongs
            tally.bad(origin, f"bad value in ulogd record: {e}")
            continue
        table, chain, kind, num = tag
        yield TraceEvent(
            table,
            chain,
            kind,
            num,
            ts=ts,
            family=family,
            ident=packet_ident(fields),
            origin=origin,
            source=SOURCE,
            fields=fields,
        )
    tally.finish()


def _stamp(sec: Any, usec: Any) -> float | None:
    """oob.time.sec + oob.time.usec as seconds; None without a usable second count."""
    if not isinstance(usec, (int, float)) or isinstance(usec, bool):
        usec = 0
    return sane_ts(sec + usec * 1e-6) if sane_ts(sec) is not None else None


def _iface(obj: dict[str, Any], key: str, index_key: str, ifmap: dict[int, str] | None) -> str:
    name = obj.get(key)
    if isinstance(name, str):
        return name
    index = obj.get(index_key)
    if isinstance(index, int) and index:
        return ifmap.get(index, f"if{index}") if ifmap else f"if{index}"
    return ""


def record_fields(obj: dict[str, Any], ifmap: dict[int, str] | None = None) -> dict[str, str]:
    """Kernel-log fields from one ulogd JSON record."""
    g = obj.get
    f: dict[str, str] = {
        "IN": _iface(obj, "oob.in", "oob.ifindex_in", ifmap),
        "OUT": _iface(obj, "oob.out", "oob.ifindex_out", ifmap),
    }
    for key, name in (("oob.physin", "PHYSIN"), ("oob.physout", "PHYSOUT")):
        if g(key):
            f[name] = str(g(key))
    if f["IN"] and g("mac.str"):
        f["MAC"] = str(g("mac.str"))
        if g("mac.daddr.str") and g("mac.saddr.str"):
            f["MACDST"], f["MACSRC"] = str(g("mac.daddr.str")), str(g("mac.saddr.str"))
            if isinstance(g("oob.protocol"), int):
                f["MACPROTO"] = f"{g('oob.protocol'):04x}"
    if g("src_ip") is not None:
        f["SRC"] = str(g("src_ip"))
    if g("dest_ip") is not None:
        f["DST"] = str(g("dest_ip"))
    proto = g("ip.protocol")
    if g("ip.totlen") is not None:  # IPv4
        f["LEN"] = str(g("ip.totlen"))
        tos = int(g("ip.tos") or 0)
        f["TOS"], f["PREC"] = f"0x{tos & IPTOS_TOS_MASK:02X}", f"0x{tos & IPTOS_PREC_MASK:02X}"
        if g("ip.ttl") is not None:
            f["TTL"] = str(g("ip.ttl"))
        if g("ip.id") is not None:
            f["ID"] = str(g("ip.id"))
        frag = int(g("ip.fragoff") or 0)
        flags = [n for n, bit in (("CE", IP_CE), ("DF", IP_DF), ("MF", IP_MF)) if frag & bit]
        if flags:
            f["IPFLAGS"] = " ".join(flags)
        if frag & IP_OFFSET:
            f["FRAG"] = str(frag & IP_OFFSET)
    elif g("ip6.payloadlen") is not None:  # IPv6
        f["LEN"] = str(int(g("ip6.payloadlen", 0)) + IPV6_HDR_LEN)
        f["TC"] = str(g("ip6.priority", 0))
        if g("ip6.hoplimit") is not None:
            f["HOPLIMIT"] = str(g("ip6.hoplimit"))
        if g("ip6.flowlabel") is not None:
            f["FLOWLBL"] = str(g("ip6.flowlabel"))
        if g("ip6.fragoff"):
            f["FRAG"] = str(g("ip6.fragoff"))
        if proto is None:
            proto = g("ip6.nexthdr")
    if proto is not None:
        f["PROTO"] = proto_name(proto)
    if g("src_port") is not None:
        f["SPT"], f["DPT"] = str(g("src_port")), str(g("dest_port"))
    if proto == 6:
        for key, name in (("tcp.seq", "SEQ"), ("tcp.ackseq", "ACK"), ("tcp.window", "WINDOW"),
                          ("tcp.urgp", "URGP")):
            if g(key) is not None:
                f[name] = str(g(key))
        f["TCPFLAGS"] = " ".join(n for n, key in TCP_FLAG_KEYS if g(key))
    elif proto in (17, 136) and g("udp.len") is not None:
        f["ULEN"] = str(g("udp.len"))
    elif proto in (1, 58):
        pre = "icmp." if proto == 1 else "icmpv6."
        if g(pre + "type") is not None:
            f["TYPE"], f["CODE"] = str(g(pre + "type")), str(g(pre + "code", 0))
        if g(pre + "echoid") is not None:
            f["ICMPID"], f["ICMPSEQ"] = str(g(pre + "echoid")), str(g(pre + "echoseq"))
    if g("oob.uid") is not None:
        f["UID"] = str(g("oob.uid"))
    if g("oob.gid") is not None:
        f["GID"] = str(g("oob.gid"))
    mark = g("oob.mark")
    if isinstance(mark, int) and mark:
        f["MARK"] = f"{mark:#x}"
    return f


def read_logemu(stream: BinaryIO, *, name: str, stats: Any = None) -> Iterator[TraceEvent]:
    """TRACE events from ulogd2 LOGEMU text: the kernel-log reader does the work, source renamed."""
    from . import kernel_log

    for ev in kernel_log.read_events(stream, name=name, stats=stats):
        ev.source = LOGEMU_SOURCE
        yield ev
