"""nfnetlink_log (NFLOG) listener: legacy xtables TRACE steps delivered to NFLOG group 0.

Spec: include/uapi/linux/netfilter/nfnetlink_log.h, net/netfilter/nfnetlink_log.c. A TRACE
step goes to the logger bound to the packet's family in the namespace
(``/proc/net/netfilter/nf_log``); when that is nfnetlink_log it uses the default loginfo:
group 0, whole packet. The message body is exactly an NFLOG pcap record (nfgenmsg = the
nflog header, then TLVs) with TLV headers in host byte order, so the pcap reader's decoder
is reused as is.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

from ..errors import RuletraceError
from ..fields import packet_ident
from ..model import Origin, StepKind, TraceEvent
from ..sources import nflog
from ..sources.tag import from_prefix as parse_tag
from .netlink import (
    HOST_ORDER,
    NFGENMSG,
    NFNETLINK_V0,
    NLM_F_REQUEST,
    NetlinkError,
    NetlinkSocket,
    nfnl_type,
    nla,
)

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1

# enum nfulnl_attr_config
NFULA_CFG_CMD = 1  # u8 command
NFULA_CFG_MODE = 2  # struct nfulnl_msg_config_mode: be32 copy_range, u8 copy_mode, u8 pad
NFULA_CFG_NLBUFSIZ = 3  # be32
NFULA_CFG_TIMEOUT = 4  # be32, 1/100 s
NFULA_CFG_QTHRESH = 5  # be32
NFULA_CFG_FLAGS = 6  # be16

# enum nfulnl_msg_config_cmds
NFULNL_CFG_CMD_NONE = 0
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_CFG_CMD_PF_BIND = 3
NFULNL_CFG_CMD_PF_UNBIND = 4

NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_SEQ = 0x0001
CFG_MODE = struct.Struct("!IBx")  # copy_range, copy_mode, pad

AF_INET, AF_INET6 = 2, 10
TRACE_GROUP = 0  # nf_log_trace() with the default loginfo logs to group 0

SOURCE = "nflog"
_PACKET = nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET)


def _config(family: int, group: int, *attrs: bytes) -> tuple[int, bytes]:
    return (nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG),
            NFGENMSG.pack(family, NFNETLINK_V0, group) + b"".join(attrs))


def _cmd(cmd: int) -> bytes:
    return nla(NFULA_CFG_CMD, bytes([cmd]))


def config_plan(families: list[int], group: int = TRACE_GROUP) -> list[tuple[str, int, bytes]]:
    """The config requests a session sends, as ``(description, type, payload)``."""
    plan: list[tuple[str, int, bytes]] = []
    for fam in families:
        plan.append((f"NFULNL_CFG_CMD_PF_BIND family {fam} (binds nfnetlink_log as the family's "
                     "logger in this namespace)", *_config(fam, 0, _cmd(NFULNL_CFG_CMD_PF_BIND))))
    plan.append((f"NFULNL_CFG_CMD_BIND group {group}", *_config(0, group, _cmd(NFULNL_CFG_CMD_BIND))))
    plan.append((f"group {group}: MODE copy_packet 0xffff, QTHRESH 1, TIMEOUT 0, FLAGS SEQ",
                 *_config(0, group,
                          nla(NFULA_CFG_MODE, CFG_MODE.pack(0xFFFF, NFULNL_COPY_PACKET)),
                          nla(NFULA_CFG_QTHRESH, struct.pack("!I", 1)),
                          nla(NFULA_CFG_TIMEOUT, struct.pack("!I", 0)),
                          nla(NFULA_CFG_FLAGS, struct.pack("!H", NFULNL_CFG_F_SEQ)))))
    return plan


class NflogListener:
    """Binds NFLOG group 0 and yields the TRACE steps it receives as TraceEvents."""

    def __init__(self, families: list[int], *, group: int = TRACE_GROUP,
                 ifname: Callable[[int], str] | None = None) -> None:
        self.families = families
        self.group = group
        self.ifname = ifname or interface_name
        self.sock: NetlinkSocket | None = None
        self.records = 0
        self.bad = 0
        self.gaps = 0  # times the NFLOG sequence number skipped (messages dropped for us)
        self.lost_steps = 0  # messages those gaps skipped
        self._seq: int | None = None
        self._fast = FastSteps(self.ifname)
        self._layouts = Layouts(self._fast)

    def open(self) -> None:
        """Bind the families' logger and the group; EPERM/EBUSY mean another listener has it."""
        self.sock = NetlinkSocket()
        for desc, mtype, payload in config_plan(self.families, self.group):
            try:
                self.sock.request(mtype, payload)
            except NetlinkError as e:
                self.close()
                if e.errno in (errno.EPERM, errno.EBUSY) and "BIND group" in desc:
                    raise RuletraceError(
                        f"NFLOG group {self.group} is already bound by another listener in this "
                        "namespace (ulogd? `tcpdump -i nflog`?): stop it, or trace with the kernel "
                        "log (--via kmsg)") from e
                raise RuletraceError(f"nfnetlink_log: {desc}: {e.message}") from e

    def close(self) -> None:
        if self.sock is not None:
            try:
                # no ACK awaited: waiting for it read the whole backlog of steps still queued (2 s
                # at the end of a 60,000 steps/s burst) only to drop them
                mtype, payload = _config(0, self.group, _cmd(NFULNL_CFG_CMD_UNBIND))
                self.sock.request(mtype, payload, flags=NLM_F_REQUEST)
            except (RuletraceError, OSError):
                pass  # the socket's close releases the group anyway
            self.sock.close()
            self.sock = None

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    @property
    def overruns(self) -> int:
        return self.sock.overruns if self.sock else 0

    def discard(self, deadline: float) -> tuple[int, bool]:
        """The steps still queued, read and counted, not decoded (``NetlinkSocket.discard``)."""
        return self.sock.discard(deadline, _PACKET) if self.sock is not None else (0, False)

    def _sequence(self, raw: bytes | None) -> None:
        """NFULA_SEQ (NFULNL_CFG_F_SEQ): one number per message of the group; a gap is a loss."""
        if raw is None or len(raw) < 4:
            return
        (seq,) = struct.unpack("!I", raw[:4])
        if self._seq is not None:
            skipped = (seq - self._seq - 1) & 0xFFFFFFFF
            if 0 < skipped < 1 << 31:
                self.gaps += 1
                self.lost_steps += skipped
        self._seq = seq

    def poll(self, timeout: float | None) -> list[TraceEvent]:
        """TRACE events received within ``timeout`` seconds (possibly none)."""
        assert self.sock is not None
        return self.decode_bodies(self.sock.packet_bodies(timeout, _PACKET))

    def decode_bodies(self, bodies: list[bytes]) -> list[TraceEvent]:
        """The TRACE events of NFULNL_MSG_PACKET bodies (counted, sequence-checked, damaged ones counted)."""
        out: list[TraceEvent] = []
        layouts = self._layouts
        for body in bodies:
            self.records += 1
            got = layouts.decode(body, self.records)
            if got is not None:
                ev, seq = got
                if seq is not None:  # _sequence inlined (a number here, not its bytes): the same check
                    last = self._seq
                    if last is not None:
                        skipped = (seq - last - 1) & 0xFFFFFFFF
                        if 0 < skipped < 1 << 31:
                            self.gaps += 1
                            self.lost_steps += skipped
                    self._seq = seq
            else:  # no layout known for it (its first time, or damaged): the walk of every attribute
                tlvs = record_tlvs(body)
                if tlvs is None:
                    self.bad += 1
                    continue
                self._sequence(tlvs.get(nflog.NFULA_SEQ))
                ev = self._fast.decode(tlvs, self.records)
                if ev is not None and ev is not False:
                    layouts.learn(body)
            if ev is None:
                self.bad += 1
            elif ev is not False:
                out.append(ev)
        return out


