"""``simulate`` on a host whose rules live in both backends: which listings are legacy xtables, and
the explained packet merged from each backend's part (live/both.py's merge, in the simulated order).

A listing is legacy or nf_tables by what wrote it: ``nft list ruleset`` (text or JSON) and
``iptables-nft-save`` ("(nf_tables)" in its header) are nf_tables; ``iptables-legacy-save`` (its
header names no backend) is legacy. Beside an nft listing, a save without a header is taken for
legacy, and that is said; an iptables-nft-save beside an nft listing shows tables that listing
holds already, so it is not walked twice.
"""

from __future__ import annotations

from ..model import Explanation, Packet, Ruleset, RulesetView, Step, TraceEvent, pick_ruleset
from ..simulate.backends import LEGACY, NFT, Both
from ..simulate.engine import SimResult

SAVE = "iptables-save"
__all__ = ["Both", "explain_both", "split_backends", "traced_explanation", "traced_part", "with_legacy"]


def split_backends(all_rs: list[Ruleset]) -> tuple[list[Ruleset], list[Ruleset], list[str]]:
    """(the legacy listings, the others, what was decided about them in words)."""
    native = any(rs.format.startswith("nft") for rs in all_rs)
    legacy: list[Ruleset] = []
    rest: list[Ruleset] = []
    notes: list[str] = []
    for rs in all_rs:
        where = str(rs.origin) if rs.origin else "a listing"
        if rs.format != SAVE or not native:
            rest.append(rs)
        elif rs.backend == "nft":
            notes.append(f"{where}: iptables-nft-save output beside an nft listing: its tables are nf_tables "
                         "tables that listing holds; not walked twice")
        else:
            legacy.append(rs)
            if rs.backend is None:
                notes.append(f"{where}: an iptables-save listing beside an nft listing: walked as "
                             "iptables-legacy's tables (its header does not say which iptables wrote it)")
    if not native:  # iptables-nft-save and iptables-legacy-save of one family: both backends
        for fam in {rs.family for rs in rest if rs.backend == "nft"}:
            others = [rs for rs in rest if rs.family == fam and rs.backend != "nft"]
            for rs in others:
                legacy.append(rs)
                rest.remove(rs)
                if rs.backend is None:
                    notes.append(f"{rs.origin}: an iptables-save listing beside iptables-nft-save output: walked "
                                 "as iptables-legacy's tables (its header does not say which iptables wrote it)")
    return legacy, rest, notes


def with_legacy(legacy: list[Ruleset], nft: Ruleset | list[Ruleset], family: str) -> Ruleset | list[Ruleset] | Both:
    """The packet's rulesets: ``nft`` alone, or with the legacy listing of its family (``Both``)."""
    rs = pick_ruleset(legacy, family)
    if rs is None or rs.family not in (None, family):
        return nft
    return Both(rs, nft)


def _part(events: list[TraceEvent], rs: Ruleset | list[Ruleset], pid: int) -> Explanation:
    from ..explain.explain import Explainer

    view = RulesetView(rs if isinstance(rs, list) else [rs])
    return Explainer(view).explain(Packet(id=pid, events=events))


def explain_both(res: SimResult, both: Both, pid: int) -> Explanation:
    """The simulated packet explained like a both-backends trace: each step with its backend, the
    fate the combined one ("accepted by nft filter:input rule 1, then dropped by legacy …")."""
    from ..explain.explain import explain_packet
    from ..live.both import merge

    by: dict[str, list[TraceEvent]] = {LEGACY: [], NFT: []}
    for e, label in zip(res.events, res.backends, strict=True):
        by[label].append(e)
    parts = [(label, _part(by[label], rs, pid)) for label, rs in ((NFT, both.nft), (LEGACY, both.legacy))
             if by[label]]
    if not parts:  # routing ended it before any chain: the packet as the probe made it
        return explain_packet(Packet(id=pid, events=[], fields=res.final), both.legacy)
    step_of = {id(s.event): (label, s) for label, e in parts for s in e.steps}
    ordered: list[tuple[str, list[Step]]] = []
    for e in res.events:
        got = step_of.get(id(e))
        if got is None:
            continue
        label, s = got
        if ordered and ordered[-1][0] == label:
            ordered[-1][1].append(s)
        else:
            ordered.append((label, [s]))
    expl = merge(Packet(id=pid, events=list(res.events)), parts, missing=[], ordered=ordered)
    # the merge lets a part that ends at an earlier hook through (live/both.py); the walk also knows
    # what happens after the last chain (routing, the socket): its fate is the packet's
    expl.fate = res.fate
    return expl


NFT_SOURCES = frozenset({"nftrace", "nft-monitor", "xtables-monitor"})  # nf_tables' trace; the rest: legacy TRACE


def traced_explanation(packet: Packet, both: Both) -> Explanation:
    """A traced packet of a both-backends host (--compare): each backend's steps against its own
    listing (nf_tables' from nftrace / nft monitor / xtables-monitor, legacy's from TRACE logs),
    merged as a live both-backends trace merges them."""
    from ..live.both import merge

    nft = [e for e in packet.events if e.source in NFT_SOURCES]
    leg = [e for e in packet.events if e.source not in NFT_SOURCES]
    parts = [(label, _part(evs, rs, packet.id)) for label, evs, rs in ((NFT, nft, both.nft), (LEGACY, leg, both.legacy))
             if evs]
    if len(parts) == 1:
        return parts[0][1]
    return merge(packet, parts, missing=[])


def traced_part(res: SimResult, traced: list[TraceEvent]) -> SimResult:
    """The prediction to compare with a trace of one backend only (a TRACE log, or nft monitor trace):
    the predicted steps of that backend; a trace of both is compared with the whole prediction."""
    from dataclasses import replace

    seen = {NFT if e.source in NFT_SOURCES else LEGACY for e in traced}
    if not res.backends or len(seen) != 1:
        return res
    return replace(res, events=[e for e, b in zip(res.events, res.backends, strict=True) if b in seen], trace_start=0)
