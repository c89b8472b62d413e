"""What a rule's target does to the walk of a table: the one definition every walk follows.

The walk inside a table mirrors ip_tables.c ipt_do_table():

- a rule that matches logs its step, then its target decides what comes next (``FLOW``);
- a verdict (ACCEPT, DROP, REJECT, QUEUE) ends the chain and the table with that verdict; a NAT
  target rewrites the packet, then the nat table's verdict is ACCEPT (``VERDICT``);
- a non-terminating target (MARK, LOG, TRACE, …: XT_CONTINUE) runs its effect and the walk goes
  on with the next rule;
- a jump pushes the calling rule and walks the callee from its first rule; a goto does not push;
- RETURN, or falling off the end of a user chain (a "return" step numbered length + 1), pops
  the stack; with an empty stack the walk ends in the built-in chain's policy entry
  (a "policy" step numbered length + 1 of the built-in chain, verdict its policy);
- falling off the end of a built-in chain logs its policy step and ends with its policy (UNKNOWN
  where the ruleset does not give it: the walk ends there);
- a ruleset the kernel accepted has no loops: more than ``MAX_JUMPS`` jumps are bad input.

``reference.py`` walks by these rules one step at a time (the reference); ``walker.py`` turns
them into generated code (the fast path). Both build their steps with ``sim_event`` (the
generated code inlines ``EVENT_SRC``, its code form) and record the deciding rule with
``WalkState.decide`` (``decide_src`` is its code form).
"""

from __future__ import annotations

from typing import Any

from ..errors import RuletraceError
from ..explain.causes import AFTER_ALL
from ..model import Origin, Rule, StepKind, TraceEvent
from .state import Pkt, snapshot_fields

# target kinds: what the traversal does after the rule
ACCEPT = "accept"
DROP = "drop"
REJECT = "reject"
QUEUE = "queue"
RETURN = "return"
JUMP = "jump"
GOTO = "goto"
CONTINUE = "continue"
NAT = "nat"  # rewrite, then the nat table's verdict is accept
UNKNOWN = "unknown"  # a built-in chain's policy the ruleset does not give: the walk ends, its fate unknown

# what the walk does after a matched rule's step, by target kind
NEXT = "next"  # run the effect, go on with the next rule
CALL = "call"  # push the next rule, walk the callee
TAIL = "tail"  # walk the callee, push nothing
POP = "pop"  # back to the caller; with an empty stack the built-in chain's policy
END = "end"  # run the effect, the chain and the table end with VERDICT[kind]
FLOW: dict[str, str] = {
    CONTINUE: NEXT, JUMP: CALL, GOTO: TAIL, RETURN: POP,
    ACCEPT: END, DROP: END, REJECT: END, QUEUE: END, NAT: END,
}
# the table's verdict when a rule of this kind ends it
VERDICT: dict[str, str] = {ACCEPT: ACCEPT, DROP: DROP, REJECT: REJECT, QUEUE: QUEUE, NAT: ACCEPT}

MAX_JUMPS = 100_000  # jumps in one table walk; a ruleset the kernel accepted has no loops: this guards bad input

POLICY = StepKind.POLICY
RETURN_STEP = StepKind.RETURN
ORIGIN = Origin("simulate")
SOURCE = "simulate"


def policy_verdict(policy: str | None) -> str:
    """The verdict of a built-in chain's policy; UNKNOWN where the ruleset does not give it (rules
    without their chain's ``:INPUT ACCEPT`` line): the walk ends there, never with an assumed ACCEPT."""
    if policy is None:
        return UNKNOWN
    return DROP if policy == "DROP" else ACCEPT


def tail_kind(builtin: bool) -> StepKind:
    """The step logged when the walk falls off the end of a chain."""
    return POLICY if builtin else RETURN_STEP


def loop_error(table: str, chain: str, origin: Origin | None) -> RuletraceError:
    return RuletraceError(f"more than {MAX_JUMPS} jumps: the ruleset loops (last in {table} {chain})",
                          origin=origin)


