"""Explanations as JSON: the stable, versioned machine-readable output (docs/json-schema.md).

Schema 2 writes each rule text and owner once, in the ``tables`` of the document or stream, and
each step only the fields that changed since the step before (``packet_json`` with a ``Tables``);
``to_json`` is one packet standing alone (its tables inside it). ``from_json`` (``render.json_model``)
is their inverse for schema 1 and 2; ``render.json_read`` reads whole files.
"""

from __future__ import annotations

import hashlib
import json as _json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import IO, Any

from .. import __version__
from ..errors import RuletraceError
from ..explain.owners import Owner, deciding_owner, path_owners
from ..fields import family_of, show_address
from ..model import Change, Explanation, Rule, Step
from .json_model import READS, expand, from_json

_orjson: Any
try:  # optional speed-up; output is byte-identical to the stdlib path
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the machine
    _orjson = None

# Bump only for incompatible changes (a key removed, renamed or retyped). New keys may appear
# within a version; readers must ignore keys they do not know. ``from_json`` reads every version
# in ``READS`` (docs/json-schema.md, "Changes from schema 1").
SCHEMA_VERSION = 2

JSONObject = dict[str, Any]

__all__ = ["READS", "SCHEMA_VERSION", "AlonePaths", "Tables", "document", "dumps", "dumps_utf8", "expand", "from_json",
           "owner_json", "packet_json", "rule_id", "to_json", "write_document", "write_jsonl"]


@lru_cache(maxsize=1 << 17)
def rule_id(text: str) -> str:
    """A rule text's key in ``tables.rules``: 16 hex digits of its BLAKE2b hash, so the same text has
    the same id in every run and in every process of a parallel one (no table to share)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@lru_cache(maxsize=1 << 14)
def _owner_entry(o: Owner) -> tuple[str, JSONObject]:
    obj = o.as_json()
    return hashlib.blake2b(dumps(obj).encode(), digest_size=8).hexdigest(), obj


class Tables:
    """The ``tables`` of one document or stream: rule texts and owners by id, each written once.

    ``take_new()`` gives the entries added since it was last called: the table line JSON Lines
    write before the packet that first uses them. Per distinct path (``Explanation.path_key``)
    the steps' constant part and the path's owners are built once and reused.
    """

    __slots__ = ("_new_owners", "_new_rules", "_paths", "owners", "rules")

    PATHS_MAX = 1 << 15  # distinct paths kept before the per-path cache starts again

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self.owners: dict[str, JSONObject] = {}
        self._new_rules: dict[str, str] = {}
        self._new_owners: dict[str, JSONObject] = {}
        self._paths: dict[Any, tuple[list[JSONObject], list[str]]] = {}

    def rule(self, rule: Rule | None) -> str | None:
        """The id of ``rule``'s text (entered in the table on first use); None for no rule."""
        if rule is None:
            return None
        text = rule.text
        rid = rule_id(text)
        have = self.rules.get(rid)
        if have is None:
            self.rules[rid] = self._new_rules[rid] = text
        elif have != text:  # 64 bits: never seen; said rather than written wrong
            raise RuletraceError(f"two rule texts have the same id {rid}: {have!r} and {text!r}")
        return rid

    def owner(self, o: Owner | None) -> str | None:
        """The id of owner ``o`` (entered in the table on first use); None for no owner."""
        if o is None:
            return None
        oid, obj = _owner_entry(o)
        if oid not in self.owners:
            self.owners[oid] = self._new_owners[oid] = obj
        return oid

    def take_new(self) -> JSONObject | None:
        """``{"tables": …}`` with the entries added since the last call, or None when there are none."""
        if not self._new_rules and not self._new_owners:
            return None
        out = {"tables": {"rules": self._new_rules, "owners": self._new_owners}}
        self._new_rules, self._new_owners = {}, {}
        return out

    def as_json(self) -> JSONObject:
        return {"rules": self.rules, "owners": self.owners}

    def path_part(self, expl: Explanation) -> tuple[list[JSONObject], list[str]]:
        """The steps without their packet's own values, and the owner ids of the path: built once
        per path (the same plan gives the same steps: explain.Explainer sets ``path_key``)."""
        key = expl.path_key
        got = self._paths.get(key) if key is not None else None
        if got is None:
            shared, family = expl.shared, _family(expl)
            got = ([_step_const(s, self, shared, family) for s in expl.steps],
                   [self.owner(o) or "" for o in path_owners(expl) if o.specific])
            if key is not None:
                if len(self._paths) >= self.PATHS_MAX:
                    self._paths.clear()
                self._paths[key] = got
        return got


ALONE_PATHS_MAX = 4096  # to_json's per-path seeds kept at most (then it starts again)

# to_json's per-path seeds: Explanation.path_key -> (rules, owners, path_part) of a fresh Tables
AlonePaths = dict[Any, tuple[dict[str, str], dict[str, JSONObject], tuple[list[JSONObject], list[str]]]]


