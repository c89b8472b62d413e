"""``ruletrace report`` (one self-contained HTML page) and ``ruletrace diff`` (two paths side by side)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import RuletraceError
from ..model import Explanation
from ..pipeline import PacketFilter, Run, load_rulesets
from ..render.json_read import JsonPackets, is_ruletrace_json
from ..render.theme import clean
from . import options
from .console import make_consoles, say_read
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
    from ..analyze.diff import diff_packets
    from ..render.html import ReportBuilder

    _out, err = make_consoles(no_color=no_color)
    ruleset_paths, inputs = options.with_example(example, rulesets, logs)
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
    simulated = 0
    for path in from_json:
        doc = JsonPackets(path)
        n += builder.add_all(e for e in doc if pfilter.wants_packet(e.packet) and pfilter.wants(e))
        sources += doc.sources or [{"path": path, "format": "ruletrace-json"}]
        warnings += doc.warnings
        simulated += doc.simulated
    if inputs:
        run = Run(rs, inputs, fmt=fmt, packet_filter=pfilter, on_source=lambda src: say_read(err, src.path, src.format))
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
    # predicted packets (simulate --json) and no trace: the page says so
    html = builder.render(title=name, sources=sources, warnings=warnings, diff=pd,
                          predicted=bool(simulated) and simulated == n and not inputs)
    if output == "-":
        sys.stdout.write(html)
    else:
        target.write(html)
        err.print(f"ruletrace: wrote {clean(output)} ({n} packet{'' if n == 1 else 's'}, {len(html) // 1024} KiB)", markup=False,
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
    --json` / `trace --json` output. Exit status as diff(1): 0 the same path, 1 different, 2 trouble.
    """
    from ..analyze.diff import DiffPacket, diff_packets
    from ..render.diff import to_renderable
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
        wanted: list[tuple[str | tuple[str, ...], int]] = [(lf, lid), (rf, rid)]
    else:
        if len(args) < 2:
            raise click.UsageError("give two packet ids: ruletrace diff -r RULES LOG A B")
        ids = [_parse_id(a, "packet id") for a in args[-2:]]
        ruleset_paths, inputs = options.with_example(example, ruleset_paths, args[:-2])
        if not inputs:
            raise click.UsageError("give a trace file (or --example NAME) before the two packet ids")
        wanted = [(tuple(inputs), ids[0]), (tuple(inputs), ids[1])]
    rs = load_rulesets(ruleset_paths)
    out, err = make_consoles(no_color=no_color, width=width)
    found: dict[tuple[Any, int], Explanation] = {}
    by_input: dict[Any, set[int]] = {}
    for src, pid in wanted:
        by_input.setdefault(src, set()).add(pid)
    for src, pids in by_input.items():
        for e in _packets(src, pids, rs, fmt, on_source=lambda src: say_read(err, src.path, src.format)):
            found[(src, e.packet.id)] = e
    packets = []
    for src, pid in wanted:
        p = found.get((src, pid))
        if p is None:
            name = src if isinstance(src, str) else ", ".join(src)
            raise RuletraceError(f"no packet {pid} in {name}")
        packets.append(p)
    same_input = wanted[0][0] == wanted[1][0]
    labels = [f"packet {pid}" if same_input else f"{Path(src if isinstance(src, str) else src[0]).name}#{pid}"
              for src, pid in wanted]
    pd = diff_packets(DiffPacket.of(packets[0], labels[0]), DiffPacket.of(packets[1], labels[1]))
    if as_json:
        doc = {"schema": 1, "tool": "ruletrace", "command": "diff", **pd.to_json()}
        sys.stdout.write(dumps(doc, indent=True) + "\n")
    else:
        out.print(to_renderable(pd))
    return ExitStatus.OK if pd.same else ExitStatus.DIFFERENT


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


def _packets(src: Any, ids: set[int], rs: list[Any], fmt: str | None,
             on_source: Callable[[Any], None] | None = None) -> Iterator[Explanation]:
    """Packets ``ids`` of one input (a trace read with the ruleset, or ruletrace JSON read back);
    ``on_source`` hears of each trace file's format as it is known."""
    paths = [src] if isinstance(src, str) else list(src)
    json_paths = [p for p in paths if is_ruletrace_json(p)]
    for p in json_paths:
        yield from (e for e in JsonPackets(p) if e.packet.id in ids)
    traces = [p for p in paths if p not in json_paths]
    if traces:
        run = Run(rs, traces, fmt=fmt, packet_filter=PacketFilter(ids=set(ids)), on_source=on_source)
        yield from run.explanations()


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


__all__ = ["JsonPackets", "diff", "is_ruletrace_json", "report"]