class SimEvent(TraceEvent):
    """A predicted TRACE step; fields come from the packet snapshot on first access.

    The fields every predicted step has the same value for are class attributes: they shadow
    TraceEvent's slots, so a step sets only six. The class has no __slots__, so an instance
    can still be given its own value of any of them (it goes to the instance's __dict__).
    ``SimEvent()`` takes no arguments (object.__init__: no Python frame, a third of the cost
    of a step's event): ``sim_event`` sets the six fields, the generated walks inline it.
    """

    ts = handle = ident = packet_id = verdict = None
    origin = ORIGIN
    source = SOURCE
    _parse = staticmethod(snapshot_fields)
    _fields = None
    __init__ = object.__init__


NFT_SOURCE = AFTER_ALL  # its steps show the whole packet after the rule's statements (explain/causes.py)


class NftSimEvent(TraceEvent):
    """A predicted nf_tables step: as SimEvent, but ``handle`` and ``verdict`` are its own (slots, no dict).
    Its packet is the one after the rule's statements ran (a mark set, a DNAT), as nf_tables reports it."""

    ts = ident = packet_id = None
    nftables = True
    origin = ORIGIN
    source = NFT_SOURCE
    _parse = staticmethod(snapshot_fields)
    _fields = None
    __init__ = object.__init__


def sim_event(table: str, chain: str, kind: StepKind, num: int, family: str, p: Pkt) -> SimEvent:
    """A predicted step: the packet as it is now (its snapshot is shared until it changes)."""
    e: SimEvent = SimEvent()
    e.table = table
    e.chain = chain
    e.kind = kind
    e.num = num
    e.family = family
    e.raw = p.snap or p.snapshot()
    return e


# sim_event as code for the generated walks (``SimEvent``, the walk's ``R.append`` as A and
# ``R.fam`` as F in scope; {0}-{3}: table, chain, kind, number)
EVENT_SRC = ("e = SimEvent(); e.table = {0}; e.chain = {1}; e.kind = {2}; e.num = {3}; e.family = F; "
             "e.raw = p.snap or p.snapshot(); A(e)")


class WalkState:
    """What a walk records: the steps, the rule (or policy) that decided, where tracing started."""

    __slots__ = ("events", "append", "fam", "decider", "trace_start", "hooks", "jumps")

    def __init__(self, fam: str) -> None:
        self.events: list[TraceEvent] = []
        self.append = self.events.append  # for the generated walks
        self.fam = fam
        self.decider: tuple[str, Any, int | None, Rule | None] | None = None  # (verdict, CChain, num, rule)
        self.trace_start = 0  # events before this index come before the first -j TRACE rule fired
        self.hooks: list[str] = []
        self.jumps = 0  # jumps in the current nft base chain's walk (nft_gen.py)

    def step(self, table: str, chain: str, kind: StepKind, num: int, p: Pkt) -> None:
        self.append(sim_event(table, chain, kind, num, self.fam, p))

    def decide(self, v: str, chain: Any, num: int | None, rule: Rule | None) -> None:
        """Record the verdict's rule (num None: the chain's policy)."""
        # an accept in filter says more about the fate than a later accept in nat or security
        d = self.decider
        if v != ACCEPT or d is None or chain.table == "filter" or d[1].table != "filter":
            self.decider = (v, chain, num, rule)

    def policy(self, chain: Any) -> str:
        """The built-in chain's policy decides: its verdict."""
        v = policy_verdict(chain.policy)
        self.decide(v, chain, None, None)
        return v

    def traced(self) -> None:
        """A TRACE target fired: the kernel logs from here on (the first one counts)."""
        if not self.trace_start:
            self.trace_start = len(self.events)


def decide_src(ind: str, table: str, v: str, vname: str, ch: str, num: str, rule: str) -> list[str]:
    """WalkState.decide as code: its test on the verdict and the chain's table made when generating."""
    setting = f"{ind}R.decider = ({vname}, {ch}, {num}, {rule})"
    if v != ACCEPT or table == "filter":
        return [setting]
    return [f"{ind}d = R.decider", f"{ind}if d is None or d[1].table != 'filter':", "    " + setting]
