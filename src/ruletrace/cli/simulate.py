"""``ruletrace simulate``: predict a packet's path through a ruleset, without root or traffic."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import click

from ..errors import RuletraceError
from ..model import Fate, Origin, Packet, Ruleset, RulesetView
from ..rulesets.options import parse_icmp_type, parse_proto, parse_tcp_flags
from ..simulate.depends import depends_on
from ..simulate.engine import SimResult
from ..simulate.engine import simulate as run_simulation
from ..simulate.hostfacts import HostFacts, load_addrs, load_ipsets, load_routes, load_rules, load_sysctls
from ..simulate.nft_walk import is_native
from ..simulate.probe import CTSTATES, PATHS, Probe, probe_from_fields
from ..simulate.sockets import load_sockets
from .options import complete_netns, complete_protocols
from .simulate_both import Both, explain_both, split_backends, traced_explanation, traced_part, with_legacy
from .status import ExitStatus, simulate_status

_TRUE = {"match": True, "matches": True, "yes": True, "true": True, "on": True, "1": True}
_FALSE = {"nomatch": False, "no-match": False, "no": False, "false": False, "off": False, "0": False}
MAX_COMPARED = 50  # packets of a --compare trace that are simulated
# exit status per predicted fate: status.FATE_STATUS (docs/cli.md, the command's help)


def parse_values(items: tuple[str, ...]) -> dict[str, int]:
    """``KEY=N`` items of --assume: the value a ``numgen`` / ``jhash`` (KEY: the word or TABLE:CHAIN:NUM) takes."""
    out: dict[str, int] = {}
    for item in items:
        key, eq, val = item.partition("=")
        if eq and val.strip().isdigit():
            out[key.strip()] = int(val.strip())
    return out


def parse_assume(items: tuple[str, ...]) -> dict[str, bool]:
    """``KEY=match|nomatch`` (KEY: a match module, ``table:chain:num``, or ``conntrack``) -> dict."""
    out: dict[str, bool] = {}
    for item in items:
        key, eq, val = item.partition("=")
        v = val.strip().lower()
        if eq and v.isdigit() and v not in _TRUE | _FALSE:
            continue  # a numgen / jhash value (parse_values)
        if not eq or not key.strip() or v not in _TRUE | _FALSE:
            raise RuletraceError(f"--assume {item!r}: expected KEY=match or KEY=nomatch "
                                 "(KEY: statistic, limit, set, owner, a module name, TABLE:CHAIN:NUM, conntrack)")
        out[key.strip()] = (_TRUE | _FALSE)[v]
    return out


def _read(path: str) -> str:
    from ..inputs import read_limited

    return read_limited(path, "host facts file").decode("utf-8", "replace")


def _facts(local_addrs: tuple[str, ...], addrs: str | None, routes: str | None, ipset: str | None,
           assume: tuple[str, ...], rules: str | None = None, sysctl: str | None = None,
           sockets: str | None = None) -> HostFacts:
    f = HostFacts(assume=parse_assume(assume), values=parse_values(assume))
    if sockets:
        f.sockets = load_sockets(_read(sockets), sockets, Origin(sockets))
    for a in local_addrs:
        f.add_local(a)
    if addrs:
        load_addrs(_read(addrs), f, origin=Origin(addrs))
    if routes:
        load_routes(_read(routes), f, origin=Origin(routes))
    if rules:
        load_rules(_read(rules), f, origin=Origin(rules))
    if sysctl:
        load_sysctls(_read(sysctl), f, origin=Origin(sysctl))
    if ipset:
        load_ipsets(_read(ipset), f, origin=Origin(ipset))
    return f


EMPTY = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def _from_host(netns: str | None, assume: tuple[str, ...], local_addrs: tuple[str, ...],
               ipset: str | None) -> tuple[HostFacts, list[Ruleset], list[dict[str, Any]]]:
    """Rulesets and host facts read from a running namespace (live/hostread.py)."""
    from ..live.hostread import read_host
    from ..pipeline import load_rulesets

    h = read_host(netns)
    f = HostFacts(assume=parse_assume(assume), values=parse_values(assume))
    for a in local_addrs:
        f.add_local(a)
    load_addrs(h.addrs, f, origin=Origin(h.label("ip -j addr")))
    load_routes(h.routes, f, origin=Origin(h.label("ip -j route show table all")))
    load_rules(h.rules, f, origin=Origin(h.label("ip -j rule")))
    load_sysctls(h.sysctls, f, origin=Origin(h.label("/proc/sys")))
    if ipset:
        load_ipsets(_read(ipset), f, origin=Origin(ipset))
    if h.sockets is not None:
        f.sockets = load_sockets(h.sockets, h.label("ss -lntu"), Origin(h.label("ss -lntu")))
    texts = dict(h.rulesets) or {h.label("no rules in any backend"): EMPTY}
    f.sources.extend(h.notes)
    rs = load_rulesets(list(texts), texts, pair_saves=False)  # the walk reads nft's text of iptables-nft rules
    sources = [{"path": h.label(w), "format": fmt, "role": "host-facts"} for w, fmt in (
        ("ip -j addr", "ip-addr-json"), ("ip -j route show table all", "ip-route-json"),
        ("ip -j rule", "ip-rule-json"), ("/proc/sys", "sysctl"), ("ss -lntu", "ss"))
        if w != "ss -lntu" or h.sockets is not None]
    return f, rs, sources


def with_fate(expl, res: SimResult, sysctls: dict[str, str] | None = None) -> None:
    """The simulated routing decisions and a predicted kernel drop on the explanation, as live tracing shows them."""
    from .. import routes
    from ..explain.ctinvalid import invalid_note
    from ..explain.fate import ROUTING_NOTE
    from ..explain.fatecauses import mark_setter

    if sysctls:
        invalid_note(expl, None, sysctls)  # nf_conntrack_tcp_loose from --sysctl / the host
    expl.routing = [replace(d) for d in res.routing]  # the simulator shares them: worded on copies
    iif = expl.first.get("IN")
    for d in expl.routing:  # where the mark the lookup used was set (from the simulated steps), in words
        if d.mark and d.mark_set is None:
            d.mark_set = mark_setter(expl, None, int(d.mark, 16))
        keys = ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{iif}.rp_filter",
                f"net.ipv4.conf.{iif}.forwarding")
        d.sysctls = {k: (sysctls or {})[k] for k in keys if k in (sysctls or {})} if d.point == "input" else {}
        d.text = routes.describe(d, d.dst or "")
    if res.kernel_drop is not None:
        d = res.kernel_drop
        expl.drops = [d]
        expl.notes = [n for n in expl.notes if n != ROUTING_NOTE]
        expl.fate = res.fate if res.fate is Fate.DELIVERED else Fate.DROPPED
        if res.fate is Fate.DELIVERED:  # NO_SOCKET (simulate/sockets.py): the stack answers it
            expl.notes.append(f"every rule let it through, then the kernel dropped it ({d.reason} in {d.function})")
    elif expl.fate is Fate.UNKNOWN and res.fate is not Fate.UNKNOWN:
        # the steps end early because no chain of the later hooks exists: the simulation knows the end
        expl.fate = res.fate
        expl.notes = [n for n in expl.notes if n != ROUTING_NOTE]
        expl.notes.append(f"{res.fate.value}: the hooks after {expl.last_seen} have no chains in the ruleset "
                          f"(hooks passed: {', '.join(res.hooks)})")


def _pick(all_rs: list[Ruleset], family: str) -> Ruleset | list[Ruleset] | Both:
    """The packet's rulesets: of its family (nf_tables: its family and inet), and beside them the
    legacy xtables listing of its family when both backends hold rules (cli/simulate_both.py)."""
    legacy, rest, _notes = split_backends(all_rs)
    if legacy and not any(rs.family in (None, family, "inet") for rs in rest):
        return _pick_one(legacy, family)  # no nf_tables rules of the family: legacy alone
    return with_legacy(legacy, _pick_one(rest, family), family) if legacy else _pick_one(rest, family)


def _pick_one(rulesets: list[Ruleset], family: str) -> Ruleset | list[Ruleset]:
    """The ruleset of the packet's family; for nf_tables listings, those of its family and inet."""
    from ..model import pick_ruleset

    if is_native(rulesets):
        mine = [rs for rs in rulesets if rs.family in (family, "inet")]
        if not mine:
            have = ", ".join(str(r.family) for r in rulesets)
            raise RuletraceError(f"no nftables table of family {'ip6' if family == 'ipv6' else 'ip'} or inet "
                                 f"(have: {have}): no rule would see the packet", origin=rulesets[0].origin)
        return mine

    rs = pick_ruleset(rulesets, family)
    if rs is None or rs.family not in (None, family):
        have = ", ".join(str(r.family) for r in rulesets)
        raise RuletraceError(f"no {family} ruleset given (have: {have}); give ip6tables-save output for IPv6")
    return rs


