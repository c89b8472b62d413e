"""``ruletrace explain`` and ``ruletrace examples``."""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import sys
import textwrap
from contextlib import contextmanager

import click

from ..errors import RuletraceError
from ..explain.fatecauses import annotate
from ..pipeline import PacketFilter, Run, load_rulesets
from . import hostfiles, options
from .console import make_consoles, progress_for, say_read
from .status import ExitStatus


@click.command()
@click.argument("logs", nargs=-1, metavar="[TRACE_FILE]...")
@options.ruleset
@options.example
@options.trace_format
@options.packet_filters
@click.option("--summary", is_flag=True, help="Counts by fate and by deciding rule instead of every path.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (docs/json-schema.md).")
@click.option("--jsonl", "as_jsonl", is_flag=True,
              help="One packet object a line (JSON Lines), written as each packet is explained.")
@options.no_color
@click.option("-v", "--verbose", is_flag=True, help="Show the packet fields of every step.")
@click.option("--ifmap", metavar="FILE", help="Interface index -> name map for NFLOG (`ip -j link` output).")
@hostfiles.options
@click.option("--explain-miss", metavar="[TABLE:]CHAIN",
              help="For each packet, every rule of CHAIN checked against its logged fields: the condition "
                   "that failed, or unknown where the log cannot show it.")
@options.width
def explain(logs, rulesets, example, fmt, match, fates, packet_ids, summary, as_json, as_jsonl, no_color,
            verbose, ifmap, addrs, routes, ip_rules, sysctl_file, explain_miss, width) -> int:
    """Explain traced packets: the path rule by rule, where each ended, and why.

    TRACE_FILE is a kernel log (journalctl -k, dmesg, /var/log/kern.log, …), an NFLOG pcap, ulogd2
    JSON, xtables-monitor or nft monitor trace output; "-" reads stdin; .gz is read as is.
    Several files are merged in time order. With the host's routing dumps (--routes, --rules,
    --sysctl, --addrs) each packet gets its routing decision, and one that ends after PREROUTING
    gets the likely causes, ranked, instead of a fixed list.
    """
    ruleset_paths, inputs = options.with_example(example, rulesets, logs)
    if not inputs:
        raise click.UsageError("give a trace file (or - for stdin), or --example NAME")
    if as_jsonl and (as_json or summary):
        raise click.UsageError("--jsonl writes every packet, one a line: it does not go with --json or --summary")
    if explain_miss and summary:
        raise click.UsageError("--explain-miss shows each packet: it does not go with --summary")
    out, err = make_consoles(no_color=no_color, width=width)
    pfilter = PacketFilter.parse(match, fates, packet_ids)
    # loaded when first needed: a parallel summary starts reading the log meanwhile
    rs = (lambda: load_rulesets(ruleset_paths)) if summary else load_rulesets(ruleset_paths)
    miss_key = None
    if explain_miss:
        from ..analyze.explain_miss import chain_key
        from ..model import RulesetView

        assert not callable(rs)  # not with --summary
        miss_key = chain_key(explain_miss, RulesetView(rs))
    ifmap_d = _load_ifmap(ifmap) if ifmap else None
    facts = hostfiles.route_facts(addrs, routes, ip_rules, sysctl_file)
    total = sum(_size(p) for p in inputs)
    with progress_for(err, total) as progress, _no_gc():
        run = Run(rs, inputs, fmt=fmt, packet_filter=pfilter, detail=not summary or as_json,
                  ifmap=ifmap_d, progress=progress, on_source=lambda s: say_read(err, s.path, s.format), explain_miss=miss_key)
        n = None
        if as_jsonl or (as_json and not summary):  # on every core where the pipeline can
            n = run.write_json_parallel(sys.stdout, jsonl=as_jsonl,
                                        annotate=(lambda e: annotate(e, facts)) if facts else None)
        if n is not None:
            pass
        elif as_jsonl:
            from ..render.json import write_jsonl

            n = write_jsonl(_with_facts(run.explanations(), facts), sys.stdout)
        else:
            n = _emit(run, out, summary=summary, as_json=as_json, verbose=verbose, facts=facts)
    _report_warnings(err, run)
    if run.packets_total == 0:
        raise RuletraceError(
            f"no TRACE events found in {', '.join(inputs)}"
            + (f" ({run.skipped} damaged line{'' if run.skipped == 1 else 's'} skipped)" if run.skipped else "")
        )
    if n == 0:
        err.print("ruletrace: no packet matched the filters", markup=False, highlight=False, soft_wrap=True)
        return ExitStatus.FOUND_NOTHING
    return ExitStatus.OK


