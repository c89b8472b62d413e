"""A rule's match options checked against logged packet fields: which option matched one packet and not the other.

The rule is parsed by ``rulesets.options`` (the simulator's parser), which knows which module each
option belongs to and how many arguments it takes. Only options a log line can show are tested
(docs/report.md lists them); the others are returned as unknown, never blamed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..errors import RuletraceError
from ..model import Rule
from ..rulesets.iptables_save import tokenize
from ..rulesets.options import (
    number,
    parse_icmp_type,
    parse_proto,
    parse_tcp_flags,
    port_range,
    split_rule,
    value_mask,
)


@dataclass(slots=True)
class OptionCheck:
    """One match option of a rule checked against both packets."""

    option: str  # as written: "--dport 52000", "! -i docker0", "-m mark --mark 0x8000/0x8000"
    field: str | None  # the packet field it reads (kernel-log name), None when the log cannot show it
    left: str | None  # that field's value for each packet (None: absent)
    right: str | None
    left_ok: bool | None  # whether the option matches; None: cannot tell from the log
    right_ok: bool | None

    @property
    def decisive(self) -> bool:
        return self.left_ok is not None and self.right_ok is not None and self.left_ok != self.right_ok



# match options check_rule can test against a logged field -> its name for them; the rule is
# parsed by rulesets.options (the simulator's parser), which knows which module each option
# belongs to and how many arguments it takes
_OPTIONS: dict[str, str] = {
    "--dport": "dport", "--destination-port": "dport", "--sport": "sport", "--source-port": "sport",
    "--dports": "dports", "--destination-ports": "dports", "--sports": "sports", "--source-ports": "sports",
    "--ports": "ports", "--mark": "mark", "--tcp-flags": "tcpflags", "--syn": "syn",
    "--icmp-type": "icmptype", "--icmpv6-type": "icmptype", "--physdev-in": "physin", "--physdev-out": "physout",
    "--uid-owner": "uid", "--gid-owner": "gid",
}
_IP_NAMES = {"s": "src", "d": "dst", "i": "in", "o": "out", "p": "proto", "f": "frag"}
_FIELD = {
    "proto": "PROTO", "src": "SRC", "dst": "DST", "in": "IN", "out": "OUT", "dport": "DPT", "sport": "SPT",
    "dports": "DPT", "sports": "SPT", "mark": "MARK", "tcpflags": "TCPFLAGS", "syn": "TCPFLAGS",
    "icmptype": "TYPE", "physin": "PHYSIN", "physout": "PHYSOUT", "uid": "UID", "gid": "GID", "frag": "FRAG",
}


def rule_options(rule_text: str) -> list[tuple[str, str, list[str], bool, str]]:
    """The match options of an iptables-save rule: (name, module, args, negated, as written).

    The target's options are left out. Options this module cannot check against the log are
    returned with name ``"?"`` and their module; a rule the parser rejects gives no options.
    """
    return [(n, m, list(a), neg, w) for n, m, a, neg, w in _options_of(rule_text)]


def fields_read(rule_text: str) -> tuple[str, ...]:
    """The logged fields the rule's checkable options read (kernel-log names), for callers that
    cache ``check_rule`` results on just those values."""
    opts = _options_of(rule_text) if rule_text.startswith("-A ") else nft_rule_options(rule_text)
    return tuple(sorted({_FIELD[name] for name, *_ in opts if name != "?"}))


@lru_cache(maxsize=1 << 14)
def _options_of(rule_text: str) -> tuple[tuple[str, str, tuple[str, ...], bool, str], ...]:
    try:
        tokens = tokenize(rule_text)
        if tokens[:1] in (["-A"], ["--append"], ["-I"], ["--insert"]):
            tokens = tokens[2:]
        parsed = split_rule(tokens, None)
    except RuletraceError:
        return ()
    out: list[tuple[str, str, tuple[str, ...], bool, str]] = []
    for neg, letter, val in parsed.ip:
        ip_args: tuple[str, ...] = (val,) if letter != "f" else ()
        out.append((_IP_NAMES[letter], "", ip_args, neg, _written(neg, f"-{letter}", ip_args)))
    for module, opts in parsed.modules:
        if module == "comment":
            continue
        for neg, opt, args in opts:
            name = _OPTIONS.get(opt, "?")
            if name == "mark" and module != "mark":
                name = "?"  # connmark's --mark is the connection's mark, which the log does not show
            elif name in ("dport", "sport") and module == "multiport":  # multiport's --dport takes lists too
                name += "s"
            out.append((name, module, tuple(args), neg, _written(neg, opt, args)))
    return tuple(out)


def _written(neg: bool, opt: str, args: Sequence[str]) -> str:
    return " ".join((["!"] if neg else []) + [opt, *args])


def check_rule(rule_text: str, left: Mapping[str, str], right: Mapping[str, str]) -> list[OptionCheck]:
    """Each match option of ``rule_text`` checked against two packets' fields."""
    checks: list[OptionCheck] = []
    for name, module, args, neg, written in rule_options(rule_text):
        if name == "?":
            if module and module != "comment":
                shown = written if module in written else f"-m {module} {written}"
                checks.append(OptionCheck(shown, None, None, None, None, None))
            continue
        f = _FIELD.get(name)
        if f is None:  # an option the table does not map to one field (multiport --ports: either port)
            checks.append(OptionCheck(written, None, None, None, None, None))
            continue
        if name == "mark":
            written = f"-m mark {written}"
        va, vb = left.get(f), right.get(f)
        checks.append(OptionCheck(written, f, _shown(f, va), _shown(f, vb),
                                  _apply(name, module, args, va, neg), _apply(name, module, args, vb, neg)))
    return checks


