"""nf_tables trace events: implied chain returns, and rule handles -> rule numbers via a ruleset.

nf_tables reports no event when a packet falls off the end of a user chain (the kernel's
handle-less RULE event is not printed by ``nft monitor trace`` nor ``xtables-monitor``), while
the legacy kernel log says ``chain:return:N``. ``add_returns`` puts those steps back from the
call stack; ``resolve_handles`` numbers rule steps by handle (or rule text) and end-of-chain
steps as rules + 1, as nf_log does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from ..fields import packet_ident
from ..model import MonitorEvent, Ruleset, StepKind, TraceEvent, nft_rule_key
from .records import Tally, text_lines

if TYPE_CHECKING:
    from .xt_nft import SignatureIndex

TERMINAL = frozenset({"accept", "drop", "reject", "queue", "stolen", "stop"})


def add_returns(events: Iterable[TraceEvent]) -> Iterator[TraceEvent]:
    """Yield the events, with a RETURN step inserted where a jumped-to chain ended silently."""
    stacks: dict[object, list[tuple[str, str]]] = {}
    for ev in events:
        key = ev.packet_id
        here = (ev.table, ev.chain)
        st = stacks.setdefault(key, [])
        if ev.base:  # a base chain starts: the last one ended (its policy or a verdict said so)
            st.clear()
        if st and st[-1] != here:
            if here in st:
                while st[-1] != here:
                    table, chain = st.pop()
                    yield TraceEvent(
                        table, chain, StepKind.RETURN, None, ts=ev.ts, family=ev.family, ident=ev.ident,
                        packet_id=ev.packet_id, origin=ev.origin, source=ev.source, fields=ev.fields,
                    )
            else:
                st.clear()
        if not st:
            st.append(here)
        yield ev
        v = ev.verdict or ""
        if ev.kind is StepKind.POLICY or v in TERMINAL:
            st.clear()
        elif v.startswith("jump:"):  # a monitor's (and the nft simulator's) "jump:X"
            st.append((ev.table, v[5:]))
        elif v.startswith(("goto:", "goto ")):
            if len(st) > 1:
                st[-1] = (ev.table, v[5:])
            else:
                st.append((ev.table, v[5:]))
        elif v == "return" and len(st) > 1:
            st.pop()
        if not st:
            stacks.pop(key, None)


def rule_text(ev: TraceEvent) -> str | None:
    """The rule text a monitor printed for this step, if any (nft or iptables syntax)."""
    return ev.text


def opens_base(dumped: set[str], tid: str) -> bool:
    """True for the first event after a packet dump: the kernel dumps the packet once per base chain."""
    if tid in dumped:
        dumped.discard(tid)
        return True
    return False


def monitor_event(table: str, chain: str, kind: StepKind, fields: dict[str, str], *, tid: str,
                  dumped: set[str], ident: tuple[str, ...] | None = None, **kw: Any) -> MonitorEvent:
    """A step of a monitor's trace (``nft monitor trace``, ``xtables-monitor --trace``): ``fields``
    those of the packet's latest dump, ``tid`` its trace id; ``ident`` the packet's identity when
    not that of ``fields``; ``kw`` the rest of the event (family, handle, verdict, origin, source,
    raw, text)."""
    return MonitorEvent(table, chain, kind, None, ident=packet_ident(fields) if ident is None else ident,
                        packet_id=tid, fields=fields, base=opens_base(dumped, tid), **kw)


class MonitorState:
    """What a monitor's reader keeps from line to line (``nft monitor trace``, ``xtables-monitor --trace``)."""

    __slots__ = ("aliases", "dumped", "keep_trace_rule", "last_dump", "name", "packets", "stats", "tally")

    def __init__(self, name: str, stats: Any, keep_trace_rule: bool) -> None:
        self.name = name
        self.stats = stats
        self.keep_trace_rule = keep_trace_rule
        self.tally = Tally(stats)
        self.packets: dict[str, dict[str, str]] = {}  # trace id -> fields of its latest packet dump
        self.dumped: set[str] = set()  # trace ids whose packet dump opened a base chain not yet seen
        # a reader's own: trace id -> (trace id, identity) of the packet it goes on (xtables_monitor),
        # and (family, trace id, fields) of the latest dump
        self.aliases: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
        self.last_dump: tuple[str, str, dict[str, str]] | None = None


def read_monitor(stream: BinaryIO, *, name: str, stats: Any, keep_trace_rule: bool,
                 step: Callable[[MonitorState, int, str], TraceEvent | None]) -> Iterator[TraceEvent]:
    """The steps ``step`` makes of a monitor's lines (None: a line that is no step), with implied
    user-chain returns added."""
    st = MonitorState(name, stats, keep_trace_rule)

    def steps() -> Iterator[TraceEvent]:
        for n, line in text_lines(stream):
            ev = step(st, n, line)
            if ev is not None:
                yield ev
        st.tally.finish()

    return add_returns(steps())


