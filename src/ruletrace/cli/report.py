"""``ruletrace report`` (one self-contained HTML page) and ``ruletrace diff`` (two paths side by side)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import RuletraceError
from ..model import Origin
from ..pipeline import PacketFilter, Run, field_matches, load_rulesets
from ..render.theme import clean
from ..sources.open import open_limited_text
from . import options
from .console import make_consoles
from .status import ExitStatus


@click.command()
@click.argument("logs", nargs=-1, metavar="[TRACE_FILE]...")
@options.ruleset
@options.example
@click.option("--from-json", "from_json", multiple=True, metavar="FILE",
              help="Build from `ruletrace explain --json`, `simulate --json` or `trace --json` output.")
@options.trace_format
@options.packet_filters
@click.option("--diff", "diff_ids", metavar="A,B", help="Add the diff of packets A and B (and show them on the diagram).")
@click.option("-o", "--output", default="ruletrace-report.html", show_default=True, metavar="FILE",
              help="Where to write the page (- for stdout).")
@click.option("--force", is_flag=True, help="Replace FILE even if it exists and is not a ruletrace report.")
@click.option("--title", metavar="TEXT", help="Page title.")
@click.option("--no-color", is_flag=True, help="No colours in messages.")
def report(logs, rulesets, example, from_json, fmt, match, fates, packet_ids, diff_ids, output, force, title,
           no_color) -> int:
    """Write one self-contained HTML report: packet-flow diagram, packets, rule hit map, ruleset.

    TRACE_FILE is anything `ruletrace explain` reads; or give --from-json with the JSON output of
    explain, simulate or trace. The page needs no network: open it from a mail attachment.
    """
    from ..render.diff import diff_packets
    from ..render.html import ReportBuilder

    _out, err = make_consoles(no_color=no_color)
    ruleset_paths, inputs = list(rulesets), list(logs)
    if example:
        ex_rules, ex_logs = options.example_paths(example)
        ruleset_paths = ruleset_paths or ex_rules
        inputs = inputs or ex_logs
    if not inputs and not from_json:
        raise click.UsageError("give a trace file, --from-json FILE or --example NAME")
    pair = _parse_pair(diff_ids) if diff_ids else None
    target = _Target(output, [*ruleset_paths, *inputs, *from_json], force)
    target.check()
    pfilter = PacketFilter.parse(match, fates, packet_ids)
    rs = load_rulesets(ruleset_paths)
    builder = ReportBuilder(rs, keep=pair or ())
    sources: list[Any] = []
    warnings: list[str] = []
    n = 0
    for path in from_json:
        doc = JsonPackets(path)
        n += builder.add_all(p for p in doc if _json_wanted(p, pfilter))
        sources += doc.sources or [{"path": path, "format": "ruletrace-json"}]
        warnings += doc.warnings
    if inputs:
        run = Run(rs, inputs, fmt=fmt, packet_filter=pfilter)
        n += builder.add_all(run.explanations())
        sources += run.sources
        warnings += run.warnings
        if run.skipped:
            warnings.append(f"skipped {run.skipped} damaged trace line(s)")
        if run.packets_total == 0 and not from_json:
            raise RuletraceError(f"no TRACE events found in {', '.join(inputs)}")
    pd = None
    if pair is not None:
        missing = [str(i) for i in pair if i not in builder.kept]
        if missing:
            raise RuletraceError(f"--diff: no packet {' or '.join(missing)} in the input (after filters)")
        pd = diff_packets(builder.kept[pair[0]], builder.kept[pair[1]])
    name = title or _default_title(example, inputs, from_json)
    html = builder.render(title=name, sources=sources, warnings=warnings, diff=pd)
    if output == "-":
        sys.stdout.write(html)
    else:
        target.write(html)
        err.print(f"ruletrace: wrote {clean(output)} ({n} packets, {len(html) // 1024} KiB)", markup=False,
                  highlight=False, soft_wrap=True)
    for w in warnings:
        err.print(f"ruletrace: warning: {clean(w)}", markup=False, highlight=False, style="yellow", soft_wrap=True)
    return ExitStatus.OK if n else ExitStatus.FOUND_NOTHING


@click.command()
@click.argument("args", nargs=-1, metavar="[TRACE_FILE]... A B")
@options.ruleset
@options.example
@click.option("--left", metavar="FILE:ID", help="The left packet: packet ID of FILE (trace or ruletrace JSON).")
@click.option("--right", metavar="FILE:ID", help="The right packet: packet ID of FILE.")
@options.trace_format
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@options.no_color
@options.width
def diff(args, rulesets, example, left, right, fmt, as_json, no_color, width) -> int:
    """Compare two packets' paths: aligned side by side, where they part ways and which field did it.

    `ruletrace diff -r RULES LOG 1 2` compares packets 1 and 2 of LOG; `--left a.log:3 --right
    b.log:7` compares packets of two inputs. An input may also be `explain --json` / `simulate
    --json` / `trace --json` output. Exit status 0 when the paths differ, 1 when they are the same.
    """
    from ..render.diff import diff_packets, to_renderable
    from ..render.json import dumps

    ruleset_paths = list(rulesets)
    args = list(args)
    if (left is None) != (right is None):
        raise click.UsageError("give both --left FILE:ID and --right FILE:ID")
    if left is not None:
        if args:
            raise click.UsageError("with --left/--right, give no other arguments")
        lf, lid = _parse_file_id(left, "--left")
        rf, rid = _parse_file_id(right, "--right")
        wanted = [(lf, lid), (rf, rid)]
    else:
        if len(args) < 2:
            raise click.UsageError("give two packet ids: ruletrace diff -r RULES LOG A B")
        ids = [_parse_id(a, "packet id") for a in args[-2:]]
        inputs = args[:-2]
        if example:
            ex_rules, ex_logs = options.example_paths(example)
            ruleset_paths = ruleset_paths or ex_rules
            inputs = inputs or ex_logs
        if not inputs:
            raise click.UsageError("give a trace file (or --example NAME) before the two packet ids")
        wanted = [(tuple(inputs), ids[0]), (tuple(inputs), ids[1])]
    rs = load_rulesets(ruleset_paths)
    found: dict[tuple[Any, int], dict[str, Any]] = {}
    by_input: dict[Any, set[int]] = {}
    for src, pid in wanted:
        by_input.setdefault(src, set()).add(pid)
    for src, pids in by_input.items():
        for p in _packets(src, pids, rs, fmt):
            found[(src, p["id"])] = p
    packets = []
    for src, pid in wanted:
        p = found.get((src, pid))
        if p is None:
            name = src if isinstance(src, str) else ", ".join(src)
            raise RuletraceError(f"no packet {pid} in {name}")
        packets.append(p)
    same_input = wanted[0][0] == wanted[1][0]
    from ..render.diff import DiffPacket

    labels = [f"packet {pid}" if same_input else f"{Path(src if isinstance(src, str) else src[0]).name}#{pid}"
              for src, pid in wanted]
    pd = diff_packets(DiffPacket.from_json(packets[0], labels[0]), DiffPacket.from_json(packets[1], labels[1]))
    if as_json:
        doc = {"schema": 1, "tool": "ruletrace", "command": "diff", **pd.to_json()}
        sys.stdout.write(dumps(doc, indent=True) + "\n")
    else:
        out, _err = make_consoles(no_color=no_color, width=width)
        out.print(to_renderable(pd))
    return ExitStatus.OK if not pd.same else ExitStatus.FOUND_NOTHING


class _Target:
    """``report -o FILE``: checked before the work, written safely after it (cli/safe_write.py)."""

    MARKER = b'<meta name="generator" content="ruletrace'  # in the head of every report (report.html.j2)

    def __init__(self, path: str, inputs: list[str], force: bool) -> None:
        from .safe_write import marker_check

        self.path, self.inputs, self.force = path, inputs, force
        self.is_ours = marker_check(self.MARKER)

    def check(self) -> None:
        if self.path != "-":
            from .safe_write import check_target

            check_target(self.path, inputs=self.inputs, is_ours=self.is_ours, force=self.force, what="the report")

    def write(self, html: str) -> None:
        from .safe_write import write_output

        write_output(self.path, html, inputs=self.inputs, is_ours=self.is_ours, force=self.force,
                     what="the report")


# ---------------------------------------------------------------- reading packets


def _packets(src: Any, ids: set[int], rs: list, fmt: str | None) -> Iterator[dict[str, Any]]:
    """The JSON form of packets ``ids`` of one input (a trace read with the ruleset, or ruletrace JSON)."""
    from ..render.json import to_json

    paths = [src] if isinstance(src, str) else list(src)
    json_paths = [p for p in paths if is_ruletrace_json(p)]
    for p in json_paths:
        yield from (pk for pk in JsonPackets(p) if pk.get("id") in ids)
    traces = [p for p in paths if p not in json_paths]
    if traces:
        run = Run(rs, traces, fmt=fmt, packet_filter=PacketFilter(ids=set(ids)))
        for e in run.explanations():
            yield to_json(e)


def is_ruletrace_json(path: str) -> bool:
    """Whether ``path`` holds ruletrace's own JSON output (not a trace in some JSON format)."""
    if path == "-":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    text = head.lstrip()
    if not text.startswith(b"{"):
        return False
    flat = text.replace(b" ", b"").replace(b"\n", b"")
    return b'"tool":"ruletrace"' in flat or (flat.startswith(b'{"id":') and b'"steps":' in flat)