def taken_mismatch(rule: Rule, fields: Mapping[str, str]) -> str | None:
    """What of a rule cannot match a packet that the trace shows taking it (``Explainer.taken_check``):
    "its `-i lo` does not match the packet's IN=eth0"; None where every option the fields show fits or
    cannot be told. Only fields the log wrote are read (a line cut short, MARK=0 left out: never blamed)."""
    try:
        checks = check_rule(rule.text, fields, fields)
    except RuletraceError:
        return None
    for c in checks:
        have = fields.get(c.field) if c.field is not None else None
        if c.left_ok is False and have is not None and not (c.field in _IFACES and _PLACEHOLDER.fullmatch(have)):
            return f"its `{c.option}` does not match the packet's {c.field}={c.left}"
    return None


_IFACES = frozenset({"IN", "OUT", "PHYSIN", "PHYSOUT"})
_PLACEHOLDER = re.compile(r"if\d+")  # an interface known by index only (NFLOG, ulogd without --ifmap): its name unknown


def _shown(f: str, v: str | None) -> str | None:
    if f == "MARK" and not v:
        return "0x0"  # nf_log prints MARK= only when the mark is nonzero
    return v


def _apply(name: str, module: str, args: Sequence[str], have: str | None, neg: bool) -> bool | None:
    try:
        r = _match(name, module, args, have)
    except RuletraceError:  # a value the option grammar rejects: cannot tell
        return None
    return None if r is None else r != neg


def _match(name: str, module: str, args: Sequence[str], have: str | None) -> bool | None:
    want = args[0] if args else ""
    if name == "mark":
        v, m = value_mask(want)
        return (number(have or "0") & m) == v
    if name == "syn":
        return _tcp_flags(("FIN,SYN,RST,ACK", "SYN"), have)
    if name == "tcpflags":
        return _tcp_flags(args, have)
    if name == "frag":
        return bool(have) if have is not None else False
    if have is None or have == "":
        # a TCP/UDP port or an interface the log does not show cannot match
        return False if name in ("dport", "sport", "dports", "sports", "ports", "in", "out", "proto") else None
    if name == "proto":
        n = parse_proto(want)
        return n == 0 or n == parse_proto(have)
    if name in ("src", "dst"):
        return _addr(want, have)
    if name in ("in", "out", "physin", "physout"):
        return have.startswith(want[:-1]) if want.endswith("+") else have == want
    if name in ("dport", "sport", "dports", "sports", "ports"):
        if not have.isdigit():
            return None
        p = int(have)
        return any(lo <= p <= hi for lo, hi in (port_range(part) for part in want.split(",")))
    if name == "icmptype":
        typ, _code = parse_icmp_type(want, module != "icmp")
        return typ == 0xFF or str(typ) == have  # icmp_type_code_match: type 0xFF is any type
    if name in ("uid", "gid"):
        lo, _, hi = want.partition("-")
        if lo.isdigit() and have.isdigit():
            return int(lo) <= int(have) <= int(hi or lo)
        return None
    return None


