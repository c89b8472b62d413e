"""Both backends in one walk: legacy xtables tables beside nf_tables base chains, as the kernel runs them.

Legacy ip_tables / ip6_tables tables and nf_tables base chains hook into the same netfilter hooks,
each at its own priority: a legacy table at the standard one (include/uapi/linux/netfilter_ipv4.h
NF_IP_PRI_*: raw -300, conntrack -200, mangle -150, nat -100 before routing and on output / 100
after, filter 0, security 50), an nft base chain at what it declares. On each hook the kernel runs
every registered entry in priority order (nf_hook_slow): an accept ends only that table or base
chain, the next one still sees the packet; drop, reject or queue end the hook. Conntrack runs once,
at -200. The nat chains of both backends run inside the one NAT hook of the hook (nf_nat_inet_fn),
by their priorities, for a connection's first packet only, and the first one that sets up the
mapping ends them.

Two entries of the two backends at one priority run in reverse registration order
(nf_hook_entries_insert_raw: the later one is inserted first), which no listing shows: nf_tables
is assumed to run first, ``--assume legacy-first=match`` turns it round, and the assumption is
stated whenever such a tie is on the packet's way.

``BothCompiled`` offers the engine what ``compiled.Compiled`` and ``nft_walk.NftCompiled`` offer
(``hook``, ``uses_conntrack``) and walks each side with that side's own walk: legacy tables by
walker.py's chain functions (the fast path; the table piece of ``walker.make_hook``) or by
``reference.walk_table``; nf_tables base chains by their generated functions (the fast path:
nft_gen.py's ``chain_fn``, run as the base-chain piece of ``nft_gen.hook_fn`` runs it) or by
``NftCompiled.walk`` (the reference). tests/simulate/test_backends.py checks both walks give the
same results. Every step is labelled with its backend (the engine's ``backends``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..errors import RuletraceError
from ..model import Ruleset, StepKind
from .compiled import Compiled, compiled, nat_manip
from .nft_walk import CT_PRIO, NAT_PRIO, NFT_HOOK, NftCompiled
from .reference import walk_table
from .semantics import ACCEPT

LEGACY, NFT = "legacy", "nft"
# NF_IP_PRI_* / NF_IP6_PRI_* of the legacy tables (nat: nft_walk.NAT_PRIO of the hook)
TABLE_PRIO = {"raw": -300, "mangle": -150, "filter": 0, "security": 50}
ORDER_KEY = "legacy-first"  # --assume legacy-first=match: legacy runs first at equal priority
_cache: dict[tuple[Any, ...], BothCompiled] = {}


@dataclass(eq=False, slots=True)
class Both:
    """The rulesets of both backends of one host: ``legacy`` (iptables-legacy-save of the packet's
    family) and ``nft`` (nf_tables: native listings, or iptables-nft-save output)."""

    legacy: Ruleset
    nft: Ruleset | list[Ruleset]

    @property
    def nft_list(self) -> list[Ruleset]:
        return self.nft if isinstance(self.nft, list) else [self.nft]


# an entry of a hook: (priority, backend, kind, item); kinds: "ct", "nat" (item: [(priority,
# backend, kind, item)] of its chains), "xt" (item: a legacy plan entry (table, chain, empty)),
# "nft" (item: an nft base chain)
Entry = tuple[int, str, str, Any]


def _side(cc: Compiled | NftCompiled, hook: str, label: str) -> list[Entry]:
    """One backend's entries of a hook, in the order that backend runs them, with their priorities."""
    h = NFT_HOOK[hook]
    out: list[Entry] = []
    if isinstance(cc, NftCompiled):
        for kind, x in cc.plan(hook):
            if kind == "ct":
                out.append((CT_PRIO, label, "ct", None))
            elif kind == "nat":
                out.append((NAT_PRIO[h], label, "nat", [(ch.priority, label, "nft", ch) for ch in x]))
            else:
                out.append((x.priority, label, "nft", x))
        return out
    for t, base, empty in cc.plan(hook):
        if t == "conntrack":
            out.append((CT_PRIO, label, "ct", None))
        elif t == "nat":
            out.append((NAT_PRIO[h], label, "nat", [] if base is None else [(NAT_PRIO[h], label, "xt", (t, base, empty))]))
        else:
            out.append((TABLE_PRIO[t], label, "xt", (t, base, empty)))
    return out