def decode_packet(body: bytes, *, record: int = 0, ifname: Callable[[int], str] | None = None,
                  now: float | None = None, tlvs: dict[int, bytes] | None = None) -> TraceEvent | Literal[False] | None:
    """One NFULNL_MSG_PACKET body -> TraceEvent; False when it is no TRACE step, None when broken.

    ``tlvs``: the body already decoded by ``sources.nflog.decode_record``.
    """
    origin = Origin("netlink", record or None)
    if tlvs is None:
        try:
            tlvs = nflog.decode_record(body, HOST_ORDER, origin)
        except RuletraceError:
            return None
    tag = nflog.trace_tag(tlvs)
    if tag is None:
        return False
    try:
        return nflog.step_event(tlvs, tag, ifname=ifname or interface_name,
                                ts=now if now is not None else time.time(), origin=origin, source=SOURCE)
    except nflog.DECODE_ERRORS:
        return None


# --- the fast path of poll(): same results as decode_record + decode_packet, less work a step ---

_TLV = struct.Struct(HOST_ORDER + "HH")
_TLV_TYPE_MASK = nflog.NLA_TYPE_MASK
# the attributes packet_fields reads: records equal in these have equal fields
_FIELD_ATTRS = (nflog.NFULA_IFINDEX_INDEV, nflog.NFULA_IFINDEX_OUTDEV, nflog.NFULA_HWTYPE, nflog.NFULA_HWHEADER,
                nflog.NFULA_IFINDEX_PHYSINDEV, nflog.NFULA_IFINDEX_PHYSOUTDEV, nflog.NFULA_PAYLOAD,
                nflog.NFULA_PACKET_HDR, nflog.NFULA_UID, nflog.NFULA_GID, nflog.NFULA_MARK, nflog.NFULA_CT_INFO)