def _tcp_flags(args: Sequence[str], have: str | None) -> bool | None:
    if len(args) < 2 or have is None:
        return None
    return (parse_tcp_flags(have) & parse_tcp_flags(args[0])) == parse_tcp_flags(args[1])


def _addr(want: str, have: str) -> bool | None:
    """``have`` in one of ``want``'s networks or nft ranges (``10.0.0.1-10.0.0.5``)."""
    try:
        ip = ipaddress.ip_address(have)
        for w in want.split(","):
            lo, dash, hi = w.partition("-")
            if dash:
                a, b = ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())
                if a.version == ip.version and a <= ip <= b:  # type: ignore[operator]  # one version, checked
                    return True
            elif ip in ipaddress.ip_network(w, strict=False):
                return True
        return False
    except ValueError:
        return None


# --- native nft rule text: the same checks, from nft's match expressions ---------------------------
# (selector words) -> (option name, module); "tcp dport" also matches the protocol, as nft's own
# dependency does. What is not here (ct, fib, sets by name, meta nfproto, marks with masks …) is
# returned as "?" with the expression as written: the log cannot settle it.
_NFT_SELECTORS: dict[tuple[str, str], tuple[str, str]] = {
    ("ip", "saddr"): ("src", ""), ("ip", "daddr"): ("dst", ""), ("ip6", "saddr"): ("src", ""),
    ("ip6", "daddr"): ("dst", ""), ("meta", "l4proto"): ("proto", ""), ("ip", "protocol"): ("proto", ""),
    ("ip6", "nexthdr"): ("proto", ""), ("meta", "mark"): ("mark", "mark"), ("icmp", "type"): ("icmptype", "icmp"),
    ("icmpv6", "type"): ("icmptype", "icmp6"), ("th", "dport"): ("dport", ""), ("th", "sport"): ("sport", ""),
}
_NFT_L4 = frozenset({"tcp", "udp", "sctp", "udplite", "dccp"})
_NFT_IFACE = {"iifname": "in", "oifname": "out"}
_NFT_STATEMENTS = frozenset({"accept", "drop", "reject", "return", "jump", "goto", "queue", "continue", "counter",
                             "log", "limit", "quota", "dnat", "snat", "masquerade", "redirect", "notrack", "comment",
                             "meta", "ct", "mark", "tcp", "udp", "ip", "ip6", "th", "iifname", "oifname", "icmp",
                             "icmpv6", "fib", "#", "xt", "numgen", "flow", "synproxy", "tproxy", "dup", "fwd", "set"})


