"""Explanations as JSON: the stable, versioned machine-readable output (docs/json-schema.md).

``to_json`` writes one packet's explanation; ``from_json`` is its inverse, the model read back
(``render.json_read`` reads whole files of it).
"""

from __future__ import annotations

import json as _json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from .. import __version__
from ..errors import RuletraceError
from ..explain.owners import Owner, deciding_owner, path_owners
from ..model import (
    CauseLink,
    Change,
    Explanation,
    Fate,
    MissLine,
    Origin,
    Packet,
    Rule,
    Step,
    StepKind,
    TraceEvent,
    Verdict,
)

_orjson: Any
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
        # who made the deciding rule, and every object owner along the path (explain/owners.py);
        # derived from the rules above, so from_json need not read them
        "owner": owner_json(deciding_owner(expl)),
        "owners": [owner_json(o) for o in path_owners(expl) if o.specific],
    } | _fate(expl) | _misses(expl)


def _misses(expl: Explanation) -> JSONObject:
    """explain --explain-miss only: each rule of the chain checked against the packet's logged fields."""
    if expl.misses is None:
        return {}
    return {"explain_miss": [{"table": m.table, "chain": m.chain, "num": m.num, "rule": _text(m.rule),
                              "result": m.result, "reason": m.reason} for m in expl.misses]}


def owner_json(o: Owner | None) -> JSONObject | None:
    """An owner as JSON (docs/json-schema.md ``owner``)."""
    return None if o is None else o.as_json()


def _fate(expl: Explanation) -> JSONObject:
    """Live only, present when known: the kernel's drop reason, routing decisions, conntrack entry."""
    out: JSONObject = {}
    if expl.drops:
        out["drops"] = [{"reason": d.reason, "function": d.function, "text": d.text, "fields": dict(d.fields)}
                        for d in expl.drops]
    if expl.routing:
        out["routing"] = [{"point": r.point, "type": r.type, "dev": r.dev, "gateway": r.gateway, "table": r.table,
                           "rule": r.rule, "mark": r.mark, "error": r.error, "sysctls": dict(r.sysctls),
                           "text": r.text} | ({"mark_set": r.mark_set} if r.mark_set else {}) for r in expl.routing]
    if expl.conntrack:
        out["conntrack"] = [{"when": c.when, "proto": c.proto, "state": c.state, "original": c.original,
                             "reply": c.reply, "mark": c.mark, "zone": c.zone, "status": list(c.status),
                             "timeout": c.timeout, "text": c.text} for c in expl.conntrack]
    return out


def from_json(obj: Any) -> Explanation:
    """The explanation that a packet object of ``to_json`` describes: its inverse.

    ``to_json(from_json(to_json(e))) == to_json(e)`` for every explanation ``e`` whose packet
    events are its steps' events (what the explainer makes). The packet's events are rebuilt
    from its steps, each with the packet's ``family``. Keys it does not know are ignored
    (``simulation``); a missing key reads as null (or empty). A value of the wrong type raises
    RuletraceError naming the key; the caller adds the file and line.
    """
    p = _expect(obj, dict, "packet")
    pid = _get(p, "id", int, "packet")
    family = _get(p, "family", str, "packet")
    events: list[TraceEvent] = []
    steps: list[Step] = []
    for k, raw in enumerate(_items(p, "steps", "packet")):
        where = f"steps[{k}]"
        s = _expect(raw, dict, where)
        table, chain = s.get("table"), s.get("chain")
        if not isinstance(table, str) or not isinstance(chain, str):
            raise RuletraceError(f"packet step without table/chain ({where})")
        kind_s = _get(s, "kind", str, where)
        try:
            kind = StepKind(kind_s)
        except ValueError:
            raise RuletraceError(f"{where}.kind: {kind_s!r} is not one of rule, return, policy") from None
        num = _get(s, "num", int, where)
        fields = _get(s, "fields", dict, where) or {}
        if not all(isinstance(v, str) for v in fields.values()):
            raise RuletraceError(f"{where}.fields: every value must be a string")
        ts = _get(s, "ts", (int, float), where)
        ev = TraceEvent(table, chain, kind, num, ts=ts, family=family, origin=_origin_of(_get(s, "origin", str, where)),
                        source="ruletrace-json", fields=fields)
        events.append(ev)
        steps.append(Step(ev, _rule(table, chain, num, _get(s, "rule", str, where)), _get(s, "policy", str, where),
                          _get(s, "returned_to", str, where), _get(s, "depth", int, where) or 0,
                          _get(s, "action", str, where) or "", _get(s, "warning", str, where),
                          _get(s, "note", str, where)))
    fate_s = _get(p, "fate", str, "packet") or "unknown"
    try:
        fate = Fate(fate_s)
    except ValueError:
        raise RuletraceError(f"fate {fate_s!r} is not one of {', '.join(f.value for f in Fate)}") from None
    verdict = None
    v = _get(p, "verdict", dict, "packet")
    if v is not None:
        vt, vc, vn = _get(v, "table", str, "verdict"), _get(v, "chain", str, "verdict"), _get(v, "num", int, "verdict")
        verdict = Verdict(_get(v, "action", str, "verdict"), vt, vc, vn, _rule(vt, vc, vn, _get(v, "rule", str, "verdict")),
                          _get(v, "reason", str, "verdict"))
    return Explanation(
        Packet(pid, events),
        steps=steps,
        fate=fate,
        verdict=verdict,
        nat=[_change_of(c, f"nat[{k}]") for k, c in enumerate(_items(p, "nat", "packet"))],
        marks=[_change_of(c, f"marks[{k}]") for k, c in enumerate(_items(p, "marks", "packet"))],
        cause=[_cause_of(c, f"cause[{k}]") for k, c in enumerate(_items(p, "cause", "packet"))],
        warnings=[_expect(w, str, "warnings") for w in _items(p, "warnings", "packet")],
        notes=[_expect(n, str, "notes") for n in _items(p, "notes", "packet")],
        last_seen=_get(p, "last_seen", str, "packet"),
        misses=None if p.get("explain_miss") is None else [
            _miss_of(m, f"explain_miss[{k}]") for k, m in enumerate(_items(p, "explain_miss", "packet"))],
    )