@contextmanager
def _no_gc():
    """Millions of small acyclic objects: the cyclic GC only costs time here (measured ~2x)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size if path != "-" else 0
    except OSError:
        return 0


def _load_ifmap(path: str) -> dict[int, str]:
    try:
        from ..sources.nflog_pcap import load_ifmap
    except ImportError as e:
        raise RuletraceError(f"--ifmap needs the NFLOG reader: {e}") from e
    return load_ifmap(path)


def _with_facts(explanations, facts):
    """Routing decisions and ranked causes from the host's dumps (explain/fatecauses.py), when given."""
    for e in explanations:
        if facts:
            annotate(e, facts)
        yield e


def _primed(items):
    """``items`` with its first one already taken (the reading, and what it says on stderr, done)."""
    it = iter(items)
    for first in it:
        return itertools.chain((first,), it)
    return iter(())


def _emit(run: Run, out, *, summary: bool, as_json: bool, verbose: bool, facts=None) -> int:
    from ..render.json import write_document
    from ..render.summary import Summary, to_renderable

    if summary:  # the pipeline picks the sequential or the parallel pass
        summ = run.summary()
        if as_json:
            write_document((), sys.stdout, summary=summ, warnings=run.warnings, sources=run.sources,
                           packets=False)
        else:
            out.print(to_renderable(summ))
        return summ.packets
    summ = Summary()

    def counted():
        for e in _with_facts(run.explanations(), facts):
            yield summ.add(e)
        summ.add_skipped(run.skipped)  # run-level warnings go to stderr and the JSON "warnings"

    if as_json:  # the first packet read before the document opens: "read X as FORMAT" comes first on 2>&1
        return write_document(_primed(counted()), sys.stdout, summary=summ, warnings=run.warnings,
                              sources=run.sources)
    from ..render.tree import render_explanations
    from ..render.tree_plain import for_console

    plain = for_console(out)
    if plain is not None:  # on every core where the pipeline can
        got = run.write_tree_parallel(out.file, lambda e: plain.render(e, verbose),
                                      annotate=(lambda e: annotate(e, facts)) if facts else None)
        if got is not None:
            n, summ = got
            if n > 1:
                out.print()
                out.print(to_renderable(summ))
            return n
    n = render_explanations(counted(), out, verbose=verbose)
    if n > 1:
        out.print()
        out.print(to_renderable(summ))
    return n


SAY = {"markup": False, "highlight": False, "soft_wrap": True}  # one message, one line: never wrapped by us


def _report_warnings(err, run: Run) -> None:
    from ..render.theme import clean  # file names and warnings carry text from the input

    say = SAY
    if run.skipped:
        err.print(f"ruletrace: skipped {run.skipped} damaged trace line(s)", **say)
    for w in run.warnings:
        err.print(f"ruletrace: warning: {clean(w)}", style="yellow", **say)


@click.command()
def examples() -> int:
    """List the bundled examples (use with `ruletrace explain --example NAME`)."""
    ex = options.list_examples()
    if not ex:
        click.echo("no examples bundled")
        return ExitStatus.FOUND_NOTHING
    # on a terminal a title wraps under itself (not back at the margin); a pipe gets whole lines
    cols = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
    for name, info in ex.items():
        head, title = f"{name:18} ", info.get("title", "")
        if cols > len(head) + 20:
            title = ("\n" + " " * len(head)).join(textwrap.wrap(title, cols - len(head) - 1) or [""])
        click.echo(head + title)
    return ExitStatus.OK
