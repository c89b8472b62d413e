"""``ruletrace trace``, ``ruletrace cleanup`` and ``ruletrace doctor``: live tracing on this host."""

from __future__ import annotations

import shlex
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from ..errors import RuletraceError
from .console import make_consoles
from .options import complete_netns, complete_protocols
from .status import ExitStatus, signal_status

if TYPE_CHECKING:
    from ..render.json import AlonePaths  # imported when used: the live view starts without it


def _enter_netns(netns: str | None, pid: int | None) -> dict[str, Any]:
    """Move into ``--netns``/``--pid``'s namespace; the session's record of where it ran."""
    from ..live import netns as lns

    if netns and pid:
        raise click.UsageError("give --netns or --pid, not both")
    info: dict[str, Any] = {}
    if netns or pid:
        path = lns.ns_path(name=netns, pid=pid)
        lns.setns(path)
        info = {"name": netns} if netns else {"pid": pid}
    info["id"] = lns.ns_id()
    return info


class _Printer:
    """stderr messages that survive a terminal that went away (SIGHUP); never wrapped by us (a
    path or a command stays whole: the terminal folds it). ``before`` runs before each message
    (the live view learns its last row is no longer its own)."""

    def __init__(self, err, before=None) -> None:
        self.err = err
        self.before = before

    def __call__(self, text: str, style: str | None = None) -> None:
        from ..render.theme import clean

        if self.before is not None:
            self.before()
        try:  # rule text, comments and command output come from the host: no control sequences
            self.err.print(clean(text), markup=False, highlight=False, style=style, soft_wrap=True)
        except OSError:
            pass


def _netns_options(f):
    f = click.option("--pid", type=int, metavar="PID",
                     help="Work in the network namespace of process PID (a container).")(f)
    f = click.option("--netns", metavar="NAME", shell_complete=complete_netns,
                     help="Work in network namespace NAME (`ip netns list`).")(f)
    return f


@click.command()
@click.option("-p", "--proto", metavar="PROTO", shell_complete=complete_protocols,
              help="Protocol: tcp, udp, icmp, icmpv6, …")
@click.option("--dport", metavar="PORT[:PORT]", help="Destination port (needs -p tcp/udp/sctp).")
@click.option("--sport", metavar="PORT[:PORT]", help="Source port (needs -p tcp/udp/sctp).")
@click.option("-s", "--src", metavar="ADDR[/LEN]", help="Source address or network ('!ADDR' negates).")
@click.option("-d", "--dst", metavar="ADDR[/LEN]", help="Destination address or network.")
@click.option("-i", "--iface", metavar="IF", help="Interface: -i on the way in, -o on the way out.")
@click.option("--direction", type=click.Choice(["in", "out", "both"]), default="both", show_default=True,
              help="in: packets arriving (raw PREROUTING; native nf_tables: the session table's prerouting "
                   "chain); out: locally sent (OUTPUT).")
@click.option("--raw-match", metavar="'MATCH'", help="An extra match in the syntax of the rules the session adds: "
              "iptables options on legacy and iptables-nft hosts ('-m mark --mark 0x10'), an nft expression on "
              "native nf_tables hosts ('ip saddr 10.0.0.0/8 tcp dport 443'); checked before any change.")
@click.option("--all", "trace_all", is_flag=True, help="Allow a trace without any filter (every packet).")
@click.option("-4", "v4", is_flag=True, help="IPv4 only.")
@click.option("-6", "v6", is_flag=True, help="IPv6 only.")
@click.option("--count", type=int, metavar="N", help="Stop after exactly N packets (0: stop at once).")
@click.option("--duration", type=float, metavar="S", help="Stop after S seconds (0: stop at once).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per packet per line, each with time, session and schema.")
@click.option("--tree", is_flag=True,
              help="The full tree for the first packet of each distinct path (repeats stay one line).")
@click.option("--dry-run", is_flag=True, help="Print every command and netlink change, change nothing.")
@_netns_options
@click.option("--rate-limit", type=int, default=50, show_default=True, metavar="PPS",
              help="At most PPS traced packets per second (iptables -m limit, nft limit rate); the rest are "
                   "counted.")
@click.option("--backend", type=click.Choice(["auto", "legacy", "nft", "both"]), default="auto", show_default=True,
              help="Backend whose rules to trace: auto picks the one with rules, both when legacy "
                   "xtables and nf_tables both have some (one session, steps merged in the kernel's order).")