def to_json(expl: Explanation, paths: AlonePaths | None = None) -> JSONObject:
    """One packet standing alone (``trace --json`` lines): ``packet_json`` with the ``tables`` it uses.

    ``paths`` (optional, held by the caller across packets) keeps, per path, the tables as a fresh
    ``Tables`` holds them after ``path_part`` (which ``packet_json`` calls first): a packet of a
    known path starts from them instead of building its steps' constant part again. The object is
    the same with or without it (tests/render/test_json_alone.py)."""
    tables = Tables()
    key = expl.path_key
    if paths is not None and key is not None:
        seed = paths.get(key)
        if seed is None:
            part = tables.path_part(expl)
            seed = (dict(tables.rules), dict(tables.owners), part)
            if len(paths) >= ALONE_PATHS_MAX:  # a long live session on a host whose ruleset changes:
                paths.clear()  # each version's explainer makes new keys; the old ones go
            paths[key] = seed
        else:
            tables.rules, tables.owners = dict(seed[0]), dict(seed[1])
            tables._paths[key] = seed[2]
    obj = packet_json(expl, tables)
    obj["tables"] = tables.as_json()
    return obj


def packet_json(expl: Explanation, tables: Tables) -> JSONObject:
    """One packet's explanation as a JSON-ready dict (schema ``SCHEMA_VERSION``), rules and owners
    as ids into ``tables``."""
    first = expl.first
    v = expl.verdict
    rule = tables.rule
    consts, owners = tables.path_part(expl)
    return {
        "id": expl.packet.id,
        "proto": first.get("PROTO") or None,
        "src": _address(first.get("SRC")),  # compressed (docs/cli.md); ``fields`` keep the log's form
        "dst": _address(first.get("DST")),
        "sport": _port(first.get("SPT")),
        "dport": _port(first.get("DPT")),
        "family": _family(expl),
        "in": first.get("IN") or None,
        "out": first.get("OUT") or None,
        "fields": dict(first),
        "steps": _steps(expl, consts, first),
        "fate": str(expl.fate),
        "verdict": None
        if v is None
        else {
            "action": v.action,
            "table": v.table,
            "chain": v.chain,
            "num": v.num,
            "rule": rule(v.rule),
            "reason": v.reason,
        } | ({"family": v.family} if v.family is not None and v.table in expl.shared else {}),
        "last_seen": expl.last_seen,
        "nat": [_change(c, tables) for c in expl.nat],
        "marks": [_change(c, tables) for c in expl.marks],
        "cause": [
            {
                "role": c.role,
                "table": c.table,
                "chain": c.chain,
                "num": c.num,
                "rule": rule(c.rule),
                "text": c.text,
                "step": c.step,
            }
            for c in expl.cause
        ],
        "warnings": list(expl.warnings),
        "notes": list(expl.notes),
        # who made the deciding rule, and every object owner along the path (explain/owners.py);
        # derived from the rules above, so from_json need not read them
        "owner": tables.owner(deciding_owner(expl)),
        "owners": list(owners),
    } | ({"shared": sorted(expl.shared)} if expl.shared else {}) | _fate(expl) | _misses(expl, tables)


def _step_const(s: Step, tables: Tables, shared: frozenset[str] = frozenset(),
                family: str | None = None) -> JSONObject:
    """What a step is on every packet of its path: all but ``fields``, ``origin`` and ``ts``; its
    ``family`` where it is not the packet's (``family``: one native path meets ip and inet tables),
    and for every nf_tables step whose table's name two families share (``Explanation.shared``)."""
    ev = s.event
    d: JSONObject = {"table": ev.table, "chain": ev.chain, "kind": str(ev.kind), "num": ev.num, "depth": s.depth,
                     "action": s.action or None}
    if ev.family is not None and (ev.family != family or (ev.table in shared and ev.nftables)):
        d["family"] = ev.family
    for key, value in (("rule", tables.rule(s.rule)), ("policy", s.policy), ("returned_to", s.returned_to),
                       ("warning", s.warning), ("note", s.note)):
        if value is not None:
            d[key] = value
    return d


def _steps(expl: Explanation, consts: list[JSONObject], first: Mapping[str, str]) -> list[JSONObject]:
    """Each step: its constant part, the fields that changed since the step before (the first step:
    since the packet's ``fields``), where it was read and when."""
    out: list[JSONObject] = []
    append = out.append
    isfinite = math.isfinite
    prev_ev = None
    prev: Mapping[str, str] = first
    for c, s in zip(consts, expl.steps):
        ev = s.event
        d = c.copy()
        if prev_ev is None or not ev.same_fields(prev_ev):
            f = ev.fields
            if f is not prev and f != prev:
                delta: dict[str, str | None] = {k: v for k, v in f.items() if prev.get(k) != v}
                for k in prev:  # in order: the output is the same in every run
                    if k not in f:
                        delta[k] = None
                d["fields"] = delta
            prev = f
        prev_ev = ev
        o = ev.origin
        d["origin"] = None if o is None else str(o)
        ts = ev.ts
        d["ts"] = ts if ts is not None and isfinite(ts) else None
        append(d)
    return out


