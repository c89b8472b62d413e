"""Live tracing on native nf_tables hosts: the session's own table, its packets and trace events.

A native host (firewalld, fw4, kube-proxy's nftables mode, a hand-written nftables.conf) keeps
its rules in tables `iptables-save` never shows. A session therefore installs its tracing in a
table of its own, ``table inet ruletrace_<sid>`` (``<sid>``: the session's 32 hex digits), with
one base chain per traced hook at priority -350 — before conntrack (-200) and every table of
iptables (raw is -300) — holding two rules per chain::

    <filter> counter comment "ruletrace:<sid>:seen"
    <filter> limit rate N/second burst N packets counter meta nftrace set 1 comment "ruletrace:<sid>"

The whole table is created in one ``nft -f`` transaction and deleted by its name at the end, so
nothing else in the ruleset is touched. Every trace event names its table: the session's own
events (the rule that set nftrace, its chain's policy) are left out of the explanation; a
packet whose trace starts in the table of another session is that session's.

The whole ruleset is read in ``nftsnapshot.py`` (sessions' tables left out).
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import RuletraceError
from ..model import MonitorEvent, Origin, Packet, Ruleset, StepKind, TraceEvent, nft_rule_key
from ..rulesets.nft_model import FAMILIES
from ..sources import nflog
from . import nfthooks as eh
from . import nftrace as nt
from .netlink import be32, be64, cstr, parse_attrs
from .nfthooks import EarlyHooks

if TYPE_CHECKING:
    from .ownpackets import Verdict
    from .session import TraceSpec

PREFIX = "ruletrace_"
OWN_FAMILY = "inet"
OWN_FAMILIES = (OWN_FAMILY, "netdev", "bridge")  # the session's tables: inet, and the early hooks' (nfthooks)
PRIORITY = -350
CHAINS = {"PREROUTING": ("pre", "prerouting"), "OUTPUT": ("out", "output")}
SOURCE = "nftrace"
TABLE_RE = re.compile(PREFIX + r"([0-9a-f]{32})")
# nft table families -> ruletrace's family names (as the nft listing readers use them)
NFPROTO_FAMILY = nflog.FAMILIES  # sources/nflog, the one home of netfilter's family numbers
_SAFE_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PORTS = re.compile(r"[A-Za-z0-9-]+(?::[A-Za-z0-9-]*)?|:[A-Za-z0-9-]+")
_IFACE = re.compile(r"[^\s\"'\\;{}#]{1,15}")
CMD_TIMEOUT = 30.0


def table_name(sid: str) -> str:
    return PREFIX + sid


def is_own_table(name: str) -> bool:
    """A table in the exact name shape of a session's table (any session)."""
    return TABLE_RE.fullmatch(name) is not None


# --- the session's table -------------------------------------------------------------------


def _neg(value: str) -> tuple[str, str]:
    value = value.strip()
    return ("!= ", value[1:].strip()) if value.startswith("!") else ("", value)


def match_expr(spec: TraceSpec, chain: str) -> list[str]:
    """nft match expressions for a TraceSpec in one chain (PREROUTING / OUTPUT) of an inet table.

    Every value is checked before it goes into the nft script: addresses by ``ipaddress``,
    ports, protocols and interface names by their grammar.
    """
    out: list[str] = []
    fams = tuple(spec.families)
    if fams == ("ipv4",):
        out.append("meta nfproto ipv4")
    elif fams == ("ipv6",):
        out.append("meta nfproto ipv6")
    proto = (spec.proto or "").lower()
    if proto and proto not in ("all", "0"):
        if not _SAFE_WORD.fullmatch(proto):
            raise RuletraceError(f"-p {spec.proto!r}: not a protocol name or number")
        if proto in ("icmp", "icmpv6", "ipv6-icmp", "icmp6"):
            names = {"ipv4": "icmp", "ipv6": "ipv6-icmp"}
            want = [names[f] for f in fams] if proto == "icmp" else ["ipv6-icmp"]
            out.append("meta l4proto " + (want[0] if len(want) == 1 else "{ " + ", ".join(want) + " }"))
        else:
            out.append(f"meta l4proto {proto}")
    for value, key in ((spec.src, "saddr"), (spec.dst, "daddr")):
        if value:
            op, addr = _neg(value)
            try:
                net = ipaddress.ip_network(addr, strict=False)
            except ValueError as e:
                raise RuletraceError(f"{value!r} is not an address or network") from e
            out.append(f"{'ip' if net.version == 4 else 'ip6'} {key} {op}{net.compressed}")
    for value, key in ((spec.sport, "sport"), (spec.dport, "dport")):
        if value:
            op, ports = _neg(value)
            if not _PORTS.fullmatch(ports):
                raise RuletraceError(f"{value!r} is not a port or a range PORT:PORT")
            lo, sep, hi = ports.partition(":")
            text = f"{lo or 0}-{hi or 65535}" if sep else lo
            out.append(f"{proto} {key} {op}{text}")
    if spec.iface:
        op, name = _neg(spec.iface)
        if not _IFACE.fullmatch(name):
            raise RuletraceError(f"-i {spec.iface!r}: not an interface name")
        if name.endswith("+"):
            name = name[:-1] + "*"
        out.append(f'{"iifname" if chain == "PREROUTING" else "oifname"} {op}"{name}"')
    if spec.raw_text.strip() or spec.raw_match:
        from .nftraw import clause

        out.append(clause(spec))  # an nft match expression, checked (nftraw.py)
    return out