@click.option("--via", type=click.Choice(["auto", "netlink", "kmsg"]), default="auto", show_default=True,
              help="Legacy backend: receive TRACE via NFLOG netlink or the kernel log (/dev/kmsg).")
@click.option("--no-cleanup-stale", is_flag=True,
              help="Do not offer to undo the leftovers of killed ruletrace sessions (only list them).")
@click.option("--no-color", is_flag=True, help="No colours.")
@click.option("-v", "--verbose", is_flag=True,
              help="Everything: the tree of every packet with its fields, and every command run.")
@click.option("--explain-miss", metavar="[TABLE:]CHAIN",
              help="For each packet, every rule of CHAIN (of the live ruleset) checked against its logged "
                   "fields: a hint on its line, the whole block with --tree or -v, `explain_miss` in --json.")
@click.option("--width", type=int, help="Output width (default: the terminal's).")
def trace(proto, dport, sport, src, dst, iface, direction, raw_match, trace_all, v4, v6, count, duration,
          as_json, tree, dry_run, netns, pid, rate_limit, backend, via, no_cleanup_stale, no_color, verbose,
          explain_miss, width) -> int:
    """Trace packets live: add scoped TRACE rules, explain each packet as it passes, clean up.

    One line per packet (time, packet, fate, deciding rule, cause); packets that take a path
    already shown are counted ("×3"), and a summary follows on exit. --tree or -v for trees.

    Example: ruletrace trace -p tcp --dport 52000 -s 10.0.0.2 --count 5
    """
    from ..live import accounting as acc
    from ..live import session as ss
    from ..live.tracer import STOP_SIGNALS, Stop, Tracer

    if count is not None and count < 0:
        raise click.UsageError("--count must be 0 or more (0: set up, stop at once, clean up)")
    if duration is not None and duration < 0:
        raise click.UsageError("--duration must be 0 or more seconds (0: set up, stop at once, clean up)")
    out, err = make_consoles(no_color=no_color, width=width)
    from ..analyze.live import packet_time
    from ..render.live import LiveView, json_object

    view = LiveView(out, tree=tree, every=verbose, verbose=verbose)
    say = _Printer(err, before=view.interrupted)
    families = ("ipv4",) if v4 and not v6 else ("ipv6",) if v6 and not v4 else ("ipv4", "ipv6")
    try:
        raw = shlex.split(raw_match or "")
    except ValueError as e:
        raise RuletraceError(f"--raw-match {raw_match!r}: {e} (quote it as a shell would)") from e
    spec = ss.TraceSpec(proto=proto, dport=dport, sport=sport, src=src, dst=dst, iface=iface,
                        direction=direction, raw_match=raw, raw_text=raw_match or "", families=families,
                        rate=rate_limit, all=trace_all)
    spec.validate()
    nsinfo = _enter_netns(netns, pid)
    _offer_cleanup(say, dry_run=dry_run, clean=not no_cleanup_stale)
    detail = verbose or dry_run  # the ~40 commands and netlink changes of a session
    tracer = Tracer(spec, backend=backend, via=via, dry_run=dry_run, netns=nsinfo,
                    say=(lambda s: say("ruletrace: " + s, "dim")) if detail else None,
                    warn=lambda s: say("ruletrace: warning: " + s, "yellow"),
                    note=lambda s: say("ruletrace: " + s, "dim"), explain_miss=explain_miss)
    if explain_miss:  # a malformed [TABLE:]CHAIN fails before any change; its presence is checked after setup
        from ..simulate.miss_words import parse_chain

        parse_chain(explain_miss)
    absorbed: list[str] = []
    ended_by: list[int] = []  # the signal that ended the trace: exit status 128 + N after cleanup

    def absorb(signum, _frame):  # once stopping, further signals must not cut the cleanup short
        absorbed.append(signal.Signals(signum).name)

    def on_signal(signum, _frame):
        for s in STOP_SIGNALS:
            signal.signal(s, absorb)
        ended_by.append(signum)
        exc = KeyboardInterrupt() if signum == signal.SIGINT else Stop(signal.Signals(signum).name)
        if tracer.defer_signal(exc):  # in the middle of receiving or explaining: raised when nothing is in hand
            return
        raise exc

    old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    n = 0
    interrupted = False
    deadline = time.monotonic() + duration if duration is not None else None
    problems: list[str] = []
    started = False
    alone: AlonePaths = {}  # to_json's per-path seeds (each line stands alone)

    def show(expl) -> bool:
        """One packet on stdout; False when it cannot be shown any more."""
        try:
            if as_json:
                from ..render import json as rjson

                view.repeats.summary.add(expl)
                obj = json_object(rjson.to_json(expl, alone), tracer.sid, packet_time(expl, time.time()))
                sys.stdout.write(rjson.dumps(obj) + "\n")
                sys.stdout.flush()
            else:
                view.show(expl)
        except OSError:  # the terminal went away (SIGHUP) or the reader closed the pipe
            return False
        return True

    try:
        tracer.setup()
        if dry_run:
            return ExitStatus.OK
        started = True
        fate = f"; {tracer.fate.status}" if tracer.fate is not None else ""
        # a native host is said on the one line shown without -v: what is traced differs (all tables)
        scope = ": the whole nf_tables ruleset, from a table of its own" if tracer.native else ""
        say(f"ruletrace: tracing ({tracer.mode}, session {tracer.sid}{fate}){scope}; Ctrl-C to stop", "dim")

        def stop() -> bool:
            return deadline is not None and time.monotonic() >= deadline

        for expl in tracer.explanations(stop=stop, limit=count):
            n += 1
            if not show(expl):
                break
    except (KeyboardInterrupt, Stop) as e:
        interrupted = True
        say(f"ruletrace: {'interrupted' if isinstance(e, KeyboardInterrupt) else 'got ' + str(e)}: cleaning up")
    finally:
        for s in STOP_SIGNALS:
            signal.signal(s, absorb)
        try:
            # a signal: the packets already received are explained (before the undo, at most
            # LEFTOVER_MAX s) and shown after it, so that output cannot hold up the cleanup
            problems = tracer.teardown(explain_open=interrupted)
        finally:
            for problem in problems:
                say(f"ruletrace: cleanup problem: {problem}", "red")
            if problems:
                say("ruletrace: the session file was kept: run `ruletrace cleanup"
                    + (f" --netns {netns}" if netns else f" --pid {pid}" if pid else "") + "` to retry", "red")
            if absorbed:
                say(f"ruletrace: {', '.join(dict.fromkeys(absorbed))} during cleanup: finished cleaning up first")
            for expl in tracer.leftovers:
                n += 1
                if not show(expl):
                    break
            if started:
                _finish_view(view, say, as_json)
                say("ruletrace: " + acc.summary(tracer.stats, n, rate_limit), "dim")
            for s, h in old.items():
                signal.signal(s, h)
    if problems:  # something of ours is still on the host: trouble, whatever else happened
        return ExitStatus.ERROR
    if interrupted:
        return signal_status(ended_by[0]) if ended_by else ExitStatus.CTRL_C
    return ExitStatus.OK if n else ExitStatus.FOUND_NOTHING