def _explain(res: SimResult, rs: Ruleset | list[Ruleset] | Both, pid: int = 1):
    """The simulated path explained like a traced one (packet ``pid``)."""
    from ..analyze import near_miss
    from ..explain.explain import Explainer

    if isinstance(rs, Both):
        return explain_both(res, rs, pid)
    events = list(res.events)
    view = RulesetView(rs if isinstance(rs, list) else [rs])
    if isinstance(rs, list):
        # nf_tables: each step names its table's family (ip, ip6 or inet): the view looks it up in
        # that family's ruleset, as explain does for a monitor's trace; the walk numbers its steps.
        # As for a monitor's trace: the walk reports no step where a regular chain ends (the kernel
        # does not), the explanation wants that return (numbered rules + 1)
        from ..sources.handles import Resolver, add_returns

        resolvers = {id(r): Resolver(r) for r in view.rulesets}
        events = list(add_returns(events))
        for ev in events:
            if ev.num is None and (r := view.pick(ev.family)) is not None:
                resolvers[id(r)].resolve(ev)
    # no event (routing dropped it before any chain): the packet as the probe made it
    e = Explainer(view).explain(Packet(id=pid, events=events, fields=None if res.events else res.final))
    near_miss.annotate(e, view, simulated=True)  # a predicted drop's near miss, as explain gives a traced one's
    return e


