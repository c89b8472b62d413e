"""NFLOG captures (``tcpdump -i nflog -w``): pcap and pcapng files with link type 239.

The container is read by ``ruletrace/pcap.py``, each record decoded by ``sources/nflog.py``
(the NFLOG decoder the live listener uses too); here: the reader, and the interface map that
names the indexes a capture holds (``--ifmap``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ..errors import RuletraceError
from ..fields import bounded_int
from ..model import Origin, TraceEvent
from ..pcap import Truncated, iter_records
from . import nflog
from .records import Tally, note_record, sane_ts

SOURCE = "nflog-pcap"


def load_ifmap(path: str) -> dict[int, str]:
    """Interface index -> name from ``ip -j link`` output or ``INDEX NAME`` / ``INDEX=NAME`` lines."""
    from ..inputs import read_limited

    text = read_limited(path, "interface map").decode("utf-8", "replace")
    return parse_ifmap(text, origin=Origin(path))


def parse_ifmap(text: str, *, origin: Origin | None = None) -> dict[int, str]:
    """Parse an interface map: ``ip -j link`` JSON, or lines ``3 eth0`` / ``3=eth0`` / ``3: eth0``."""
    if text.lstrip().startswith("["):
        try:
            links = json.loads(text)
            return {_index(link["ifindex"]): str(link["ifname"]) for link in links}
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise RuletraceError(f"not an `ip -j link` listing: {e}", origin=origin) from e
    out: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace("=", " ").replace(":", " ", 1).split()
        index = bounded_int(parts[0], max_digits=10) if len(parts) >= 2 and parts[0].isdigit() else None
        if index is None:
            where = Origin(origin.path, n) if origin else None
            raise RuletraceError(f"interface map line must be 'INDEX NAME', got {line[:60]!r}", origin=where)
        out[index] = parts[1].split("@", 1)[0]
    return out


def _index(v: Any) -> int:
    """An interface index from JSON: a number (or digits) that fits in 32 bits."""
    n = v if isinstance(v, int) and not isinstance(v, bool) else bounded_int(v, max_digits=10) if isinstance(v, str) else None
    if n is None or not 0 <= n < 1 << 32:
        raise ValueError(f"bad ifindex {str(v)[:20]!r}")
    return n


# --- NFLOG TLVs ----------------------------------------------------------------------


def read_events(
    stream: BinaryIO,
    *,
    name: str,
    stats: Any = None,
    ifmap: dict[int, str] | None = None,
) -> Iterator[TraceEvent]:
    """TRACE events from an NFLOG pcap/pcapng capture; records without a TRACE prefix are skipped."""
    ifname = _ifnamer(ifmap)
    tally = Tally(stats)
    try:
        yield from _events(stream, name, stats, ifname, tally)
    except Truncated as e:
        if stats is None or not hasattr(stats, "warnings"):
            raise
        stats.warnings.append(f"{e} at byte {e.offset:,}: the capture is cut off there (still being "
                              "written, or tcpdump was killed); every whole record before it was read")
    tally.finish()


def _events(stream: BinaryIO, name: str, stats: Any, ifname: Any, tally: Tally) -> Iterator[TraceEvent]:
    for n, ts, body, bo in iter_records(stream, name=name):
        origin = Origin(name, n)
        try:
            tlvs = nflog.decode_record(body, bo, origin)
        except RuletraceError as e:
            tally.bad(origin, e.message)
            continue
        tag = nflog.trace_tag(tlvs)
        note_record(stats, event=tag is not None)
        if tag is None:
            continue  # an ordinary NFLOG rule's packet, not a TRACE step
        try:
            ev = nflog.step_event(tlvs, tag, ifname=ifname, ts=ts, origin=origin, source=SOURCE)
        except nflog.DECODE_ERRORS as e:
            tally.bad(origin, f"undecodable packet: {e}")
            continue
        ev.ts = sane_ts(ev.ts)
        yield ev


def _ifnamer(ifmap: dict[int, str] | None) -> Callable[[int], str]:
    def name(index: int) -> str:
        if ifmap and index in ifmap:
            return ifmap[index]
        return f"if{index}"

    return name


