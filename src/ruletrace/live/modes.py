"""The nf_tables parts of a live session that traces from its own table (``nftnative``) and,
with legacy xtables beside it, both backends at once (``both``): a mixin of ``tracer.Tracer``,
which owns the state these methods use."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import RuletraceError
from ..model import Explanation, Packet, Ruleset, TraceEvent
from ..rulesets import load_ruleset
from . import backend as be
from . import ownpackets
from . import session as ss
from .versions import Version, Versions

if TYPE_CHECKING:
    from ..explain.explain import Explainer
    from .fatehooks import Fate
    from .netlink import NetlinkSocket
    from .nftrace import TraceDecoder
    from .xtgen import Fingerprint


class NftModes:
    """Methods of ``Tracer`` for the native nf_tables and both-backends modes.

    The state of a ``Tracer`` that its mixins (this one and ``churn.RulesetVersions``) use is
    declared here; ``Tracer.__init__`` sets it."""

    spec: ss.TraceSpec
    sid: str
    backend: str | None
    state: ss.State | None
    actions: ss.Actions
    warn: Callable[[str], None]
    stats: dict[str, Any]
    versions: Versions
    native: bool
    both: bool
    untraced: str | None
    fate: Fate | None
    miss_key: tuple[str, str] | None  # --explain-miss: (table, chain)
    _explainers: dict[tuple[int, str | None], Explainer]
    _ambiguous: set[int]
    _last_refresh: float
    _fp: Fingerprint | None
    _quick: object
    _full: str | None
    decoder: TraceDecoder | None
    _own_handles: dict[tuple[str, int], str]
    _hooks: Any  # nfthooks.EarlyHooks
    _other_tables: bool
    _snapshot_warning: str | None

    if TYPE_CHECKING:  # defined in churn.RulesetVersions
        def refresh(self, *, quiet: bool = False) -> bool: ...
        def _ruleset(self, version: int, family: str | None) -> Ruleset | None: ...
        def _explainer(self, version: int, family: str | None) -> Explainer: ...

    def own_families(self) -> list[str]:
        """The nft families of the session's own tables (inet, and netdev / bridge: ``nfthooks``)."""
        return [fam for fam, _t in self.state.tables] if self.state is not None else []

    def _check_own_table(self) -> None:
        """Native: re-create the session's tables a change removed (``nft flush ruleset``)."""
        from . import nftnative as nn

        name = nn.table_name(self.sid)
        scripts = nn.own_scripts(self.spec, self.sid, self._hooks)
        gone = [fam for fam in self.own_families() if fam in scripts and not nn.table_exists(fam, name)]
        if not gone:
            return
        self.warn(f"the ruleset change removed this session's table(s) {', '.join(f'{f} {name}' for f in gone)}: "
                  "tracing had stopped; re-creating (the loss counts below cover the time since)")
        self.actions.run(["nft", "-f", "-"], stdin="".join(scripts[fam] for fam in gone))
        self._own_handles = nn.rule_handles(self.sid, self.own_families())
        self.stats["reinstalls"] += 1
        self.stats["arrived_before_reinstall"] = self.stats["arrived"]

    def _poll_nft(self, source: NetlinkSocket, timeout: float) -> list[tuple[TraceEvent, int]]:
        from ..sources.nflog import DECODE_ERRORS
        from .nftrace import TraceDecoder, is_newgen, is_trace

        decoder = self.decoder
        assert decoder is not None  # set with the nftrace / native mode
        # the plain decoder's fast path (its step part once per distinct message); the native one walks
        decode = decoder.decode_fast if type(decoder) is TraceDecoder else decoder.decode
        out = []
        for mtype, _f, _s, body in source.messages(timeout):
            if is_newgen(mtype):
                self.refresh()  # events after the commit are numbered against the new version
            elif is_trace(mtype):
                try:
                    ev = decode(body)
                except DECODE_ERRORS:  # a short or damaged attribute: counted, never a traceback
                    self.stats["damaged"] += 1
                    continue
                if ev is not None:
                    out.append((ev, self.versions.latest_n))
        return out

    def _judge_both(self, pkt: Packet, versions: list[int]) -> ownpackets.Verdict:
        """Both backends: each part judged as its backend's session would; the packet is ours
        when either part is (the legacy events first, then the nf_tables ones)."""
        from . import both
        from .nftnative import judge

        v_of = {id(ev): v for ev, v in zip(pkt.events, versions)}
        leg, nft = both.split(pkt.events)
        out = ownpackets.Verdict(False)
        if leg:
            legacy = ownpackets.judge(Packet(pkt.id, leg), [v_of[id(e)] for e in leg],
                                      lambda v, fam: self._ruleset(v, "legacy:" + (fam or "")), self.sid, self.spec,
                                      nft=False, others=False)
            out.own = legacy.own
            out.events += legacy.events
            out.versions += legacy.versions
            out.incomplete += [f"legacy: {w}" for w in legacy.incomplete]
        if nft:
            n = judge(Packet(pkt.id, nft), [v_of[id(e)] for e in nft], self.sid, self.spec, others=self._other_tables,
                      handles=self._own_handles)
            out.own = out.own or n.own
            out.events += n.events
            out.versions += n.versions
            out.incomplete += [f"nf_tables: {w}" for w in n.incomplete]
        return out

    def _explain_both(self, pkt: Packet, versions: list[int]) -> Explanation:
        """Both backends: each part explained against its own ruleset, merged in the kernel's order."""
        from . import both

        v_of = {id(ev): v for ev, v in zip(pkt.events, versions)}
        leg, nft = both.split(pkt.events)
        parts = []
        fam = (leg[0].family if leg else None) or "ipv4"
        rss = self.versions.get(v_of[id(pkt.events[0])])[0].rulesets if pkt.events else {}
        holds = {both.NFT_LABEL: both.held([r for k, r in rss.items() if not k.startswith("legacy:")],
                                           fam if leg else None, pkt.events),
                 both.LEGACY_LABEL: both.held([r for k, r in rss.items() if k == "legacy:" + fam], None, pkt.events)}
        if nft:
            v = v_of[id(nft[0])]
            parts.append((both.NFT_LABEL, self._explainer(v, "nft").explain(Packet(pkt.id, nft))))
        if leg:
            v = v_of[id(leg[0])]
            parts.append((both.LEGACY_LABEL, self._explainer(v, "legacy:" + fam).explain(Packet(pkt.id, leg))))
        missing = ([] if leg else ["legacy xtables"]) + ([] if nft else ["nf_tables"])
        return both.merge(pkt, parts, missing=missing, holds=holds)

    def _snapshot_native(self, n: int) -> Version:
        """The whole nf_tables ruleset (sessions' tables left out), and when tracing both, the
        legacy rulesets keyed apart (``legacy:ipv4``)."""
        from . import nftnative as nn
        from . import nftsnapshot as snap

        full = snap.list_ruleset()
        self._other_tables = any(t != nn.table_name(self.sid) for t in snap.own_tables_in(full))
        text = snap.strip_own_tables(full)
        rulesets, why = snap.read_snapshot(text)
        if why and why != getattr(self, "_snapshot_warning", None):
            self._snapshot_warning = why
            self.warn(why)
        texts = {"nft": text}
        for fam in self.spec.families if self.both else ():
            texts[fam] = save = be.save(be.LEGACY, fam)
            if save.strip():
                rs = load_ruleset(f"{be.tool(be.LEGACY, fam, save=True)} (live)", text=save)
                rs.family = fam
                rulesets["legacy:" + fam] = rs
        return Version(n, time.time(), rulesets, texts)

    def _count_native(self) -> None:
        """Packets counted by the session tables' rules. Both backends: the nf_tables table's rule
        is the only switch (the nftrace flag it sets is the one legacy TRACE logs by too; the
        legacy side has counter rules only), so its counter is every packet either backend traced;
        when the two backends' counter rules saw different numbers of the filter's packets (one
        dropped some before the other's hook), both numbers are said."""
        from .nftnative import counters

        got = counters(self.sid, self.own_families())
        if got is None:
            self.stats["traced"] = None
        else:
            self.stats["skipped_by_cap"] += max(got[0] - got[1], 0)
            self.stats["traced"] += got[1]
        if not self.both or got is None:
            return
        legacy_seen = 0
        for fam in self.spec.families:
            try:
                legacy_seen += ss.rule_counters(be.LEGACY, fam, self.sid)[0]
            except RuletraceError:
                return
        if legacy_seen != got[0]:
            self.stats["seen_by"] = {"nf_tables": got[0], "legacy xtables": legacy_seen}
