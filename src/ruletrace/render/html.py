"""Explanations as one self-contained HTML report: packet-flow diagram, packet list, rule hit map, ruleset.

The page fetches nothing (a Content-Security-Policy forbids it): CSS and JavaScript are inline,
and the data travels as one compact JSON document in a ``<script type="application/json">``
that the page renders a page at a time. Packets are aggregated as they stream by: each distinct
path is stored once, each *variant* (path, fate, deciding step, shared details, NAT rewrites,
protocol, interfaces) once, and per packet only its id, variant index and addresses (columns).
The hit map is counted once per path and embedded sparse; rule text is embedded only for chains
some packet entered, in its own element (gzipped when large) that the page reads when it first
shows a rule. ``unpack`` reads the document back (docs/report.md describes it). Untrusted text
(rule comments, log fields) reaches the page only through Jinja2 autoescaping or the JSON
documents (``<`` written as ``\\u003c``), and the script inserts it with ``textContent``, never as
markup.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .. import __version__
from ..model import HOOK_TABLES, Explanation, Fate, Ruleset
from .diff import PathDiff, decided_text, packet_summary
from .hitmap import HitMap, Place
from .json import dumps, to_json

FORMAT = 2  # version of the embedded document ("v"); 2: packets aggregated by variant, sparse hit counts
PAGE_SIZE = 200  # packets per page of the packet list
TEXT_GZIP_OVER = 1 << 20  # rule text above this many bytes is embedded gzipped (see doc_element)
DATA_GZIP_OVER = 4 << 20  # the data document too: below it, plain JSON parses in well under 100 ms
KINDS = ("rule", "return", "policy")  # StepKind values; a JSON input's other kinds are appended
FATES = tuple(f.value for f in Fate)
TOP_DECIDERS = 10

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
    """Collects explanations (or their JSON form) as they stream by; ``render()`` writes the page.

    Packets are aggregated as they come: a path (its steps) is stored once, a *variant* (path,
    fate, deciding step, shared details, NAT rewrites, protocol, interfaces) once, and per packet
    only its id, variant and addresses are kept. The hit map is counted once per path, weighted
    by its packets.
    """

    def __init__(self, rulesets: Sequence[Ruleset] = (), *, keep: Iterable[Any] = ()) -> None:
        self.rulesets = list(rulesets)
        self._rs_of = HitMap(self.rulesets)  # picks a packet's ruleset by family
        self.keep = set(keep)  # packet ids whose full JSON form is kept (for --diff)
        self.kept: dict[Any, dict[str, Any]] = {}
        self.fates: Counter[str] = Counter()
        self._strings: dict[str, int] = {}
        self._places: dict[tuple, int] = {}  # (ruleset, table, chain, kind, num) -> place id
        self._place_text: dict[int, str] = {}  # rule text seen in the trace, per place (no ruleset)
        self._steps: dict[tuple, int] = {}  # (place, depth, action, returned_to, policy, warning, note) -> id
        self._paths: dict[tuple, int] = {}  # (ruleset, step signature) -> path id
        self._path_steps: list[list[int]] = []
        self._path_places: list[tuple[int, list[Place]]] = []  # path id -> (ruleset, places) for the hit map
        self._path_packets: list[int] = []
        self._extras: dict[tuple, int] = {}
        self._variants: dict[tuple, int] = {}
        self._variant_keys: list[tuple] = []
        self._variant_packets: list[int] = []
        self._addrs: dict[str, int] = {}
        # one entry per packet, in input order
        self.ids: list[Any] = []
        self._pv: list[int] = []
        self._src: list[int] = []
        self._sport: list[int | None] = []
        self._dst: list[int] = []
        self._dport: list[int | None] = []
        self._hitmap: HitMap | None = None

    @property
    def packets(self) -> int:
        """How many packets were added."""
        return len(self.ids)

    @property
    def hitmap(self) -> HitMap:
        """Per-rule counts over every packet added so far (counted once per distinct path)."""
        if self._hitmap is None or self._hitmap.packets != len(self.ids):
            hm = HitMap(self.rulesets)
            for (rs, places), n in zip(self._path_places, self._path_packets):
                hm.add(places, weight=n, ruleset=rs)
            self._hitmap = hm
        return self._hitmap

    # ------------------------------------------------------------------ input

    def add(self, item: Explanation | Mapping[str, Any]) -> None:
        """Count and store one packet: an Explanation or a JSON packet object."""
        if isinstance(item, Explanation):
            if item.packet.id in self.keep:
                self.kept[item.packet.id] = to_json(item)
            self._add_explanation(item)
            return
        pid = item.get("id")
        if pid in self.keep:
            self.kept[pid] = dict(item)
        self._add_json(item)

    def add_all(self, items: Iterable[Explanation | Mapping[str, Any]]) -> int:
        """``add`` each item; return how many."""
        n = 0
        for it in items:
            self.add(it)
            n += 1
        return n

    def _add_explanation(self, e: Explanation) -> None:
        steps = e.steps
        sig = tuple([(s.event.table, s.event.chain, str(s.event.kind), s.event.num, s.depth, s.action or "",
                      s.returned_to, s.policy, s.warning, s.note) for s in steps])
        fam = None
        for ev in e.packet.events:
            if ev.family:
                fam = ev.family
                break
        rs = self._rs_of.ruleset_index(fam)
        path = self._paths.get((rs, sig))
        if path is None:
            path = self._new_path(rs, sig, [None if s.rule is None else s.rule.text for s in steps])
        v = e.verdict
        dec = -1
        for c in e.cause:
            if c.role == "decided" and isinstance(c.step, int):
                dec = c.step
                break
        else:
            if v is not None:
                dec = _decisive_index(sig, v.table, v.chain, v.num)
        first = e.first
        src, dst = first.get("SRC") or None, first.get("DST") or None
        sport, dport = _port(first.get("SPT")), _port(first.get("DPT"))
        extra = (
            v.reason if v is not None and v.reason else None,
            tuple([(c.what, c.old, c.new, c.step) for c in e.marks]),
            tuple([(c.role, c.text, c.step) for c in e.cause if c.role != "decided"]),
            tuple(e.warnings), tuple(e.notes),
            e.last_seen if v is None else None,
        )
        nat = tuple([(c.what, _nat_old(c.what, c.old, src, sport, dst, dport), c.new, c.step) for c in e.nat])
        vt = None if v is None else (v.action, v.table, v.chain, v.num, v.rule is not None)
        self._add_packet(e.packet.id, path, str(e.fate), dec, vt, extra, nat, first.get("PROTO") or None,
                         first.get("IN") or None, first.get("OUT") or None, first.get("TCPFLAGS") or None,
                         src, sport, dst, dport)

    def _add_json(self, p: Mapping[str, Any]) -> None:
        steps = p.get("steps") or []
        sig = tuple([(s.get("table") or "?", s.get("chain") or "?", s.get("kind") or "rule", s.get("num"),
                      int(s.get("depth") or 0), s.get("action") or "", s.get("returned_to"), s.get("policy"),
                      s.get("warning"), s.get("note")) for s in steps])
        rs = self._rs_of.ruleset_index(p.get("family"))
        path = self._paths.get((rs, sig))
        if path is None:
            path = self._new_path(rs, sig, [s.get("rule") for s in steps])
        v = p.get("verdict") or None
        dec = -1
        for c in p.get("cause") or ():
            if c.get("role") == "decided" and isinstance(c.get("step"), int):
                dec = c["step"]
                break
        else:
            if v:
                dec = _decisive_index(sig, v.get("table"), v.get("chain"), v.get("num"))
        src, dst, sport, dport = p.get("src") or None, p.get("dst") or None, p.get("sport"), p.get("dport")
        extra = (
            v.get("reason") or None if v else None,
            tuple((c.get("what"), c.get("old"), c.get("new"), c.get("step")) for c in p.get("marks") or ()),
            tuple((c.get("role") or "", c.get("text") or "", c.get("step"))
                  for c in p.get("cause") or () if c.get("role") != "decided"),
            tuple(p.get("warnings") or ()), tuple(p.get("notes") or ()),
            p.get("last_seen") if not v else None,
        )
        nat = tuple((c.get("what"), _nat_old(c.get("what"), c.get("old"), src, sport, dst, dport), c.get("new"),
                     c.get("step")) for c in p.get("nat") or ())
        vt = None if not v else (v.get("action"), v.get("table"), v.get("chain"), v.get("num"), bool(v.get("rule")))
        self._add_packet(p.get("id"), path, str(p.get("fate") or "unknown"), dec, vt, extra, nat,
                         p.get("proto") or None, p.get("in") or None, p.get("out") or None, _flags(p),
                         src, sport, dst, dport)

    def _new_path(self, rs: int, sig: tuple, texts: list[str | None]) -> int:
        path = self._paths[(rs, sig)] = len(self._path_steps)
        step_ids = []
        places: list[Place] = []
        for (table, chain, kind, num, depth, action, returned_to, policy, warning, note), text in zip(sig, texts):
            pkey = (rs, table, chain, kind, num)
            place = self._places.get(pkey)
            if place is None:
                place = self._places[pkey] = len(self._places)
            if text and place not in self._place_text:
                self._place_text[place] = text
            skey = (place, depth, action, returned_to, policy, warning, note)
            sid = self._steps.get(skey)
            if sid is None:
                sid = self._steps[skey] = len(self._steps)
            step_ids.append(sid)
            places.append((table, chain, kind, num))
        self._path_steps.append(step_ids)
        self._path_places.append((rs, places))
        self._path_packets.append(0)
        return path

    def _add_packet(self, pid: Any, path: int, fate: str, dec: int, vt: tuple | None, extra: tuple, nat: tuple,
                    proto: Any, in_: Any, out: Any, flags: Any, src: Any, sport: Any, dst: Any, dport: Any) -> None:
        if fate not in FATES:
            fate = "unknown"
        key = (path, fate, dec, vt, extra, nat, proto, in_, out, flags)
        var = self._variants.get(key)
        if var is None:
            var = self._variants[key] = len(self._variant_keys)
            self._variant_keys.append(key)
            self._variant_packets.append(0)
        self._variant_packets[var] += 1
        self._path_packets[path] += 1
        self.fates[fate] += 1
        self.ids.append(pid)
        self._pv.append(var)
        self._src.append(self._addr(src))
        self._sport.append(sport if isinstance(sport, int) else None)
        self._dst.append(self._addr(dst))
        self._dport.append(dport if isinstance(dport, int) else None)

    def _addr(self, a: Any) -> int:
        if not a:
            return -1
        a = str(a)
        i = self._addrs.get(a)
        if i is None:
            i = self._addrs[a] = len(self._addrs)
        return i

    def _s(self, text: Any) -> int:
        if text is None:
            return -1
        text = str(text)
        i = self._strings.get(text)
        if i is None:
            i = self._strings[text] = len(self._strings)
        return i

    # ------------------------------------------------------------------ output

    def deciders(self) -> Counter[tuple[str, str]]:
        """(where the fate was decided, rule key) -> packets."""
        out: Counter[tuple[str, str]] = Counter()
        for key, n in zip(self._variant_keys, self._variant_packets):
            vt, extra = key[3], key[4]
            if vt is None:
                last = extra[5]
                out[(f"trace ends at {last}" if last else "", "")] += n
                continue
            action, table, chain, num, has_rule = vt
            where = f"{table or '?'}:{chain or '?'}"
            if has_rule:
                out[(f"{where} rule {num} ({action})", f"{table}:{chain}:{num}")] += n
            else:
                out[(f"{where} policy {str(action or '').upper()}", "")] += n
        return out

    def data(self, *, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON document the page renders from (``unpack`` reads it back; see docs/report.md)."""
        self._strings = {}
        hm = self.hitmap
        tables: dict[str, int] = {}
        chains: list[list[Any]] = []
        chain_index: dict[tuple[int, str, str], int] = {}
        sizes: list[int] = []
        texts: list[list[Any]] = []  # [chain index, [rule spec or None, ...]] for chains packets entered
        rs_chains = {i: {(t, name): c for t, cs in rs.tables.items() for name, c in cs.items()}
                     for i, rs in enumerate(self.rulesets)}
        for cc in hm.chain_counts():
            ci = len(chains)
            chain_index[(cc.ruleset, cc.table, cc.name)] = ci
            t = tables.setdefault(cc.table, len(tables))
            row: list[Any] = [cc.ruleset, t, cc.name, cc.rules, cc.policy]
            if cc.entered:
                row += [cc.entered, cc.fell_off, [x for kv in cc.hits.items() for x in kv],
                        [x for kv in cc.deepest.items() for x in kv]]
                if cc.known:
                    rules = rs_chains[cc.ruleset][(cc.table, cc.name)].rules
                    texts.append([ci, [_spec(r.text, cc.name) for r in rules]])
                else:
                    texts.append([ci, [None] * cc.rules])
            elif cc.policy is None:
                row.pop()
            chains.append(row)
            sizes.append(cc.rules)
        text_of = {ci: tx for ci, tx in texts}
        xchains: list[list[Any]] = []
        kinds: list[str] = list(KINDS)
        places: list[list[Any]] = [[]] * len(self._places)
        for (rs, table, chain, kind, num), i in self._places.items():
            ci = chain_index.get((rs, table, chain))
            if ci is None:
                ci = -1 - len(xchains)
                chain_index[(rs, table, chain)] = ci
                xchains.append([rs, tables.setdefault(table, len(tables)), chain])
            if kind not in kinds:
                kinds.append(kind)
            places[i] = [ci, kinds.index(kind), num]
            # no ruleset: the rule text comes from the trace, where it showed it
            text = self._place_text.get(i)
            if text and ci >= 0 and kind == "rule" and isinstance(num, int) and 1 <= num <= sizes[ci]:
                tx = text_of.get(ci)
                if tx is not None and tx[num - 1] is None:
                    tx[num - 1] = _spec(text, chain)
        steps: list[list[Any]] = [[]] * len(self._steps)
        for (place, depth, action, returned_to, policy, warning, note), i in self._steps.items():
            steps[i] = _trim([place, depth, self._s(action or None), self._s(returned_to), self._s(policy),
                              self._s(warning), self._s(note)])
        extras: list[dict[str, Any]] = []
        extra_ids: dict[tuple, int] = {}
        variants: list[list[Any]] = []
        for path, fate, dec, _vt, extra, nat, proto, in_, out, flags in self._variant_keys:
            x = -1
            if any(extra):
                x = extra_ids.get(extra, -1)
                if x < 0:
                    x = extra_ids[extra] = len(extras)
                    extras.append(self._extra(extra))
            variants.append(_trim([path, FATES.index(fate), dec, x, self._s(proto), self._s(in_), self._s(out),
                                   self._s(flags), [list(c) for c in nat] or None]))
        ids = self.ids
        delta = all(type(i) is int for i in ids)
        d = dict(defaults or {})
        if "a" not in d:
            d["a"] = ids[0] if ids else None
        if "b" not in d:
            fate = [self._variant_keys[v][1] for v in self._pv]
            d["b"] = next((ids[k] for k in range(len(ids)) if fate[k] != fate[0]), None)
        addrs: list[str] = [""] * len(self._addrs)
        for a, i in self._addrs.items():
            addrs[i] = a
        strings: list[str] = [""] * len(self._strings)
        for text, i in self._strings.items():
            strings[i] = text
        return {
            "v": FORMAT,
            "page_size": PAGE_SIZE,
            "fates": list(FATES),
            "kinds": kinds,
            "tables": list(tables),
            "chains": chains,
            "xchains": xchains,
            "places": places,
            "steps": steps,
            "paths": self._path_steps,
            "variants": variants,
            "extras": extras,
            "strings": strings,
            "addrs": addrs,
            "packets": {
                "id": [b - a for a, b in zip([0, *ids], ids)] if delta else list(ids),
                "id_delta": delta,
                "v": self._pv, "src": self._src, "sport": self._sport, "dst": self._dst, "dport": self._dport,
            },
            "texts": texts,
            "rulesets": [_ruleset_name(rs) for rs in self.rulesets],
            "hooks": {h: list(t) for h, t in HOOK_TABLES.items()},
            "hops": HOPS,
            "labels": {h: list(v) for h, v in LABEL_AT.items()},
            "ruleset_known": bool(self.rulesets),
            "defaults": d,
        }

    def _extra(self, extra: tuple) -> dict[str, Any]:
        why, marks, cause, warnings, notes, last = extra
        e: dict[str, Any] = {}
        if why:
            e["why"] = self._s(why)
        if marks:
            e["marks"] = [list(c) for c in marks]
        if cause:
            e["cause"] = [[self._s(role), self._s(text), step] for role, text, step in cause]
        if warnings:
            e["warn"] = [self._s(w) for w in warnings]
        if notes:
            e["notes"] = [self._s(n) for n in notes]
        if last:
            e["last"] = self._s(last)
        return e

    def diagram(self) -> list[HookBox]:
        """The hook boxes with their table rows, placed, with aggregate packet counts."""
        counts = self.hitmap.tables
        boxes = []
        for hook, tables in HOOK_TABLES.items():
            x, y = HOOK_XY[hook]
            rows = []
            for k, t in enumerate(tables):
                ty = y + HEAD_H + ROW_GAP + k * (ROW_H + ROW_GAP)
                rows.append(TableBox(hook, t, x + 8, ty, HOOK_W - 16, ROW_H, TABLE_COLORS.get(t, "#888"),
                                     counts.get((hook, t), 0)))
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
        texts = data.pop("texts")
        when = (generated or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
        deciders = [
            {"text": t, "rule": k, "count": n} for (t, k), n in self.deciders().most_common(TOP_DECIDERS)
        ]
        tmpl = env.get_template("report.html.j2")
        return tmpl.render(
            title=title or "ruletrace report",
            version=__version__,
            generated=when,
            sources=[_source_text(s) for s in sources],
            rulesets=data["rulesets"],
            warnings=list(warnings),
            packets=len(self.ids),
            paths=len(self._path_steps),
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
            data=doc_element("report-data", data, DATA_GZIP_OVER),
            texts=doc_element("report-text", texts, TEXT_GZIP_OVER),
        )


def unpack(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The packets of a report document (``ReportBuilder.data()``) in their JSON form again.

    What the page's script does, in Python: the test that the compact form round-trips. Only
    what the report keeps comes back (no per-step fields, rule text only of chains packets entered).
    """
    strings, addrs, kinds, tables = data["strings"], data["addrs"], data["kinds"], data["tables"]
    text = {ci: tx for ci, tx in data["texts"]}

    def s(i: int) -> str | None:
        return None if i < 0 else strings[i]

    def chain_of(ci: int) -> tuple[str, str]:
        c = data["chains"][ci] if ci >= 0 else data["xchains"][-1 - ci]
        return tables[c[1]], c[2]

    def step(sid: int) -> dict[str, Any]:
        st = _untrim(data["steps"][sid], 7)
        ci, kind, num = data["places"][st[0]]
        table, chain = chain_of(ci)
        kind = kinds[kind]
        rule = None
        if ci >= 0 and kind == "rule" and isinstance(num, int) and ci in text and 1 <= num <= len(text[ci]):
            spec = text[ci][num - 1]
            rule = None if spec is None else f"-A {chain} {spec}"
        return {"table": table, "chain": chain, "kind": kind, "num": num, "rule": rule, "depth": st[1],
                "action": s(st[2]), "returned_to": s(st[3]), "policy": s(st[4]), "warning": s(st[5]),
                "note": s(st[6])}

    pk = data["packets"]
    ids = list(itertools.accumulate(pk["id"])) if pk["id_delta"] else pk["id"]
    out = []
    for k, pid in enumerate(ids):
        path, fate, dec, x, proto, in_, out_, flags, nat = _untrim(data["variants"][pk["v"][k]], 9)
        nat = nat if nat != -1 else None
        e = data["extras"][x] if x >= 0 else {}
        src = addrs[pk["src"][k]] if pk["src"][k] >= 0 else None
        dst = addrs[pk["dst"][k]] if pk["dst"][k] >= 0 else None
        sport, dport = pk["sport"][k], pk["dport"][k]
        out.append({
            "id": pid, "proto": s(proto), "src": src, "dst": dst, "sport": sport, "dport": dport,
            "in": s(in_), "out": s(out_), "tcpflags": s(flags),
            "steps": [step(sid) for sid in data["paths"][path]],
            "fate": data["fates"][fate], "decisive": dec,
            "reason": s(e.get("why", -1)), "last_seen": s(e.get("last", -1)),
            "nat": [{"what": w, "old": (_endpoint(dst, dport) if w == "DST" else _endpoint(src, sport))
                     if old == 0 else old, "new": new, "step": st} for w, old, new, st in nat or ()],
            "marks": [{"what": w, "old": old, "new": new, "step": st} for w, old, new, st in e.get("marks", ())],
            "cause": [{"role": s(r), "text": s(t), "step": st} for r, t, st in e.get("cause", ())],
            "warnings": [s(w) for w in e.get("warn", ())],
            "notes": [s(n) for n in e.get("notes", ())],
        })
    return out


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


def doc_element(ident: str, obj: Any, gzip_over: int) -> Any:
    """A ``<script id=ident>`` element holding ``obj`` as JSON, or gzip+base64 JSON above ``gzip_over`` bytes.

    Megabytes of JSON cost the browser parse time before the page can render (the kube-proxy
    bench: 11 MB of data, 8 MB of rule text; 2.5 MB and 1.2 MB gzipped). The page decodes a
    compressed element asynchronously (``DecompressionStream``: Chromium 80, Firefox 113,
    Safari 16.4); small reports stay plain JSON and render synchronously.
    """
    from markupsafe import Markup

    text = script_json(obj)
    if len(text) <= gzip_over:
        return Markup(f'<script type="application/json" id="{ident}">{text}</script>')
    packed = base64.b64encode(gzip.compress(text.encode(), compresslevel=6, mtime=0)).decode()
    return Markup(f'<script type="application/octet-stream" id="{ident}" data-encoding="gzip+base64">'
                  f'{packed}</script>')


def script_json(obj: Any) -> str:
    """``obj`` as JSON that is safe inside ``<script type="application/json">``.

    ``<`` is written as ``\\u003c`` (so no ``</script>`` or ``<!--`` can end the element early);
    ``dumps`` already escapes U+2028/U+2029 and the control characters. The text still parses to
    the same value with ``JSON.parse``.
    """
    return dumps(obj).replace("<", "\\u003c")


def _decisive_index(sig: tuple, table: Any, chain: Any, num: Any) -> int:
    """The last step of the path at the verdict's place (when no cause link names the step)."""
    for k in range(len(sig) - 1, -1, -1):
        st = sig[k]
        if st[0] == table and st[1] == chain and (num is None or st[3] == num):
            return k
    return -1


def _nat_old(what: Any, old: Any, src: Any, sport: Any, dst: Any, dport: Any) -> Any:
    # an ``old`` equal to the packet's own first DST:DPT / SRC:SPT is written as 0, so packets
    # that took the same path share one NAT list
    if (what == "DST" and old == _endpoint(dst, dport)) or (what == "SRC" and old == _endpoint(src, sport)):
        return 0
    return old


def _port(x: str | None) -> int | None:
    return int(x) if x and x.isascii() and x.isdigit() else None


def _trim(row: list[Any]) -> list[Any]:
    # trailing "nothing" (-1 / None) is left out of a row; _untrim pads it back
    while row and (row[-1] is None or row[-1] == -1):
        row.pop()
    return row


def _untrim(row: list[Any], n: int) -> list[Any]:
    return list(row) + [-1] * (n - len(row))


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
