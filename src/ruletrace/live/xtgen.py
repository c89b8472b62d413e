"""A cheap fingerprint of the legacy xtables rulesets of this namespace, to notice every change.

Legacy xtables has no change event and no generation counter. Re-reading ``iptables-save``
costs a process and a parse (tens of ms to seconds on large rulesets), so the tracer only does
that when this fingerprint changed: the kernel's table blobs read with ``IPT_SO_GET_ENTRIES``
/ ``IP6T_SO_GET_ENTRIES`` (getsockopt on a raw socket, what iptables-save itself reads), with
each rule's packet/byte counters masked out, hashed.

Spec: include/uapi/linux/netfilter_ipv4/ip_tables.h (struct ipt_getinfo, ipt_get_entries,
ipt_entry), netfilter_ipv6/ip6_tables.h. Only tables listed in
``/proc/thread-self/net/ip_tables_names`` are read: asking for another one would instantiate it
in the namespace (a change that cannot be undone).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import socket
import struct
from typing import Any

SOL_IP, SOL_IPV6 = 0, 41
SO_GET_INFO, SO_GET_ENTRIES = 64, 65  # IPT_BASE_CTL (64) + 0 / + 1; the same for IP6T
TABLE_MAXNAMELEN = 32
GETINFO = struct.Struct("=32sI5I5III")  # name, valid_hooks, hook_entry[5], underflow[5], num_entries, size
ENTRIES_HDR = 40  # struct ipt_get_entries: name[32], size (u32), then the 8-aligned entry table
# struct ipt_entry: ipt_ip (84 bytes), nfcache u32, target_offset u16, next_offset u16, comefrom u32,
# xt_counters (2 x u64) at 96; struct ip6t_entry: ip6t_ip6 (136 bytes) … next_offset at 142, counters 152
LAYOUT = {"ipv4": (90, 96), "ipv6": (142, 152)}  # family -> (offset of next_offset, offset of counters)
NAMES = {"ipv4": "/proc/thread-self/net/ip_tables_names", "ipv6": "/proc/thread-self/net/ip6_tables_names"}

_libc: ctypes.CDLL | None = None


def _getsockopt() -> Any:  # libc's getsockopt, a ctypes foreign function
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_uint32)]
    return _libc.getsockopt


def _get(fd: int, level: int, opt: int, buf: ctypes.Array[ctypes.c_char]) -> bool:
    n = ctypes.c_uint32(len(buf))
    rc: int = _getsockopt()(fd, level, opt, buf, ctypes.byref(n))
    return rc == 0


def tables(family: str) -> list[str]:
    try:
        with open(NAMES[family]) as f:
            return sorted(line.strip() for line in f if line.strip())
    except OSError:
        return []


def mask_counters(blob: bytearray, family: str) -> bytearray:
    """Zero every entry's counters in a table blob (they change with traffic, not with rules)."""
    nxt_at, cnt_at = LAYOUT[family]
    off, end = 0, len(blob)
    unpack = struct.Struct("=H").unpack_from
    while off + cnt_at + 16 <= end:
        blob[off + cnt_at:off + cnt_at + 16] = bytes(16)
        (step,) = unpack(blob, off + nxt_at)
        if step == 0:
            break
        off += step
    return blob


class Fingerprint:
    """``read()`` -> a hash of the rules (not counters) of every loaded legacy table; None if unreadable."""

    def __init__(self, families: tuple[str, ...]) -> None:
        self.families = families
        self._socks: dict[str, socket.socket] = {}

    def close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks.clear()

    def _sock(self, family: str) -> socket.socket | None:
        s = self._socks.get(family)
        if s is None:
            af, proto = (socket.AF_INET, socket.IPPROTO_RAW) if family == "ipv4" else (socket.AF_INET6,
                                                                                        socket.IPPROTO_RAW)
            try:
                s = self._socks[family] = socket.socket(af, socket.SOCK_RAW, proto)
            except OSError:
                return None
        return s

    def quick(self) -> tuple[Any, ...] | None:
        """The tables' sizes and entry counts (IPT_SO_GET_INFO): cheap, misses same-size replacements."""
        infos = self._infos()
        return None if infos is None else tuple((fam, name, info[32:]) for fam, name, _s, _lv, info in infos)

    def _infos(self) -> list[tuple[str, str, socket.socket, int, bytes]] | None:
        """(family, table, socket, sockopt level, IPT_SO_GET_INFO answer) of every table; None if
        any cannot be read."""
        out = []
        for fam in self.families:
            s = self._sock(fam)
            if s is None:
                return None
            level = SOL_IP if fam == "ipv4" else SOL_IPV6
            for name in tables(fam):
                info = self._info(s, level, name)
                if info is None:
                    return None
                out.append((fam, name, s, level, info))
        return out

    @staticmethod
    def _info(s: socket.socket, level: int, name: str) -> bytes | None:
        info = ctypes.create_string_buffer(GETINFO.size)
        info.raw = GETINFO.pack(name.encode()[:TABLE_MAXNAMELEN - 1], 0, *[0] * 10, 0, 0)
        return info.raw if _get(s.fileno(), level, SO_GET_INFO, info) else None

    def read(self) -> str | None:
        h = hashlib.blake2b(digest_size=16)
        infos = self._infos()
        if infos is None:
            return None
        for fam, name, s, level, raw in infos:
            size = GETINFO.unpack(raw)[-1]
            buf = ctypes.create_string_buffer(ENTRIES_HDR + size)
            struct.pack_into("=32sI", buf, 0, name.encode()[:TABLE_MAXNAMELEN - 1], size)
            if not _get(s.fileno(), level, SO_GET_ENTRIES, buf):
                return None  # e.g. EAGAIN: the table was replaced between the two calls
            h.update(f"{fam}:{name}:".encode())
            h.update(raw[32:])  # hooks, underflows, entry count, size
            h.update(mask_counters(bytearray(buf.raw[ENTRIES_HDR:]), fam))
        return h.hexdigest()
