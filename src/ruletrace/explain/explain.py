"""Explain one packet against a ruleset: rule text per step, fate, deciding rule, NAT and marks.

The walk mirrors the kernel's traversal: each built-in chain starts a call stack, a ``rule``
step whose target is a user chain jumps (or goes to) it, a ``return`` step falls off the end
of a user chain back to its caller, a ``policy`` step ends a built-in chain. What does not fit
(chain missing, rule number past the end, a jump the trace does not follow) is said on the
step, never guessed silently.

The part that depends only on the step sequence (the "path") is computed once per distinct
path and cached: on a busy node most packets take one of a few paths.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import attrgetter
from typing import Any, NamedTuple

from ..model import (
    BUILTIN_CHAINS,
    HOOK_TABLES,
    Chain,
    Explanation,
    Fate,
    Packet,
    Rule,
    Ruleset,
    RulesetView,
    Step,
    StepKind,
    TraceEvent,
    Verdict,
)
from ..rulesets.nft_model import shared_in_rulesets, shared_tables
from . import causes
from .ctinvalid import invalid_note
from .fate import ENDS_TABLE as _ENDS_TABLE
from .fate import decide
from .pathcache import PathCache
from .ruleaction import (
    KERNEL_VERDICTS,
    action_for,
    base_hook,
    kernel_action,
    trace_rule,
    unconditional_verdict,
)

__all__ = ["Explainer", "base_hook", "explain_packet", "kernel_action", "trace_rule"]

_CACHE_MAX = 200_000
_SIG = attrgetter("table", "chain", "kind", "num", "verdict", "text", "base", "family")


class _PathStep(NamedTuple):
    """The part of a TraceEvent a path plan reads (paths given without event objects)."""

    table: str
    chain: str
    kind: StepKind
    num: int | None
    verdict: str | None
    text: str | None = None
    base: bool = False
    family: str | None = None

    @property
    def label_family(self) -> None:
        """A kernel log's path (fastpath.kernel_log_paths): legacy xtables steps, never named with a
        family (TraceEvent.label_family)."""
        return None

    @property
    def nftables(self) -> bool:
        """A kernel log's step is a legacy xtables one (TraceEvent.nftables)."""
        return False


_path_step = partial(tuple.__new__, _PathStep)  # (table, chain, kind, num, verdict) -> _PathStep


@dataclass(slots=True)
class _StepPlan:
    rule: Rule | None
    policy: str | None
    returned_to: str | None
    depth: int
    action: str
    warning: str | None
    note: str | None
    frames: tuple[int, ...]  # indices of the jump steps that lead to this step (outermost first)
    hook: str | None = None  # hook of the base chain the step runs under (upper case)
    priority: int | None = None  # that base chain's priority


@dataclass(slots=True)
class _Plan:
    steps: list[_StepPlan]
    fate: Fate
    verdict: Verdict | None
    verdict_index: int | None
    last_seen: str | None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    misfits: int = 0  # steps the ruleset does not fit
    memo: Any = None  # what a caller derived from this path once (e.g. its summary entry)
    shared: frozenset[str] = frozenset()  # table names the path shows in two families (Explanation.shared)
    checked: bool = False  # its taken rules checked against a packet's fields (Explainer.taken_check)