def nft_rule_options(rule_text: str) -> list[tuple[str, str, list[str], bool, str]]:
    """The match expressions of an nft rule as ``rule_options`` gives iptables options."""
    from ..simulate.nft_values import split_tokens  # the simulator's nft tokenizer

    try:
        toks = split_tokens(rule_text)
    except (RuletraceError, ValueError):
        return []
    out: list[tuple[str, str, list[str], bool, str]] = []
    i, n = 0, len(toks)
    while i < n:
        t = toks[i]
        pair = (t, toks[i + 1]) if i + 1 < n else (t, "")
        if t in ("counter", "log", "comment", "limit", "quota") or t in ("accept", "drop", "reject", "return",
                                                                              "continue", "masquerade", "#"):
            break  # statements and the verdict: no matches after them in what nft lists
        if t in _NFT_IFACE or pair in _NFT_SELECTORS or (t in _NFT_L4 and pair[1] in ("dport", "sport")):
            start = i
            i += 1 if t in _NFT_IFACE else 2
            values, neg, i = _nft_values(toks, i)
            written = _nft_written(toks[start:i])
            if t in _NFT_IFACE:
                name, module = _NFT_IFACE[t], ""
                if values is not None:  # nft "eth*" is iptables "eth+"
                    values = [v[:-1] + "+" if v.endswith("*") else v for v in values]
            elif t in _NFT_L4:
                out.append(("proto", "", [t], False, t))  # tcp dport … needs a TCP packet (nft's dependency)
                name, module = pair[1], ""
            else:
                name, module = _NFT_SELECTORS[pair]
            if name in ("dport", "sport") and values is not None:
                values = [v.replace("-", ":") for v in values]  # nft's range 80-90 is iptables' 80:90
            if values is None or (name in ("in", "out", "proto", "mark", "icmptype") and len(values) != 1):
                out.append(("?", "nft", [], neg, written))
            else:
                out.append((name, module, [",".join(values)], neg, written))
            continue
        if t in ("ct", "fib", "meta", "ip", "ip6", "mark", "numgen") or t.startswith("@"):
            start = i
            i += 1
            while i < n and toks[i] not in _NFT_STATEMENTS:
                i += 1
            out.append(("?", "nft", [], False, _nft_written(toks[start:i])))
            continue
        i += 1
    return out


# the first word of an nft match -> the address family it needs: nft gives an ``ip``/``ip6``/``icmp``/
# ``icmpv6`` expression an implicit ``meta nfproto`` (or l4proto) dependency in inet, bridge and
# netdev tables, so such a rule never matches a packet of the other family
_NFT_FAMILY = {"ip": "ipv4", "icmp": "ipv4", "ip6": "ipv6", "icmpv6": "ipv6"}


def nft_rule_family(rule_text: str) -> str | None:
    """The address family ("ipv4"/"ipv6") an nft rule's matches need, None: any (or both named)."""
    return family_needed(written for *_, written in nft_rule_options(rule_text))


def family_needed(written: Iterable[str]) -> str | None:
    """``nft_rule_family`` of a rule's match expressions as written (``OptionCheck.option``: the
    rule parsed once, by ``check_nft_rule``)."""
    fams = {_NFT_FAMILY[w] for x in written if (w := x.partition(" ")[0]) in _NFT_FAMILY}
    return fams.pop() if len(fams) == 1 else None


def _nft_written(toks: list[str]) -> str:
    """An expression's tokens as nft lists them: ``{ 22, 80-90 }`` in a set, ``new,untracked`` in a bare list."""
    out: list[str] = []
    depth = 0
    for t in toks:
        if t == "," and out:
            out[-1] += ","
            if depth == 0:
                out[-1] += "\0"  # glued to the next value
            continue
        depth += (t == "{") - (t == "}")
        out.append(t)
    return " ".join(out).replace("\0 ", "")


def _nft_values(toks: list[str], i: int) -> tuple[list[str] | None, bool, int]:
    """The value(s) at ``toks[i]``: ``!= x``, ``{ a, b }``, ``a,b``; None for a named set or a mask."""
    n = len(toks)
    neg = False
    if i < n and toks[i] in ("!=", "==", "eq", "ne"):
        neg = toks[i] in ("!=", "ne")
        i += 1
    if i >= n:
        return None, neg, i
    if toks[i] == "{":
        j = toks.index("}", i) if "}" in toks[i:] else n - 1
        vals = [v.strip('"') for v in toks[i + 1 : j] if v != ","]
        return (vals or None), neg, j + 1
    if toks[i] in ("vmap", "map") and i + 1 < n and toks[i + 1] == "{":  # a dispatch: not one condition
        return None, neg, (toks.index("}", i) + 1 if "}" in toks[i:] else n)
    if toks[i].startswith("@") or toks[i] in ("&", "|", "^", "vmap", "map"):
        return None, neg, i + 1
    vals = [toks[i].strip('"')]
    i += 1
    while i + 1 < n and toks[i] == ",":
        vals.append(toks[i + 1].strip('"'))
        i += 2
    return vals, neg, i


