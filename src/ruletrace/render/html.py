"""Explanations as one self-contained HTML report: packet-flow diagram, packet list, rule hit map, ruleset.

The page fetches nothing (a Content-Security-Policy forbids it): CSS and JavaScript are inline,
and the data travels as one compact JSON document in a ``<script type="application/json">``
that the page renders a page at a time (``render.report_data`` builds it as packets stream by;
``unpack`` reads it back; docs/report.md describes it). Rule text is embedded only for chains
some packet entered, in its own element (gzipped when large) that the page reads when it first
shows a rule. Untrusted text (rule comments, log fields) reaches the page only through Jinja2
autoescaping or the JSON documents (``<`` written as ``\\u003c``), and the script inserts it
with ``textContent``, never as markup.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

from .. import __version__
from ..analyze.diff import PathDiff, diff_packets
from ..model import HOOK_TABLES, Explanation, Ruleset
from .json import dumps, dumps_utf8
from .report_data import FATES, ReportData, file_name, rule_spec, unpack

__all__ = ["FATE_COLORS", "ReportBuilder", "compact_count", "doc_element", "fate_css", "script_json", "to_html",
           "unpack"]

TEXT_GZIP_OVER = 1 << 20  # rule text above this many bytes is embedded gzipped (see doc_element)
DATA_GZIP_OVER = 4 << 20  # the data document too: below it, plain JSON parses in well under 100 ms
TOP_DECIDERS = 10
_NOT_CONTINUATION = bytes([*range(0x80), *range(0xC0, 0x100)])  # all bytes but UTF-8's 10xxxxxx

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
    # a bridged packet (br_netfilter: PHYSIN and PHYSOUT) goes from port to port, not through routing
    "e-bridge-in": "M46,78 V20 H545 V38",
    "e-bridge-pre": "M185,38 V20 H545 V38",
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
    "in>FORWARD@bridge": ["e-bridge-in"],
    "PREROUTING>FORWARD@bridge": ["e-bridge-pre"],
}
BRIDGE_LABEL_AT = (300, 14)  # where "bridge: PHYSIN → PHYSOUT" goes, above the bridge edge
# the colour of each fate (ink, badge background): the one table every fate word, badge and ✕ uses
# (accepted fates green/teal, refused ones red/crimson, unknown amber)
FATE_COLORS: dict[str, tuple[str, str]] = {
    "dropped": ("#c62828", "#fde7e7"),
    "rejected": ("#ad1457", "#fce4ec"),
    "delivered": ("#2e7d32", "#e3f4e4"),
    "forwarded": ("#00695c", "#dcf2ef"),
    "sent": ("#1565c0", "#e1ecfb"),
    "unknown": ("#8a5a00", "#fff1d6"),
}
TABLE_COLORS = {"raw": "#8a8f98", "mangle": "#9b59b6", "nat": "#2f7ed8", "filter": "#e0782f", "security": "#16a085"}
# a row's colour by its priority: the iptables table registered at or just below it (nat: dstnat, srcnat)
_PRIORITY_COLORS = ((-200, "raw"), (-125, "mangle"), (-50, "nat"), (25, "filter"), (75, "security"))
NAME_MAX = 9  # characters of a table label a diagram row has room for (then "…")


def _row_color(label: str, priority: int | None) -> str:
    if priority is None:
        return TABLE_COLORS.get(label, "#888")
    for upto, table in _PRIORITY_COLORS:
        if priority < upto:
            return TABLE_COLORS[table]
    return TABLE_COLORS["nat"]


def _short(label: str) -> str:
    return label if len(label) <= NAME_MAX else label[:NAME_MAX - 1] + "\u2026"


def _id_safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", label)


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
    box: int = -1  # its row id in the document ("boxes", "path_boxes")
    name: str = ""  # the label as drawn (a long one shortened; the whole label on hover)
    ident: str = ""  # the label as it can stand in an element id


@dataclass(slots=True)
class HookBox:
    name: str
    x: int
    y: int
    w: int
    h: int
    tables: list[TableBox]


class ReportBuilder(ReportData):
    """Collects explanations (or their JSON form) as they stream by; ``render()`` writes the page."""

    def data(self, *, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The document the page renders from (``ReportData.data``) with the diagram's hooks, hops and labels."""
        doc = super().data(defaults=defaults)
        _boxes, labels, _h = self._layout()
        return {
            **doc,
            "hooks": {h: list(t) for h, t in HOOK_TABLES.items()},
            "hops": HOPS,
            "labels": labels,
            "bridge_label": list(BRIDGE_LABEL_AT),
        }

    def diagram(self) -> list[HookBox]:
        """The hook boxes with their table rows, placed, with aggregate packet counts."""
        return self._layout()[0]

    def _layout(self) -> tuple[list[HookBox], dict[str, list[Any]], int]:
        """The hook boxes (their rows: ``diagram_rows``), where each hook's NAT / mark labels go (under a
        box that grew past them), and the diagram's height."""
        counts = self.box_counts()
        boxes = []
        labels: dict[str, list[Any]] = {}
        height = DIAGRAM_H
        for hook, rows in self.diagram_rows().items():
            x, y = HOOK_XY[hook]
            placed = []
            for k, (b, label, prio) in enumerate(rows):
                ty = y + HEAD_H + ROW_GAP + k * (ROW_H + ROW_GAP)
                placed.append(TableBox(hook, label, x + 8, ty, HOOK_W - 16, ROW_H, _row_color(label, prio),
                                       counts[b] if b < len(counts) else 0, b, _short(label), _id_safe(label)))
            h = HEAD_H + ROW_GAP + len(rows) * (ROW_H + ROW_GAP) + 4
            boxes.append(HookBox(hook, x, y, HOOK_W, h, placed))
            lx, ly, anchor, step = LABEL_AT[hook]
            under = step > 0 and x <= lx <= x + HOOK_W  # labels under the box (not beside it) go under its last row
            labels[hook] = [lx, max(ly, y + h + 18) if under else ly, anchor, step]
            height = max(height, y + h + 40)
        return boxes, labels, height

    def render(
        self,
        *,
        title: str = "",
        sources: Iterable[Any] = (),
        warnings: Iterable[str] = (),
        diff: PathDiff | None = None,
        generated: _dt.datetime | None = None,
        predicted: bool = False,
    ) -> str:
        """The whole page as one string; ``predicted``: the packets are ``simulate``'s, not traced.

        A source whose ``role`` is ``ruleset`` (a ``--json`` document's ``sources``) is named as a
        ruleset, ``host-facts`` as host facts, anything else as a trace."""
        env = _environment()
        from markupsafe import Markup

        defaults: dict[str, Any] = {}
        if diff is not None:
            defaults = {"a": diff.left.id, "b": diff.right.id}
        data = self.data(defaults=defaults)
        texts = data.pop("texts")
        when = (generated or _dt.datetime.now(_dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
        deciders = [
            {"text": t, "rule": k, "count": n} for (t, k), n in self.deciders().most_common(TOP_DECIDERS)
        ]
        diagram, _labels, height = self._layout()
        tmpl = env.get_template("report.html.j2")
        page: str = tmpl.render(
            title=title or "ruletrace report",
            version=__version__,
            generated=when,
            sources=[(_ROLE_WORDS.get(_role(s) or "", "trace"), _source_text(s)) for s in sources
                     if _role(s) != "ruleset"],
            rulesets=_ruleset_lines(self.rulesets, [_source_text(s) for s in sources if _role(s) == "ruleset"]),
            predicted=predicted,
            warnings=list(warnings),
            packets=len(self.ids),
            paths=self.paths,
            fates=[(f, self.fates.get(f, 0)) for f in FATES if self.fates.get(f)],
            deciders=deciders,
            diagram=diagram,
            nodes=NODES,
            edges=EDGES,
            width=DIAGRAM_W,
            height=height,
            diff=diff,
            diff_rows=_diff_rows(diff) if diff is not None else [],
            css=Markup(_asset("report.css") + fate_css()),
            js=Markup(_asset("report.js")),
            data=doc_element("report-data", data, DATA_GZIP_OVER),
            texts=doc_element("report-text", texts, TEXT_GZIP_OVER),
        )
        return page


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
    b = ReportBuilder(rulesets, keep=diff or ())
    b.add_all(expls)
    pd = None
    if diff is not None:
        left, right = (b.kept.get(diff[0]), b.kept.get(diff[1]))
        if left is not None and right is not None:
            pd = diff_packets(left, right)
    return b.render(title=title, sources=sources, warnings=warnings, diff=pd)


def fate_css() -> str:
    """The CSS of FATE_COLORS: each ``.fate-<fate>`` sets ``--fate-ink`` and ``--fate-bg`` (report.css uses them)."""
    return "".join(f"\n.fate-{f} {{ --fate-ink: {ink}; --fate-bg: {bg}; }}" for f, (ink, bg) in FATE_COLORS.items())


def compact_count(n: int) -> str:
    """A packet count in at most 4 characters, for a table row of the diagram: 999, 1.2k, 12k, 100k, 1.5M."""
    if n < 1000:
        return str(n)
    for unit, size in (("k", 1000), ("M", 1000**2), ("G", 1000**3)):
        v = n / size
        if v < 9.95:
            return f"{v:.1f}{unit}"
        if v < 999.5:
            return f"{v:.0f}{unit}"
    return f"{n / 1000**4:.0f}T"


def doc_element(ident: str, obj: Any, gzip_over: int) -> Any:
    """A ``<script id=ident>`` element holding ``obj`` as JSON, or gzip+base64 JSON above ``gzip_over`` bytes.

    Megabytes of JSON cost the browser parse time before the page can render (the kube-proxy
    bench: 11 MB of data, 8 MB of rule text; 2.5 MB and 1.2 MB gzipped). The page decodes a
    compressed element asynchronously (``DecompressionStream``: Chromium 80, Firefox 113,
    Safari 16.4); small reports stay plain JSON and render synchronously.
    """
    from markupsafe import Markup

    # script_json(obj) as UTF-8 (the reference: tests/report/test_report_html.py), made from the
    # encoder's bytes: a "<" is one byte in UTF-8 and no part of another character's bytes, and a
    # text's length is its bytes less the continuation bytes
    raw = dumps_utf8(obj).replace(b"<", b"\\u003c")
    chars = len(raw) if raw.isascii() else len(raw) - len(raw.translate(None, _NOT_CONTINUATION))
    if chars <= gzip_over:
        return Markup(f'<script type="application/json" id="{ident}">{raw.decode()}</script>')
    packed = base64.b64encode(gzip.compress(raw, compresslevel=1, mtime=0)).decode()
    return Markup(f'<script type="application/octet-stream" id="{ident}" data-encoding="gzip+base64">'
                  f'{packed}</script>')


def script_json(obj: Any) -> str:
    """``obj`` as JSON that is safe inside ``<script type="application/json">``.

    ``<`` is written as ``\\u003c`` (so no ``</script>`` or ``<!--`` can end the element early);
    ``dumps`` already escapes U+2028/U+2029 and the control characters. The text still parses to
    the same value with ``JSON.parse``.
    """
    return dumps(obj).replace("<", "\\u003c")


_ROLE_WORDS = {"host-facts": "host facts"}


def _role(s: Any) -> str | None:
    if isinstance(s, str):
        return None
    got = s.get("role") if isinstance(s, Mapping) else getattr(s, "role", None)
    return got if isinstance(got, str) else None


def _ruleset_lines(rulesets: Sequence[Ruleset], named: Iterable[str]) -> list[str]:
    """The header's ruleset lines: a file once, with its families (one Ruleset a family of an nft
    listing), then rulesets a --json document's sources name, each once."""
    files: dict[tuple[str, str], list[str]] = {}
    for rs in rulesets:
        fams = files.setdefault((file_name(rs.origin.path) if rs.origin else "ruleset", rs.format), [])
        if rs.family and rs.family not in fams:
            fams.append(rs.family)
    out = []
    for (where, fmt), fams in files.items():
        bits = ", ".join(b for b in (fmt, ", ".join(fams)) if b)
        out.append(f"{where} ({bits})" if bits else where)
    for text in named:
        if text not in out:
            out.append(text)
    return out


def _source_text(s: Any) -> str:
    if isinstance(s, str):
        return s
    get: Callable[[str], Any] = s.get if isinstance(s, Mapping) else (lambda k: getattr(s, k, None))
    path, fmt = file_name(get("path")), get("format")
    return f"{path} ({fmt})" if fmt else path


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


_ENV: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
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
        _ENV.filters["compact"] = compact_count
        _ENV.filters["spec"] = lambda s: rule_spec(s.rule, s.chain) if s is not None and s.rule else ""
    return _ENV