def _merged(a: list[Entry], b: list[Entry]) -> list[Entry]:
    """Two backends' entries (each in its own order) in the order the hook runs them; at one
    priority, ``a``'s first."""
    out: list[Entry] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and a[i][0] <= b[j][0]):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


def plan(legacy: Compiled, nft: Compiled | NftCompiled, hook: str, legacy_first: bool) -> tuple[list[Entry], list[str]]:
    """A hook's entries over both backends, one conntrack entry and one NAT entry; and the ties:
    (words) an entry of each backend at one priority, whose order the listings do not show."""
    first, second = (LEGACY, NFT) if legacy_first else (NFT, LEGACY)
    sides = {LEGACY: _side(legacy, hook, LEGACY), NFT: _side(nft, hook, NFT)}
    out: list[Entry] = []
    nat: list[Entry] = []
    for e in _merged(sides[first], sides[second]):
        if e[2] == "ct":
            if not any(o[2] == "ct" for o in out):
                out.append(e)
        elif e[2] == "nat":
            if not nat:
                out.append((e[0], e[1], "nat", nat))
            nat[:] = _merged(nat, e[3])  # at one priority, the first backend's chain first
        else:
            out.append(e)
    ties = []
    chains = [e for e in out if e[2] in ("xt", "nft")] + nat
    for prio in sorted({e[0] for e in chains}):
        at = [e for e in chains if e[0] == prio]
        if len({e[1] for e in at}) > 1:
            ties.append(f"{', '.join(_name(e) for e in at[:-1])} and {_name(at[-1])} hook {hook} at one priority ({prio})")
    return out, ties


def _name(e: Entry) -> str:
    if e[2] == "xt":
        return f"{e[1]} {e[3][0]}:{hook_chain(e[3])}"
    ch = e[3]
    return f"{e[1]} {ch.family} {ch.table}:{ch.name}"


def hook_chain(item: tuple[str, Any, Any]) -> str:
    return str(item[1].name) if item[1] is not None else "?"


