"""What happened to a traced packet beside the rule path: drop reason, routing, conntrack.

The tracer calls three hooks: :meth:`Fate.start` (after its rules are in place),
:meth:`Fate.attach` (on each explanation) and :meth:`Fate.stop` (on every exit path).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..model import Explanation
from . import conntrack as ct
from . import dropmon, routing

if TYPE_CHECKING:
    from .session import TraceSpec

ENV_OFF = "RULETRACE_NO_DROP_REASONS"  # set to 1: drop reasons off (tests, hosts where BPF is unwelcome)


class Fate:
    def __init__(self, spec: TraceSpec, *, say: Callable[[str], None], warn: Callable[[str], None]) -> None:
        self.spec = spec
        self.say, self.warn = say, warn
        self.monitor: dropmon.DropMonitor | None = None
        self.drops_off = ""  # why drop reasons are off ('' when on)
        self.conntrack = ct.available()

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
        if self.conntrack:
            entry = ct.entry(expl)
            if entry is not None:
                expl.conntrack = [entry]

    def stop(self) -> None:
        m = self.monitor
        if m is not None:
            m.stop()
            if m.over:
                self.warn(f"drop reasons: {m.over} drop(s) over the rate cap were not reported")
