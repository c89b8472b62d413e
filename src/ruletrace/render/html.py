"""Explanations as one self-contained HTML report: packet-flow diagram, packet list, rule hit map, ruleset.

The page fetches nothing (a Content-Security-Policy forbids it): CSS and JavaScript are inline,
and the packets travel as one compact JSON document in a ``<script type="application/json">``
that the page renders a page (``PAGE_SIZE`` packets) at a time. Paths are interned twice
(step -> id, sequence of step ids -> path id), so 100,000 packets that took a handful of
different paths cost a few numbers each. Untrusted text (rule comments, log fields) reaches the
page only through Jinja2 autoescaping or the JSON document (``<`` written as ``\\u003c``), and the
script inserts it with ``textContent``, never as markup.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .. import __version__
from ..model import HOOK_TABLES, Explanation, Fate, Ruleset
from .diff import PathDiff, decided_text, packet_summary
from .hitmap import HitMap, hook_tables
from .json import dumps, to_json

PAGE_SIZE = 200  # packets per page of the packet list
FATES = tuple(f.value for f in Fate)
TOP_DECIDERS = 10
# the packet list shows these first-step fields; the rest of a packet's fields stay out of the page
LIST_FIELDS = ("PROTO", "SRC", "SPT", "DST", "DPT", "IN", "OUT", "TCPFLAGS")

# packet-flow diagram geometry (SVG user units)
HOOK_W = 150
HEAD_H = 24
ROW_H = 24
ROW_GAP = 4
DIAGRAM_W = 1040
DIAGRAM_H = 440
HOOK_XY: dict[str, tuple[int, int]] = {
    "PREROUTING": (110, 40),
    "FORWARD": (470, 40),
    "POSTROUTING": (750, 54),
    "INPUT": (260, 220),
    "OUTPUT": (620, 220),
}
# where NAT / mark labels of a hook go: x, y, text-anchor, line step (negative: stack upwards)
LABEL_AT: dict[str, tuple[int, int, str, int]] = {
    "PREROUTING": (112, 174, "start", 15),
    "FORWARD": (472, 174, "start", 15),
    "POSTROUTING": (752, 44, "start", -15),
    "INPUT": (250, 240, "end", 15),
    "OUTPUT": (812, 340, "start", 15),
}
# the nodes that are not hooks: (x, y, w, h, label, kind)
NODES: dict[str, tuple[int, int, int, int, str, str]] = {
    "in": (8, 78, 76, 40, "network in", "end"),
    "out": (950, 78, 80, 40, "network out", "end"),
    "local": (455, 385, 150, 40, "local process", "end"),
    "route-in": (335, 98, 0, 0, "routing", "route"),
    "route-out": (825, 300, 0, 0, "routing", "route"),
}
# edges: id -> SVG path; hop -> the edges a packet passes going from one place to the next
EDGES: dict[str, str] = {
    "e-in": "M84,98 H108",
    "e-pre-route": "M260,98 H311",
    "e-route-fwd": "M359,98 H468",
    "e-route-input": "M335,122 V218",
    "e-fwd-post": "M620,98 H748",
    "e-post-out": "M900,98 H948",
    "e-input-local": "M335,364 V405 H453",
    "e-local-output": "M605,405 H695 V394",
    "e-output-route": "M770,300 H801",
    "e-route-post": "M825,276 V144",
}
HOPS: dict[str, list[str]] = {
    "in>PREROUTING": ["e-in"],
    "PREROUTING>INPUT": ["e-pre-route", "e-route-input"],
    "PREROUTING>FORWARD": ["e-pre-route", "e-route-fwd"],
    "FORWARD>POSTROUTING": ["e-fwd-post"],
    "POSTROUTING>out": ["e-post-out"],
    "INPUT>local": ["e-input-local"],
    "local>OUTPUT": ["e-local-output"],
    "OUTPUT>POSTROUTING": ["e-output-route", "e-route-post"],
}
TABLE_COLORS = {"raw": "#8a8f98", "mangle": "#9b59b6", "nat": "#2f7ed8", "filter": "#e0782f", "security": "#16a085"}


@dataclass(slots=True)
class TableBox:
    hook: str
    table: str
    x: int
    y: int
    w: int
    h: int
    color: str
    packets: int  # traced packets that passed this table at this hook


@dataclass(slots=True)
class HookBox:
    name: str
    x: int
    y: int
    w: int
    h: int
    tables: list[TableBox]


class ReportBuilder:
    """Collects explanations (or their JSON form) as they stream by; ``render()`` writes the page."""

    def __init__(self, rulesets: Sequence[Ruleset] = (), *, keep: Iterable[Any] = ()) -> None:
        self.rulesets = list(rulesets)
        self.hitmap = HitMap(self.rulesets)
        self.keep = set(keep)  # packet ids whose full JSON form is kept (for --diff)
        self.kept: dict[Any, dict[str, Any]] = {}
        self.fates: Counter[str] = Counter()
        self.deciders: Counter[tuple[str, str]] = Counter()  # (decided text, rule key) -> packets
        self._places: dict[tuple, int] = {}
        self._place_text: dict[int, str] = {}  # rule text seen in the trace, per place (no ruleset)
        self._steps: dict[tuple, int] = {}
        self._paths: dict[tuple[int, ...], int] = {}
        self._strings: dict[str, int] = {}
        self.packets: list[list[Any]] = []
        self.extras: list[dict[str, Any]] = []
        self._extra_ids: dict[str, int] = {}
        self.first_by_fate: dict[str, Any] = {}

    # ------------------------------------------------------------------ input

    def add(self, item: Explanation | Mapping[str, Any]) -> None:
        """Count and store one packet: an Explanation or a JSON packet object."""
        if isinstance(item, Explanation):
            pid = item.packet.id
            p: Mapping[str, Any] = to_json(item) if pid in self.keep else light_json(item)
        else:
            p = item
        pid = p.get("id")
        if pid in self.keep:
            self.kept[pid] = dict(p)
        steps = p.get("steps") or []
        places = [(s.get("table") or "?", s.get("chain") or "?", s.get("kind") or "rule", s.get("num"))
                  for s in steps]
        rs = self.hitmap.add(places, p.get("family"))
        step_ids = []
        for s, pl in zip(steps, places):
            key = (rs, *pl)
            place = self._places.get(key)
            if place is None:
                place = self._places[key] = len(self._places)
            if s.get("rule") and place not in self._place_text:
                self._place_text[place] = s["rule"]
            sk = (place, int(s.get("depth") or 0), s.get("action") or "", s.get("returned_to"), s.get("policy"))
            sid = self._steps.get(sk)
            if sid is None:
                sid = self._steps[sk] = len(self._steps)
            step_ids.append(sid)
        pk = tuple(step_ids)
        path = self._paths.get(pk)
        if path is None:
            path = self._paths[pk] = len(self._paths)
        fate = str(p.get("fate") or "unknown")
        self.fates[fate] += 1
        self.first_by_fate.setdefault(fate, pid)
        decisive = _decisive_step(p, places)
        v = p.get("verdict") or {}
        rule_key = (f"{v.get('table')}:{v.get('chain')}:{v.get('num')}" if v.get("rule") else "")
        self.deciders[(decided_text(p), rule_key)] += 1
        extra = self._extra(p)
        self.packets.append([
            pid, FATES.index(fate) if fate in FATES else FATES.index("unknown"), path,
            p.get("proto"), p.get("src"), p.get("sport"), p.get("dst"), p.get("dport"),
            p.get("in"), p.get("out"), _flags(p), decisive, extra, _nat(p),
        ])

    def add_all(self, items: Iterable[Explanation | Mapping[str, Any]]) -> int:
        """``add`` each item; return how many."""
        n = 0
        for it in items:
            self.add(it)
            n += 1
        return n

    def _s(self, text: str) -> int:
        i = self._strings.get(text)
        if i is None:
            i = self._strings[text] = len(self._strings)
        return i

    def _extra(self, p: Mapping[str, Any]) -> int:
        e: dict[str, Any] = {}
        v = p.get("verdict")
        if v and v.get("reason"):
            e["why"] = self._s(v["reason"])
        ch = p.get("marks") or []
        if ch:
            e["marks"] = [[c.get("what"), c.get("old"), c.get("new"), c.get("step")] for c in ch]
        cause = [c for c in p.get("cause") or [] if c.get("role") != "decided"]
        if cause:
            e["cause"] = [[self._s(c.get("role") or ""), self._s(c.get("text") or ""), c.get("step")] for c in cause]
        if p.get("warnings"):
            e["warn"] = [self._s(w) for w in p["warnings"]]
        if p.get("notes"):
            e["notes"] = [self._s(n) for n in p["notes"]]
        sw = [[k, self._s(s["warning"])] for k, s in enumerate(p.get("steps") or []) if s.get("warning")]
        sn = [[k, self._s(s["note"])] for k, s in enumerate(p.get("steps") or []) if s.get("note")]
        if sw:
            e["sw"] = sw
        if sn:
            e["sn"] = sn
        if not v and p.get("last_seen"):
            e["last"] = self._s(p["last_seen"])
        if not e:
            return -1
        key = dumps(e)  # packets that took the same path mostly share these: store each once
        i = self._extra_ids.get(key)
        if i is None:
            i = self._extra_ids[key] = len(self.extras)
            self.extras.append(e)
        return i

    # ------------------------------------------------------------------ output

    def data(self, *, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON document the page renders from."""
        chains = self.hitmap.chains()
        rules: list[list[Any]] = []
        chain_rows: list[list[Any]] = []
        rule_index: dict[tuple[int, str, str, int], int] = {}
        for ch in chains:
            first = len(rules)
            for r in ch.rules:
                rule_index[(ch.ruleset, ch.table, ch.name, r.num)] = len(rules)
                rules.append([_spec(r.text, ch.name) if r.text is not None else None, r.hits, r.evaluated])
            chain_rows.append([ch.ruleset, ch.table, ch.name, ch.policy, first, len(ch.rules), ch.entered,
                               ch.fell_off])
        places: list[list[Any]] = [[]] * len(self._places)
        for (rs, table, chain, kind, num), i in self._places.items():
            ri = rule_index.get((rs, table, chain, num), -1) if kind == "rule" and num is not None else -1
            if ri >= 0 and rules[ri][0] is None and i in self._place_text:
                rules[ri][0] = _spec(self._place_text[i], chain)
            places[i] = [table, chain, kind, num, ri]
        steps: list[list[Any]] = [[]] * len(self._steps)
        for (place, depth, action, returned_to, policy), i in self._steps.items():
            steps[i] = [place, depth, action, returned_to, policy]
        paths: list[list[int]] = [[]] * len(self._paths)
        for key, i in self._paths.items():
            paths[i] = list(key)
        strings: list[str] = [""] * len(self._strings)
        for s, i in self._strings.items():
            strings[i] = s
        ids = [p[0] for p in self.packets]
        d = dict(defaults or {})
        if "a" not in d:
            d["a"] = ids[0] if ids else None
        if "b" not in d:
            fa = self.packets[0][1] if self.packets else None
            d["b"] = next((p[0] for p in self.packets if p[1] != fa), None)
        return {
            "v": 1,
            "page_size": PAGE_SIZE,
            "fates": list(FATES),
            "places": places,
            "steps": steps,
            "paths": paths,
            "packets": self.packets,
            "extras": self.extras,
            "strings": strings,
            "chains": chain_rows,
            "rules": rules,
            "rulesets": [_ruleset_name(rs) for rs in self.rulesets],
            "hooks": {h: list(t) for h, t in HOOK_TABLES.items()},
            "hops": HOPS,
            "labels": {h: list(v) for h, v in LABEL_AT.items()},
            "ruleset_known": bool(self.rulesets),
            "defaults": d,
        }

    def diagram(self) -> list[HookBox]:
        """The hook boxes with their table rows, placed, with aggregate packet counts."""
        boxes = []
        for hook, tables in HOOK_TABLES.items():
            x, y = HOOK_XY[hook]
            rows = []
            for k, t in enumerate(tables):
                ty = y + HEAD_H + ROW_GAP + k * (ROW_H + ROW_GAP)
                rows.append(TableBox(hook, t, x + 8, ty, HOOK_W - 16, ROW_H, TABLE_COLORS.get(t, "#888"),
                                     self.hitmap.tables.get((hook, t), 0)))
            h = HEAD_H + ROW_GAP + len(tables) * (ROW_H + ROW_GAP) + 4
            boxes.append(HookBox(hook, x, y, HOOK_W, h, rows))
        return boxes

    def render(
        self,
        *,
        title: str = "",
        sources: Iterable[Any] = (),
        warnings: Iterable[str] = (),
        diff: PathDiff | None = None,
        generated: _dt.datetime | None = None,
    ) -> str:
        """The whole page as one string."""
        env = _environment()
        from markupsafe import Markup

        defaults: dict[str, Any] = {}
        if diff is not None:
            defaults = {"a": diff.left.id, "b": diff.right.id}
        data = self.data(defaults=defaults)
        when = (generated or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
        deciders = [
            {"text": t, "rule": k, "count": n} for (t, k), n in self.deciders.most_common(TOP_DECIDERS)
        ]
        tmpl = env.get_template("report.html.j2")
        return tmpl.render(
            title=title or "ruletrace report",
            version=__version__,
            generated=when,
            sources=[_source_text(s) for s in sources],
            rulesets=data["rulesets"],
            warnings=list(warnings),
            packets=len(self.packets),
            paths=len(self._paths),
            fates=[(f, self.fates.get(f, 0)) for f in FATES if self.fates.get(f)],
            deciders=deciders,
            diagram=self.diagram(),
            nodes=NODES,
            edges=EDGES,
            width=DIAGRAM_W,
            height=DIAGRAM_H,
            diff=diff,
            diff_rows=_diff_rows(diff) if diff is not None else [],
            css=Markup(_asset("report.css")),
            js=Markup(_asset("report.js")),
            data=Markup(script_json(data)),
        )


def to_html(
    expls: Iterable[Explanation | Mapping[str, Any]],
    rulesets: Sequence[Ruleset] = (),
    *,
    title: str = "",
    sources: Iterable[Any] = (),
    warnings: Iterable[str] = (),
    diff: tuple[Any, Any] | None = None,
) -> str:
    """The report for ``expls`` (Explanations or JSON packet objects) as one HTML string."""
    from .diff import diff_packets

    b = ReportBuilder(rulesets, keep=diff or ())
    b.add_all(expls)
    pd = None
    if diff is not None:
        left, right = (b.kept.get(diff[0]), b.kept.get(diff[1]))
        if left is not None and right is not None:
            pd = diff_packets(left, right)
    return b.render(title=title, sources=sources, warnings=warnings, diff=pd)


def light_json(expl: Explanation) -> dict[str, Any]:
    """``to_json`` without the per-step packet fields: all the report keeps, and much cheaper."""
    first = expl.first
    v = expl.verdict
    steps = []
    for s in expl.steps:
        ev = s.event
        steps.append({
            "table": ev.table, "chain": ev.chain, "kind": str(ev.kind), "num": ev.num,
            "rule": None if s.rule is None else s.rule.text, "policy": s.policy, "returned_to": s.returned_to,
            "depth": s.depth, "action": s.action or None, "warning": s.warning, "note": s.note,
        })

    def port(x: str | None) -> int | None:
        return int(x) if x and x.isascii() and x.isdigit() else None

    def change(c: Any) -> dict[str, Any]:
        return {"what": c.what, "old": c.old, "new": c.new, "step": c.step}

    fam = next((ev.family for ev in expl.packet.events if ev.family), None)
    return {
        "id": expl.packet.id,
        "proto": first.get("PROTO") or None,
        "src": first.get("SRC") or None,
        "dst": first.get("DST") or None,
        "sport": port(first.get("SPT")),
        "dport": port(first.get("DPT")),
        "family": fam,
        "in": first.get("IN") or None,
        "out": first.get("OUT") or None,
        "tcpflags": first.get("TCPFLAGS") or None,
        "steps": steps,
        "fate": str(expl.fate),
        "verdict": None if v is None else {
            "action": v.action, "table": v.table, "chain": v.chain, "num": v.num,
            "rule": None if v.rule is None else v.rule.text, "reason": v.reason,
        },
        "last_seen": expl.last_seen,
        "nat": [change(c) for c in expl.nat],
        "marks": [change(c) for c in expl.marks],
        "cause": [{"role": c.role, "text": c.text, "step": c.step} for c in expl.cause],
        "warnings": list(expl.warnings),
        "notes": list(expl.notes),
    }


def script_json(obj: Any) -> str:
    """``obj`` as JSON that is safe inside ``<script type="application/json">``.

    ``<`` is written as ``\\u003c`` (so no ``</script>`` or ``<!--`` can end the element early),
    and U+2028/U+2029 escaped; the text still parses to the same value with ``JSON.parse``.
    """
    s = dumps(obj)
    return s.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _decisive_step(p: Mapping[str, Any], places: list[tuple[str, str, str, Any]]) -> int:
    for c in p.get("cause") or ():
        if c.get("role") == "decided" and isinstance(c.get("step"), int):
            return c["step"]
    v = p.get("verdict")
    if not v:
        return -1
    for k in range(len(places) - 1, -1, -1):
        t, ch, _kind, num = places[k]
        if t == v.get("table") and ch == v.get("chain") and (v.get("num") is None or num == v.get("num")):
            return k
    return -1


def _nat(p: Mapping[str, Any]) -> list[list[Any]] | None:
    # NAT rewrites differ per packet (addresses), so they stay with the packet, not in the shared
    # extras; an ``old`` equal to the packet's own first DST:DPT / SRC:SPT is written as 0
    out = []
    for c in p.get("nat") or ():
        old = c.get("old")
        what = c.get("what")
        if (what == "DST" and old == _endpoint(p.get("dst"), p.get("dport"))) or (
            what == "SRC" and old == _endpoint(p.get("src"), p.get("sport"))
        ):
            old = 0
        out.append([what, old, c.get("new"), c.get("step")])
    return out or None


def _endpoint(addr: Any, port: Any) -> str | None:
    if not addr:
        return None
    a = str(addr)
    if port is None:
        return a
    return f"[{a}]:{port}" if ":" in a else f"{a}:{port}"


def _flags(p: Mapping[str, Any]) -> str | None:
    if p.get("tcpflags"):
        return str(p["tcpflags"])
    steps = p.get("steps") or ()
    f = steps[0].get("fields") if steps else None
    return (f.get("TCPFLAGS") or None) if f else None


def _spec(text: str | None, chain: str) -> str | None:
    if text is None:
        return None
    prefix = f"-A {chain} "
    return text[len(prefix):] if text.startswith(prefix) else text


def _ruleset_name(rs: Ruleset) -> str:
    where = str(rs.origin) if rs.origin else "ruleset"
    bits = [b for b in (rs.format, rs.family) if b]
    return f"{where} ({', '.join(bits)})" if bits else where


def _source_text(s: Any) -> str:
    if isinstance(s, str):
        return s
    get = s.get if isinstance(s, Mapping) else (lambda k: getattr(s, k, None))
    path, fmt = get("path"), get("format")
    return f"{path} ({fmt})" if fmt else str(path)


def _diff_rows(diff: PathDiff) -> list[dict[str, Any]]:
    first = diff.first
    out = []
    for k, r in enumerate(diff.rows):
        out.append({
            "tag": r.tag,
            "left": diff.left.steps[r.left] if r.left is not None else None,
            "right": diff.right.steps[r.right] if r.right is not None else None,
            "first": first is not None and k == first.row,
            "start": r.hunk is not None and diff.divergences[r.hunk].row == k,
            "hunk": r.hunk,
        })
    return out


def _asset(name: str) -> str:
    return (resources.files("ruletrace.render") / "templates" / name).read_text(encoding="utf-8")


_ENV = None


def _environment():
    global _ENV
    if _ENV is None:
        import jinja2

        _ENV = jinja2.Environment(
            loader=jinja2.FunctionLoader(lambda name: _asset(name)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        _ENV.filters["spec"] = lambda s: _spec(s.rule, s.chain) if s is not None and s.rule else ""
        _ENV.globals["summary_of"] = packet_summary
    return _ENV
