"""``ruletrace doctor``: can tracing work here, and the exact commands to fix what is missing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RuletraceError
from . import backend as be
from . import ownership as own
from . import session as ss
from .netns import is_initial

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
PF_NAMES = {2: "ipv4", 10: "ipv6"}


@dataclass(slots=True)
class Check:
    """One line of the doctor's screen."""

    topic: str
    status: str  # ok / warn / fail / info
    text: str
    fix: list[str] = field(default_factory=list)  # commands that fix it


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _targets(path: str) -> set[str]:
    text = _read(path)
    return set(text.split()) if text else set()


def legacy_tables(family: str) -> list[tuple[str, int, int]]:
    """(table, chains, rules) per table of iptables-legacy-save (tables loaded in this namespace)."""
    out: list[list[Any]] = []
    for line in be.save(be.LEGACY, family).splitlines():
        if line.startswith("*"):
            out.append([line[1:].strip(), 0, 0])
        elif out and line.startswith(":"):
            out[-1][1] += 1
        elif out and line.startswith("-A "):
            out[-1][2] += 1
    return [(str(t), int(c), int(r)) for t, c, r in out]


def table_checks(rep: be.BackendReport) -> list[Check]:
    """Rules per table and family, nf_tables (native and iptables-nft alike) and legacy xtables,
    with the program that made each nf_tables table where its name tells (a guess, said so)."""
    out: list[Check] = []
    for fam, table, chains, rules, who in rep.tables:
        if who == "native":
            whose = "native nftables, maker not recognised"
        elif who.startswith("iptables-nft"):
            whose = who + " (iptables-nft-save shows it)"
        else:
            whose = f"{who}, going by its name"
        out.append(Check("nf_tables", INFO, f"{fam} {table}: {chains} chains, {rules} rules — {whose}"))
    if not rep.tables:
        out.append(Check("nf_tables", INFO, "no nf_tables tables" + ("" if be.have_tool("nft") else
                                                                     " seen (nft not found)")))
    for fam in be.FAMILIES:
        if not be.have_tool(be.tool(be.LEGACY, fam, save=True)):
            continue
        for table, chains, rules in legacy_tables(fam):
            out.append(Check("legacy", INFO, f"{fam} {table}: {chains} chains, {rules} rules"))
    return out