def _finish_view(view, say, as_json: bool) -> None:
    """The end of the live view: repeat counts not yet printed, then fates and deciders."""
    from ..render.live import summary_lines

    try:
        if not as_json:
            view.finish()
    except OSError:
        pass
    for line in summary_lines(view.repeats, say.err.width):
        say(line if line.startswith(" ") else "ruletrace: " + line)  # a decider of the list: indented


def _offer_cleanup(say, *, dry_run: bool, clean: bool) -> None:
    """Every run starts here: leftovers of this namespace are listed, and never removed unasked.

    Only the changes of sessions whose process is provably gone may be undone here, and only
    after a "y" on a terminal; rules without a state file need `ruletrace cleanup --force`.
    """
    from ..live import ownership as own
    from ..live import session as ss

    try:
        lo = own.scan()
        others = own.other_namespace_states()
    except RuletraceError as e:
        say(f"ruletrace: warning: could not look for leftovers: {e}", "yellow")
        return
    if lo:
        say("ruletrace: leftovers of earlier ruletrace sessions in this namespace:", "yellow")
        for st in lo.dead:
            say(f"ruletrace:   {own.describe(st)}: its process is gone", "yellow")
        for st in lo.unproven:
            say(f"ruletrace:   {own.describe(st)}: its process cannot be checked from here", "yellow")
        for o in lo.orphans:
            say(f"ruletrace:   no state file, no live session: {o.line()}", "yellow")
        for p in lo.tmp:
            say(f"ruletrace:   unfinished state file {p}", "yellow")
        ask = clean and not dry_run and (lo.dead or lo.tmp) and sys.stdin.isatty() and sys.stderr.isatty()
        if ask and click.confirm("ruletrace: undo the changes of the sessions whose process is gone?",
                                 default=False, err=True):
            actions = ss.Actions(say=lambda s: say("ruletrace: cleanup: " + s, "dim"))
            problems, _left = own.clean(actions)
            say(f"ruletrace: undid {actions.done} change(s) of killed ruletrace sessions", "yellow")
            for problem in problems:
                say(f"ruletrace: cleanup problem: {problem}", "red")
        else:
            say("ruletrace: left as they are: `ruletrace cleanup` undoes the sessions whose process is gone"
                + (", `ruletrace cleanup --force` also the rest listed" if lo.orphans or lo.unproven else ""),
                "yellow")
    for st in others:
        where = st.netns.get("name") or (f"pid {st.netns['pid']}" if st.netns.get("pid") else st.netns.get("id"))
        say(f"ruletrace: note: killed session {st.sid} left changes in namespace {where}: `ruletrace cleanup`",
            "yellow")