V = TypeVar("V")
_MEMO_MAX = 512  # distinct packets remembered (one packet's steps share one entry)


def record_tlvs(body: bytes) -> dict[int, bytes] | None:
    """``sources.nflog.decode_record(body, HOST_ORDER, …)`` inlined (None where it raises).

    The reference walks a generator over a copy of the body; this walks the body in place. A
    test (tests/live/test_codec.py) proves both equal on whole and damaged records.
    """
    n = len(body)
    if n < 4 or body[1] != 0:
        return None
    out: dict[int, bytes] = {0: body[0:1]}
    unpack = _TLV.unpack_from
    off = 4
    while off + 4 <= n:
        length, kind = unpack(body, off)
        if length < 4 or off + length > n:
            return None
        kind &= _TLV_TYPE_MASK
        if kind not in out:
            out[kind] = body[off + 4 : off + length]
        off += (length + 3) & ~3
    return out


class FastSteps:
    """``decode_packet`` for the listener: a TRACE step's fields decoded once per packet.

    Every step of a packet carries the same packet (TRACE logs it at each rule it matches), so
    ``sources.nflog.packet_fields`` — the reference, pure given the same attributes — is run once
    per distinct set of the attributes it reads and its result copied for the next steps. The
    tag is parsed once per distinct prefix. Equal to ``decode_packet`` (tests/live/test_codec.py).
    """

    def __init__(self, ifname: Callable[[int], str]) -> None:
        self.ifname = ifname
        self._fields: dict[tuple[object, ...], tuple[dict[str, str], tuple[str, ...]] | None] = {}
        self._tags: dict[bytes, tuple[str, str, StepKind, int | None] | None] = {}

    def decode(self, tlvs: dict[int, bytes], record: int, now: float | None = None) -> TraceEvent | Literal[False] | None:
        prefix = tlvs.get(nflog.NFULA_PREFIX, b"")
        tags = self._tags
        # the hits stay inline (a lookup per step); a miss, once per packet, goes through _remember
        tag = tags[prefix] if prefix in tags else _remember(tags, prefix, nflog.trace_tag(tlvs))
        if tag is None:
            return False
        get = tlvs.get
        key = (tlvs[0], *[get(k) for k in _FIELD_ATTRS])
        memo = self._fields
        hit = memo[key] if key in memo else _remember(memo, key, self._packet(tlvs))
        if hit is None:
            return None
        ts = now if now is not None else time.time()
        stamp = get(nflog.NFULA_TIMESTAMP)
        if stamp is not None and len(stamp) >= 16:
            sec, usec = _STAMP.unpack_from(stamp)
            ts = sec + usec * 1e-6
        family = tlvs[0][0]
        return TraceEvent(tag[0], tag[1], tag[2], tag[3], ts=ts, family=nflog.FAMILIES.get(family, str(family)),
                          ident=hit[1], origin=Origin("netlink", record or None), source=SOURCE,
                          fields=dict(hit[0]))


    def _packet(self, tlvs: dict[int, bytes]) -> tuple[dict[str, str], tuple[str, ...]] | None:
        """The packet's fields and identity (the reference: sources.nflog.packet_fields); None: undecodable."""
        try:
            f = nflog.packet_fields(tlvs, self.ifname)
            return f, packet_ident(f)
        except nflog.DECODE_ERRORS:
            return None