def result_json(res: SimResult) -> dict[str, Any]:
    """What only the simulation knows, for the JSON output's ``simulation`` key."""
    v = res.verdict
    return {
        "fate": str(res.fate),
        "verdict": None if v is None else {"action": v.action, "table": v.table, "chain": v.chain, "num": v.num,
                                           "rule": v.rule.text if v.rule else None, "reason": v.reason},
        "hooks": res.hooks,
        "facts": res.facts,
        "assumptions": res.assumptions,
        "branches": [{"table": b.table, "chain": b.chain, "num": b.num, "match": b.match, "taken": b.taken,
                      "note": b.note} for b in res.branches],
        "depends_on": res.depends_on,
        "trace_start": res.trace_start,
        "final": res.final,
        "steps": [{"table": e.table, "chain": e.chain, "kind": str(e.kind), "num": e.num, "fields": e.fields,
                   **({"backend": res.backends[i]} if res.backends else {})} for i, e in enumerate(res.events)],
        **({"decided_by": res.decided_by} if res.backends else {}),
        **({"socket": res.socket} if res.socket is not None else {}),
        "explain_miss": None if res.misses is None else [
            {"table": m.rule.table, "chain": m.rule.chain, "num": m.rule.num, "rule": m.rule.text,
             "reason": m.reason} for m in res.misses],
    }


@click.command()
@click.option("-r", "--ruleset", "rulesets", multiple=True, metavar="FILE",
              help="iptables-save / ip6tables-save output (repeat for IPv4 + IPv6), or nft list ruleset (text or -j); "
                   "iptables-legacy-save output beside an nft listing or iptables-nft-save output: both backends, "
                   "walked together.")
@click.option("--netns", metavar="NAME", shell_complete=complete_netns,
              help="Read the rulesets, addresses, routes, ip rules and sysctls from "
              "this network namespace (read-only; needs root).")