class JsonPackets:
    """Packets of a ruletrace JSON file, read as they come.

    Reads the ``--json`` document of explain/simulate (``{"schema": …, "packets": [...]}``) and the
    JSON Lines of ``trace --json`` (one packet object a line). ``sources`` and ``warnings`` of a
    document are known once it has been read.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.sources: list[Any] = []
        self.warnings: list[str] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            f = open_limited_text(self.path, "ruletrace JSON input")
        except OSError as e:
            raise RuletraceError(f"cannot read: {e.strerror}", origin=Origin(self.path)) from e
        try:
            yield from self._read(f)
        except UnicodeDecodeError as e:
            raise RuletraceError("not a ruletrace JSON file (not UTF-8 text)", origin=Origin(self.path)) from e
        finally:
            f.close()

    def _read(self, f) -> Iterator[dict[str, Any]]:
        first = f.readline()
        lineno = 1
        head = first.strip()
        if not head:
            raise RuletraceError("empty file: expected ruletrace --json output", origin=Origin(self.path, 1))
        # explain --json streams: a header line ending in '"packets": [', one packet a line, a tail line
        if head.startswith("{") and head.replace(" ", "").endswith('"packets":['):
            tail_parts: list[str] = []
            for line in f:
                lineno += 1
                s = line.strip()
                if s.startswith("{"):
                    yield self._packet(s.rstrip(","), lineno)
                elif s.startswith("]"):
                    tail_parts.append("{" + s[1:].lstrip(",").lstrip())
                    tail_parts += list(f)
                    break
            self._tail("".join(tail_parts))
            return
        # a packet object per line (trace --json)?
        try:
            obj = json.loads(head)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "steps" in obj:
            yield self._check(obj, 1)
            for line in f:
                lineno += 1
                if line.strip():
                    yield self._packet(line.strip(), lineno)
            return
        # one JSON document (simulate --json is indented)
        text = first + f.read()
        try:
            doc = json.loads(text)
        except ValueError as e:
            line = getattr(e, "lineno", None)
            raise RuletraceError(f"not ruletrace JSON: {e}", origin=Origin(self.path, line)) from e
        if isinstance(doc, list):
            packets = doc
        elif isinstance(doc, dict) and isinstance(doc.get("packets"), list):
            packets = doc["packets"]
            self.sources = [s for s in doc.get("sources") or [] if isinstance(s, dict)]
            self.warnings = [str(w) for w in doc.get("warnings") or []]
        else:
            raise RuletraceError("not ruletrace JSON: expected an object with \"packets\" (ruletrace explain "
                                 "--json)", origin=Origin(self.path, 1))
        for p in packets:
            yield self._check(p, None)

    def _packet(self, text: str, line: int) -> dict[str, Any]:
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise RuletraceError(f"bad packet object: {e.msg}", origin=Origin(self.path, line)) from e
        return self._check(obj, line)

    def _check(self, obj: Any, line: int | None) -> dict[str, Any]:
        if not isinstance(obj, dict) or not isinstance(obj.get("steps"), list):
            raise RuletraceError("not a ruletrace packet object (no \"steps\" list)", origin=Origin(self.path, line))
        for s in obj["steps"]:
            if not isinstance(s, dict) or "table" not in s or "chain" not in s:
                raise RuletraceError("packet step without table/chain", origin=Origin(self.path, line))
        return obj

    def _tail(self, text: str) -> None:
        try:
            tail = json.loads(text) if text.strip() else {}
        except ValueError:
            return
        if isinstance(tail, dict):
            self.sources = [s for s in tail.get("sources") or [] if isinstance(s, dict)]
            self.warnings = [str(w) for w in tail.get("warnings") or []]


def _json_wanted(p: dict[str, Any], f: PacketFilter) -> bool:
    if f.ids and p.get("id") not in f.ids:
        return False
    if f.fates and p.get("fate") not in {str(x) for x in f.fates}:
        return False
    for key, want in f.match.items():
        steps = p.get("steps") or []
        have = [str((s.get("fields") or {}).get(key, "")) for s in steps]
        top = {"SRC": p.get("src"), "DST": p.get("dst"), "SPT": p.get("sport"), "DPT": p.get("dport"),
               "PROTO": p.get("proto"), "IN": p.get("in"), "OUT": p.get("out")}.get(key)
        if top is not None:
            have.append(str(top))
        if not any(field_matches(h, want) for h in have if h):
            return False
    return True


def _parse_pair(text: str) -> tuple[int, int]:
    parts = [t.strip() for t in text.replace(" ", ",").split(",") if t.strip()]
    if len(parts) != 2:
        raise click.UsageError(f"--diff {text!r}: expected two packet ids, e.g. --diff 1,2")
    return _parse_id(parts[0], "--diff"), _parse_id(parts[1], "--diff")


def _parse_id(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.UsageError(f"{what}: {text!r} is not a packet id (a number)") from None


def _parse_file_id(text: str, what: str) -> tuple[str, int]:
    path, sep, pid = text.rpartition(":")
    if not sep or not path:
        raise click.UsageError(f"{what} {text!r}: expected FILE:ID, e.g. trace.log:3")
    return path, _parse_id(pid, what)


def _default_title(example: str | None, inputs: list[str], from_json: tuple[str, ...]) -> str:
    if example:
        return f"ruletrace report: example {example}"
    names = [Path(p).name for p in (*inputs, *from_json)]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"ruletrace report: {shown}"


__all__ = ["report", "diff", "JsonPackets", "is_ruletrace_json"]
