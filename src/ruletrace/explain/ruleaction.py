"""What a rule or chain end does to a packet, read from the ruleset alone (one step, no path).

Used by the path walk (explain.py): the action a rule's target implies, the kernel's verdict
where a source reports one, a rule known only from a monitor's text, the hook of a base chain.
"""

from __future__ import annotations

from ..model import BUILTIN_CHAINS, Chain, Rule, Ruleset, iptables_priority
from ..rulesets.iptables_save import find_target
from ..rulesets.nft_model import HOOKS as NFT_HOOKS
from ..rulesets.nft_model import rule_facts
from .fate import ENDS_TABLE as _ENDS_TABLE

# target -> action; anything else is a non-terminal target ("continue") or a user chain
TERMINAL = {
    "ACCEPT": "accept",
    "DROP": "drop",
    "REJECT": "reject",
    "QUEUE": "queue",
    "NFQUEUE": "queue",
    "RETURN": "return",
    "DNAT": "dnat",
    "SNAT": "snat",
    "MASQUERADE": "masquerade",
    "REDIRECT": "redirect",
    "NETMAP": "netmap",
    "TPROXY": "tproxy",
    "SYNPROXY": "synproxy",
}
KERNEL_VERDICTS = {"accept", "drop", "reject", "queue", "return", "continue", "jump", "goto", "stolen"}


def action_for(rule: Rule | None, ruleset: Ruleset | None, table: str) -> str:
    if rule is None:
        return "unknown"
    t = rule.target
    if not t:
        return "continue"
    a = TERMINAL.get(t)
    if a is not None:
        return a
    if ruleset is not None and ruleset.chain(table, t) is not None:
        return "goto" if rule.goto else "jump"
    if rule.goto:
        return "goto"
    if t.isupper() or t.replace("-", "").replace("_", "").isupper():
        # non-terminating extension targets: LOG, MARK, CONNMARK, CT, TRACE, NFLOG, TTL, …
        return "continue"
    return "jump"


def kernel_action(kv: str, text_action: str) -> str:
    """What a rule did, from the kernel's verdict and what its printed text says it does.

    nf_tables reports a NAT statement's verdict as accept and a reject statement's as drop:
    the text tells them apart. Otherwise the kernel's verdict is the fact.
    """
    k = kv.split(":", 1)[0].lower()
    if k == "accept" and text_action in _ENDS_TABLE:
        return text_action
    if k == "drop" and text_action == "reject":
        return "reject"
    return k if k in KERNEL_VERDICTS else text_action


def trace_rule(table: str, chain: str, text: str) -> Rule:
    """A rule known only from the text a monitor printed (``num`` None: its position is not known)."""
    if text.startswith("-A "):  # xtables-monitor: iptables syntax
        target, goto = find_target(text)
        return Rule(table, chain, None, text, target=target, goto=goto)  # type: ignore[arg-type]
    target, goto, vmap, _ = rule_facts(text)
    return Rule(table, chain, None, text, target=target, goto=goto, vmap=vmap)  # type: ignore[arg-type]


def base_hook(ch: Chain | None, table: str, chain: str) -> tuple[str | None, int | None]:
    """(hook, priority) of a base chain: the ruleset's, else what an iptables or hook-named chain implies."""
    if ch is not None and ch.hook:
        return ch.hook.upper(), ch.priority
    if chain in BUILTIN_CHAINS:
        return chain, iptables_priority(table, chain)
    if chain.lower() in NFT_HOOKS:
        return chain.upper(), None
    return None, None


# what an `iptables -L` row shows for "any": protocol, option, interfaces, addresses
_LIST_ANY = frozenset({"0", "all", "--", "*", "0.0.0.0/0", "::/0"})


def unconditional_verdict(rule: Rule) -> bool:
    """A rule with no match at all whose target is a standard verdict (``-j DROP``).

    Read from the iptables-save form (``-A X -j DROP``) and the ``iptables -L`` row form
    (``DROP all -- * * 0.0.0.0/0 0.0.0.0/0``).
    """
    if rule.target not in ("ACCEPT", "DROP", "RETURN"):
        return False
    words = rule.spec.split()
    if words == ["-j", rule.target]:
        return True
    return len(words) > 1 and words[0] == rule.target and all(w in _LIST_ANY for w in words[1:])
