"""Which assumptions a simulated verdict depends on: the headline must not present a guess as fact.

Each assumption the engine made without being told (the input or output interface, the path, the
conntrack state NEW, a statistic/limit branch, a match it cannot evaluate) is tried the other way
in one more simulation; those that change the fate or the deciding rule are the verdict's
conditions ("OUT=eth1", "conntrack state NEW"). Only the single-probe command and --compare (its
first packets, cli/simulate.MAX_COMPARED) run this (one simulation per assumption), never the batch walks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import RuletraceError
from ..explain.owners import rule_interfaces
from ..fields import show_address
from ..model import Ruleset
from .backends import Both
from .engine import ASSUMED_IIF, SimResult, simulate
from .hostfacts import HostFacts
from .probe import Probe

OTHER_IFACE = "rt-other0"  # an interface name no rule is written for
# interfaces the path's rules name, each tried as the assumed one's other value (one simulation each);
# a path whose rules name more is rare (a Docker host with that many networks): the first ones are tried
IFACES_MAX = 64


def _path_ifaces(rs: Ruleset | list[Ruleset] | Both, res: SimResult) -> list[str]:
    """The interfaces the rules of the chains the packet walked name (``-o docker0``, ``oifname
    "br0"``), in the order of the path and its rules: another value of an assumed interface that
    could change the verdict is one of them, or none (OTHER_IFACE); a wildcard (``veth+``) is tried
    as one interface it covers."""
    sets = [rs.legacy, *rs.nft_list] if isinstance(rs, Both) else rs if isinstance(rs, list) else [rs]
    walked = dict.fromkeys((ev.table, ev.chain) for ev in res.events)  # in path order
    out: dict[str, None] = {}
    for table, chain in walked:
        for one in sets:
            ch = one.chain(table, chain)
            for r in ch.rules if ch is not None else ():
                for name in rule_interfaces(r.text):
                    out[name[:-1] + "0" if name.endswith(("+", "*")) else name] = None
    return list(out)[:IFACES_MAX]


def _outcome(res: SimResult) -> tuple[Any, ...]:
    v = res.verdict
    return (res.fate, None) if v is None else (res.fate, v.action, v.table, v.chain, v.num)


def depends_on(rs: Ruleset | list[Ruleset] | Both, probe: Probe, facts: HostFacts, res: SimResult, *,
               ctstate_given: bool = True) -> list[str]:
    """The assumptions (in words) whose other value changes the fate or the deciding rule."""
    base = _outcome(res)
    out: list[str] = []

    def differs(pr: Probe, f: HostFacts = facts) -> bool:
        try:
            return _outcome(simulate(rs, pr, f)) != base
        except RuletraceError:
            return False

    pinned = replace(probe, path=res.path)
    if probe.path is None and not facts.knows_local():
        # a packet that came in on an interface is not one this host sends
        others = [p for p in ("input", "forward", "output") if p != res.path and not (probe.iif and p == "output")]
        if any(differs(replace(probe, path=p)) for p in others):
            # the assumption is the destination's locality: after a DNAT the packet may be forwarded all the same
            out.append(f"{show_address(probe.dst)} local" if res.path == "input" and "FORWARD" in res.hooks else f"path {res.path}")
    named = _path_ifaces(rs, res)
    if probe.iif is None and res.path != "output" and any(
            differs(replace(pinned, iif=i)) for i in [OTHER_IFACE, *named] if i != ASSUMED_IIF):
        out.append(f"IN={ASSUMED_IIF}")
    if res.assumed_out is not None and any(
            differs(replace(pinned, oif=i)) for i in [OTHER_IFACE, *named] if i != res.assumed_out):
        out.append(f"OUT={res.assumed_out}")
    if not ctstate_given and probe.ctstate == "NEW" and differs(replace(probe, ctstate="ESTABLISHED")):
        out.append("conntrack state NEW")
    seen: set[str] = set()
    for b in res.branches:
        key = f"{b.table}:{b.chain}:{b.num}"
        if key in seen or key in facts.assume or "value" in b.note[:6]:
            continue  # numgen/jhash values (--assume KEY=N) are not flipped here
        seen.add(key)
        if differs(probe, replace(facts, assume={**facts.assume, key: not b.taken})):
            out.append(f"{key} {b.match} {'matched' if b.taken else 'did not match'}")
    for key in dict.fromkeys(res.guessed):
        if differs(probe, replace(facts, assume={**facts.assume, key: True})):
            out.append(f"{key} did not match")
    return out
