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
from typing import Literal

from ..errors import RuletraceError
from ..model import Origin, TraceEvent
from ..sources import nflog
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
from .nflog_fast import FastSteps, Layouts, record_tlvs

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

# One datagram a step: TRACE logs with its own loginfo (not NF_LOG_TYPE_ULOG), for which
# nfnetlink_log uses its default loginfo, whose qthreshold 1 caps the instance's QTHRESH, so
# asking for batches (QTHRESH, NLBUFSIZ) changes nothing (measured: 20,400 steps, 20,400
# datagrams) but a bigger allocation per step. The reader process (reader.py) drains them.
SOURCE = "nflog"  # (nflog_fast.SOURCE: the same)
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