def diagnose(*, all_netns: str | None = None) -> list[Check]:
    """Every check, in screen order. ``all_netns``: nf_log_all_netns read in the initial namespace."""
    out: list[Check] = []
    root = os.geteuid() == 0
    out.append(Check("privileges", OK if root else FAIL, "running as root" if root else
                     "not root: tracing needs root or CAP_NET_ADMIN", [] if root else ["sudo ruletrace doctor"]))
    initial = is_initial()
    out.append(Check("namespace", INFO, "initial (host) network namespace" if initial else
                     "a non-initial network namespace (container / ip netns)"))
    try:
        rep = be.detect()
    except RuletraceError as e:  # a missing tool must not stop the doctor
        out.append(Check("backend", FAIL, str(e), ["apt-get install iptables   # or your distribution's package"]))
        rep = None
    if rep is not None:
        counts = ", ".join(f"{b}: {rep.counts[b]['ipv4']} IPv4 + {rep.counts[b]['ipv6']} IPv6 rules"
                           for b in be.BACKENDS)
        out.append(Check("backend", OK, f"`iptables` is {rep.default or 'missing'}; {counts}; "
                         f"ruletrace trace would use {rep.chosen}"))
        out += table_checks(rep)
        for w in rep.warnings:
            out.append(Check("backend", WARN, w, ["iptables-legacy-save; iptables-nft-save   # compare, "
                                                  "then move the rules to one backend"]))
        missing = [t for t, have in rep.tools.items() if not have]
        if missing:
            out.append(Check("tools", WARN, f"missing: {', '.join(missing)}", ["apt-get install iptables"]))
    if not be.have_tool("nft"):
        out.append(Check("tools", WARN, "nft not found: nf_tables traces cannot be numbered by rule",
                         ["apt-get install nftables"]))
    bindings = ss.nf_log_bindings()
    if not bindings:
        out.append(Check("nf_log", FAIL, "/proc/net/netfilter/nf_log is missing: no netfilter logging",
                         ["modprobe nf_log_syslog nfnetlink_log"]))
    for pf, fam in PF_NAMES.items():
        bound, avail = bindings.get(pf, ("NONE", []))
        if not bindings:
            break
        fix = []
        if "nfnetlink_log" not in avail and ss.SYSLOG_LOGGER[fam] not in avail:
            st = FAIL
            fix = ["modprobe nfnetlink_log", f"modprobe {ss.SYSLOG_LOGGER[fam]}"]
        elif bound == "NONE":
            st = INFO
        else:
            st = OK
        text = (f"{fam} (pf {pf}) logger: {bound}; available: {', '.join(avail) or 'none'}"
                + ("  (ruletrace binds one for the session and restores this afterwards)" if bound == "NONE" else ""))
        out.append(Check("nf_log", st, text, fix))
    if initial:
        v = ss.nf_log_all_netns()
        all_netns = v if v is not None else all_netns
    if all_netns is None:
        out.append(Check("nf_log_all_netns", INFO, "not readable from here (the sysctl lives in the initial "
                         "namespace); only needed for the /dev/kmsg fallback"))
    elif all_netns.strip() == "1":
        out.append(Check("nf_log_all_netns", OK, "1: kernel-log TRACE lines of containers reach the host log"))
    else:
        out.append(Check("nf_log_all_netns", INFO if initial else WARN,
                         f"{all_netns.strip()}: kernel-log TRACE lines from other namespaces are dropped "
                         "(matters only for the /dev/kmsg fallback)",
                         ["sysctl -w net.netfilter.nf_log_all_netns=1   # in the host namespace"]))
    xt = _targets("/proc/net/ip_tables_targets")
    if xt:
        out.append(Check("TRACE", OK if "TRACE" in xt else WARN,
                         "xt TRACE target " + ("registered" if "TRACE" in xt else "not loaded yet"),
                         [] if "TRACE" in xt else ["modprobe xt_TRACE   # loaded on first use on most kernels"]))
    else:
        out.append(Check("TRACE", INFO, "legacy ip_tables not loaded (fine with nf_tables); "
                         "nf_tables traces with `meta nftrace set 1`"))
    nfl = any("nfnetlink_log" in avail for _b, avail in bindings.values())
    out.append(Check("NFLOG", OK if nfl else WARN, "nfnetlink_log available" if nfl else
                     "nfnetlink_log missing: legacy traces fall back to /dev/kmsg", [] if nfl else
                     ["modprobe nfnetlink_log"]))
    ct = _read("/proc/sys/net/netfilter/nf_conntrack_count")
    out.append(Check("conntrack", OK if ct is not None else INFO,
                     f"conntrack active, {ct.strip()} entries" if ct is not None else
                     "conntrack not loaded in this namespace (state matches load it)"
                     + ("" if be.have_tool("conntrack") else "; conntrack tool missing")))
    from .dropmon import availability

    av = availability()
    out.append(Check("drop reasons", OK if av.ok else WARN,
                     "bpftrace, BTF and tracefs present: `ruletrace trace` shows the kernel's drop reasons" if av.ok
                     else f"off: {av.why}; `ruletrace trace` works without the kernel's drop reasons", av.fix))
    try:
        lo = own.scan()
        others = own.other_namespace_states()
    except RuletraceError as e:
        lo, others = own.Leftovers(), []
        out.append(Check("leftovers", WARN, f"could not scan for leftovers: {e}"))
    if lo or others:
        fix = ["ruletrace cleanup"] + (["ruletrace cleanup --force   # rules without a state file"]
                                       if lo.orphans or lo.unproven else [])
        out.append(Check("leftovers", WARN,
                         f"{len(lo.dead)} killed ruletrace session(s) here, {len(lo.unproven)} that cannot be "
                         f"checked, {len(lo.orphans)} orphaned ruletrace rule(s) (exact shape, no state file), "
                         f"{len(others)} killed session(s) in other namespaces", fix))
    else:
        out.append(Check("leftovers", OK, "no ruletrace rules or session files left behind"))
    if lo.live or lo.live_orphans:
        out.append(Check("sessions", INFO, f"{len(lo.live) + len({o.sid for o in lo.live_orphans})} running "
                         "ruletrace session(s) in this namespace (never touched by cleanup)"))
    return out
