"""The terminal look of ruletrace: one rich Theme with named styles, and safe Text for untrusted strings."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from rich.theme import Theme

from ..model import Fate

# Style names are what renderers use; colours are chosen only here.
STYLES: dict[str, str] = {
    # packet header
    "packet.id": "bold",
    "packet.proto": "bold",
    "packet.addr": "cyan",
    "packet.iface": "dim",
    # a step's kind (the TRACE type): rule / policy / return
    "step.rule": "",
    "step.policy": "blue",
    "step.return": "dim",
    "step.decisive": "bold reverse",
    "hook": "bold magenta",
    "table": "magenta",
    "chain": "bold",
    "rule.num": "cyan",
    "rule.text": "",
    "rule.missing": "yellow italic",
    "owner": "bold cyan",  # who made the deciding rule (explain/owners.py)
    # what a rule or policy did
    "verdict.accept": "green",
    "verdict.drop": "bold red",
    "verdict.reject": "bold red",
    "verdict.unknown": "yellow",
    # what happened to the packet in the end
    "fate.dropped": "bold red",
    "fate.rejected": "bold red",
    "fate.delivered": "bold green",
    "fate.forwarded": "bold green",
    "fate.sent": "bold green",
    "fate.unknown": "bold yellow",
    # annotations
    "nat": "bold cyan",
    "mark": "bold blue",
    "cause": "bold yellow",
    "warning": "yellow",
    "note": "dim italic",
    "origin": "dim",
    "field": "dim",
    "label": "bold",
    # summary table
    "summary.count": "bold",
    "summary.header": "bold",
}

THEME = Theme(STYLES, inherit=True)

_FATES = frozenset(f.value for f in Fate)
_VERDICT_STYLES = {
    "accept": "verdict.accept",
    "drop": "verdict.drop",
    "reject": "verdict.reject",
}


def verdict_style(action: str | None) -> str:
    """The style name for a verdict or policy such as ``ACCEPT`` / ``drop``."""
    return _VERDICT_STYLES.get((action or "").lower(), "verdict.unknown")


def fate_style(fate: Fate | str) -> str:
    """The style name for a packet's fate."""
    return f"fate.{fate}" if str(fate) in _FATES else "fate.unknown"


def clean(text: object) -> str:
    """``text`` as a string with every non-printable character shown as an escape (``\\x1b``).

    Rule text, comments, interface names and log fields come from files the user did not
    write: no terminal control sequence may reach the terminal through them.
    """
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else " " if ch == "\t" else repr(ch)[1:-1] for ch in s)


def safe(text: object, style: str | Style = "") -> Text:
    """A ``Text`` of untrusted ``text`` (never parsed as markup), cleaned of control characters."""
    return Text(clean(text), style=style)


def cut_middle(text: str, keep: int) -> str:
    """``text`` with ``keep`` of its characters, the ends kept and "…" for the middle
    ("KUBE-XLB…BYUVK3NB"); as it is when it has no more than ``keep``."""
    if keep >= len(text):
        return text
    head = (keep + 1) // 2
    return text[:head] + "…" + text[len(text) - (keep - head):]
