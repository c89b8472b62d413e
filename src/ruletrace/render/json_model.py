"""ruletrace JSON packet objects read back as the model: ``from_json``, the inverse of ``render.json``.

Reads schema 2 (rule texts by id in ``tables``, each step's fields as changes from the step
before) and schema 1 (every step whole, rule texts inline): ``diff`` and ``report --from-json``
read files of either. Bad values raise RuletraceError naming the key; the caller adds the file
and line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import RuletraceError
from ..model import (
    CauseLink,
    Change,
    Explanation,
    Fate,
    MissLine,
    MonitorEvent,
    Origin,
    Packet,
    Rule,
    Step,
    StepKind,
    TraceEvent,
    Verdict,
)

READS = (1, 2)  # the schema versions from_json reads


def from_json(obj: Any, tables: Mapping[str, Any] | None = None) -> Explanation:
    """The explanation that a packet object (schema 1 or 2) describes: the inverse of ``to_json``.

    ``to_json(from_json(to_json(e))) == to_json(e)`` for every explanation ``e`` whose packet
    events are its steps' events (what the explainer makes). The packet's events are rebuilt
    from its steps, each with the packet's ``family``. A schema 2 packet (it has ``fields``) names
    rules by id: they are looked up in its own ``tables`` (a ``trace --json`` line, ``to_json``)
    and in ``tables`` (the document's, or the table lines of JSON Lines read so far). Keys it does
    not know are ignored (``simulation``, ``owner``); a missing key reads as null (or empty).
    """
    p = _expect(obj, dict, "packet")
    v2 = "fields" in p
    rules: Mapping[str, Any] = {}
    if v2:
        rules = _rules_of(tables, p)
    pid = _get(p, "id", int, "packet")
    family = _get(p, "family", str, "packet")
    events: list[TraceEvent] = []
    steps: list[Step] = []
    shared = frozenset(_expect(t, str, "shared") for t in _items(p, "shared", "packet"))
    fields: dict[str, str] = _fields_of(_get(p, "fields", dict, "packet") or {}, "packet.fields") if v2 else {}
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
        if v2:
            delta = _get(s, "fields", dict, where)
            if delta:
                fields = _fields_of(delta, f"{where}.fields", fields)
        else:
            fields = _fields_of(_get(s, "fields", dict, where) or {}, f"{where}.fields")
        ts = _get(s, "ts", (int, float), where)
        own = _get(s, "family", str, where)
        # a step whose family the writer named: its own where not the packet's, and each nf_tables
        # step whose table's name two families share (an nf_tables step: named with it again)
        make = MonitorEvent if own is not None and table in shared else TraceEvent
        ev = make(table, chain, kind, num, ts=ts, family=own or family, origin=_origin_of(_get(s, "origin", str, where)),
                  source="ruletrace-json", fields=fields)
        events.append(ev)
        text = _rule_text(s, rules, where) if v2 else _get(s, "rule", str, where)
        steps.append(Step(ev, _rule(table, chain, num, text), _get(s, "policy", str, where),
                          _get(s, "returned_to", str, where), _get(s, "depth", int, where) or 0,
                          _get(s, "action", str, where) or "", _get(s, "warning", str, where),
                          _get(s, "note", str, where)))
    fate_s = _get(p, "fate", str, "packet") or "unknown"
    try:
        fate = Fate(fate_s)
    except ValueError:
        raise RuletraceError(f"fate {fate_s!r} is not one of {', '.join(f.value for f in Fate)}") from None

    def text_of(d: Mapping[str, Any], where: str) -> str | None:
        return _rule_text(d, rules, where) if v2 else _get(d, "rule", str, where)

    verdict = None
    v = _get(p, "verdict", dict, "packet")
    if v is not None:
        vt, vc, vn = _get(v, "table", str, "verdict"), _get(v, "chain", str, "verdict"), _get(v, "num", int, "verdict")
        verdict = Verdict(_get(v, "action", str, "verdict"), vt, vc, vn, _rule(vt, vc, vn, text_of(v, "verdict")),
                          _get(v, "reason", str, "verdict"), family=_get(v, "family", str, "verdict"))
    return Explanation(
        Packet(pid, events),
        steps=steps,
        fate=fate,
        verdict=verdict,
        nat=[_change_of(c, f"nat[{k}]", text_of) for k, c in enumerate(_items(p, "nat", "packet"))],
        marks=[_change_of(c, f"marks[{k}]", text_of) for k, c in enumerate(_items(p, "marks", "packet"))],
        cause=[_cause_of(c, f"cause[{k}]", text_of) for k, c in enumerate(_items(p, "cause", "packet"))],
        warnings=[_expect(w, str, "warnings") for w in _items(p, "warnings", "packet")],
        notes=[_expect(n, str, "notes") for n in _items(p, "notes", "packet")],
        last_seen=_get(p, "last_seen", str, "packet"),
        shared=shared,
        misses=None if p.get("explain_miss") is None else [
            _miss_of(m, f"explain_miss[{k}]", text_of) for k, m in enumerate(_items(p, "explain_miss", "packet"))],
    )


_STEP_V1 = ("table", "chain", "kind", "num", "rule", "policy", "returned_to", "depth", "action", "warning", "note",
            "fields", "origin", "ts")


def expand(obj: Mapping[str, Any], tables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A schema 2 packet object in the shape of schema 1: every step whole (all its keys, all its
    fields), rule texts and owners in place of their ids. What the jq one-liner of
    docs/json-schema.md does; a schema 1 object is returned as it is."""
    p = dict(obj)
    if "fields" not in p:
        return p
    own = p.pop("tables", None) or {}
    rules = {**((tables or {}).get("rules") or {}), **(own.get("rules") or {})}
    owners = {**((tables or {}).get("owners") or {}), **(own.get("owners") or {})}

    def text(ref: Any) -> Any:
        return None if ref is None else rules[ref]

    fields = dict(p.pop("fields"))
    steps = []
    for s in p["steps"]:
        for k, v in (s.get("fields") or {}).items():
            if v is None:
                fields.pop(k, None)
            else:
                fields[k] = v
        whole = {k: s.get(k) for k in _STEP_V1}
        whole["rule"], whole["fields"] = text(s.get("rule")), dict(fields)
        steps.append(whole)
    p["steps"] = steps
    if p.get("verdict") is not None:
        p["verdict"] = {**p["verdict"], "rule": text(p["verdict"].get("rule"))}
    for key in ("nat", "marks", "cause", "explain_miss"):
        if p.get(key) is not None:
            p[key] = [{**c, "rule": text(c.get("rule"))} for c in p[key]]
    p["owner"] = None if p.get("owner") is None else owners[p["owner"]]
    p["owners"] = [owners[o] for o in p.get("owners") or ()]
    return p


def _rules_of(tables: Mapping[str, Any] | None, p: Mapping[str, Any]) -> Mapping[str, Any]:
    """The rule table a schema 2 packet is read with: the given tables', with the packet's own over them."""
    outer = _get(tables, "rules", dict, "tables") if tables is not None else None
    own = _get(p, "tables", dict, "packet")
    inner = _get(own, "rules", dict, "tables") if own is not None else None
    if inner and outer:
        return {**outer, **inner}
    return inner or outer or {}


def _rule_text(d: Mapping[str, Any], rules: Mapping[str, Any], where: str) -> str | None:
    ref = _get(d, "rule", str, where)
    if ref is None:
        return None
    text = rules.get(ref)
    if not isinstance(text, str):
        raise RuletraceError(f"{where}.rule: {ref!r} is not a rule id of the tables")
    return text


def _fields_of(d: Mapping[str, Any], where: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` changed by ``d``: a string sets a field, null removes it (schema 2 step ``fields``; with
    no ``base``, ``d`` is all the fields and null is an error)."""
    out = {} if base is None else dict(base)
    for k, v in d.items():
        if v is None and base is not None:
            out.pop(k, None)
        elif isinstance(v, str):
            out[k] = v
        else:
            raise RuletraceError(f"{where}: every value must be a string")
    return out


def _miss_of(obj: Any, where: str, text_of: Any) -> MissLine:
    m = _expect(obj, dict, where)
    table, chain, num = _get(m, "table", str, where) or "", _get(m, "chain", str, where) or "", _get(m, "num", int, where)
    return MissLine(table, chain, num or 0, _rule(table, chain, num, text_of(m, where)),
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


def _change_of(obj: Any, where: str, text_of: Any) -> Change:
    c = _expect(obj, dict, where)
    table, chain, num = _get(c, "table", str, where), _get(c, "chain", str, where), _get(c, "num", int, where)
    return Change(_get(c, "what", str, where), _get(c, "old", str, where), _get(c, "new", str, where), table, chain,
                  num, _rule(table, chain, num, text_of(c, where)), _get(c, "step", int, where),
                  _get(c, "note", str, where))


def _cause_of(obj: Any, where: str, text_of: Any) -> CauseLink:
    c = _expect(obj, dict, where)
    table, chain, num = _get(c, "table", str, where), _get(c, "chain", str, where), _get(c, "num", int, where)
    return CauseLink(_get(c, "role", str, where), table, chain, num, _rule(table, chain, num, text_of(c, where)),
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