class _Layout:
    """Where the attributes of one record shape are: every record of a packet has the same shape
    (the same attribute headers at the same offsets) apart from the prefix's length."""

    __slots__ = ("check", "hdrs", "prefix", "keep", "seq", "stamp")

    def __init__(self, check: struct.Struct, hdrs: tuple[int, ...], prefix: slice | None,
                 keep: tuple[slice, ...], seq: int | None, stamp: int | None) -> None:
        self.check = check  # unpacks every attribute header at once
        self.hdrs = hdrs  # what it must give: (length, type) of each attribute, in order
        self.prefix = prefix  # where the first NFULA_PREFIX value is
        self.keep = keep  # the regions holding every attribute but the prefix, time and sequence
        self.seq = seq  # offset of the first NFULA_SEQ value when it has 4 bytes or more
        self.stamp = stamp  # offset of the first NFULA_TIMESTAMP value when it has 16 bytes or more


_VARYING = (nflog.NFULA_PREFIX, nflog.NFULA_TIMESTAMP, nflog.NFULA_SEQ, nflog.NFULA_SEQ_GLOBAL)
_LAYOUTS_MAX = 64
_SEQ = struct.Struct("!I")
_MISS: Any = object()


class Layouts:
    """``FastSteps.decode(record_tlvs(body), …)`` without the walk of the attributes (a step of
    a packet differs from the one before in its prefix, time stamp and sequence number only).

    ``learn(body)`` records the shape of a record that decoded as a step: the (length, type)
    header of each attribute and where the walk found it. A later body of the same length whose
    headers at those offsets are the same (one ``struct`` unpack, compared as a tuple) walks
    exactly the same way, so its attributes are where the shape says: the prefix, time stamp and
    sequence are read there, and the packet's fields are those of the first record equal in
    every other byte (``FastSteps``, the reference ``sources.nflog.packet_fields`` run once per
    packet). ``decode`` returns None where no shape fits: the caller walks the record.
    tests/live/test_codec.py proves both equal.
    """

    def __init__(self, fast: FastSteps) -> None:
        self.fast = fast
        self._by_len: dict[int, list[_Layout]] = {}
        self._count = 0
        self._fields: dict[tuple[object, ...], tuple[dict[str, str], tuple[str, ...]] | None] = {}

    def learn(self, body: bytes) -> None:
        n = len(body)
        if n < 4 or body[1] != 0:
            return
        if self._count >= _LAYOUTS_MAX:  # shapes are few (one per interface pair and header set): start over
            self._by_len.clear()
            self._count = 0
        fmt, seen, at = [HOST_ORDER], set(), 0
        hdrs: list[int] = []
        prefix = seq = stamp = None
        cut: list[tuple[int, int]] = []  # attribute spans left out of the packet key
        off = 4
        unpack = _TLV.unpack_from
        while off + 4 <= n:
            length, kind = unpack(body, off)
            if length < 4 or off + length > n:
                return  # damaged: never a shape
            fmt.append(f"{off - at}xHH")
            at = off + 4
            hdrs += (length, kind)
            kind &= _TLV_TYPE_MASK
            end = off + ((length + 3) & ~3)
            if kind not in seen:
                seen.add(kind)
                if kind == nflog.NFULA_PREFIX:
                    prefix = slice(off + 4, off + length)
                elif kind == nflog.NFULA_SEQ and length >= 8:
                    seq = off + 4
                elif kind == nflog.NFULA_TIMESTAMP and length >= 20:
                    stamp = off + 4
                if kind in _VARYING:
                    cut.append((off, min(end, n)))
            off = end
        keep, start = [], 0
        for a, b in cut:
            if a > start:
                keep.append((start, a))
            start = b
        if start < n:
            keep.append((start, n))
        layout = _Layout(struct.Struct("".join(fmt)), tuple(hdrs), prefix, tuple(slice(a, b) for a, b in keep), seq,
                         stamp)
        self._by_len.setdefault(n, []).append(layout)
        self._count += 1

    def decode(self, body: bytes, record: int) -> tuple[TraceEvent | Literal[False] | None, int | None] | None:
        """(the step or False or None as ``FastSteps.decode``, NFULA_SEQ's number), None: no shape fits."""
        cands = self._by_len.get(len(body))
        if cands is None or body[1] != 0:  # (a shape's length is 4 or more) the nflog version: only 0
            return None
        for lay in cands:
            if lay.check.unpack_from(body) == lay.hdrs:
                break
        else:
            return None
        fast = self.fast
        p = lay.prefix
        prefix = body[p] if p is not None else b""
        tag = fast._tags.get(prefix, _MISS)
        if tag is _MISS:
            tag = _remember(fast._tags, prefix, parse_tag(prefix.split(b"\0", 1)[0]))
        s = lay.seq
        seq = _SEQ.unpack_from(body, s)[0] if s is not None else None
        if tag is None:
            return False, seq
        key = tuple(map(body.__getitem__, lay.keep))  # whole attributes: equal bytes, equal attributes
        hit = self._fields.get(key, _MISS)
        if hit is _MISS:
            hit = _remember(self._fields, key, fast._packet(record_tlvs(body) or {0: body[:1]}))
        if hit is None:
            return None, seq
        t = lay.stamp
        if t is not None:
            sec, usec = _STAMP.unpack_from(body, t)
            ts = sec + usec * 1e-6
        else:
            ts = time.time()
        family = body[0]
        # raw: the packet's entry, one object for every step with these fields (explain skips
        # comparing the fields of two steps that share it, as for a kernel log line's text)
        return TraceEvent(tag[0], tag[1], tag[2], tag[3], ts=ts, family=nflog.FAMILIES.get(family, str(family)),
                          ident=hit[1], origin=Origin("netlink", record or None), source=SOURCE,
                          raw=hit, parse=_own_fields), seq


def _own_fields(hit: tuple[dict[str, str], tuple[str, ...]]) -> dict[str, str]:
    """A step's own copy of its packet's fields (made when first read)."""
    return dict(hit[0])


def _remember(memo: dict[Any, V], key: Any, value: V) -> V:
    """Keep ``value`` under ``key`` in a memo of at most _MEMO_MAX entries (emptied when full)."""
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value
    return value


_STAMP = struct.Struct("!QQ")
_IFNAMES: dict[int, str] = {}


def interface_name(index: int) -> str:
    """Interface name in the current namespace (cached), ``if<N>`` when it is gone."""
    name = _IFNAMES.get(index)
    if name is None:
        try:
            name = socket.if_indextoname(index)
        except OSError:
            return f"if{index}"
        _IFNAMES[index] = name
    return name


def events(listener: NflogListener, *, stop: Callable[[], bool]) -> Iterator[TraceEvent]:
    """Events until ``stop()`` is true (checked at least every 0.2 s)."""
    while not stop():
        yield from listener.poll(0.2)