def _chain_lines(cname: str, head: str, matches: list[str], spec: TraceSpec, sid: str) -> list[str]:
    pre = " ".join(matches) + " " if matches else ""
    return [
        f"\tchain {cname} {{",
        f"\t\t{head}",
        f'\t\t{pre}counter comment "ruletrace:{sid}:seen"',
        f"\t\t{pre}limit rate {spec.rate}/second burst {spec.rate} packets counter meta nftrace set 1 "
        f'comment "ruletrace:{sid}"',
        "\t}",
    ]


def own_scripts(spec: TraceSpec, sid: str, hooks: EarlyHooks | None = None) -> dict[str, str]:
    """nft family -> the ``nft -f`` text of the session's table in it: inet always, netdev and
    bridge for the early hooks (``nfthooks``) of the ruleset."""
    hooks = hooks or EarlyHooks()
    name = table_name(sid)
    iface = bool(spec.iface)
    lines = [f"table {OWN_FAMILY} {name} {{"]
    for chain in spec.chains():
        cname, hook = CHAINS[chain]
        m = match_expr(spec, chain) + eh.skip_exprs(hooks, OWN_FAMILY, chain, iface=iface)
        lines += _chain_lines(cname, f"type filter hook {hook} priority {PRIORITY}; policy accept;", m, spec, sid)
    out = {OWN_FAMILY: "\n".join(lines + ["}"]) + "\n"}
    for family in hooks.families():
        if "PREROUTING" not in spec.chains():
            break  # the early hooks see incoming packets only
        m = eh.ether(match_expr(spec, "PREROUTING")) + eh.skip_exprs(hooks, family, "bridge", iface=iface)
        lines = [f"table {family} {name} {{"]
        for cname, head in eh.chain_heads(hooks, family):
            lines += _chain_lines(cname, head, m, spec, sid)
        out[family] = "\n".join(lines + ["}"]) + "\n"
    return out


def table_script(spec: TraceSpec, sid: str, hooks: EarlyHooks | None = None) -> str:
    """The ``nft -f`` script that creates the session's tables in one transaction."""
    return "".join(own_scripts(spec, sid, hooks).values())


def run_nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None


def table_exists(family: str, name: str) -> bool:
    p = run_nft("list", "table", family, name)
    return p is not None and p.returncode == 0


def _own_rules(sid: str, families: list[str] | tuple[str, ...], *args: str) -> list[tuple[str, dict[str, Any]]] | None:
    """``(nft family, rule)`` of the session's tables in ``families`` (``nft -j``), None when one is unreadable."""
    out = []
    for fam in families:
        p = run_nft(*args, "-j", "list", "table", fam, table_name(sid))
        if p is None or p.returncode != 0:
            return None
        try:
            items = json.loads(p.stdout).get("nftables", [])
        except (ValueError, AttributeError):
            return None
        out += [(fam, item["rule"]) for item in items if isinstance(item, dict) and isinstance(item.get("rule"), dict)]
    return out