def check_nft_rule(rule_text: str, left: Mapping[str, str], right: Mapping[str, str]) -> list[OptionCheck]:
    """Each match expression of an nft rule checked against two packets' fields (as ``check_rule``)."""
    checks: list[OptionCheck] = []
    for name, module, args, neg, written in nft_rule_options(rule_text):
        if name == "?":
            checks.append(OptionCheck(written, None, None, None, None, None))
            continue
        f = _FIELD[name]
        va, vb = left.get(f), right.get(f)
        checks.append(OptionCheck(written, f, _shown(f, va), _shown(f, vb),
                                  _apply(name, module, args, va, neg), _apply(name, module, args, vb, neg)))
    return checks


@lru_cache(maxsize=4096)
def vmap_key(rule_text: str) -> tuple[tuple[tuple[str, str], ...], str] | None:
    """The key selectors and the map of an nft verdict-map rule on a named map: the concatenation
    right before ``vmap`` (matches before it held: the rule matched), ``ip daddr @nodeport-ips meta
    l4proto . th dport vmap @no-endpoint-nodeports`` -> ((("proto", ""), ("dport", "")),
    "no-endpoint-nodeports"); None for any other rule, or a key part the log cannot show."""
    from ..simulate.nft_values import split_tokens  # the simulator's nft tokenizer

    try:
        toks = split_tokens(rule_text)
    except (RuletraceError, ValueError):
        return None
    if "vmap" not in toks:
        return None
    i = toks.index("vmap")
    if i + 1 >= len(toks) or not toks[i + 1].startswith("@") or i == 0:
        return None
    parts: list[tuple[str, str]] = []
    j = i  # the key's parts, from its end: "a b . c d" (selector pairs) or iifname/oifname, joined by "."
    while True:
        one = toks[j - 1] if j >= 1 else ""
        pair = (toks[j - 2], one) if j >= 2 else ("", one)
        if one in _NFT_IFACE:
            parts.append((_NFT_IFACE[one], ""))
            j -= 1
        elif pair in _NFT_SELECTORS:
            parts.append(_NFT_SELECTORS[pair])
            j -= 2
        elif pair[0] in _NFT_L4 and one in ("dport", "sport"):  # "tcp dport": the port
            parts.append((one, ""))
            j -= 2
        else:
            return None  # a part the log cannot show (ct state, a mark with a mask …): not settled
        if j >= 1 and toks[j - 1] == ".":
            j -= 1
            continue
        break
    return tuple(reversed(parts)), toks[i + 1][1:]


# what an element lists after its key (nft list ruleset): its options, then ": verdict"
_ELEMENT_END = re.compile(r" (?:timeout|expires|counter|comment|:) ")


def element_parts(elem: str) -> tuple[str, str | None]:
    """A map element as nft lists it -> (its key, its data: the verdict of a verdict map; None for a
    set's element): ``10.96.9.9 . tcp . 80 counter packets 3 bytes 180 comment "…" : goto x`` ->
    ("10.96.9.9 . tcp . 80", "goto x")."""
    m = _ELEMENT_END.search(elem)
    key = elem[: m.start()] if m is not None else elem
    _k, colon, data = elem.rpartition(" : ")
    return key, data if colon else None


def vmap_element(rule_text: str, elements: Sequence[str], fields: Mapping[str, str]) -> str | None:
    """The element of a named verdict map the packet's logged fields select (as the map is listed,
    ``10.96.9.9 . tcp . 80 comment "shop/cart:http" : goto reject-chain``): the one element whose
    every key part matches (``_match``, the checks of near misses); None when the rule is no such
    lookup, or no element, more than one, or one the fields cannot settle (a range the log cannot
    show) fits — never a guess."""
    got = vmap_key(rule_text)
    if got is None:
        return None
    parts, _name = got
    found = None
    for elem in elements:
        key, _data = element_parts(elem)
        values = [v.strip() for v in key.split(" . ")]
        if len(values) != len(parts):
            return None
        results = [_apply(name, module, [value.replace("-", ":") if name in ("dport", "sport") else value],
                          fields.get(_FIELD[name]), False)
                   for (name, module), value in zip(parts, values)]
        if all(r is True for r in results):
            if found is not None:
                return None
            found = elem
        elif None in results and False not in results:
            return None  # this element may be the one: cannot tell
    return found