class BothCompiled:
    """Both backends of a packet's family compiled: each hook's entries over both, run in order."""

    def __init__(self, legacy: Compiled, nft: Compiled | NftCompiled, fast: bool, legacy_first: bool) -> None:
        self.legacy = legacy
        self.nft = nft
        self.fast = fast
        self.legacy_first = legacy_first
        self.uses_conntrack = legacy.uses_conntrack or nft.uses_conntrack
        self.hooks: dict[str, Callable[..., str]] = {}
        self.ties: dict[str, list[str]] = {}

    def backend_of(self, chain: Any) -> str:
        """The backend of a walked chain (the engine's decider)."""
        for label, cc in ((LEGACY, self.legacy), (NFT, self.nft)):
            if isinstance(cc, Compiled) and cc.chains.get((chain.table, chain.name)) is chain:
                return label
        return NFT

    def hook(self, hook: str) -> Callable[..., str]:
        fn = self.hooks.get(hook)
        if fn is None:
            entries, self.ties[hook] = plan(self.legacy, self.nft, hook, self.legacy_first)
            fn = self.hooks[hook] = partial(self.run_hook, hook, entries)
        return fn

    def run_hook(self, hook: str, entries: list[Entry], p: Any, c: Any, R: Any) -> str:
        """nf_hook_slow over both backends' entries (nft_walk.NftCompiled.run_hook and
        reference.run_hook for one backend)."""
        p.hook = hook
        R.hooks.append(hook)
        for tie in self.ties[hook]:
            c.note(f"{tie}: the kernel runs the one registered later first, which the listings do not show; "
                   f"assumed {'legacy xtables' if self.legacy_first else 'nf_tables'} first "
                   f"(--assume {ORDER_KEY}={'nomatch' if self.legacy_first else 'match'} to change)")
        for _prio, label, kind, x in entries:
            if kind == "ct":
                if not p.ct:
                    R.conntrack(p, c)
                continue
            if kind == "nat":
                manip = nat_manip(hook)
                if not p.ct or p.ctstate != "NEW" or manip in p.nat_done:
                    continue  # nat chains only for a connection's first packet
                p.nat_done += (manip,)
                before = (p.dst, p.dport)
                for _p, lab, k, item in x:
                    v = self._run(lab, k, item, hook, p, c, R)
                    if v != ACCEPT:
                        return v
                    if p.dnat if manip == "dst" else p.snat:
                        break  # the mapping is set up: the hook's later nat chains do not run
                if hook == "OUTPUT" and (p.dst, p.dport) != before:
                    R.reroute(p, c)  # ip_route_me_harder after DNAT
                continue
            v = self._run(label, kind, x, hook, p, c, R)
            if v != ACCEPT:
                return v
        return ACCEPT

    def _run(self, label: str, kind: str, item: Any, hook: str, p: Any, c: Any, R: Any) -> str:
        """One table (legacy) or base chain (nf_tables); its steps are labelled ``label``."""
        n = len(R.events)
        if kind == "nft":
            assert isinstance(self.nft, NftCompiled)  # "nft" entries come from native listings
            if self.fast and item.fn is not None:
                # the base-chain piece of nft_gen.hook_fn: the chain's function, its policy when it returned
                R.jumps = 0
                r = item.fn(p, c, R)
                v = self.nft.policy(item, p, R, item.family) if r is None else r
            else:
                v = self.nft.walk(item, p, c, R)
        else:
            cc = self.legacy if label == LEGACY else self.nft
            t, base, _empty = item
            if self.fast and base.walk is not None:
                # the table piece of walker.make_hook: the chain's function, its policy when it returned
                r = base.walk(p, c, R)
                if r is None:
                    R.step(t, base.name, StepKind.POLICY, len(base.rules) + 1, p)
                    r = R.policy(base)
                v = r
            else:
                saved, R.cc = R.cc, cc  # walk_table resolves jumps through R.cc: this backend's chains
                try:
                    v = walk_table(t, base, p, c, R)
                finally:
                    R.cc = saved
        R.backends.extend([label] * (len(R.events) - n))
        return v


def both_compiled(legacy: Compiled, nft: Compiled | NftCompiled, fast: bool, legacy_first: bool) -> BothCompiled:
    """The combined form (cached for the few most recent pairs; the entry holds both, so ids stay theirs)."""
    key = (id(legacy), id(nft), fast, legacy_first)
    b = _cache.get(key)
    if b is None or b.legacy is not legacy or b.nft is not nft:
        if len(_cache) >= 4:
            _cache.pop(next(iter(_cache)))
        b = _cache[key] = BothCompiled(legacy, nft, fast, legacy_first)
    return b


def combined(both: Both, nft: Compiled | NftCompiled, fam: str, index: bool, fast: bool, assume: dict[str, bool],
             explain_miss: str | None) -> BothCompiled:
    """The engine's compiled form of ``both`` for a packet of ``fam`` (``nft``: its nf_tables side, compiled)."""
    leg = both.legacy
    if leg.family not in (None, fam):
        raise RuletraceError(f"the legacy ruleset is {leg.family} but the packet is {fam}", origin=leg.origin)
    if explain_miss:
        raise RuletraceError("--explain-miss is not available when both backends hold rules yet", origin=leg.origin)
    return both_compiled(compiled(leg, fam == "ipv6", index), nft, fast, bool(assume.get(ORDER_KEY)))