def counters(sid: str, families: list[str] | tuple[str, ...] = (OWN_FAMILY,)) -> tuple[int, int] | None:
    """Packets counted by the session's (seen, trace) rules in its tables, None when unreadable
    (each packet meets one pair: ``nfthooks``)."""
    rules = _own_rules(sid, families)
    if rules is None:
        return None
    seen = traced = 0
    for _fam, rule in rules:
        n = sum(int(e["counter"].get("packets", 0)) for e in rule.get("expr", [])
                if isinstance(e, dict) and isinstance(e.get("counter"), dict))
        if str(rule.get("comment", "")).endswith(":seen"):
            seen += n
        else:
            traced += n
    return seen, traced


def rule_handles(sid: str, families: list[str] | tuple[str, ...] = (OWN_FAMILY,)) -> dict[tuple[str, int], str]:
    """(family as events name it, handle) -> ``seen`` / ``trace`` for the rules of the session's
    tables (handles are per table; empty when unreadable)."""
    out: dict[tuple[str, int], str] = {}
    for fam, rule in _own_rules(sid, families, "-a") or []:
        if isinstance(rule.get("handle"), int):
            kind = "seen" if str(rule.get("comment", "")).endswith(":seen") else "trace"
            out[(FAMILIES[fam], rule["handle"])] = kind
    return out


# --- orphans: a session's table without a state file -----------------------------------------


def own_tables() -> list[tuple[str, str]]:
    """``(nft family, name)`` of every table in the exact name shape of a session's table."""
    out = []
    for fam in OWN_FAMILIES:
        p = run_nft("list", "tables", fam)
        if p is None or p.returncode != 0:
            continue
        for line in p.stdout.splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "table" and words[1] == fam and is_own_table(words[2]):
                out.append((fam, words[2]))
    return out


def exact_shape(name: str, family: str = OWN_FAMILY) -> bool:
    """True when table ``<family> <name>`` holds exactly what a session writes, nothing else:
    base chains ``pre``/``out`` (inet: filter, prerouting/output, priority -350, policy accept;
    netdev / bridge: ``nfthooks.chain_shape``) with rules commented ``ruletrace:<sid>`` /
    ``ruletrace:<sid>:seen`` of the table's own id."""
    m = TABLE_RE.fullmatch(name)
    p = run_nft("-j", "list", "table", family, name) if family in OWN_FAMILIES else None
    if m is None or p is None or p.returncode != 0:
        return False
    sid = m[1]
    try:
        items = json.loads(p.stdout).get("nftables", [])
    except (ValueError, AttributeError):
        return False
    hooks = {c: h for c, h in CHAINS.values()}
    for item in items:
        if not isinstance(item, dict) or "metainfo" in item or "table" in item:
            continue
        if "chain" in item:
            c = item["chain"]
            if family != OWN_FAMILY:
                if not eh.chain_shape(family, c):
                    return False
            elif (c.get("name") not in hooks or c.get("hook") != hooks[c["name"]] or c.get("prio") != PRIORITY
                    or c.get("type") != "filter" or c.get("policy") != "accept"):
                return False
        elif "rule" in item:
            if item["rule"].get("comment") not in (f"ruletrace:{sid}", f"ruletrace:{sid}:seen"):
                return False
        else:
            return False  # sets, maps, objects: not something a session writes
    return True


def judge(pkt: Packet, versions: list[int], sid: str, spec: TraceSpec, *, others: bool,
          handles: dict[tuple[str, int], str] | None = None) -> Verdict:
    """Own or not (``ownpackets.Verdict``) for a packet traced through a session's table: its
    events in any session's table are left out, chain returns nf_tables does not report are put
    back (``handles.add_returns``, as for ``nft monitor trace``)."""
    from ..sources.handles import add_returns
    from .ownpackets import Verdict, spec_fits

    whose = own_start(pkt.events, sid)
    if handles:
        # a trace another session started also reports our rules when they match: the packet is
        # ours when our tracing rule matched it, and was left out by our cap when only our
        # counter rule did
        mine = {handles.get((ev.family or "", ev.handle or -1)) for ev in pkt.events if ev.table == table_name(sid)}
        whose = "own" if "trace" in mine else "other" if "seen" in mine else whose
    out = Verdict(False)
    version_of = {id(ev): v for ev, v in zip(pkt.events, versions)}
    last = versions[0] if versions else 0
    for ev in add_returns(ev for ev in pkt.events if not is_own_table(ev.table)):
        last = version_of.get(id(ev), last)
        out.events.append(ev)
        out.versions.append(last)
    if whose == "own":
        out.own = True
    elif whose == "unknown" and pkt.events:
        first = pkt.events[0]
        chain = "OUTPUT" if first.fields.get("OUT") and not first.fields.get("IN") else "PREROUTING"
        fit = spec_fits(spec, first.fields, chain)
        out.own = fit is True or (fit is None and not others)
        if out.own:
            out.incomplete.append("its first steps are missing (the trace does not start in one of the "
                                  f"session's tables {table_name(sid)})")
    return out


