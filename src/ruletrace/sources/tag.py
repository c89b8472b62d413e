"""The TRACE tag, ``TRACE: table:chain:type:num``, for every reader (kernel log, NFLOG, ulogd, CSV, live).

ip_tables.c ``trace_packet()`` logs the prefix ``"TRACE: %s:%s:%s:%u "`` (table, chain,
``rule``/``return``/``policy``, rule number). Grammar of the tag (the text after ``TRACE: ``)::

    tag   = table ":" chain ":" type ":" num
    table = [a-z][a-z0-9_]*                 (the kernel's table names: filter, nat, mangle, raw, …)
    chain = one or more bytes, ":" allowed  (user chain names may hold ":", e.g. KUBE:FW)
    type  = "rule" | "return" | "policy"
    num   = 1 to 10 ASCII digits            (longer: damage, not a rule number)

The table is what comes before the first ``:``, type and num what come after the last two, the
chain all in between. A pasted tag may run into the fields when the space before ``IN=`` was lost
(``policy:2IN=tap0``): the digits that start ``num`` are the number and the rest is field text;
``parse`` returns where the tag really ends. Table and chain names are decoded once and shared.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import StepKind

__all__ = ["TRACE_MARK", "Info", "parse", "from_prefix"]

TRACE_MARK = b"TRACE: "
_MARK_LEN = len(TRACE_MARK)
KINDS = {b"rule": StepKind.RULE, b"return": StepKind.RETURN, b"policy": StepKind.POLICY}
_TABLE_RE = re.compile(rb"[a-z][a-z0-9_]*\Z")
_DIGITS = b"0123456789"
_MAX_NUM_DIGITS = 10  # no chain holds that many rules
CACHE_MAX = 200_000  # distinct names kept before the cache is cleared

Info = tuple[Any, ...]  # (table, chain, kind, num), as TraceEvent holds them

NAMES: dict[bytes, str] = {}  # table and chain names, decoded once and shared by all tags


def _name(b: bytes) -> str:
    s = NAMES.get(b)
    if s is None:
        if len(NAMES) > CACHE_MAX:
            NAMES.clear()
        s = NAMES[b] = b.decode("utf-8", "replace")
    return s


def parse(tag: bytes) -> tuple[tuple[str, str, StepKind, int] | None, int]:
    """``table:chain:type:num`` -> ((table, chain, kind, num), the tag's true length), or (None, 0).

    The length is shorter than ``len(tag)`` when the number runs into the fields (``policy:2IN=``).
    """
    parts = tag.split(b":")
    if len(parts) == 4:  # the usual tag, in half the time of the general way below
        table, chain, k, num = parts
        kind = KINDS.get(k)
        if (kind is not None and num.isdigit() and len(num) <= _MAX_NUM_DIGITS and chain
                and table in NAMES):
            return (NAMES[table], _name(chain), kind, int(num)), len(tag)
    a = tag.find(b":")
    b = tag.rfind(b":")
    c = tag.rfind(b":", 0, b)
    if a <= 0 or c <= a + 1:
        return None, 0
    kind = KINDS.get(tag[c + 1 : b])
    if kind is None:
        return None, 0
    num = tag[b + 1 :]
    cut = len(tag)
    nd = len(num) - len(num.lstrip(_DIGITS))
    if nd == 0 or nd > _MAX_NUM_DIGITS:
        return None, 0
    if nd < len(num):
        cut -= len(num) - nd
        num = num[:nd]
    table = tag[:a]
    if table not in NAMES and not _TABLE_RE.match(table):
        return None, 0
    return (_name(table), _name(tag[a + 1 : c]), kind, int(num)), cut


def from_prefix(prefix: bytes) -> tuple[str, str, StepKind, int] | None:
    """The tag of a log prefix (NFLOG / ulogd / CSV / live: ``"TRACE: raw:PREROUTING:policy:2 "``).

    None when the prefix holds no ``TRACE: `` or its tag does not parse whole.
    """
    t = prefix.find(TRACE_MARK)
    if t < 0:
        return None
    words = prefix[t + _MARK_LEN :].split(None, 1)
    if not words:
        return None
    info, cut = parse(words[0])
    return info if info is not None and cut == len(words[0]) else None