class _Walker:
    """Builds the path plan for one step sequence."""

    def __init__(self, view: RulesetView | None) -> None:
        self.view = view if view else None  # every lookup by the family of the step's event
        # table names the listings give two families: named with the family on every path (nft_model)
        self.shared = shared_in_rulesets(view.rulesets) if view else frozenset()
        # (table, chain, kind, num, verdict) -> what the ruleset says of that step alone
        self._static: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def _step_static(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """(builtin, chain known, rule, policy, action, warning, missing, hook, priority) of one step."""
        table, chain, kind, num, kv, text, base, family = key
        rs = self.view.pick(family) if self.view is not None else None
        ch: Chain | None = rs.chain(table, chain) if rs is not None else None
        builtin = ch.builtin if ch is not None else (base or chain in BUILTIN_CHAINS)
        hook, prio = base_hook(ch, table, chain) if builtin else (None, None)
        rule: Rule | None = None
        policy: str | None = None
        warning: str | None = None
        # a table or chain the listing leaves out: said once per packet, not a misfit
        missing = rs.missing(table, chain) if rs is not None and ch is None else None
        if kind is StepKind.RULE:
            if ch is not None and num is not None:
                if 1 <= num <= len(ch.rules):
                    rule = ch.rules[num - 1]
                else:
                    warning = f"rule {num} is past the end of {table}:{chain} ({len(ch.rules)} rules)"
            if rule is None and text and warning is None:
                rule = trace_rule(table, chain, text)  # the monitor printed it: show it as the rule
            action = action_for(rule, rs, table)
        elif (
            ch is not None and num is not None and 1 <= num <= len(ch.rules)
            and unconditional_verdict(ch.rules[num - 1])
        ):
            # legacy ip_tables reports an unconditional ACCEPT/DROP/RETURN rule as the chain's
            # end ("return:N" / "policy:N" with N its own number): it cannot tell it from the tail
            rule = ch.rules[num - 1]
            action = action_for(rule, rs, table)
        elif kind is StepKind.RETURN:
            action = "return"
            if ch is not None and num is not None and num != len(ch.rules) + 1:
                warning = f"end of {table}:{chain} reported as {num}, but the chain has {len(ch.rules)} rules"
        else:  # policy
            policy = ch.policy if ch is not None else None
            kp = (kv or "").upper()
            if kp in ("ACCEPT", "DROP"):  # nf_tables says which policy it applied
                if policy is not None and policy != kp:
                    warning = f"the kernel applied policy {kv} but the ruleset's {table}:{chain} has {policy}"
                policy = kp
            action = (policy or "unknown").lower()
            if ch is not None and num is not None and num != len(ch.rules) + 1:
                warning = (
                    f"policy of {table}:{chain} reported as {num}, but the chain has {len(ch.rules)} rules"
                )
        # explicit kernel verdict (nf_tables sources): it wins where the ruleset says nothing,
        # and a disagreement is flagged
        if kv and kind is StepKind.RULE and rule is not None and rule.vmap and not rule.target:
            # a verdict map: the kernel's verdict says which of its verdicts applied
            action = kernel_action(kv, action)
        elif kv and kind is StepKind.RULE and rule is not None and rule.num is None:
            # the rule is the monitor's text: the kernel's verdict says what it did
            action = kernel_action(kv, action)
        elif kv:
            kv_action = kv.split(":", 1)[0].lower()
            if kv_action in KERNEL_VERDICTS and rule is not None and kv_action != action:
                compatible = (
                    (kv_action == "accept" and action in _ENDS_TABLE)
                    or (kv_action == "drop" and action == "reject")  # xt REJECT reports drop
                    or (kv_action == "continue" and action == "continue")
                )
                if not compatible and warning is None:
                    warning = f"kernel verdict {kv} but the ruleset's rule implies {action}"
            if action == "unknown" and kv_action in KERNEL_VERDICTS:
                action = kv_action
        return builtin, ch is not None, rule, policy, action, warning, missing, hook, prio

    def plan(self, events: list[TraceEvent], want_frames: bool = True) -> _Plan:
        rs = self.view
        static = self._static
        steps: list[_StepPlan] = []
        # call stack: (chain, index of the jump step that entered it or None for the root)
        stack: list[tuple[str, int | None]] = []
        misfits = 0
        absent: list[str] = []  # tables and chains of this path the ruleset leaves out
        prev: _StepPlan | None = None
        prev_table: str | None = None
        prev_target: str | None = None  # the chain the previous rule jumps to (a vmap's: the kernel's verdict)
        targets: list[str | None] = []
        hook: str | None = None
        prio: int | None = None
        for i, key in enumerate(map(_SIG, events)):  # key: (table, chain, kind, num, verdict, text, base)
            st = static.get(key)
            if st is None:
                st = static[key] = self._step_static(key)
            builtin, known, rule, policy, action, warning, missing, bhook, bprio = st
            table = key[0]
            chain = key[1]
            note: str | None = None
            returned_to: str | None = None
            if missing is not None and missing not in absent:
                absent.append(missing)
            if (
                not builtin and prev is not None and prev_table == table and prev.action == "continue"
                and prev.rule is not None and prev_target == chain
            ):
                # the previous rule's target is a chain the listing leaves out: it was a jump
                prev.action = "jump"

            # --- call stack
            if builtin:
                stack = [(chain, None)]
                hook, prio = bhook, bprio
            else:
                if (
                    prev is not None
                    and prev_table == table
                    and prev.action in ("jump", "goto")
                    and prev.rule is not None
                    and prev_target == chain
                ):
                    if prev.action == "goto" and len(stack) > 1:
                        stack.pop()
                    stack.append((chain, i - 1))
                elif stack and (stack[-1][0] == chain or any(c == chain for c, _ in stack)):
                    while stack[-1][0] != chain:
                        stack.pop()
                else:
                    if rs is not None and prev is not None and prev.rule is not None and known and not warning:
                        warning = f"the trace enters {chain} but the previous step does not jump to it"
                    stack.append((chain, None))
            depth = len(stack) - 1  # never empty here: every branch above leaves a frame
            frames = tuple(j for _, j in stack if j is not None) if want_frames else ()
            if action == "return":
                returned_to = stack[-2][0] if depth else None
                if depth:
                    stack.pop()
                elif key[2] is StepKind.RULE:
                    note = "RETURN in a built-in chain: the chain policy applies"
            if warning:
                misfits += 1
            prev = _StepPlan(rule, policy, returned_to, depth, action, warning, note, frames, hook, prio)
            prev_table = table
            prev_target = rule.target if rule is not None else None
            if rule is not None and rule.vmap and not prev_target and key[4] and key[4][:5] in ("jump:", "goto:"):
                prev_target = key[4][5:]
            targets.append(prev_target)
            steps.append(prev)

        # --- jumps the trace does not follow
        for i in range(len(steps) - 1):
            sp = steps[i]
            if sp.action in ("jump", "goto") and sp.rule is not None and not sp.warning:
                nxt = events[i + 1]
                if nxt.table == events[i].table and nxt.chain != targets[i]:
                    sp.warning = (
                        f"rule jumps to {targets[i]} but the trace continues in {nxt.chain}"
                    )
                    misfits += 1
            elif sp.action in ("drop", "reject") and not sp.warning:
                sp.warning = "the ruleset says the packet ends here, but the trace goes on"
                misfits += 1

        plan = self._fate(events, steps)
        plan.misfits = misfits
        plan.warnings.extend(absent)
        if misfits:
            plan.warnings.append(
                f"the ruleset does not fit {misfits} of {len(steps)} steps (rules or chain ends that "
                "its chains do not have): it may be older or newer than the log"
            )
        self._skipped_nat(events, plan)
        return plan

    def _fate(self, events: list[TraceEvent], steps: list[_StepPlan]) -> _Plan:
        shared = self.shared | shared_tables(events)
        d = decide(self.view, events, steps, shared)
        return _Plan(steps, d.fate, d.verdict, d.verdict_index, d.last_seen, notes=d.notes, shared=shared)

    def _skipped_nat(self, events: list[TraceEvent], plan: _Plan) -> None:
        """Say so when a hook was traversed without its nat chain although the ruleset has one."""
        rs = self.view.pick(events[0].family) if self.view is not None and events else None
        if rs is None or "nat" not in rs.tables:
            return
        seen = {(ev.chain, ev.table) for ev in events if ev.chain in HOOK_TABLES}
        hooks = {h for h, _ in seen}
        for hook in ("PREROUTING", "OUTPUT"):
            if hook == "PREROUTING" and "POSTROUTING" in hooks:
                continue  # looped back: conntrack made the connection's entry on the way out
            if hook in hooks and (hook, "nat") not in seen and rs.chain("nat", hook) is not None:
                plan.notes.append(
                    f"nat {hook} was not traversed: the packet is not the first of its connection "
                    "(conntrack ESTABLISHED/RELATED, or untracked), so nat rules do not apply to it"
                )


class Explainer:
    """Explains packets against one ruleset, caching the analysis of each distinct path."""

    def __init__(self, ruleset: Ruleset | RulesetView | None, *, summary_only: bool = False,
                 taken_check: Callable[[Rule, Mapping[str, str]], str | None] | None = None) -> None:
        view = ruleset if isinstance(ruleset, RulesetView) else RulesetView([ruleset] if ruleset else [])
        self.view = view
        self.ruleset = view.rulesets[0] if view.rulesets else None  # the first (only) one, for callers
        self._walker = _Walker(view)
        # path signature (tuple of step numbers) -> plan; steps are numbered through _step_ids so
        # that a cached signature costs one pointer per step, not one tuple per step
        self._cache: dict[tuple[Any, ...], _Plan] = {}
        self._step_ids: dict[tuple[Any, ...], int] = {}
        self.summary_only = summary_only  # cached plans then keep no per-step detail
        self.misfit_packets = 0
        self._path_memo: dict[tuple[Any, ...], tuple[Any, bool]] = {}
        self._token = object()  # this explainer in Explanation.path_key (held there: never reused)
        self._sig: tuple[Any, ...] = ()  # the signature of the last path _plan looked up
        self.paths = PathCache()  # detailed explanations per (path, field changes): explain_cached
        # what a rule the trace shows taken cannot match of the packet's fields ("`-i lo`: its IN is eth0"),
        # None where the fields fit or cannot tell; given by the caller (the pipeline gives
        # analyze/rule_check's). A numbered step's rule that cannot match says the ruleset is numbered
        # otherwise than the kernel was: a misfit, checked on the first packet of each path explained
        # with detail (summaries read no fields)
        self.taken_check = taken_check

    def _plan(self, events: list[TraceEvent]) -> _Plan:
        ids = self._step_ids
        get = ids.get
        sig_parts = []
        for t in map(_SIG, events):
            n = get(t)
            if n is None:
                n = ids[t] = len(ids)
            sig_parts.append(n)
        sig = self._sig = tuple(sig_parts)
        plan = self._cache.get(sig)
        if plan is None:
            plan = self._walker.plan(events, not self.summary_only)
            if self.summary_only:
                plan.steps = []
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[sig] = plan
        return plan

    def _check_taken(self, events: list[TraceEvent], plan: _Plan) -> None:
        """Each rule a numbered trace step shows taken (a kernel log's or NFLOG's ``rule:N``; an nf_tables
        monitor names rules by handle and prints them) checked against the packet's fields there."""
        plan.checked = True
        check = self.taken_check
        if check is None or not plan.steps:
            return
        for ev, sp in zip(events, plan.steps):
            if ev.kind is StepKind.RULE and sp.rule is not None and ev.num is not None and not ev.nftables:
                why = check(sp.rule, ev.fields)
                if why is not None:
                    said = (f"the trace shows this rule taken, but {why}: the ruleset's rules are not "
                            "numbered as the kernel's were (rules added or removed since?)")
                    sp.warning = f"{sp.warning}; {said}" if sp.warning else said
                    plan.misfits += 1

    def path_of(self, packet: Packet) -> tuple[Any, ...]:
        """The signature of the packet's path: equal for the packets of one path, as the plan and
        ``Explanation.path_key`` are (the plan is made and kept; nothing is counted)."""
        self._plan(packet.events)
        return self._sig

    def explain(self, packet: Packet, *, detail: bool = True) -> Explanation:
        """Explain one packet; ``detail=False`` skips steps, NAT, marks and causes (for summaries)."""
        if detail and self.summary_only:
            raise ValueError("this Explainer keeps no step detail (summary_only=True)")
        plan = self._plan(packet.events)
        if detail and not plan.checked:
            self._check_taken(packet.events, plan)
        if plan.misfits:
            self.misfit_packets += 1
        expl = self._explanation(packet, plan, detail)
        if detail:  # step ids are never renumbered: one signature, one sequence of steps
            expl.path_key = (self._token, self._sig)
        return expl

    def explain_cached(self, packet: Packet) -> Explanation:
        """``explain(packet)`` (the reference), made once per path and field-change signature and
        copied for the packets that share them (explain/pathcache.py): equal, a fraction of the work."""
        if self.summary_only:
            raise ValueError("this Explainer keeps no step detail (summary_only=True)")
        plan = self._plan(packet.events)
        if not plan.checked:
            self._check_taken(packet.events, plan)
        if plan.misfits:
            self.misfit_packets += 1
        sig = self._sig
        expl = self.paths.explain(packet, sig, lambda: self._explanation(packet, plan, True))
        expl.path_key = (self._token, sig)
        return expl

    def memo(self, packet: Packet, make: Callable[[Explanation], Any]) -> Any:
        """``make(explanation)`` computed once per distinct path (e.g. a summary entry)."""
        plan = self._plan(packet.events)
        if plan.misfits:
            self.misfit_packets += 1
        m = plan.memo
        if m is None:
            m = plan.memo = make(self._explanation(packet, plan, False))
        return m

    def memo_path(self, steps: tuple[Any, ...], make: Callable[[Explanation], Any], n: int = 1,
                  family: str | None = None) -> Any:
        """``make(explanation)`` for ``n`` packets of a path given as ``(table, chain, kind, num)`` steps
        of a packet of ``family`` (one Explainer sees one family's paths: its key is the steps alone).

        Computed once per path.

        For summaries of huge logs read without event objects (``fastpath.kernel_log_paths``).
        """
        got = self._path_memo.get(steps)
        if got is None:
            events = list(map(_path_step, map(operator.add, steps, repeat((None, None, False, family)))))
            plan = self._walker.plan(events, False)  # type: ignore[arg-type]  # _PathStep has the TraceEvent fields a walk reads
            got = self._path_memo[steps] = (
                make(self._explanation(Packet(0, events), plan, False)), bool(plan.misfits)  # type: ignore[arg-type]  # as above
            )
        if got[1]:
            self.misfit_packets += n
        return got[0]

    def _explanation(self, packet: Packet, plan: _Plan, detail: bool) -> Explanation:
        expl = Explanation(
            packet=packet,
            fate=plan.fate,
            verdict=plan.verdict,
            warnings=list(plan.warnings),
            notes=list(plan.notes),
            last_seen=plan.last_seen,
            shared=plan.shared,
        )
        if not detail:
            return expl
        expl.steps = [
            Step(
                event=ev,
                rule=sp.rule,
                policy=sp.policy,
                returned_to=sp.returned_to,
                depth=sp.depth,
                action=sp.action,
                warning=sp.warning,
                note=sp.note,
                hook=sp.hook,
                priority=sp.priority,
            )
            for ev, sp in zip(packet.events, plan.steps)
        ]
        frames = [sp.frames for sp in plan.steps]
        causes.annotate(expl, frames, plan.verdict_index, self.view)
        invalid_note(expl)
        return expl


def explain_packet(packet: Packet, ruleset: Ruleset | None) -> Explanation:
    """Explain one packet against a ruleset (or without one: steps without rule text)."""
    return Explainer(ruleset).explain(packet)
