"""The running trace: set up a session, receive steps, group and explain packets live, undo.

Rule churn (snapshots, versions, which version explains a packet) is in ``churn.py``, a mixin
of ``Tracer``: nf_tables announces each commit (NFT_MSG_NEWGEN on NFNLGRP_NFTABLES, on the same
socket as the trace events, so in order with them); legacy xtables has no such event: a cheap
fingerprint of the kernel's tables (xtgen) is checked after every batch of steps (table sizes)
and every few seconds (the whole tables). Versions are kept only while open packets refer to
them (versions.py). Only the session's own packets are shown (ownpackets.py); what
the kernel traced and what arrived is counted (accounting.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import RuletraceError
from ..explain.explain import Explainer
from ..model import Explanation, Packet
from . import accounting as acc
from . import backend as be
from . import marker as mk
from . import ownership as own
from . import session as ss
from . import undo as ud
from .grouper import IDLE, LiveGrouper
from .netns import is_initial, ns_id
from .receiving import Receiving
from .versions import MAX_KEPT, Version, Versions, diff_summary

if TYPE_CHECKING:  # imported where used: each backend loads only its own modules
    from .fatehooks import Fate
    from .nftrace import TraceDecoder
    from .xtgen import Fingerprint

__all__ = ["LiveGrouper", "Stop", "Tracer", "Version", "diff_summary", "check_privileges"]

CHURN_INTERVAL = 2.0  # seconds between full fingerprints of a legacy ruleset (xtgen)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LEFTOVER_MAX = 1.0  # seconds at most, after a signal, to take in and explain the packets already received


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


class Tracer(Receiving):
    """One live trace session: ``setup()``, iterate ``explanations()``, always ``teardown()``."""

    def __init__(self, spec: ss.TraceSpec, *, backend: str = "auto", via: str = "auto",
                 dry_run: bool = False, netns: dict[str, Any] | None = None,
                 say: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
                 note: Callable[[str], None] | None = None, idle: float = IDLE,
                 churn_interval: float = CHURN_INTERVAL, max_versions: int = MAX_KEPT,
                 explain_miss: str | None = None) -> None:
        self.spec = spec
        self.explain_miss = explain_miss  # "[TABLE:]CHAIN": checked against snapshot 0 in setup
        self.miss_key: tuple[str, str] | None = None
        self.requested = backend
        self.via = via
        self.dry_run = dry_run
        self.netns = dict(netns or {})
        self.say = say or (lambda s: None)
        self.warn = warn or (lambda s: None)
        self.idle = idle
        self.churn_interval = churn_interval
        # say: every command and netlink change (shown with -v / --dry-run); note: always shown
        self.actions = ss.Actions(dry_run=dry_run, say=self.say, note=note)
        self.sid = ss.new_session_id()
        self.marker = mk.Marker(self.sid, dry_run=dry_run)
        self.backend: str | None = None
        self.state: ss.State | None = None
        # NflogListener | KmsgFollower | NetlinkSocket: read through messages() or poll() by mode
        self.source: Any = None
        self.decoder: TraceDecoder | None = None
        self.versions = Versions(max_versions)
        self.mode = ""  # "nftrace", "nflog", "kmsg"
        self.stats = acc.new_stats()
        self._explainers: dict[tuple[int, str | None], Explainer] = {}
        self._ambiguous: set[int] = set()  # legacy versions noticed in a batch of steps: they may have seen the one before
        self._last_refresh = 0.0
        self._last_quick = 0.0
        self._fp: Fingerprint | None = None  # legacy
        self._quick: object = None
        self._full: str | None = None
        self._losses = 0
        self._grouper: LiveGrouper | None = None
        self._pending: deque[tuple[Packet, list[int], set[str]]] = deque()  # flushed, not yet judged
        self._shown = 0
        self._limit: int | None = None
        self.leftovers: list[Explanation] = []  # explained at the end after a signal (teardown)
        self._critical = False  # receiving or explaining: a stop signal waits (defer_signal)
        self._deferred: BaseException | None = None
        self._counted = False
        self._torn_down = False
        self.fate: Fate | None = None  # kernel drop reasons, routing, conntrack beside the rule path
        self.native = False  # nf_tables traced through a table of our own, the whole ruleset read (nftnative)
        self.both = False  # legacy xtables and nf_tables traced at once (both.py)
        self.nft_source: Any = None  # both: the nf_tables trace socket (self.source is the legacy one)
        self.untraced: str | None = None  # a backend with rules on the hooks that this session does not trace
        self._other_tables = False  # other sessions' tables were in the last native snapshot
        self._own_handles: dict[tuple[str, int], str] = {}  # (family, handle) of our tables' rules: seen / trace
        self._hooks: Any = None  # native: the early hooks traced too (nfthooks.EarlyHooks)

    # --- setup ------------------------------------------------------------------------

    def setup(self) -> None:
        self.spec.validate()
        rep = be.detect(self.requested)
        if not self.dry_run:
            check_privileges(be.LEGACY if rep.chosen == be.BOTH else rep.chosen)
        for w in rep.warnings:
            self.warn(w)
        self.backend = rep.chosen
        assert self.backend is not None
        self.both = self.backend == be.BOTH
        if rep.active(be.LEGACY) and rep.active(be.NFT) and not self.both:
            self.untraced = "nf_tables" if self.backend == be.LEGACY else "legacy xtables"
            self.warn(f"only {self.backend} is traced although {self.untraced} holds rules too: fates other than "
                      "a drop or reject seen are incomplete (--backend both traces both)")
        self.native = rep.native or self.both
        from .nftraw import check_raw

        check_raw(self.spec, native=self.native, both=self.both)  # the syntax, before anything is read
        script = ""
        if self.native:
            from . import nftnative as nn
            from .nfthooks import discover

            self._hooks = discover()  # netdev ingress / bridge chains: traced by tables of our own too
            script = nn.table_script(self.spec, self.sid, self._hooks)  # a filter nft cannot take fails first
        check_raw(self.spec, native=self.native, both=self.both, script=script, warn=self.warn)  # nft --check
        # both: the nf_tables table's rule is the one switch (modes._count_native), legacy gets counters only
        rules = [] if self.native and not self.both else ss.plan_rules(self.spec, self.sid, counters_only=self.both)
        for r in rules:  # a value iptables cannot take (a port, a state, a match) fails here, nothing changed yet
            self.actions.check_rule(r, self.rule_backend)
        self.netns.setdefault("id", ns_id())
        self.marker.hold()  # before any change: others in this namespace see the session is alive
        self.state = ss.new_state(self.sid, self.netns, self.backend)
        native = sum(t[3] for t in rep.native_tables())
        self.say(f"session {self.sid}: backend {self.backend}"
                 + (f" (legacy {rep.total(be.LEGACY)} rules, nf_tables {rep.total(be.NFT)} iptables-nft rules"
                    + (f" + {native} in {len(rep.native_tables())} native table(s)" if rep.native_tables() else "")
                    + ")")
                 + (": the whole nf_tables ruleset, traced from a table of its own" if self.native else ""))
        if not self.dry_run:
            self.state.save()
        with mk.netns_lock(dry_run=self.dry_run):  # shared bindings/chains: decided one session at a time
            if self.backend == be.NFT:
                self._open_nftrace()
            else:
                self._open_legacy()
            if self.both:
                legacy_mode, legacy_source = self.mode, self.source
                self._open_nftrace()
                self.nft_source, self.source = self.source, legacy_source
                self.mode = f"{legacy_mode}+nftrace"
            if self.native:
                self.state.tables += [[fam, nn.table_name(self.sid)] for fam in nn.own_scripts(self.spec, self.sid,
                                                                                                 self._hooks)]
                if not self.dry_run:
                    self.state.save()  # recorded before it is made: cleanup can always find it
                self.actions.run(["nft", "-f", "-"], stdin=script)  # one transaction: all of it or nothing
                self._own_handles = {} if self.dry_run else nn.rule_handles(self.sid, self.own_families())
            if self.backend == be.NFT and not self.dry_run and not self.native:
                own.share_made(self.state, self.marker, ud.nft_missing(rules))  # iptables-nft creates these
            for r in rules:
                self.state.rules.append(r)
                if not self.dry_run:
                    self.state.save()  # recorded before it is made: cleanup can always find it
                cmd = r.insert_cmd(self.rule_backend)
                p = self.actions.run(cmd, check=False)  # (a timeout raises: it may have been added, kept)
                if p is not None and p.returncode != 0:  # refused, so not added: nothing of it to undo
                    self.state.rules.pop()
                    self.state.save()
                    raise ss.failed(cmd, p)
        if self.dry_run:
            return
        if self.backend in (be.LEGACY, be.BOTH):
            from .xtgen import Fingerprint

            self._fp = Fingerprint(self.spec.families)
            self._quick, self._full = self._fp.quick(), self._fp.read()
        self._docker_names()
        self.versions.add(self._snapshot(0))
        if self.explain_miss:  # a chain not in the live ruleset: one error, teardown still runs
            self.miss_key = self._miss_chain(self.explain_miss)
        if self.backend in (be.NFT, be.BOTH):
            from .nftrace import NFNLGRP_NFTABLES

            self.say(f"netlink: join group NFNLGRP_NFTABLES ({NFNLGRP_NFTABLES}) to see ruleset changes")
            (self.nft_source or self.source).join_group(NFNLGRP_NFTABLES)
        self._last_refresh = self._last_quick = time.monotonic()
        from .fatehooks import Fate

        self.fate = Fate(self.spec, say=self.say, warn=self.warn)  # kept first: teardown stops what it starts
        self.fate.start()

    def _docker_names(self) -> None:
        """Docker's names for its networks and containers, where the host's docker answers (read-only)."""
        from ..explain.owners import use_docker_names
        from .dockerhost import read

        names, why = read()
        use_docker_names(names)
        self.say(why or f"docker: {len(names.networks) if names else 0} bridge network(s) named by docker inspect")

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
        # the event of the rule that set nftrace tells whose trace it is (ownpackets.judge)
        if self.native:
            from .nftnative import NativeDecoder

            self.decoder = NativeDecoder(lambda: self.versions.latest.rulesets)
        else:
            self.decoder = TraceDecoder(self._current_ruleset, keep_trace_rule=True)

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

    def explanations(self, *, stop: Callable[[], bool] = lambda: False,
                     limit: int | None = None) -> Iterator[Explanation]:
        """Explained packets as they complete, until ``stop()`` (checked every 0.1 s) or ``limit`` shown.

        A signal that ends the trace raises out of this (wherever it finds it): the packets still
        open, and those flushed but not yet handed out (``_pending``), are explained by
        ``teardown(explain_open=True)`` into ``leftovers``."""
        if self.dry_run:
            return
        grouper = self._grouper = LiveGrouper(self.idle, by_ident=self.both)
        self._start_reader()
        self._limit = limit
        ended = limit is not None and limit <= 0
        self._critical = True  # a stop signal in here is deferred (defer_signal): no step or packet in hand is lost
        try:
            while True:
                self._raise_deferred()  # nothing in hand here
                ended = ended or stop()
                if not ended:
                    self._receive(grouper, 0.1)
                now = time.monotonic()
                if (self._fp is not None and self.churn_interval
                        and now - self._last_refresh >= self.churn_interval):
                    self._last_refresh = now
                    if self._legacy_changed(full=True):
                        self.refresh()
                if len(self.versions) > 1:  # one version is the live one, always kept: nothing to prune
                    self.versions.prune(grouper.referenced())  # (which walks every open step)
                # at the end, the packets still open are shown only when nothing is still queued: with a
                # backlog their further steps may be among it, and _finish takes them in to the same open
                # packet, which is then counted (not shown) once, instead of shown cut and counted again
                everything = ended and not self._behind()
                self._pending.extend(grouper.flush(self.clock(), everything=everything))
                while self._pending:
                    expl = self._shown_explanation(*self._pending.popleft())
                    if expl is None:
                        continue
                    if self._deferred is not None:  # a signal came while it was explained: shown at the end
                        self.leftovers.append(expl)
                        self._raise_deferred()
                    self._critical = False  # the caller shows it: a signal may cut that short (a blocked stdout)
                    try:
                        yield expl
                    finally:
                        self._critical = True
                if limit is not None and self._shown >= limit:
                    ended = True
                if ended:
                    self._finish(grouper)
                    self._critical = False
                    self._raise_deferred()
                    return
        finally:
            self._critical = False

    def defer_signal(self, exc: BaseException) -> bool:
        """Called by a stop signal's handler: True when the trace is in the middle of receiving or
        explaining (the exception is raised as soon as nothing is in hand), False when the handler
        should raise it now (setup, or the caller showing a packet)."""
        if not self._critical:
            return False
        self._deferred = exc
        return True

    def _raise_deferred(self) -> None:
        exc, self._deferred = self._deferred, None
        if exc is not None:
            raise exc

    def _shown_explanation(self, pkt: Packet, versions: list[int], flags: set[str]) -> Explanation | None:
        """A packet the grouping completed, judged and explained (None: not this session's, only
        its own rules, or over ``--count``: counted)."""
        j = self._judge(pkt, versions, flags)
        if j is None:
            return None
        if not j.events:  # only the session's own rules: counted
            self.stats["empty"] += 1
            return None
        if self._limit is not None and self._shown >= self._limit:
            self.stats["not_shown"] += 1
            return None
        self._shown += 1
        self.stats["packets"] += 1
        return self._explain(Packet(pkt.id, j.events), j.versions, j.incomplete)

    def _explain_open(self) -> None:
        """A signal ended the trace: the steps already under way taken in (until quiet for ``idle``),
        then every packet still open explained as at a normal end, into ``leftovers``; all of it
        within LEFTOVER_MAX seconds (what the time leaves is counted, not shown). Steps still
        queued after that are counted as unread."""
        grouper = self._grouper
        if grouper is None or not self.versions:
            return
        self._count()  # the kernel's count of traced packets first, as at a normal end (_finish)
        deadline = time.monotonic() + LEFTOVER_MAX
        quiet = time.monotonic() + min(self.idle, LEFTOVER_MAX / 2)
        while time.monotonic() < min(quiet, deadline - LEFTOVER_MAX / 4):
            if self._receive(grouper, 0.05):
                quiet = time.monotonic() + min(self.idle, LEFTOVER_MAX / 2)
        if self._behind():  # the open packets' further steps may be among those still queued
            grouper.mark_open("ended")
        self._pending.extend(grouper.flush(0, everything=True))
        while self._pending and time.monotonic() < deadline:
            expl = self._shown_explanation(*self._pending.popleft())
            if expl is not None:
                self.leftovers.append(expl)
        self._count_left(list(self._pending), ended=True)
        self._pending.clear()
        self._count_unread()

    def _start_reader(self) -> None:
        """A reader process draining the trace socket while packets are explained (reader.py):
        NFLOG or nf_tables traced alone, where a second core can run it."""
        from . import reader

        if not reader.enabled() or self.both or self.source is None:
            return
        if self.mode == "nflog":
            from .netlink import NetlinkSocket
            from .nflog import _PACKET

            if isinstance(getattr(self.source, "sock", None), NetlinkSocket):
                r = reader.ReaderSocket(self.source.sock, _PACKET)
                try:
                    r.start()
                except OSError:  # no fork: the socket is read here
                    return
                self.source.sock = r
        elif self.mode == "nftrace":
            from .netlink import NetlinkSocket
            from .nftrace import NFNL_SUBSYS_NFTABLES, NFT_MSG_TRACE

            if isinstance(self.source, NetlinkSocket):
                r = reader.ReaderSocket(self.source, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE)
                try:
                    r.start()
                except OSError:  # no fork: the socket is read here
                    return
                self.source = r

    # --- teardown ---------------------------------------------------------------------

    def _flush_open(self) -> None:
        if self._grouper is not None and self.versions:  # stopped early: what was still open did arrive
            self._count_left([*self._pending, *self._grouper.flush(0, everything=True)], ended=True)
            self._pending.clear()

    def teardown(self, *, explain_open: bool = False) -> list[str]:
        """Remove exactly what setup added and restore what it changed; returns problems.

        ``explain_open`` (a signal ended the trace): first the packets already received are
        explained into ``leftovers`` (``_explain_open``, at most LEFTOVER_MAX seconds), for the
        caller to show after the cleanup; otherwise they are counted."""
        if self._torn_down or self.state is None:
            return []
        self._torn_down = True
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # cleanup must not be cut short
        try:
            # bookkeeping first (the TRACE counters go with the rules), but nothing in it may keep
            # the undo from running: each step on its own, a failure said and passed over
            steps: list[tuple[str, Callable[[], object]]] = [
                ("explaining the packets still open", self._explain_open if explain_open else lambda: None),
                ("stopping drop reasons", self.fate.stop if self.fate is not None else lambda: None),
                ("reading the TRACE counters", self._count),
                ("counting the packets still open", self._flush_open),
                ("closing the ruleset watch", self._fp.close if self._fp is not None else lambda: None),
            ]
            steps += [("closing a trace socket", src.close) for src in (self.source, self.nft_source)
                      if src is not None]
            for what, step in steps:
                try:
                    step()
                except Exception as e:  # the undo below must run whatever failed here
                    self.warn(f"{what} at the end failed ({type(e).__name__}: {e}); the summary may be incomplete")
            self.source = self.nft_source = None
            if self.dry_run:
                ud.dry_run_undo(self.state, self.actions, self.rule_backend)
                return []
            problems = ud.undo(self.state, self.actions, self.marker)
            if not problems:
                self.state.remove()
            self.marker.close()
            return problems
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
