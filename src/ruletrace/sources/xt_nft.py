"""An iptables-nft rule as ``nft monitor trace`` prints it, matched back to its iptables-save line.

iptables-nft stores a rule as nf_tables expressions; ``nft`` prints them in its own syntax
(``-s 10.0.0.0/24 -p tcp -m multiport --dports 22,80 -j ALLOWED`` becomes ``meta l4proto tcp
ip saddr 10.0.0.0/24 tcp dport { 22, 80 } counter jump ALLOWED``). Rather than translate every
match module, both forms are reduced to what a rule is told apart by: its action (accept, drop,
jump CHAIN, dnat, …), and the set of values it names (addresses, numbers, quoted names, state
words). A trace step takes the save line of its chain with the same reduction when exactly one
line has it; otherwise its number stays unknown (its text is still shown).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ..errors import RuletraceError
from ..fields import NFT_ICMP_TYPES, NFT_ICMPV6_TYPES, bounded_int
from ..model import Ruleset
from ..rulesets.iptables_save import tokenize

# value words both forms print the same (lower-cased): conntrack states and statuses, address types
_WORDS = frozenset({
    "new", "established", "related", "invalid", "untracked", "snat", "dnat", "confirmed", "expected",
    "seen-reply", "assured", "local", "unicast", "broadcast", "multicast", "anycast", "blackhole",
    "unreachable", "prohibit", "throw", "nat", "xresolve", "original", "reply",
})
_ACTIONS = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return", "REJECT": "reject", "QUEUE": "queue",
            "NFQUEUE": "queue", "DNAT": "dnat", "SNAT": "snat", "MASQUERADE": "masquerade",
            "REDIRECT": "redirect", "LOG": "log", "NFLOG": "log", "MARK": "mark", "CONNMARK": "ct mark",
            "TRACE": "nftrace", "NOTRACK": "notrack", "CT": "ct"}
_NFT_ACTIONS = {"accept", "drop", "return", "reject", "queue", "dnat", "snat", "masquerade", "redirect", "log",
                "notrack"}
_NUMBER = re.compile(r"^(?:0x[0-9a-fA-F]+|[0-9]+)$")
_NFT_TOKEN = re.compile(r'"[^"]*"?|[{}]|[^\s{}",]+')
_SKIP_ARG = frozenset({"-p", "--protocol", "-m", "--match", "--reject-with", "--log-level", "--state",
                       "--ctstate", "--ctstatus", "--dst-type", "--src-type"})
_STATE_OPTS = frozenset({"--state", "--ctstate", "--ctstatus", "--dst-type", "--src-type"})
_IFACE_OPTS = frozenset({"-i", "-o", "--in-interface", "--out-interface", "--physdev-in", "--physdev-out"})


def _values(word: str, out: set[Any], v6: bool = False) -> None:
    """Add what one value word names: an address, numbers, a state word, an ICMP type."""
    w = word.strip(",")
    if not w:
        return
    try:
        net = ipaddress.ip_network(w, strict=False)
        out.add(("a", str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)))
        return
    except ValueError:
        pass
    if w.startswith("[") or w.count(":") == 1 or ("-" in w and not w[0].isalpha()):
        # "172.17.0.2:80", "[fd00::1]:80", "1000-2000", "1000:2000"
        head, sep, tail = w.rpartition(":") if w.count(":") == 1 or w.startswith("[") else w.partition("-")
        if sep and head:
            _values(head.strip("[]"), out, v6)
            _values(tail, out, v6)
            return
        if sep == ":" and tail:  # ":81" (nft's ``redirect to :81``, iptables' ``--to-ports 81``)
            _values(tail, out, v6)
            return
    n = bounded_int(w, 0) if _NUMBER.match(w) else None
    if n is not None:
        out.add(("n", n))
        return
    parts = w.split("/") if "/" in w else []
    nums = [bounded_int(p, 0) if _NUMBER.match(p) else None for p in parts]
    if parts and None not in nums:  # VALUE/MASK (a mask of all 32 bits is no mask: nft prints none)
        out.update(("n", x) for i, x in enumerate(nums) if not (i and x == 0xFFFFFFFF))
        return
    low = w.lower()
    if "," in low:
        for p in low.split(","):
            _values(p, out, v6)
        return
    if low in _WORDS:
        out.add(("w", low))
    else:
        num = (NFT_ICMPV6_TYPES if v6 else NFT_ICMP_TYPES).get(low)
        if num is not None:
            out.add(("n", num))


def _iface(name: str) -> tuple[str, str]:
    return ("s", name.rstrip("+*"))


def save_signature(text: str) -> tuple[str, frozenset[Any]]:
    """(action, values) of an iptables-save rule line (``-A CHAIN …``); None when it cannot be read."""
    try:
        args = tokenize(text)
    except RuletraceError:  # an unbalanced quote (a cut trace line): the words as they are
        args = text.split()
    i, n = (2 if args[:1] == ["-A"] else 0), len(args)  # past ``-A CHAIN``
    vals: set[Any] = set()
    action = "continue"
    v6 = False
    while i < n:
        a = args[i]
        if a == "!":
            vals.add(("neg",))
        elif a in ("-j", "--jump", "-g", "--goto") and i + 1 < n:
            t = args[i + 1]
            action = _ACTIONS.get(t) or f"{'goto' if a in ('-g', '--goto') else 'jump'} {t}"
            i += 2
            continue
        elif a in _IFACE_OPTS and i + 1 < n:
            vals.add(_iface(args[i + 1]))
            i += 2
            continue
        elif a == "--comment":  # iptables-nft keeps it in the rule's user data: traces do not print it
            i += 2
            continue
        elif a in ("--log-prefix", "--nflog-prefix") and i + 1 < n:
            vals.add(("s", args[i + 1]))
            i += 2
            continue
        elif a in _STATE_OPTS and i + 1 < n:
            _values(args[i + 1], vals)
            i += 2
            continue
        elif a in _SKIP_ARG:
            i += 2
            continue
        elif not a.startswith("-"):
            _values(a, vals, v6)
        elif a == "--icmpv6-type":
            v6 = True
        i += 1
    return action, frozenset(vals)


def nft_signature(text: str) -> tuple[str, frozenset[Any]]:
    """(action, values) of an nft rule's text as a trace or a listing prints it."""
    toks = _NFT_TOKEN.findall(text)
    vals: set[Any] = set()
    action = "continue"
    v6 = False
    i, n = 0, len(toks)
    while i < n:
        t = toks[i]
        prev = toks[i - 1] if i else ""
        if t == "comment" and i + 1 < n:
            i += 2
            continue
        if t.startswith('"'):
            vals.add(_iface(t.strip('"')))
        elif t == "!=":
            vals.add(("neg",))
        elif t in ("jump", "goto") and i + 1 < n:
            action = f"{t} {toks[i + 1]}"
            i += 2
            continue
        elif t == "counter" and toks[i + 1 : i + 2] == ["packets"]:
            i += 5
            continue
        elif t == "reject":
            action = "reject"
            break  # "with tcp reset": how iptables names it differs
        elif t == "nftrace" and toks[i + 1 : i + 3] == ["set", "1"]:
            action = "nftrace"
            i += 3
            continue
        elif t in _NFT_ACTIONS and prev not in ("status", "state", "type", "!=", "==", ","):
            action = t if action == "continue" or t != "log" else action
        elif t == "set" and i >= 2 and toks[i - 1] == "mark" and action == "continue":
            action = "mark" if toks[i - 2] == "meta" else "ct mark"
        elif t == "xt" and i + 2 < n:
            kind, name = toks[i + 1], toks[i + 2].strip('"')
            if kind == "target":
                action = _ACTIONS.get(name, name.lower())
            i += 3
            continue
        else:
            v6 = v6 or t in ("icmpv6", "ipv6-icmp")
            _values(t, vals, v6)
        i += 1
    return action, frozenset(vals)


def signature(text: str) -> tuple[str, frozenset[Any]]:
    """The reduced form of a rule in either syntax (an iptables-save line starts with ``-A``)."""
    return save_signature(text) if text.startswith("-A ") else nft_signature(text)


class SignatureIndex:
    """The rules of one ruleset by (table, chain, reduced form) -> rule numbers."""

    def __init__(self, ruleset: Ruleset) -> None:
        self._by: dict[tuple[Any, ...], list[int]] = {}
        for table, chains in ruleset.tables.items():
            for cname, chain in chains.items():
                for rule in chain.rules:
                    self._by.setdefault((table, cname, signature(rule.text)), []).append(rule.num)

    def number(self, table: str, chain: str, text: str) -> int | None:
        """The number of the only rule of ``table:chain`` whose reduced form is that of ``text``."""
        nums = self._by.get((table, chain, signature(text)))
        return nums[0] if nums is not None and len(nums) == 1 else None
