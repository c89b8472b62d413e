"""What happened to a traced packet beside the rule path: drop reason, routing, conntrack.

The tracer calls three hooks: :meth:`Fate.start` (after its rules are in place),
:meth:`Fate.attach` (on each explanation) and :meth:`Fate.stop` (on every exit path).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..explain.ctinvalid import invalid_note
from ..explain.fate import ROUTING_NOTE
from ..explain.fatecauses import annotate
from ..kernel_facts import NETFILTER_DROP
from ..model import ConntrackEntry, Explanation
from ..model import Fate as PacketFate
from . import conntrack as ct
from . import dropmon, routing

if TYPE_CHECKING:
    from .session import TraceSpec

# `conntrack -L` after a packet is a process (~17 ms on the lab VM): at 500 packets/s it alone
# would take 8 s a second, and 20 a second still took a third of the trace's CPU time
# (bench/bench_live.py --profile). Packets over this many a second get a note instead.
CT_LOOKUPS = 5
# a packet explained this long after its last step: the entry read now is not the one after it
# (a backlog of steps is being worked off), so none is read (nor a process run for it)
CT_BEHIND = 1.0
ENV_OFF = "RULETRACE_NO_DROP_REASONS"  # set to 1: drop reasons off (tests, hosts where BPF is unwelcome)


class Budget:
    """At most ``per_second`` takes in any one-second window that starts at a take."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.clock = clock
        self.window = -1.0
        self.used = 0
        self.refused = 0

    def take(self) -> bool:
        now = self.clock()
        if self.window < 0 or now - self.window >= 1.0:
            self.window, self.used = now, 0
        if self.used < self.per_second:
            self.used += 1
            return True
        self.refused += 1
        return False


class Fate:
    def __init__(self, spec: TraceSpec, *, say: Callable[[str], None], warn: Callable[[str], None]) -> None:
        self.spec = spec
        self.say, self.warn = say, warn
        self.monitor: dropmon.DropMonitor | None = None
        self.drops_off = ""  # why drop reasons are off ('' when on)
        self.conntrack = ct.available()
        self.ct_events: ct.Events | None = None  # conntrack -E: the entry as it was made
        self.ct_budget = Budget(CT_LOOKUPS)
        self.ct_behind = 0  # packets explained over CT_BEHIND s after they passed: no lookup

    def start(self) -> None:
        if os.environ.get(ENV_OFF) == "1":
            self.drops_off = f"{ENV_OFF}=1"
        else:
            av = dropmon.availability()
            if not av.ok:
                self.drops_off = av.why
            else:
                ino = os.stat("/proc/thread-self/ns/net").st_ino
                self.monitor = dropmon.DropMonitor(self.spec, ino, rate=self.spec.rate)
                self.say(f"bpftrace: skb:kfree_skb in namespace {ino}, at most {self.spec.rate} drops/s")
                if not self.monitor.start():
                    self.drops_off = self.monitor.error
                    self.monitor = None
        if self.conntrack:
            self.ct_events = ct.Events(self.spec)
            if not self.ct_events.start():
                self.warn(f"conntrack events off: {self.ct_events.error}")
                self.ct_events = None
        if self.drops_off:
            self.warn(f"drop reasons off: {self.drops_off} (`ruletrace doctor` says how to enable them)")

    @property
    def status(self) -> str:
        return "drop reasons on" if self.monitor is not None else f"drop reasons off: {self.drops_off}"

    def attach(self, expl: Explanation) -> None:
        """Drop reason, routing decision and conntrack entry of one explained packet."""
        try:
            expl.routing = routing.decisions(expl)
        except OSError as e:  # the ip tool is missing: routing is left out, the trace goes on
            expl.notes.append(f"routing decision not read: {e}")
        sysctls = expl.routing[0].sysctls if expl.routing else {}
        if self.monitor is not None:
            expl.drops = self.monitor.take(expl, sysctls)
        if ROUTING_NOTE in expl.notes:
            self._why_prerouting(expl)
        elif expl.drops and expl.fate in (PacketFate.DELIVERED, PacketFate.FORWARDED, PacketFate.SENT) and \
                expl.drops[0].reason != NETFILTER_DROP:
            d = expl.drops[0]
            expl.notes.append(f"every rule let it through, then the kernel dropped it ({d.reason}"
                              + (f" in {d.function})" if d.function else ")"))
        if self.conntrack:
            first = self.ct_events.first(expl) if self.ct_events is not None else None
            end = None
            last = expl.packet.events[-1].ts if expl.packet.events else None
            behind = time.time() - last if last else 0.0
            if behind > CT_BEHIND:
                self.ct_behind += 1
                expl.notes.append(f"conntrack entry after the packet not read: explained {behind:.1f} s after it "
                                  "(the entry now is not the one it left)")
            elif self.ct_budget.take():
                end = ct.entry(expl, "end")
                if end is None and first is not None:
                    end = ConntrackEntry("end", first.proto, text="no entry for the flow any more (removed or timed out)")
            else:
                expl.notes.append(f"conntrack entry after the packet not read: over {CT_LOOKUPS} packets a second "
                                  "(each lookup runs `conntrack -L`)")
            expl.conntrack = [e for e in (first, end) if e is not None]
            loose = routing.sysctl("net.netfilter.nf_conntrack_tcp_loose")
            invalid_note(expl, end, {**sysctls, **({"net.netfilter.nf_conntrack_tcp_loose": loose} if loose else {})})

    def _why_prerouting(self, expl: Explanation) -> None:
        """A packet last seen in PREROUTING: the kernel's drop reason when known, else the ranked causes."""
        if expl.drops:
            expl.notes.remove(ROUTING_NOTE)
            d = expl.drops[0]
            expl.notes.append(f"last seen in PREROUTING: the kernel dropped it right after ({d.reason}"
                              + (f" in {d.function})" if d.function else ")"))
            if expl.drops[0].reason != NETFILTER_DROP:  # the kernel's word: the fate is known
                expl.fate = PacketFate.DROPPED
            return
        f = expl.packet.events[-1].fields
        try:
            facts = routing.live_facts([f.get("IN") or "", (expl.routing[0].dev or "") if expl.routing else ""],
                                       f.get("DST") or "")
        except OSError:
            return
        annotate(expl, facts)

    def stop(self) -> None:
        if self.ct_events is not None:
            self.ct_events.stop()
        if self.ct_behind:
            self.warn(f"conntrack: {self.ct_behind} packet(s) explained over {CT_BEHIND:g} s after they passed: "
                      "their entry after the packet was not read")
        if self.ct_budget.refused:
            self.warn(f"conntrack: {self.ct_budget.refused} packet(s) over {CT_LOOKUPS} a second: their entry "
                      "after the packet was not read (each lookup runs `conntrack -L`)")
        m = self.monitor
        if m is not None:
            m.stop()
            if m.over:
                self.warn(f"drop reasons: {m.over} drop(s) over the rate cap were not reported")