def _misses(expl: Explanation, tables: Tables) -> JSONObject:
    """explain --explain-miss only: each rule of the chain checked against the packet's logged fields."""
    if expl.misses is None:
        return {}
    return {"explain_miss": [{"table": m.table, "chain": m.chain, "num": m.num, "rule": tables.rule(m.rule),
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


def _change(c: Change, tables: Tables) -> JSONObject:
    return {
        "what": c.what,
        "old": c.old,
        "new": c.new,
        "table": c.table,
        "chain": c.chain,
        "num": c.num,
        "rule": tables.rule(c.rule),
        "note": c.note,
        "step": c.step,
    }


def document(
    expls: Iterable[Explanation],
    summary: Any = None,
    warnings: Iterable[str] = (),
    sources: Iterable[Any] = (),
) -> JSONObject:
    """The whole ``--json`` output: header, packets, tables, sources, summary and run warnings.

    ``summary`` is a ``render.summary.Summary`` (or anything with ``to_json()``), a ready
    dict, or None. A source is a path, a mapping or an object with ``path``, ``format`` and
    ``role`` (missing ones are null). Packets come before the tables and sources because those
    are only complete once every packet has been read (see ``write_document``).
    """
    tables = Tables()
    packets = [packet_json(e, tables) for e in expls]
    return {**_head(), "packets": packets, "tables": tables.as_json(), **_tail(summary, warnings, sources)}


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

    Packets are written as they come, so no list of them is held (the tables hold each distinct
    rule text and owner once). ``summary``, ``warnings`` and ``sources`` are read after the last
    packet: lists or a Summary that fill up while the explanations stream are fine.
    ``packets=False`` consumes the explanations but writes ``"packets": []`` (for ``--summary
    --json``). ``extra(expl)`` gives keys added after a packet's own (``simulation`` for
    ``simulate --json``; see docs/json-schema.md).
    """
    tables = Tables()

    def lines() -> Iterable[str | None]:
        for e in expls:
            if not packets:
                yield None
                continue
            obj = packet_json(e, tables)
            if extra is not None:
                obj.update(extra(e))
            yield dumps(obj)

    return write_lines(lines(), stream, tables, summary=summary, warnings=warnings, sources=sources)


def write_lines(lines: Iterable[str | None], stream: IO[str], tables: Tables, *, summary: Any = None,
                warnings: Iterable[str] = (), sources: Iterable[Any] = (),
                tail: Callable[[], tuple[Any, Iterable[str], Iterable[Any]]] | None = None) -> int:
    """The document around packets already encoded (``None``: a packet counted, not written); return the count.

    ``tables`` must hold every id the lines use once the last line is taken; ``tail()``, when
    given, is called then for (summary, warnings, sources) instead of the arguments
    (fastpath/parallel_json.py)."""
    stream.write(dumps(_head())[:-1] + ',"packets":[')
    n = written = 0
    for text in lines:
        if text is not None:
            stream.write(("\n" if written == 0 else ",\n") + text)
            written += 1
        n += 1
    if tail is not None:
        summary, warnings, sources = tail()
    rest = {"tables": tables.as_json(), **_tail(summary, warnings, sources)}
    stream.write(("\n]," if written else "],") + dumps(rest)[1:] + "\n")
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


def write_jsonl(expls: Iterable[Explanation], stream: IO[str], *, flush: bool = False) -> int:
    """Write one packet object a line (JSON Lines), each after a table line with the rule texts and
    owners it is the first to use; return how many packets were written.

    ``flush=True`` flushes after each packet, for live tracing piped into ``jq``.
    """
    tables = Tables()
    n = 0
    for e in expls:
        obj = packet_json(e, tables)
        new = tables.take_new()
        stream.write(dumps(obj) + "\n" if new is None else dumps(new) + "\n" + dumps(obj) + "\n")
        if flush:
            stream.flush()
        n += 1
    return n


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


def dumps_utf8(obj: Any) -> bytes:
    """``dumps(obj).encode()`` (the reference), without making the text: orjson's UTF-8 as it is when
    it holds nothing ``dumps`` escapes (the same test ``dumps`` makes), else the reference."""
    if _orjson is not None:
        raw: bytes = _orjson.dumps(obj)
        if raw.isascii():
            if b"\x7f" not in raw:
                return raw
        elif not _UNSAFE.search(raw.translate(None, _ASCII_BELOW_DEL).decode()):
            return raw
    return dumps(obj).encode()


def _port(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _address(v: str | None) -> str | None:
    return show_address(v) if v else None


def _family(expl: Explanation) -> str | None:
    for ev in expl.packet.events:
        if ev.family:
            return ev.family
    return family_of(expl.first)  # the source did not say: its header fields, else its addresses' form


def _source(s: Any) -> JSONObject:
    if isinstance(s, str):
        return {"path": s, "format": None, "role": None}
    get: Callable[[str], Any] = s.get if isinstance(s, Mapping) else lambda k: getattr(s, k, None)
    return {"path": str(get("path") or ""), "format": get("format"), "role": get("role")}