# --- events -----------------------------------------------------------------------------------


class NativeDecoder(nt.TraceDecoder):
    """NFT_MSG_TRACE -> events named by their *table's* family, with the listed rule's text and
    position (by handle), like ``nft -a monitor trace`` read against ``nft -a -s list ruleset``."""

    def __init__(self, rulesets: Callable[[], dict[str, Ruleset]],
                 ifname: Callable[[int], str] | None = None) -> None:
        super().__init__(lambda fam: None, ifname, keep_trace_rule=True)
        self.native_rulesets = rulesets  # () -> {family: Ruleset} of the live version

    def decode(self, body: bytes, *, now: float | None = None) -> TraceEvent | None:
        self.records += 1
        a = parse_attrs(body, 4)
        table = cstr(a.get(nt.NFTA_TRACE_TABLE, b""))
        chain = cstr(a.get(nt.NFTA_TRACE_CHAIN, b""))
        ttype = be32(a[nt.NFTA_TRACE_TYPE]) if nt.NFTA_TRACE_TYPE in a else 0
        tid = be32(a[nt.NFTA_TRACE_ID]) if nt.NFTA_TRACE_ID in a else None
        family = NFPROTO_FAMILY.get(body[0] if body else 0, str(body[0] if body else 0))
        proto = be32(a[nt.NFTA_TRACE_NFPROTO]) if nt.NFTA_TRACE_NFPROTO in a else (body[0] if body else 0)
        fields, ident = self._fields(tid, proto, a)  # the decoder's fields and their packet_ident
        handle = be64(a[nt.NFTA_TRACE_RULE_HANDLE]) if nt.NFTA_TRACE_RULE_HANDLE in a else None
        verdict = nt.verdict_name(a[nt.NFTA_TRACE_VERDICT]) if nt.NFTA_TRACE_VERDICT in a else None
        rs = self.native_rulesets().get(family)
        ch = rs.chain(table, chain) if rs is not None else None
        end_num = len(ch.rules) + 1 if ch is not None else None
        num: int | None = None
        text: str | None = None
        if ttype == nt.NFT_TRACETYPE_POLICY:
            kind = StepKind.POLICY
            num = end_num
            if nt.NFTA_TRACE_POLICY in a:
                verdict = nt.VERDICTS.get(be32(a[nt.NFTA_TRACE_POLICY]), verdict)
        elif ttype == nt.NFT_TRACETYPE_RETURN or (ttype == nt.NFT_TRACETYPE_RULE and handle is None):
            if ch is not None and ch.hook is not None:
                return None  # the end of a base chain: its policy event follows
            kind, num, verdict = StepKind.RETURN, end_num, "return"
        elif ttype == nt.NFT_TRACETYPE_RULE:
            kind = StepKind.RULE
            rule = rs.handles.get((table, chain, handle)) if rs is not None and handle is not None else None
            if rule is not None:
                num, text = rule.num, nft_rule_key(rule.text)
            elif not is_own_table(table):
                self.unknown_handles += 1
        else:
            return None
        return MonitorEvent(table, chain, kind, num, ts=now if now is not None else time.time(), family=family,
                            handle=handle, ident=ident, packet_id=tid, verdict=verdict,
                            origin=Origin("netlink", self.records), source=SOURCE, fields=fields, text=text,
                            base=nt.NFTA_TRACE_NETWORK_HEADER in a)



def own_start(pkt_events: list[TraceEvent], sid: str) -> str:
    """Whose trace a packet is: ``own`` (its first event is in this session's table), ``other``
    (another session's table), or ``unknown`` (the start was lost, or tracing was switched on
    by a rule outside any session's table)."""
    if not pkt_events:
        return "unknown"
    t = pkt_events[0].table
    if t == table_name(sid):
        return "own"
    return "other" if is_own_table(t) else "unknown"