def _xt_key(text: str) -> str:
    """An iptables rule line without counters (``[0:0]``) and blanks collapsed."""
    words = text.split()
    if words and words[0].startswith("[") and words[0].endswith("]"):
        words = words[1:]
    return " ".join(words)


class Resolver:
    """Numbers the rule steps of nf_tables events from one ruleset; built once per ruleset.

    By handle where both the event and the listing have one (handles are per table) and the
    handle's rule has the text the trace printed (a listing of another host, or an older one,
    may give the handle to another rule); else by text: the same text (an nft listing's line
    against ``nft monitor``, via ``nft_rule_key``; an iptables-save line against
    ``xtables-monitor``), else the only rule of the chain with the same reduced form in the
    other syntax (``xt_nft``). A chain's end is numbered rules + 1, as nf_log does.
    """

    def __init__(self, ruleset: Ruleset) -> None:
        self.rs = ruleset
        self._by_text: dict[tuple[str, str, str], int] = {}
        for table, chains in ruleset.tables.items():
            for cname, chain in chains.items():
                for rule in chain.rules:
                    self._by_text.setdefault((table, cname, _key(rule.text)), rule.num)
                    if rule.listed:  # (an iptables-nft rule paired with its save line: as nft prints it)
                        self._by_text.setdefault((table, cname, _key(rule.listed)), rule.num)
        self._sig: SignatureIndex | None = None  # xt_nft.SignatureIndex, built when a step's text is in the other syntax
        self.handle_mismatch = 0  # handles whose listed rule is not the traced one
        self.cut = 0  # rule texts cut short (a paste or a terminal cut the line): see cut_rule
        self.cut_lines: list[str] = []  # where the first of them were (path:line)

    def number(self, ev: TraceEvent) -> int | None:
        rs = self.rs
        if ev.kind is not StepKind.RULE:
            chain = rs.chain(ev.table, ev.chain)
            return None if chain is None else len(chain.rules) + 1
        text = ev.text
        if ev.handle is not None:
            rule = rs.handles.get((ev.table, ev.chain, ev.handle))
            if rule is not None:
                # an iptables-nft rule paired with its save line: nft prints its listed rendering
                if not text or self._same(rule.text, text) or (rule.listed and self._same(rule.listed, text)):
                    return rule.num
                self.handle_mismatch += 1
        if not text:
            return None
        num = self._by_text.get((ev.table, ev.chain, _key(text)))
        if num is not None:
            return num
        if self._sig is None:
            from .xt_nft import SignatureIndex

            self._sig = SignatureIndex(rs)
        num = self._sig.number(ev.table, ev.chain, text)
        return num if num is not None else self.cut_rule(ev, text)

    def cut_rule(self, ev: TraceEvent, text: str) -> int | None:
        """The rule a text that matches none begins, when the line was cut short inside it.

        A text that is a proper prefix of rules of its chain (``-A PREROUTING -m comment -``) is
        counted as cut (``cut``, ``cut_lines``) and names the one of them its handle names, or the
        only one, or the only one whose target is the kernel's verdict; else it is unknown text
        (``ev.text`` cleared: no rule is made of it). None when it begins no rule (not cut).
        """
        chain = self.rs.chain(ev.table, ev.chain)
        if chain is None:
            return None
        k = _key(text)
        if not k:
            return None
        got = [r for r in chain.rules
               if any(t and _key(t) != k and _key(t).startswith(k) for t in (r.text, r.listed))]
        if not got:
            return None
        self.cut += 1
        if len(self.cut_lines) < 10 and ev.origin is not None:
            self.cut_lines.append(f"{ev.origin.path}:{ev.origin.line}")
        if ev.handle is not None:
            mine = self.rs.handles.get((ev.table, ev.chain, ev.handle))
            if mine is not None and mine in got:
                return mine.num
        if len(got) > 1:
            v = (ev.verdict or "").partition(":")[2].lower()  # "jump:KUBE-SERVICES" -> its chain
            got = [r for r in got if v and (r.target or "").lower() == v] or got
        if len(got) == 1:
            return got[0].num
        if isinstance(ev, MonitorEvent):  # (only a monitor's events have text)
            ev.text = None
        return None

    def _same(self, listed: str, traced: str) -> bool:
        if _key(listed) == _key(traced) or "xt match " in listed or "xt target " in listed:
            return True  # (an iptables-nft xt placeholder cannot be compared: the handle decides)
        from .xt_nft import signature

        return signature(listed) == signature(traced)

    def resolve(self, ev: TraceEvent) -> TraceEvent:
        if ev.num is None:
            ev.num = self.number(ev)
        return ev


def _key(text: str) -> str:
    """Rule text for exact matching: an iptables line without counters, an nft line via nft_rule_key."""
    return _xt_key(text) if text.startswith(("-A ", "[")) else nft_rule_key(text)


def resolve_handles(events: Iterable[TraceEvent], ruleset: Ruleset) -> Iterator[TraceEvent]:
    """Fill ``num`` of nf_tables events from the ruleset: by handle, else by rule text; ends = rules + 1."""
    r = Resolver(ruleset)
    return map(r.resolve, events)