def _miss_of(obj: Any, where: str) -> MissLine:
    m = _expect(obj, dict, where)
    table, chain, num = _get(m, "table", str, where) or "", _get(m, "chain", str, where) or "", _get(m, "num", int, where)
    return MissLine(table, chain, num or 0, _rule(table, chain, num, _get(m, "rule", str, where)),
                    _get(m, "result", str, where) or "", _get(m, "reason", str, where) or "")


_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list", (int, float): "a number"}


def _expect(value: Any, typ: Any, where: str) -> Any:
    if isinstance(value, typ) and not (isinstance(value, bool) and typ is not bool):
        return value
    raise RuletraceError(f"{where}: expected {_TYPE_NAMES.get(typ, typ)}, got {_json_type(value)}")


def _get(d: Mapping[str, Any], key: str, typ: Any, where: str) -> Any:
    """``d[key]`` when it has type ``typ``; None when missing or null."""
    value = d.get(key)
    return None if value is None else _expect(value, typ, f"{where}.{key}")


def _items(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    return _get(d, key, list, where) or []


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list"}.get(
        type(value), type(value).__name__)


def _rule(table: str | None, chain: str | None, num: int | None, text: str | None) -> Rule | None:
    # only the text is written (and so known): table, chain and number are the place it was seen
    return None if text is None else Rule(table or "", chain or "", num or 0, text)


def _change_of(obj: Any, where: str) -> Change:
    c = _expect(obj, dict, where)
    table, chain, num = _get(c, "table", str, where), _get(c, "chain", str, where), _get(c, "num", int, where)
    return Change(_get(c, "what", str, where), _get(c, "old", str, where), _get(c, "new", str, where), table, chain,
                  num, _rule(table, chain, num, _get(c, "rule", str, where)), _get(c, "step", int, where),
                  _get(c, "note", str, where))


def _cause_of(obj: Any, where: str) -> CauseLink:
    c = _expect(obj, dict, where)
    table, chain, num = _get(c, "table", str, where), _get(c, "chain", str, where), _get(c, "num", int, where)
    return CauseLink(_get(c, "role", str, where), table, chain, num, _rule(table, chain, num, _get(c, "rule", str, where)),
                     _get(c, "text", str, where), _get(c, "step", int, where))


# str(Origin): "path", "path:line" or "path:line:col" (line and col >= 1)
_ORIGIN = re.compile(r"(.*?):([1-9][0-9]*)(?::([1-9][0-9]*))?", re.DOTALL)


def _origin_of(text: str | None) -> Origin | None:
    """The Origin whose ``str`` is ``text`` (a path ending in ``:N`` reads as a line: the same text)."""
    if text is None:
        return None
    m = _ORIGIN.fullmatch(text)
    if m is None:
        return Origin(text)
    return Origin(m.group(1), int(m.group(2)), int(m.group(3)) if m.group(3) else None)


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
    raw: bytes | None
    if _orjson is not None:
        opts = _orjson.OPT_INDENT_2 if indent else 0
        out: bytes = _orjson.dumps(obj, option=opts)
        raw, s = out, out.decode()
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
    get: Callable[[str], Any] = s.get if isinstance(s, Mapping) else lambda k: getattr(s, k, None)
    return {"path": str(get("path") or ""), "format": get("format"), "role": get("role")}
