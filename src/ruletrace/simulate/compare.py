"""Prediction vs trace: where the simulated steps and a traced packet's steps part ways."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model import Ruleset, TraceEvent
from .engine import SimResult

# fields compared on steps that agree (kernel-log names)
COMPARED_FIELDS = ("IN", "OUT", "SRC", "DST", "SPT", "DPT", "MARK")


@dataclass(slots=True)
class Comparison:
    """The first step where prediction and trace differ (index into the traced steps), if any."""

    agree: bool
    traced: list[str]  # tags of the traced steps
    predicted: list[str]  # tags of the predicted steps, aligned to the trace's first step
    diverge_at: int | None = None
    expected: str | None = None  # what the trace shows at diverge_at ("end" when it ends first)
    got: str | None = None  # what the simulation predicts there
    field_diffs: list[str] = field(default_factory=list)  # "step 3 filter:INPUT:rule:1: DST 1.2.3.4 != 5.6.7.8"

    def to_json(self) -> dict[str, Any]:
        return {"agree": self.agree, "diverge_at": self.diverge_at, "traced": self.expected, "predicted": self.got,
                "traced_steps": self.traced, "predicted_steps": self.predicted, "field_diffs": self.field_diffs}


def _key(e: TraceEvent, with_num: bool) -> tuple[Any, ...]:
    return (e.table, e.chain, str(e.kind), e.num if with_num else None)


def compare(sim: SimResult, traced: list[TraceEvent]) -> Comparison:
    """Align the prediction to the trace's first step and report the first difference."""
    events = sim.events
    with_num = all(e.num is not None for e in traced)
    start = sim.trace_start
    if traced:
        first = _key(traced[0], with_num)
        if start >= len(events) or _key(events[start], with_num) != first:
            start = next((i for i, e in enumerate(events) if _key(e, with_num) == first), start)
    pred = events[start:]
    out = Comparison(True, [e.tag for e in traced], [e.tag for e in pred])
    for i in range(max(len(traced), len(pred))):
        t = traced[i] if i < len(traced) else None
        p = pred[i] if i < len(pred) else None
        if t is None or p is None or _key(t, with_num) != _key(p, with_num):
            out.agree = False
            out.diverge_at = i
            out.expected = t.tag if t is not None else "end of trace"
            out.got = p.tag if p is not None else "end of prediction"
            break
        tf, pf = t.fields, p.fields
        for f in COMPARED_FIELDS:
            a, b = tf.get(f), pf.get(f)
            if a is not None and (b or "") != a and not (f == "MARK" and a in ("0", "0x0") and b is None):
                out.field_diffs.append(f"step {i + 1} {t.tag}: {f} traced {a or '(empty)'}, "
                                       f"predicted {b or '(empty)'}")
    return out


_NAT_HOOKS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")


def traced_ctstate(rulesets: list[Ruleset], events: list[TraceEvent]) -> str | None:
    """The conntrack state a traced packet had, as far as its trace shows it.

    The nat table runs for a connection's first packet only: a nat step in the trace makes it
    NEW; a packet that passed a hook where the ruleset has nat chains without a nat step there
    was not NEW (ESTABLISHED is simulated; RELATED takes the same path). None: the trace cannot tell.
    """
    nat_chains: set[tuple[str, str]] = set()
    nat_hooks: set[str] = set()
    hook_of: dict[tuple[str, str], str] = {}
    for r in rulesets:
        for t, chains in r.tables.items():
            for c in chains.values():
                hook = (c.hook or "").upper() or (c.name if c.name in _NAT_HOOKS and not c.type else "")
                if hook:
                    hook_of[(t, c.name)] = hook
                if t == "nat" or c.type == "nat":
                    nat_chains.add((t, c.name))
                    if hook:
                        nat_hooks.add(hook)
    if any((e.table, e.chain) in nat_chains for e in events):
        return "NEW"
    passed = {hook_of.get((e.table, e.chain)) or (e.chain if e.chain in _NAT_HOOKS else "") for e in events}
    return "ESTABLISHED" if passed & nat_hooks else None