@click.option("--live", is_flag=True, help="Read them from the host (the namespace ruletrace runs in).")
@click.option("-p", "--proto", default=None, metavar="PROTO", shell_complete=complete_protocols,
              help="Protocol name or number (tcp, udp, icmp, 47).")
@click.option("-s", "--src", default=None, metavar="ADDR", help="Source address.")
@click.option("-d", "--dst", default=None, metavar="ADDR", help="Destination address.")
@click.option("--sport", type=click.IntRange(0, 65535), help="Source port (default 40000).")
@click.option("--dport", type=click.IntRange(0, 65535), help="Destination port.")
@click.option("--icmp-type", metavar="T[/CODE]", help="ICMP(v6) type, number or name (default echo-request).")
@click.option("--tcp-flags", metavar="FLAGS", help="TCP flags, e.g. SYN or ACK,PSH (default SYN for NEW).")
@click.option("-i", "--in-interface", "iif", metavar="IN", help="Input interface (default eth0).")
@click.option("-o", "--out-interface", "oif", metavar="OUT", help="Output interface (default: from --routes).")
@click.option("--path", type=click.Choice(PATHS), help="input, forward or output (default: from local addresses).")
@click.option("--ctstate", type=click.Choice(CTSTATES, case_sensitive=False), default=None,
              help="Conntrack state of the packet (default NEW, stated when the verdict depends on it); "
                   "only NEW traverses nat.")
@click.option("--mark", default="0", metavar="M", help="Initial packet mark.")
@click.option("--ctmark", default="0", metavar="M", help="Initial connection mark.")
@click.option("--uid", type=int, help="Socket owner uid (OUTPUT path, -m owner).")
@click.option("--gid", type=int, help="Socket owner gid (OUTPUT path, -m owner).")
@click.option("--length", type=click.IntRange(20, 65535), help="Packet length (LEN).")
@click.option("--ttl", type=click.IntRange(0, 255), help="TTL / hop limit as the packet arrives (default 64).")
@click.option("--local-addr", "local_addrs", multiple=True, metavar="[IFACE=]ADDR[/LEN]",
              help="A local address of the host (repeat).")
@click.option("--addrs", metavar="FILE", help="`ip -j addr` output of the host.")
@click.option("--routes", metavar="FILE", help="`ip -j route show table all` (or `ip -j route`) output of the host.")
@click.option("--rules", "ip_rules", metavar="FILE", help="`ip -j rule` output of the host (policy routing).")
@click.option("--sysctl", "sysctl_file", metavar="FILE",
              help="`sysctl -a` output of the host: ip_forward, forwarding and rp_filter decide fates.")
@click.option("--ipset", metavar="FILE", help="`ipset save` output of the host.")
@click.option("--sockets", "sockets_file", metavar="FILE",
              help="`ss -lntu` output of the host: a TCP SYN or UDP datagram no socket takes is answered with a "
                   "reset / ICMP port unreachable (without it, whether a socket listens is not checked).")
@click.option("--assume", multiple=True, metavar="KEY=match|nomatch",
              help="Decide a match the simulator cannot: statistic=nomatch, nat:KUBE-SVC-X:1=nomatch, foo=match; "
                   "numgen=N picks the value of an nft numgen/jhash; legacy-first=match runs legacy tables before "
                   "nf_tables chains of the same priority.")
@click.option("--explain-miss", metavar="[TABLE:]CHAIN", help="List the rules of CHAIN that did not match, and why.")
@click.option("--compare", "compare_path", metavar="TRACEFILE",
              help="Simulate the packets of a trace and show where prediction and trace part ways.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the explain schema + 'simulation').")
