"""Explanations as JSON: the stable, versioned machine-readable output (docs/json-schema.md)."""

from __future__ import annotations

import json as _json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from .. import __version__
from ..model import Change, Explanation, Origin, Rule, Step

try:  # optional speed-up; output is byte-identical to the stdlib path
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the machine
    _orjson = None

# Bump only for incompatible changes (a key removed, renamed or retyped). New keys may appear
# within a version; readers must ignore keys they do not know.
SCHEMA_VERSION = 1

JSONObject = dict[str, Any]


def to_json(expl: Explanation) -> JSONObject:
    """One packet's explanation as a JSON-ready dict (schema ``SCHEMA_VERSION``)."""
    first = expl.first
    v = expl.verdict
    return {
        "id": expl.packet.id,
        "proto": first.get("PROTO") or None,
        "src": first.get("SRC") or None,
        "dst": first.get("DST") or None,
        "sport": _port(first.get("SPT")),
        "dport": _port(first.get("DPT")),
        "family": _family(expl),
        "in": first.get("IN") or None,
        "out": first.get("OUT") or None,
        "steps": [_step(s) for s in expl.steps],
        "fate": str(expl.fate),
        "verdict": None
        if v is None
        else {
            "action": v.action,
            "table": v.table,
            "chain": v.chain,
            "num": v.num,
            "rule": _text(v.rule),
            "reason": v.reason,
        },
        "last_seen": expl.last_seen,
        "nat": [_change(c) for c in expl.nat],
        "marks": [_change(c) for c in expl.marks],
        "cause": [
            {
                "role": c.role,
                "table": c.table,
                "chain": c.chain,
                "num": c.num,
                "rule": _text(c.rule),
                "text": c.text,
                "step": c.step,
            }
            for c in expl.cause
        ],
        "warnings": list(expl.warnings),
        "notes": list(expl.notes),
    } | _fate(expl)


def _fate(expl: Explanation) -> JSONObject:
    """Live only, present when known: the kernel's drop reason, routing decisions, conntrack entry."""
    out: JSONObject = {}
    if expl.drops:
        out["drops"] = [{"reason": d.reason, "function": d.function, "text": d.text, "fields": dict(d.fields)}
                        for d in expl.drops]
    if expl.routing:
        out["routing"] = [{"point": r.point, "type": r.type, "dev": r.dev, "gateway": r.gateway, "table": r.table,
                           "rule": r.rule, "mark": r.mark, "error": r.error, "sysctls": dict(r.sysctls),
                           "text": r.text} for r in expl.routing]
    if expl.conntrack:
        out["conntrack"] = [{"when": c.when, "proto": c.proto, "state": c.state, "original": c.original,
                             "reply": c.reply, "mark": c.mark, "zone": c.zone, "status": list(c.status),
                             "timeout": c.timeout, "text": c.text} for c in expl.conntrack]
    return out


def document(
    expls: Iterable[Explanation],
    summary: Any = None,
    warnings: Iterable[str] = (),
    sources: Iterable[Any] = (),
) -> JSONObject:
    """The whole ``--json`` output: header, packets, sources, summary and run warnings.

    ``summary`` is a ``render.summary.Summary`` (or anything with ``to_json()``), a ready
    dict, or None. A source is a path, a mapping or an object with ``path``, ``format`` and
    ``role`` (missing ones are null). Packets come before sources because sources are only
    known once they have been read (see ``write_document``).
    """
    return {
        **_head(),
        "packets": [to_json(e) for e in expls],
        **_tail(summary, warnings, sources),
    }


def write_document(
    expls: Iterable[Explanation],
    stream: IO[str],
    *,
    summary: Any = None,
    warnings: Iterable[str] = (),
    sources: Iterable[Any] = (),
    packets: bool = True,
    extra: Callable[[Explanation], Mapping[str, Any]] | None = None,
) -> int:
    """Stream the document of ``document()`` to ``stream``, one packet per line; return the packet count.

    Packets are written as they come, so no list of them is held. ``summary``, ``warnings``
    and ``sources`` are read after the last packet: lists or a Summary that fill up while the
    explanations stream are fine. ``packets=False`` consumes the explanations but writes
    ``"packets": []`` (for ``--summary --json``). ``extra(expl)`` gives keys added after a
    packet's own (``simulation`` for ``simulate --json``; see docs/json-schema.md).
    """
    stream.write(dumps(_head())[:-1] + ',"packets":[')
    n = 0
    for e in expls:
        if packets:
            obj = to_json(e)
            if extra is not None:
                obj.update(extra(e))
            stream.write(("\n" if n == 0 else ",\n") + dumps(obj))
        n += 1
    stream.write(("\n]," if packets and n else "],") + dumps(_tail(summary, warnings, sources))[1:] + "\n")
    return n


