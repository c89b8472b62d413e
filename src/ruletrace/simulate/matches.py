"""Rule matches: a rule's options -> conditions evaluated against the simulated packet.

Semantics follow the kernel's xt_*/ipt_* match modules (net/netfilter/xt_*.c,
net/ipv4/netfilter/ip_tables.c ip_packet_match). Conditions are kept in the kernel's order:
the IP header part (-s -d -i -o -p -f) first, then each -m module in rule order. The rule is
parsed by rulesets/options.py (the parser render/diff.py uses too); each basic option and each
module has one function, registered in ``IP_MATCHES`` and ``MODULES``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..model import Origin, Rule
from ..rulesets.options import Parsed, parse_proto
from .conds import Cond, Mod, ModuleFn, iface_test, negate, unknown
from .hostfacts import to_net
from .match_assumed import ASSUMED_MODULES
from .match_modules import HEADER_MODULES

IpMatch = Callable[[str, bool, str, "Origin | None"], "Cond | None"]  # (letter, negated, value, origin)


def _net(letter: str, neg: bool, text: str, origin: Origin | None) -> Cond:
    nets = []
    for part in text.split(","):
        v, net, mask = to_net(part, origin)
        nets.append((v, net, mask))
    attr = "src" if letter == "s" else "dst"
    field = "SRC" if letter == "s" else "DST"
    key = None
    if len(nets) == 1:
        v, net, mask = nets[0]
        full = (1 << (32 if v == 4 else 128)) - 1
        if not neg and mask == full:
            key = (attr, net)
        # one closure per case, negation included: this is the most evaluated condition
        if attr == "src":
            fn = (lambda p, c: (p.src & mask) != net) if neg else (lambda p, c: (p.src & mask) == net)
        else:
            fn = (lambda p, c: (p.dst & mask) != net) if neg else (lambda p, c: (p.dst & mask) == net)
        src = (f"(p.{attr} & {{0}}) {'!=' if neg else '=='} {{1}}", (mask, net))
    else:
        fn = negate(lambda p, c: any((getattr(p, attr) & m) == n for _, n, m in nets), neg)
        src = None
    return Cond(fn, f"{'! ' if neg else ''}-{letter} {text}", field, key=key, src=src)


def _iface(letter: str, neg: bool, val: str, origin: Origin | None) -> Cond:
    m = iface_test(val)
    if letter == "i":
        fn = lambda p, c, m=m: m(p.iif)
        key = ("iif", val) if not neg and not val.endswith("+") else None
    else:
        fn = lambda p, c, m=m: m(p.oif)
        key = None
    return Cond(negate(fn, neg), f"{'! ' if neg else ''}-{letter} {val}", "IN" if letter == "i" else "OUT", key=key)


def _proto(letter: str, neg: bool, val: str, origin: Origin | None) -> Cond | None:
    n = parse_proto(val, origin)
    if n == 0:
        # "-p all" matches everything; "! -p all" never matches
        return Cond(lambda p, c: False, "! -p all", "PROTO") if neg else None
    fn = (lambda p, c, n=n: p.proto != n) if neg else (lambda p, c, n=n: p.proto == n)
    return Cond(fn, f"{'! ' if neg else ''}-p {val}", "PROTO", key=None if neg else ("proto", n),
                src=(f"p.proto {'!=' if neg else '=='} {{0}}", (n,)))


def _fragment(letter: str, neg: bool, val: str, origin: Origin | None) -> Cond:
    # the simulated packet is never a non-first fragment
    return Cond(lambda p, c, neg=neg: neg, f"{'! ' if neg else ''}-f", "FRAG")


# the IP header part of a rule (rulesets.options.IP_OPTS letters)
IP_MATCHES: dict[str, IpMatch] = {"s": _net, "d": _net, "i": _iface, "o": _iface, "p": _proto, "f": _fragment}
# -m modules the simulator evaluates; any other is an assumption (no match unless --assume)
MODULES: dict[str, ModuleFn] = {"comment": lambda m: [], **HEADER_MODULES, **ASSUMED_MODULES}


def compile_conds(rule: Rule, parsed: Parsed, v6: bool) -> list[Cond]:
    """The rule's conditions in kernel evaluation order."""
    origin = rule.origin
    conds: list[Cond] = []
    for neg, letter, val in parsed.ip:
        cond = IP_MATCHES[letter](letter, neg, val, origin)
        if cond is not None:
            conds.append(cond)
    for name, opts in parsed.modules:
        m = Mod(name, opts, rule, v6)
        fn = MODULES.get(name)
        if fn is None:
            conds.append(unknown(name, m.text, m.where, f"cannot evaluate -m {name}"))
        else:
            conds.extend(fn(m))
    return conds
