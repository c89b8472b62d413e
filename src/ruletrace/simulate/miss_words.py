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


def would(target: str | None, goto: bool = False) -> str:
    """What the rule would have done: "would have accepted it", "would have jumped to KUBE-SVC-X"; "" for
    a rule without a target."""
    if not target:
        return ""
    verb = _VERBS.get(target.upper())
    if verb:
        return f"would have {verb} it"
    return f"would have {'gone' if goto else 'jumped'} to {target}"


def failed(option: str, field: str, have: str | None, target: str | None = None, goto: bool = False) -> str:
    """A condition that did not match, with the packet's value of the field it reads."""
    what = FIELD_WORDS.get(field, field or "value")
    lead = would(target, goto)
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
