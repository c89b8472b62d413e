"""The running trace: set up a session, receive steps, group and explain packets live, undo.

Rule churn: every ruleset snapshot is a numbered version. nf_tables announces each commit
(NFT_MSG_NEWGEN on NFNLGRP_NFTABLES, on the same socket as the trace events, so in order with
them); legacy xtables has no such event, so its ruleset is re-read every few seconds and when a
packet does not fit. A packet is explained against the version live when its first step arrived.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..correlate.group import group_packets
from ..errors import RuletraceError
from ..explain.explain import Explainer
from ..model import Explanation, Packet, Ruleset, StepKind, TraceEvent
from ..rulesets import load_ruleset
from . import backend as be
from . import marker as mk
from . import ownership as own
from . import session as ss
from .netns import is_initial, ns_id

IDLE = 0.25  # seconds without a step after which a packet's path is taken as complete
CHURN_INTERVAL = 2.0  # seconds between re-reads of a legacy ruleset
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop(Exception):
    """A signal asked the trace to end (SIGTERM, SIGHUP)."""


def check_privileges(backend: str | None = None) -> None:
    """Raise a clear error unless we may change netfilter state here and record the session:
    CAP_NET_ADMIN in the effective set (root has it unless a container dropped it), CAP_NET_RAW
    too for the legacy backend (iptables-legacy talks through a raw socket), and a state folder
    we can write. Names only what is missing, and what the process has."""
    missing = [c for c in be.missing_caps() if c == "CAP_NET_ADMIN" or backend == be.LEGACY]
    if missing:
        have = [c for c in be.CAPS if c not in be.missing_caps()]
        raise RuletraceError(f"ruletrace trace{' --backend legacy' if backend == be.LEGACY else ''} needs "
                             f"{' and '.join(missing)} (it adds TRACE rules with iptables and listens on "
                             "netfilter netlink)"
                             + (f"; this process has {', '.join(have)} but not that" if have else "")
                             + ": run it with sudo")
    try:
        ss.STATE_DIR.mkdir(parents=True, exist_ok=True)
        probe = ss.STATE_DIR / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RuletraceError(f"cannot write session state files in {ss.STATE_DIR}: {e.strerror or e} "
                             "(set RULETRACE_STATE_DIR to a writable folder)") from e


@dataclass
class Version:
    """One ruleset snapshot."""

    n: int
    at: float
    rulesets: dict[str, Ruleset]
    texts: dict[str, str]
    changes: list[str] = field(default_factory=list)


def _normal(text: str) -> list[str]:
    """iptables-save text without comments and counters, for change detection."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        out.append(re.sub(r" \[\d+:\d+\]$", "", re.sub(r"^\[\d+:\d+\] ", "", line)))
    return out


def diff_summary(old: str, new: str) -> list[str]:
    """``table:chain +A -R`` per chain whose rules changed between two iptables-save texts."""
    def by_chain(text: str) -> dict[tuple[str, str], list[str]]:
        d: dict[tuple[str, str], list[str]] = {}
        table = ""
        for line in _normal(text):
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A "):
                chain = line.split()[1]
                d.setdefault((table, chain), []).append(line)
        return d

    a, b = by_chain(old), by_chain(new)
    out = []
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key, []), b.get(key, [])
        if ra == rb:
            continue
        added = len([r for r in rb if r not in ra])
        removed = len([r for r in ra if r not in rb])
        moved = " (order changed)" if not added and not removed else ""
        out.append(f"{key[0]}:{key[1]} +{added} -{removed}{moved}")
    return out