@click.option("--no-color", is_flag=True, help="No colours.")
@click.option("-v", "--verbose", is_flag=True, help="Show the packet fields of every step.")
@click.option("--width", type=int, help="Output width (default: the terminal's).")
def simulate(rulesets, netns, live, proto, src, dst, sport, dport, icmp_type, tcp_flags, iif, oif, path, ctstate, mark, ctmark,
             uid, gid, length, ttl, local_addrs, addrs, routes, ip_rules, sysctl_file, ipset, sockets_file, assume,
             explain_miss, compare_path, as_json, no_color, verbose, width) -> int:
    """Predict where a packet goes through a ruleset, rule by rule, without root or traffic.

    \b
    Example:
      ruletrace simulate -r node.rules -p tcp -s 10.0.0.5 \\
          -d 192.168.10.11 --dport 52000 -i eth0

    Every host fact the answer depends on (local addresses, routes, conntrack state, ipsets) is
    given or defaulted, and stated in the output with every assumption made.

    \b
    Exit status:
      0  delivered, forwarded or sent
      3  dropped
      4  rejected
      5  unknown (queued to user space, or no decision)
      6  delivered but no socket takes it (TCP reset / ICMP port unreachable)
      2  bad input
    With --compare: 0 every traced packet agrees with its prediction,
    1 some part ways.
    """
    from ..pipeline import load_rulesets

    if netns or live:
        if rulesets or addrs or routes or ip_rules or sysctl_file or sockets_file:
            raise click.UsageError("--netns/--live read the rulesets and host facts themselves: "
                                   "give no -r/--addrs/--routes/--rules/--sysctl/--sockets with them")
        facts, all_rs, host_sources = _from_host(netns, assume, local_addrs, ipset)
    else:
        if not rulesets:
            raise click.UsageError("give a ruleset (-r FILE), or read a running one with --netns NAME / --live")
        facts = _facts(local_addrs, addrs, routes, ipset, assume, ip_rules, sysctl_file, sockets_file)
        all_rs = load_rulesets(list(rulesets), pair_saves=False)  # the walk reads nft's text of iptables-nft rules
        host_sources = _fact_sources(addrs, routes, ipset, ip_rules, sysctl_file, sockets_file)
    facts.sources.extend(split_backends(all_rs)[2])  # which listing was walked as which backend
    if not as_json:  # (the JSON document holds them in its "warnings")
        _say_warnings(all_rs, no_color)
    if compare_path:
        return _compare(all_rs, facts, compare_path, path, as_json, no_color, width, explain_miss,
                        host_sources)
    if not (proto and src and dst):
        raise click.UsageError("give the packet: -p PROTO -s SRC -d DST (or --compare TRACEFILE)")
    o = Origin("command line")
    v6 = ":" in src or ":" in dst
    itype = icode = None
    if icmp_type:
        itype, icode = parse_icmp_type(icmp_type, v6, o)
        icode = icode or 0
    try:
        mark_i, ctmark_i = int(mark, 0), int(ctmark, 0)
    except ValueError:
        raise RuletraceError(f"bad --mark/--ctmark {mark!r}/{ctmark!r}", origin=o) from None
    probe = Probe(proto=parse_proto(proto, o), src=src, dst=dst, sport=sport, dport=dport, icmp_type=itype,
                  icmp_code=icode, iif=iif, oif=oif, path=path, ctstate=(ctstate or "NEW").upper(), mark=mark_i,
                  ctmark=ctmark_i, tcp_flags=parse_tcp_flags(tcp_flags, o) if tcp_flags else None,
                  length=length, uid=uid, gid=gid, ttl=ttl)
    rs = _pick(all_rs, probe.family)
    res = run_simulation(rs, probe, facts, explain_miss=explain_miss)
    expl = _explain(res, rs)
    with_fate(expl, res, facts.sysctls)
    if res.socket is not None and expl.verdict is not None and expl.fate is Fate.DELIVERED:
        # the headline: what the socket does, or that it was not checked (after both backends' words)
        expl.verdict.reason = f"{expl.verdict.reason}; {res.socket}" if res.backends else res.socket
    with_depends(expl, res, rs, probe, facts, ctstate_given=ctstate is not None)
    if as_json:
        _write_json([(expl, res, None)], all_rs, host_sources)
    else:
        _print(expl, res, None, no_color=no_color, width=width, verbose=verbose)
    return simulate_status(res.fate, res.kernel_drop.reason if res.kernel_drop else None)


