"""The words of ``--explain-miss``, once: ``simulate`` (the simulated packet) and ``explain`` (a traced
packet's logged fields, analyze/explain_miss.py) say why a rule of the chain did not match alike.

"rule 5 would have accepted it but `-s fd00:97::/64` did not match: the packet's source is fd00:98::2"
"""

from __future__ import annotations

import ipaddress
from contextlib import suppress

from ..errors import RuletraceError
from ..fields import FIELD_WORDS

MATCHED = "matched"
NOT_REACHED = "not reached: the packet left the chain before this rule"
_VERBS = {"ACCEPT": "accepted", "DROP": "dropped", "REJECT": "rejected"}


def parse_chain(spec: str) -> tuple[str, str]:
    """``[TABLE:]CHAIN`` -> (table, chain); the table is ``filter`` when not given."""
    t, _, ch = spec.partition(":")
    if not ch:
        t, ch = "filter", t
    if not t or not ch:
        raise RuletraceError(f"--explain-miss: give [TABLE:]CHAIN, not {spec!r}")
    return t, ch


def would(target: str | None, to_chain: bool = False, goto: bool = False) -> str:
    """What the rule would have done: "would have accepted it", "would have jumped to KUBE-SVC-X"; "" for
    a rule without a target or with one that lets the packet go on (LOG, MARK …)."""
    if not target:
        return ""
    if to_chain:
        return f"would have {'gone' if goto else 'jumped'} to {target}"
    if target.upper() == "RETURN":
        return "would have returned"
    verb = _VERBS.get(target.upper())
    return f"would have {verb} it" if verb else ""


def failed(option: str, field: str, have: str | None, target: str | None = None, to_chain: bool = False,
           goto: bool = False) -> str:
    """A condition that did not match, with the packet's value of the field it reads; ``to_chain``: the
    target is a chain of the ruleset (a jump, or a goto)."""
    what = FIELD_WORDS.get(field, field or "value")
    lead = would(target, to_chain, goto)
    head = f"{lead} but `{option}` did not match" if lead else f"`{option}` did not match"
    if not field:
        return head
    if have is None or have == "":
        return f"{head}: the packet has no {what}"
    if field in ("SRC", "DST") and ":" in have:  # the log's full IPv6 form, printed compressed
        with suppress(ValueError):
            have = str(ipaddress.ip_address(have))
    return f"{head}: the packet's {what} is {have}"


def unknown(options: list[str]) -> str:
    """Conditions the log cannot show: the answer is unknown, never guessed."""
    shown = ", ".join(f"`{o}`" for o in options)
    return f"unknown: the log cannot show whether {shown} held (every condition it shows did)"


# a traced packet (explain --explain-miss): what the trace itself shows about a rule
TRACED_MATCH = "matched: the trace shows the packet took this rule"
TRACE_ON = "matched: it turned tracing on (a trace starts after the rule that starts it, so never shows it)"
WOULD_MATCH = "every condition holds for the logged fields: it would have matched (the packet did not reach this chain)"
TRACED_NO_MATCH = "did not match (the trace shows it), though every condition the log shows holds"
NO_RULE_TEXT = "unknown: the ruleset listing does not show this rule's match options"


def traced_unknown(options: list[str]) -> str:
    """The trace shows the rule did not match, and only conditions the log cannot show can be why."""
    shown = ", ".join(f"`{o}`" for o in options)
    if len(options) > 1:
        return f"did not match (the trace shows it): one of {shown}, which the log cannot show, did not hold"
    return f"did not match (the trace shows it): {shown}, which the log cannot show, did not hold"