def _head() -> JSONObject:
    return {"schema": SCHEMA_VERSION, "tool": "ruletrace", "version": __version__}


def _tail(summary: Any, warnings: Iterable[str], sources: Iterable[Any]) -> JSONObject:
    if summary is not None and not isinstance(summary, Mapping):
        summary = summary.to_json()
    return {
        "sources": [_source(s) for s in sources],
        "summary": None if summary is None else dict(summary),
        "warnings": [str(w) for w in warnings],
    }


# Characters written as \uXXXX although JSON allows them raw: DEL and the C1 controls (U+0080-U+009F;
# U+009B is a one-byte CSI to some terminals), the BiDi controls that reorder what a terminal or an
# editor shows (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), and U+2028/U+2029 (line
# breaks to JavaScript and some editors). C0 controls are escaped by both encoders already.
_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ASCII_BELOW_DEL = bytes(range(0x7F))


def _escape(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def dumps(obj: Any, *, indent: bool = False) -> str:
    """``obj`` as JSON text: UTF-8 characters kept, key order as built, 2-space indent if asked.

    Control characters, DEL, the C1 controls and the BiDi controls are escaped (``\\u202e``),
    so the text is safe to show in a terminal or an editor and decodes to the same value.
    """
    if _orjson is not None:
        opts = _orjson.OPT_INDENT_2 if indent else 0
        raw = _orjson.dumps(obj, option=opts)
        s = raw.decode()
    else:
        if indent:
            s = _json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False)
        else:
            s = _json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        raw = None
    if s.isascii():  # O(1): the usual case
        return s if "\x7f" not in s else _UNSAFE.sub(_escape, s)
    # Outside strings JSON text is ASCII: only string contents can match, and a raw character there
    # means the same as its \u escape. A regex scan of every packet costs ~70% of orjson's time, so
    # look for candidates among the non-ASCII bytes only (a C-speed deletion of the ASCII ones; what
    # is left are whole UTF-8 sequences) and scan the text only when one is there.
    rest = (raw if raw is not None else s.encode()).translate(None, _ASCII_BELOW_DEL)
    if not _UNSAFE.search(rest.decode()):
        return s
    return _UNSAFE.sub(_escape, s)
def write_jsonl(expls: Iterable[Explanation], stream: IO[str], *, flush: bool = False) -> int:
    """Write one packet object per line (JSON Lines); return how many were written.

    ``flush=True`` flushes after each line, for live tracing piped into ``jq``.
    """
    n = 0
    for e in expls:
        stream.write(dumps(to_json(e)))
        stream.write("\n")
        if flush:
            stream.flush()
        n += 1
    return n


def _step(s: Step) -> JSONObject:
    ev = s.event
    return {
        "table": ev.table,
        "chain": ev.chain,
        "kind": str(ev.kind),
        "num": ev.num,
        "rule": _text(s.rule),
        "policy": s.policy,
        "returned_to": s.returned_to,
        "depth": s.depth,
        "action": s.action or None,
        "warning": s.warning,
        "note": s.note,
        "fields": dict(ev.fields),
        "origin": _origin(ev.origin),
        "ts": ev.ts if ev.ts is not None and math.isfinite(ev.ts) else None,
    }


def _change(c: Change) -> JSONObject:
    return {
        "what": c.what,
        "old": c.old,
        "new": c.new,
        "table": c.table,
        "chain": c.chain,
        "num": c.num,
        "rule": _text(c.rule),
        "note": c.note,
        "step": c.step,
    }


def _text(rule: Rule | None) -> str | None:
    return None if rule is None else rule.text


def _origin(o: Origin | None) -> str | None:
    return None if o is None else str(o)


def _port(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _family(expl: Explanation) -> str | None:
    for ev in expl.packet.events:
        if ev.family:
            return ev.family
    src = expl.first.get("SRC", "")
    if ":" in src:  # the kernel log prints IPv6 addresses with colons, IPv4 with dots
        return "ipv6"
    if "." in src:
        return "ipv4"
    return None


def _source(s: Any) -> JSONObject:
    if isinstance(s, str):
        return {"path": s, "format": None, "role": None}
    get = s.get if isinstance(s, Mapping) else lambda k: getattr(s, k, None)
    return {"path": str(get("path") or ""), "format": get("format"), "role": get("role")}