def with_depends(expl, res: SimResult, rs: Ruleset | list[Ruleset] | Both, probe: Probe, facts: HostFacts, *,
                 ctstate_given: bool) -> None:
    """The assumptions the verdict rests on (simulate/depends.py), in ``res.depends_on`` and the headline."""
    deps = depends_on(rs, probe, facts, res, ctstate_given=ctstate_given)
    if deps and expl.drops:  # the headline shows the kernel's drop reason: it says what it rests on
        expl.drops[0].text += f"; if {', '.join(deps)}, assumed"
    elif deps and expl.verdict is not None:
        # the headline (render/tree.py) shows the verdict's reason: it says what the verdict rests on
        expl.verdict.reason = f"{expl.verdict.reason}{'; ' if expl.verdict.reason else ''}if {', '.join(deps)}, assumed"
    res.depends_on = deps


def _compare(all_rs: list[Ruleset], facts: HostFacts, trace: str, path: str | None, as_json: bool,
             no_color: bool, width: int | None, explain_miss: str | None, sources: list[dict[str, Any]]) -> int:
    from ..correlate.group import group_packets
    from ..explain.explain import Explainer
    from ..simulate.compare import compare, traced_ctstate
    from ..sources.detect import read_any
    from .console import make_consoles, say_read

    rows = []
    fates: list[tuple[Fate, Fate]] = []  # (traced, predicted)
    formats: list[str] = []
    _out, err = make_consoles(no_color=no_color)

    def heard(path: str, fmt: str) -> None:
        formats.append(fmt)
        say_read(err, path, fmt)

    events = read_any([trace], on_format=heard)
    for n, pkt in enumerate(group_packets(events)):
        if n >= MAX_COMPARED or not pkt.events:
            break
        first = pkt.events[0]
        probe = probe_from_fields(first.fields)
        if not probe.src or not probe.dst:
            continue
        traced_state = traced_ctstate(all_rs, pkt.events)
        probe.ctstate = traced_state or probe.ctstate  # a packet that skipped nat is not NEW
        probe.path = path or ("output" if first.chain in ("OUTPUT",) or (not probe.iif and probe.oif) else None)
        if probe.path is None and not (facts.local or facts.routes):
            probe.path = "forward" if any(e.chain in ("FORWARD",) for e in pkt.events) else "input"
        rs = _pick(all_rs, probe.family)
        res = run_simulation(rs, probe, facts, explain_miss=explain_miss)
        expl = _explain(res, rs, pkt.id)
        with_fate(expl, res, facts.sysctls)
        # what the prediction rests on, as a single simulation says it (the trace's state, where it shows one, is given)
        with_depends(expl, res, rs, probe, facts, ctstate_given=traced_state is not None)
        rows.append((expl, res, compare(traced_part(res, pkt.events) if isinstance(rs, Both) else res, pkt.events)))
        traced = (traced_explanation(pkt, rs) if isinstance(rs, Both)
                  else Explainer(RulesetView(rs if isinstance(rs, list) else [rs])).explain(pkt))
        fates.append((traced.fate, res.fate))
    if not rows:
        raise RuletraceError("no traced packet with addresses found", origin=Origin(trace))
    known = [(t, p) for t, p in fates if t is not Fate.UNKNOWN]
    count = (f"compare: {sum(c.agree for _, _, c in rows)} of {len(rows)} traced packet(s) agree with their "
             f"prediction step by step; the fate agrees for {sum(t == p for t, p in known)} of the {len(known)} "
             "whose trace shows it")
    if as_json:
        trace_source = {"path": trace, "format": formats[0] if formats else None, "role": "trace"}
        _write_json(rows, all_rs, [*sources, trace_source])
    else:
        for expl, res, cmp in rows:
            _print(expl, res, cmp, no_color=no_color, width=width, verbose=False,
                   header=f"traced packet {expl.packet.id}")
    click.echo(count, err=as_json)
    return ExitStatus.OK if all(c.agree for _, _, c in rows) else ExitStatus.DIFFERENT


