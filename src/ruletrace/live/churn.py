"""Ruleset versions of a live session: snapshots, churn, and which version explains a packet.

Every ruleset snapshot is a numbered version (``versions.py``). nf_tables announces each commit
(``modes.NftModes._poll_nft`` calls ``refresh``); legacy xtables is fingerprinted (``xtgen``) and
re-read when it changed or a packet does not fit. A packet is explained against the version live
when its first step arrived; a legacy packet whose steps do not fit that version is explained
against the one they fit. A mixin of ``tracer.Tracer``, which owns the state declared here.
"""

from __future__ import annotations

import time

from ..analyze import explain_miss, near_miss
from ..errors import RuletraceError
from ..explain.explain import Explainer
from ..model import Explanation, Packet, Ruleset, RulesetView
from ..rulesets import load_ruleset
from ..simulate.miss_words import parse_chain
from . import accounting as acc
from . import backend as be
from . import undo as ud
from .modes import NftModes
from .versions import Version, diff_summary, same_rules


class RulesetVersions(NftModes):
    """Methods of ``Tracer`` that read, number and choose ruleset versions (the state they use is
    declared in ``NftModes``)."""

    @property
    def rule_backend(self) -> str:
        """The backend whose iptables adds the session's rules (legacy when tracing both)."""
        assert self.backend is not None
        return be.LEGACY if self.backend == be.BOTH else self.backend

    # --- snapshots --------------------------------------------------------------------

    def _snapshot(self, n: int) -> Version:
        assert self.backend is not None
        if self.native:
            return self._snapshot_native(n)
        rulesets: dict[str, Ruleset] = {}
        texts: dict[str, str] = {}
        nft_json = None
        for fam in self.spec.families:
            text = be.save(self.backend, fam)
            texts[fam] = text
            if not text.strip():
                continue
            rs = load_ruleset(f"{be.tool(self.backend, fam, save=True)} (live)", text=text)
            rs.family = fam
            if self.backend == be.NFT:
                from .nftrace import attach_handles

                if nft_json is None:
                    nft_json = self._nft_json()
                if nft_json:
                    attach_handles(rs, nft_json, family=fam)
            rulesets[fam] = rs
        return Version(n, time.time(), rulesets, texts)

    @staticmethod
    def _nft_json() -> str:
        import subprocess

        try:
            p = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuletraceError(f"nft -j list ruleset: {e} (the nft tool is needed for rule numbers)") from e
        if p.returncode != 0:
            raise RuletraceError(f"nft -j list ruleset failed: {p.stderr.strip()[:300]}")
        return p.stdout

    def _current_ruleset(self, family: str) -> Ruleset | None:
        return self.versions.latest.rulesets.get(family) if self.versions else None

    def _ruleset(self, version: int, family: str | None) -> Ruleset | None:
        v, _exact = self.versions.get(version)
        return v.rulesets.get(family or "")

    def refresh(self, *, quiet: bool = False) -> bool:
        """Re-read the ruleset; True when it changed (a new version was added)."""
        self._last_refresh = time.monotonic()
        if self._fp is not None:
            self._quick, self._full = self._fp.quick(), self._fp.read()
        new = self._snapshot(self.versions.next_n())
        old = self.versions.latest
        if self.native:
            from .nftsnapshot import changes

            new.changes = changes(old.rulesets, new.rulesets)
            if not new.changes:
                return False
        elif same_rules(new, old, self.spec.families):
            return False
        for fam in () if self.native else self.spec.families:
            new.changes += [f"{fam} {c}" for c in diff_summary(old.texts.get(fam, ""), new.texts.get(fam, ""))]
        if quiet:
            self.versions.replace_latest(new)  # a change of our own: same version, new content
            self._explainers = {k: e for k, e in self._explainers.items() if k[0] != new.n}
            return False
        self.versions.add(new)
        self.stats["changes"] += 1
        self.warn(f"the ruleset changed during the trace (version {new.n} at "
                  f"{time.strftime('%T', time.localtime(new.at))}): {'; '.join(new.changes) or 'reordered'}")
        self._check_own_rules()
        return True

    def _check_own_rules(self) -> None:
        """Re-install the session's rules when a change removed them (an iptables-restore with *raw)."""
        assert self.state is not None and self.backend is not None
        if self.native:
            self._check_own_table()
            if not self.both:
                return
        latest = self.versions.latest
        rss = {k.removeprefix("legacy:"): v for k, v in latest.rulesets.items() if not self.both or k.startswith("legacy:")}
        missing = acc.missing_rules(self.state.rules, rss, self.sid)
        if not missing:
            return
        where = sorted({f"{r.family} raw {r.chain}" for r in missing})
        self.warn(f"the ruleset change removed this session's TRACE rules ({', '.join(where)}): tracing had "
                  "stopped; re-installing them (the loss counts below cover the time since)")
        if self.backend == be.NFT:  # what exists now is not ours to remove at the end
            self.state.made = ud.nft_missing(self.state.rules)
        self.state.save()  # the state lists the rules already: cleanup finds them whatever happens next
        present = [r for r in self.state.rules if r not in missing and (r.family, r.chain) in
                   {(m.family, m.chain) for m in missing}]
        for r in present:  # keep the order: counter rule first, then the TRACE rule
            self.actions.run(r.delete_cmd(self.rule_backend), check=False)
        for r in self.state.rules:
            if r in missing or r in present:
                self.actions.run(r.insert_cmd(self.rule_backend))
        self.stats["reinstalls"] += 1
        self.stats["arrived_before_reinstall"] = self.stats["arrived"]
        self.refresh(quiet=True)

    def _legacy_changed(self, *, full: bool) -> bool:
        """Legacy: did the kernel's tables change since the last snapshot? (cheap; see xtgen)"""
        if self._fp is None:
            return False
        q = self._fp.quick()
        if q != self._quick:
            return True
        return full and self._fp.read() != self._full

    # --- explaining against a version ---------------------------------------------

    def _explainer(self, version: int, family: str | None) -> Explainer:
        key = (version, family)
        ex = self._explainers.get(key)
        if ex is None:
            rss = self.versions.get(version)[0].rulesets
            rs: Ruleset | RulesetView | None = rss.get(family) if family else None
            if family and family.startswith("legacy:"):
                rs = rss.get(family)
            elif self.native:  # each step in the ruleset of its table's family (ip, ip6, inet, …)
                rs = RulesetView([r for k, r in rss.items() if not k.startswith("legacy:")])
            elif rs is None and len(rss) == 1:
                rs = next(iter(rss.values()))
            if len(self._explainers) > 4 * self.versions.max_kept:
                kept = set(self.versions.kept())
                self._explainers = {k: e for k, e in self._explainers.items() if k[0] in kept}
            ex = self._explainers[key] = Explainer(rs)
        return ex

    def _version_view(self, version: int) -> RulesetView:
        """Every ruleset of one version (all families, both backends)."""
        return RulesetView(list(self.versions.get(version)[0].rulesets.values()))

    def _miss_chain(self, spec: str) -> tuple[str, str]:
        """``--explain-miss [TABLE:]CHAIN`` checked against the live ruleset (the latest snapshot)."""
        table, chain = parse_chain(spec)
        view = self._version_view(self.versions.latest_n)
        if not any(rs.chain(table, chain) is not None for rs in view.rulesets):
            raise RuletraceError(f"--explain-miss: no chain {chain} in table {table} of the live ruleset "
                                 f"(backend {self.backend}, {len(view.rulesets)} ruleset(s) read)")
        return table, chain

    def _fits(self, v: int, fam: str | None, pkt: Packet) -> tuple[Explanation, bool]:
        ex = self._explainer(v, fam)
        before = ex.misfit_packets
        expl = ex.explain_cached(pkt)  # each distinct path annotated once (explain/pathcache.py)
        return expl, ex.misfit_packets == before

    def _explain(self, pkt: Packet, versions: list[int], incomplete: list[str] | None = None) -> Explanation:
        if self.both:
            expl = self._explain_both(pkt, versions)
            for why in incomplete or ():
                expl.warnings.append("possibly incomplete: " + why)
            if self.miss_key is not None:  # each part's rules together: the chain of the family it ran in
                explain_miss.annotate(expl, self._version_view(versions[0] if versions else 0), self.miss_key)
            if self.fate is not None:
                self.fate.attach(expl)
            return expl
        fam = pkt.events[0].family if pkt.events else None
        first = versions[0] if versions else 0
        ver, exact = self.versions.get(first)
        v = ver.n
        expl, fits = self._fits(v, fam, pkt)
        tried = {v}
        if not fits and self.backend == be.LEGACY:  # (both: see _explain_both)
            # a legacy change is only seen by re-reading: re-read now, then try the version
            # before (a change noticed in the batch of its steps), and every other kept one
            if v == self.versions.latest_n:
                self.refresh()
            order = ([v - 1] if v in self._ambiguous else []) + sorted(self.versions.kept(), key=lambda n: (n < v, -n))
            for n in order:
                if n in tried or not self.versions.has(n):
                    continue
                tried.add(n)
                e2, ok = self._fits(n, fam, pkt)
                if ok:
                    expl, v = e2, n
                    expl.notes.append(f"its steps do not fit the ruleset version {first} it was taken "
                                      f"for: explained against version {n}, which they fit")
                    break
        if not exact:
            expl.warnings.append(f"the ruleset version this packet saw ({first}) was already dropped (at most "
                                 f"{self.versions.max_kept} versions are kept): explained against version {v}")
        if v > 0:
            cur = self.versions.get(v)[0]
            expl.notes.append(
                f"explained against the ruleset as changed at {time.strftime('%T', time.localtime(cur.at))} "
                f"(version {v}: {'; '.join(cur.changes) or 'reordered'})")
        if len(set(versions)) > 1:
            expl.warnings.append("the ruleset changed while this packet was traced: rule numbers of its "
                                 "later steps may refer to the new ruleset")
        for why in incomplete or ():
            expl.warnings.append("possibly incomplete: " + why)
        if self.untraced:
            from .both import only_one

            only_one(expl, self.untraced)
        view = self._explainer(v, fam).view
        near_miss.annotate(expl, view)  # a drop: the ACCEPT rule one condition away
        if self.miss_key is not None:
            explain_miss.annotate(expl, view, self.miss_key)
        if self.fate is not None:
            self.fate.attach(expl)
        return expl