class LiveGrouper:
    """Groups steps into packets; a packet is complete after ``idle`` seconds without a step."""

    def __init__(self, idle: float = IDLE) -> None:
        self.idle = idle
        self._open: OrderedDict[object, list[tuple[int, TraceEvent, int]]] = OrderedDict()
        self._last: dict[object, float] = {}
        self._seq = 0
        self._next_id = 1

    def add(self, ev: TraceEvent, version: int, now: float) -> None:
        key = ("id", ev.packet_id) if ev.packet_id is not None else ev.ident
        self._seq += 1
        self._open.setdefault(key, []).append((self._seq, ev, version))
        self._last[key] = now

    def pending(self) -> int:
        return len(self._open)

    def flush(self, now: float, *, everything: bool = False) -> list[tuple[Packet, list[int]]]:
        """Packets whose last step is ``idle`` old (or all): ``(packet, versions of its steps)``."""
        keys = [k for k in self._open if everything or now - self._last[k] >= self.idle]
        if not keys:
            return []
        batch: list[tuple[int, TraceEvent, int]] = []
        for k in keys:
            batch += self._open.pop(k)
            del self._last[k]
        batch.sort(key=lambda x: x[0])
        version_of = {id(ev): v for _s, ev, v in batch}
        out = []
        for pkt in group_packets([ev for _s, ev, _v in batch]):
            pkt.id = self._next_id
            self._next_id += 1
            out.append((pkt, [version_of[id(ev)] for ev in pkt.events]))
        return out