def _say_warnings(all_rs: list[Ruleset], no_color: bool) -> None:
    """The rulesets' warnings (a guessed table, lines left out), on stderr as explain says its own."""
    from ..render.theme import clean  # warnings carry text from the input
    from .console import make_consoles

    _out, err = make_consoles(no_color=no_color)
    for w in (w for rs in all_rs for w in rs.warnings):
        err.print(f"ruletrace: warning: {clean(w)}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _write_json(rows, all_rs: list[Ruleset], sources: list[dict[str, Any]]) -> None:
    """The explain document (render/json.py, docs/json-schema.json), each packet with its ``simulation``."""
    from ..render.json import write_document
    from ..render.summary import Summary

    summ = Summary()
    sims: dict[int, dict[str, Any]] = {}
    for expl, res, cmp in rows:
        sim = result_json(res)
        if cmp is not None:
            sim["compare"] = cmp.to_json()
        sims[id(expl)] = sim
    rs_sources = [{"path": str(rs.origin) if rs.origin else "", "format": rs.format, "role": "ruleset"}
                  for rs in all_rs]
    warnings = [w for rs in all_rs for w in rs.warnings]
    write_document((summ.add(expl) for expl, _, _ in rows), sys.stdout, summary=summ, warnings=warnings,
                   sources=rs_sources + sources, extra=lambda e: {"simulation": sims[id(e)]})


def _fact_sources(addrs: str | None, routes: str | None, ipset: str | None, rules: str | None = None,
                  sysctl: str | None = None, sockets: str | None = None) -> list[dict[str, Any]]:
    """The host-fact files, as ``sources`` of the JSON document (role ``host-facts``)."""
    given = (("ip-addr-json", addrs), ("ip-route-json", routes), ("ipset-save", ipset), ("ip-rule-json", rules),
             ("sysctl", sysctl), ("ss", sockets))
    return [{"path": p, "format": f, "role": "host-facts"} for f, p in given if p]


def _print(expl, res: SimResult, cmp, *, no_color: bool, width: int | None, verbose: bool,
           header: str | None = None) -> None:
    """The terminal view; every string that came from the ruleset, the trace or a host-fact file is
    cleaned of control characters (render.theme.clean), like the tree view does."""
    from rich.text import Text

    from ..render.theme import THEME, clean, safe
    from ..render.tree import to_renderable
    from .console import make_consoles

    out, _err = make_consoles(no_color=no_color, width=width)
    if header:
        out.print(Text(header, style="bold"))
    with out.use_theme(THEME):
        out.print(to_renderable(expl, verbose=verbose))
    lines: list[tuple[str, str]] = []
    for f in res.facts:
        lines.append(("fact", f))
    for a in res.assumptions:
        lines.append(("assumed", a))
    for b in res.branches:
        lines.append(("branch", f"{b.table}:{b.chain}:{b.num} {b.match}: {b.note}"))
    out.print(Text("simulation (predicted, not traced)", style="bold"))
    if not lines:
        out.print(Text("  nothing assumed"))
    for label, text in lines:
        out.print(Text.assemble(("  " + label.ljust(9), "dim"), safe(text)))
    if res.misses is not None:
        out.print(Text("rules that did not match", style="bold"))
        if not res.misses:
            out.print(Text("  (the packet did not traverse the chain, or every rule it reached matched)"))
        for m in res.misses:
            out.print(Text.assemble((f"  {clean(m.rule.table)}:{clean(m.rule.chain)}:{clean(m.rule.num)}  ", "dim"),
                                    safe(m.rule.text)))
            out.print(safe(f"      {m.reason}"))
    if cmp is not None:
        if cmp.agree:
            out.print(Text(f"compare: the trace and the prediction agree ({len(cmp.traced)} steps)"))
        else:
            out.print(safe(f"compare: they part ways at step {(cmp.diverge_at or 0) + 1}: the trace shows "
                           f"{cmp.expected}, the simulation predicts {cmp.got}", "bold"))
        for d in cmp.field_diffs[:10]:
            out.print(safe(f"  {d}"))