@click.command()
@_netns_options
@click.option("--dry-run", is_flag=True, help="Print what would be undone, change nothing.")
@click.option("--force", is_flag=True,
              help="Also delete rules in the exact shape of a ruletrace rule that have no state file, and "
                   "undo sessions whose process cannot be checked — when no live session holds their marker.")
@click.option("--no-color", is_flag=True, help="No colours.")
def cleanup(netns, pid, dry_run, force, no_color) -> int:
    """Undo what killed ruletrace sessions left behind (rules, nf_log bindings, nf_tables chains).

    Without --netns/--pid: this namespace, plus every other namespace a killed session recorded
    that still exists. Only what a state file records is undone, and only once its session is
    provably gone; see docs/trace.md, "Ownership".
    """
    from ..live import netns as lns
    from ..live import ownership as own
    from ..live import session as ss

    _out, err = make_consoles(no_color=no_color)
    say = _Printer(err)
    if netns or pid:
        _enter_netns(netns, pid)
    actions = ss.Actions(dry_run=dry_run, say=lambda s: say("ruletrace: " + s))
    problems, left = own.clean(actions, force=force)
    if not (netns or pid):
        visited: set[str] = set()
        for st in own.other_namespace_states():
            nid = str(st.netns.get("id"))
            if nid in visited:
                continue
            path = own.find_netns(st)
            if path is None:
                say(f"ruletrace: session {st.sid}: its namespace no longer exists here (no /run/netns name, "
                    "no process, no bind mount holds it): nothing left to undo")
                if not dry_run:
                    st.remove()
                continue
            visited.add(nid)
            with lns.entered(path):
                pr, lf = own.clean(actions, force=force)
            problems += pr
            left += lf
    for line in left:
        say(f"ruletrace: {line}", "yellow")
    for p in problems:
        say(f"ruletrace: problem: {p}", "red")
    if dry_run:
        say("ruletrace: dry run: nothing was changed")
    elif actions.done == 0 and not problems and not left:
        say("ruletrace: nothing to clean up")
    else:
        say(f"ruletrace: undid {actions.done} change(s)")
    return ExitStatus.ERROR if problems else ExitStatus.OK


@click.command()
@_netns_options
@click.option("--no-color", is_flag=True, help="No colours.")
def doctor(netns, pid, no_color) -> int:
    """One screen: can live tracing work here, and what to run if not."""
    from rich.table import Table
    from rich.text import Text

    from ..live import doctor as ldoc
    from ..live import session as ss

    out, _err = make_consoles(no_color=no_color)
    all_netns = ss.nf_log_all_netns()  # readable only in the initial namespace: read before entering
    if netns or pid:
        _enter_netns(netns, pid)
    checks = ldoc.diagnose(all_netns=all_netns)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding")
    styles = {ldoc.OK: "green", ldoc.WARN: "yellow", ldoc.FAIL: "red", ldoc.INFO: "dim"}
    for c in checks:
        table.add_row(Text(c.status, style=styles[c.status]), Text(c.topic), Text(c.text))
    out.print(table)
    fixes = [f for c in checks for f in c.fix]
    if fixes:
        out.print(Text("\nto fix:", style="bold"))
        for f in dict.fromkeys(fixes):
            out.print(Text("  " + f))
    return ExitStatus.ERROR if any(c.status == ldoc.FAIL for c in checks) else ExitStatus.OK