class Tracer:
    """One live trace session: ``setup()``, iterate ``explanations()``, always ``teardown()``."""

    def __init__(self, spec: ss.TraceSpec, *, backend: str = "auto", via: str = "auto",
                 dry_run: bool = False, netns: dict | None = None,
                 say: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
                 idle: float = IDLE, churn_interval: float = CHURN_INTERVAL) -> None:
        self.spec = spec
        self.requested = backend
        self.via = via
        self.dry_run = dry_run
        self.netns = dict(netns or {})
        self.say = say or (lambda s: None)
        self.warn = warn or (lambda s: None)
        self.idle = idle
        self.churn_interval = churn_interval
        self.actions = ss.Actions(dry_run=dry_run, say=self.say)
        self.sid = ss.new_session_id()
        self.marker = mk.Marker(self.sid, dry_run=dry_run)
        self.backend: str | None = None
        self.state: ss.State | None = None
        self.source = None  # NflogListener | KmsgFollower | NetlinkSocket
        self.decoder = None
        self.versions: list[Version] = []
        self.mode = ""  # "nftrace", "nflog", "kmsg"
        self.stats = {"packets": 0, "events": 0, "skipped_by_cap": 0, "overruns": 0, "changes": 0}
        self._explainers: dict[tuple[int, str | None], Explainer] = {}
        self._last_refresh = 0.0
        self._torn_down = False

    # --- setup ------------------------------------------------------------------------

    def setup(self) -> None:
        self.spec.validate()
        rep = be.detect(self.requested)
        if not self.dry_run:
            check_privileges(rep.chosen)
        for w in rep.warnings:
            self.warn(w)
        self.backend = rep.chosen
        assert self.backend is not None
        rules = ss.plan_rules(self.spec, self.sid)
        self.netns.setdefault("id", ns_id())
        self.marker.hold()  # before any change: others in this namespace see the session is alive
        self.state = ss.new_state(self.sid, self.netns, self.backend)
        self.say(f"session {self.sid}: backend {self.backend}"
                 + (f" (legacy {rep.total(be.LEGACY)} rules, nf_tables {rep.total(be.NFT)} rules)"))
        if not self.dry_run:
            self.state.save()
        with mk.netns_lock(dry_run=self.dry_run):  # shared bindings/chains: decided one session at a time
            if self.backend == be.NFT:
                self._open_nftrace()
            else:
                self._open_legacy()
            if self.backend == be.NFT and not self.dry_run:
                own.share_made(self.state, self.marker, ss.nft_missing(rules))  # iptables-nft creates these
            for r in rules:
                self.state.rules.append(r)
                if not self.dry_run:
                    self.state.save()  # recorded before it is made: cleanup can always find it
                self.actions.run(r.insert_cmd(self.backend))
        if self.dry_run:
            return
        self.versions.append(self._snapshot(0))
        if self.backend == be.NFT:
            from .nftrace import NFNLGRP_NFTABLES

            self.say(f"netlink: join group NFNLGRP_NFTABLES ({NFNLGRP_NFTABLES}) to see ruleset changes")
            self.source.join_group(NFNLGRP_NFTABLES)
        self._last_refresh = time.monotonic()

    def _open_nftrace(self) -> None:
        from .netlink import NetlinkSocket
        from .nftrace import NFNLGRP_NFTRACE, TraceDecoder

        self.mode = "nftrace"
        self.say(f"netlink: open NETLINK_NETFILTER socket, join group NFNLGRP_NFTRACE ({NFNLGRP_NFTRACE})")
        if self.dry_run:
            return
        sock = NetlinkSocket()
        sock.join_group(NFNLGRP_NFTRACE)
        self.source = sock
        self.decoder = TraceDecoder(self._current_ruleset)

    def _open_legacy(self) -> None:
        assert self.state is not None
        bindings = ss.nf_log_bindings()
        pfs = [ss.NFPROTO[f] for f in self.spec.families]
        via = self.via
        if via in ("auto", "netlink"):
            from .nflog import NflogListener, config_plan

            for desc, _t, _p in config_plan(pfs):
                self.say(("would send " if self.dry_run else "netlink: ") + desc)
            try:
                for pf in pfs:  # PF_BIND below makes nfnetlink_log the logger: not under another session
                    own.share_nf_log(self.state, self.marker, pf, bindings.get(pf, ("NONE", []))[0],
                                    "nfnetlink_log")
                if self.dry_run:
                    for pf, prev in self.state.nf_log.items():
                        self.say(f"would restore afterwards: {prev} to {ss.NF_LOG_SYSCTL.format(pf=pf)}")
                    self.mode = "nflog"
                    return
                self.state.save()
                listener = NflogListener(pfs)
                listener.open()
                self.source, self.mode = listener, "nflog"
                return
            except RuletraceError as e:
                if via == "netlink":
                    raise
                self.warn(f"{e}; falling back to the kernel log (/dev/kmsg)")
        from .kmsg import KmsgFollower

        self.mode = "kmsg"
        if not is_initial():
            self.warn("reading TRACE from the kernel log of a non-initial namespace needs "
                      "`sysctl -w net.netfilter.nf_log_all_netns=1` in the initial namespace, and lines "
                      "of other namespaces cannot be told apart")
        current = ss.nf_log_bindings()
        for fam in self.spec.families:
            pf = ss.NFPROTO[fam]
            now = current.get(pf, ("NONE", []))[0]
            want = ss.SYSLOG_LOGGER[fam]
            own.share_nf_log(self.state, self.marker, pf, now, want)  # refuses to rebind a shared one
            if now != want:
                if not self.dry_run:
                    self.state.save()
                self.actions.set_nf_log(pf, want)
        if self.dry_run:
            self.say("would read /dev/kmsg from its end")
            return
        follower = KmsgFollower()
        follower.open()
        self.source = follower

    # --- snapshots --------------------------------------------------------------------

    def _snapshot(self, n: int) -> Version:
        assert self.backend is not None
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
        return self.versions[-1].rulesets.get(family) if self.versions else None

    def refresh(self) -> bool:
        """Re-read the ruleset; True when it changed (a new version was added)."""
        self._last_refresh = time.monotonic()
        new = self._snapshot(len(self.versions))
        old = self.versions[-1]
        if all(_normal(new.texts.get(f, "")) == _normal(old.texts.get(f, "")) for f in self.spec.families):
            return False
        for fam in self.spec.families:
            new.changes += [f"{fam} {c}" for c in diff_summary(old.texts.get(fam, ""), new.texts.get(fam, ""))]
        self.versions.append(new)
        self.stats["changes"] += 1
        self.warn(f"the ruleset changed during the trace (version {new.n} at "
                  f"{time.strftime('%T', time.localtime(new.at))}): {'; '.join(new.changes) or 'reordered'}")
        return True

    # --- receiving --------------------------------------------------------------------

    def _poll(self, timeout: float) -> list[TraceEvent]:
        if self.mode == "nftrace":
            from .nftrace import is_newgen, is_trace

            out = []
            for mtype, _f, _s, body in self.source.messages(timeout):
                if is_newgen(mtype):
                    self.refresh()  # events after the commit are numbered against the new version
                elif is_trace(mtype):
                    ev = self.decoder.decode(body)
                    if ev is not None:
                        out.append((ev, len(self.versions) - 1))
            self.stats["overruns"] = self.source.overruns
            return out
        evs = self.source.poll(timeout)
        if self.mode == "nflog":
            self.stats["overruns"] = self.source.overruns
        v = len(self.versions) - 1
        return [(ev, v) for ev in evs]

    def _own(self, ev: TraceEvent, version: int) -> bool:
        """True for a step of one of this session's own rules (the counter and TRACE rules)."""
        if ev.kind is not StepKind.RULE or ev.num is None or ev.table != "raw":
            return False
        rs = self.versions[version].rulesets.get(ev.family or "") if self.versions else None
        rule = rs.rule(ev.table, ev.chain, ev.num) if rs is not None else None
        return rule is not None and ss.TAG + self.sid in rule.text

    def explanations(self, *, stop: Callable[[], bool] = lambda: False) -> Iterator[Explanation]:
        """Explained packets as they complete, until ``stop()`` (checked every 0.1 s)."""
        if self.dry_run:
            return
        grouper = LiveGrouper(self.idle)
        while True:
            ended = stop()
            for ev, v in ([] if ended else self._poll(0.1)):
                self.stats["events"] += 1
                if self._own(ev, v):
                    continue
                grouper.add(ev, v, time.monotonic())
            now = time.monotonic()
            if (self.backend == be.LEGACY and self.churn_interval
                    and now - self._last_refresh >= self.churn_interval):
                self.refresh()
            for pkt, versions in grouper.flush(now, everything=ended):
                self.stats["packets"] += 1
                yield self._explain(pkt, versions)
            if ended:
                return

    def _explainer(self, version: int, family: str | None) -> Explainer:
        key = (version, family)
        ex = self._explainers.get(key)
        if ex is None:
            rss = self.versions[version].rulesets
            rs = rss.get(family) if family else None
            if rs is None and len(rss) == 1:
                rs = next(iter(rss.values()))
            ex = self._explainers[key] = Explainer(rs)
        return ex

    def _explain(self, pkt: Packet, versions: list[int]) -> Explanation:
        fam = pkt.events[0].family if pkt.events else None
        v = versions[0] if versions else 0
        ex = self._explainer(v, fam)
        before = ex.misfit_packets
        expl = ex.explain(pkt)
        if self.backend == be.LEGACY and ex.misfit_packets > before and v == len(self.versions) - 1:
            # a legacy change is only seen by re-reading: re-read now, and retry on a change
            if self.refresh():
                v = len(self.versions) - 1
                expl = self._explainer(v, fam).explain(pkt)
                expl.notes.append("the ruleset changed just before this packet: explained against the "
                                  "new ruleset")
        if v > 0:
            ver = self.versions[v]
            expl.notes.append(
                f"explained against the ruleset as changed at {time.strftime('%T', time.localtime(ver.at))} "
                f"(version {v}: {'; '.join(ver.changes) or 'reordered'})")
        if len(set(versions)) > 1:
            expl.warnings.append("the ruleset changed while this packet was traced: rule numbers of its "
                                 "later steps may refer to the new ruleset")
        return expl

    # --- teardown ---------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Remove exactly what setup added and restore what it changed; returns problems."""
        if self._torn_down or self.state is None:
            return []
        self._torn_down = True
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # cleanup must not be cut short
        try:
            if not self.dry_run and self.backend is not None:
                for fam in self.spec.families:
                    try:
                        seen, traced = ss.rule_counters(self.backend, fam, self.sid)
                    except RuletraceError:
                        continue
                    self.stats["skipped_by_cap"] += max(seen - traced, 0)
            if self.source is not None:
                self.source.close()
                self.source = None
            if self.dry_run:
                for r in reversed(self.state.rules):
                    self.actions.run(r.delete_cmd(self.state.backend))
                return []
            problems = ss.undo(self.state, self.actions, self.marker)
            if not problems:
                self.state.remove()
            self.marker.close()
            return problems
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
