"""Rule matches: iptables-save rule text -> conditions evaluated against the simulated packet.

Semantics follow the kernel's xt_*/ipt_* match modules (net/netfilter/xt_*.c,
net/ipv4/netfilter/ip_tables.c ip_packet_match). Conditions are kept in the kernel's order:
the IP header part (-s -d -i -o -p -f) first, then each -m module in rule order.
"""

from __future__ import annotations

import socket
from typing import Callable

from ..errors import RuletraceError
from ..model import Origin, Rule
from .hostfacts import IpSet, addr_text, to_int, to_net
from .probe import parse_icmp_type, parse_proto, parse_tcp_flags
from .state import CTSTATUS_BITS, Branch, Ctx, Pkt

CondFn = Callable[[Pkt, Ctx], bool]

# options of known modules that take no argument (everything else takes one, except TWO_ARGS)
NO_ARG = frozenset({
    "--syn", "--physdev-is-in", "--physdev-is-out", "--physdev-is-bridged", "--socket-exists",
    "--return-nomatch", "--update-counters", "--update-subcounters", "--suppl-groups",
    "--connlimit-saddr", "--connlimit-daddr", "--rsource", "--rdest", "--set", "--rcheck", "--update",
    "--remove", "--rttl", "--reap", "--ctdir-original", "--no-counters",
})
TWO_ARGS = frozenset({"--tcp-flags", "--match-set", "--set-mark-xor"})
IP_OPTS = {
    "-s": "s", "--source": "s", "--src": "s",
    "-d": "d", "--destination": "d", "--dst": "d",
    "-i": "i", "--in-interface": "i",
    "-o": "o", "--out-interface": "o",
    "-p": "p", "--protocol": "p",
    "-f": "f", "--fragment": "f",
}
# modules this file evaluates; any other -m is an assumption
KNOWN_MODULES = frozenset({
    "tcp", "udp", "sctp", "udplite", "multiport", "icmp", "icmp6", "icmpv6", "conntrack", "state", "mark",
    "connmark", "addrtype", "comment", "physdev", "set", "statistic", "limit", "hashlimit", "connlimit",
    "owner", "iprange", "length", "ttl", "hl", "pkttype", "mac", "dscp", "tos",
})
BRANCH_MODULES = frozenset({"statistic", "limit", "hashlimit", "connlimit"})


class Cond:
    """One condition of a rule: ``fn(pkt, ctx) -> bool`` plus what to say when it fails."""

    __slots__ = ("fn", "text", "field", "pure", "key", "src")

    def __init__(self, fn: CondFn, text: str, field: str, *, pure: bool = True,
                 key: tuple[str, object] | None = None, src: tuple[str, tuple] | None = None) -> None:
        self.fn = fn
        self.text = text  # the rule's words for it: "-d 10.96.0.1/32"
        self.field = field  # packet field it looks at, kernel-log name ("DST"), "" if none
        self.pure = pure  # evaluating it records nothing (no assumption, no branch)
        self.key = key  # ("dst", int) / ("dport", int) / …: the rule can only match packets with it
        # fn as a Python expression over p ({0}, {1}, … stand for the constants), for walker.py to
        # inline; it must compute exactly what fn does
        self.src = src


class Parsed:
    """A rule split into its IP options, its match modules and its target."""

    __slots__ = ("ip", "modules", "target", "target_opts", "goto", "tokens")

    def __init__(self) -> None:
        self.ip: list[tuple[bool, str, str]] = []  # (negated, letter, value)
        self.modules: list[tuple[str, list[tuple[bool, str, list[str]]]]] = []
        self.target: str | None = None
        self.target_opts: list[tuple[bool, str, list[str]]] = []
        self.goto = False
        self.tokens: list[str] = []


def split_rule(tokens: list[str], origin: Origin | None) -> Parsed:
    """Group a rule's tokens into IP options, ``-m`` modules with their options, and the target."""
    out = Parsed()
    out.tokens = tokens
    i, n = 0, len(tokens)
    neg = False
    opts: list[tuple[bool, str, list[str]]] | None = None  # options of the current module / target
    known = True
    while i < n:
        t = tokens[i]
        i += 1
        if t == "!":
            neg = True
            continue
        if t in IP_OPTS:
            letter = IP_OPTS[t]
            if letter == "f":
                out.ip.append((neg, "f", ""))
            else:
                if i >= n:
                    raise RuletraceError(f"option {t} needs a value", origin=origin)
                v = tokens[i]
                i += 1
                if v == "!":  # old syntax "-s ! ADDR"
                    neg, v = True, tokens[i] if i < n else ""
                    i += 1
                out.ip.append((neg, letter, v))
            neg = False
            opts = None if out.target is None else opts
            continue
        if t in ("-m", "--match"):
            if i >= n:
                raise RuletraceError("-m needs a module name", origin=origin)
            name = tokens[i]
            i += 1
            opts = []
            out.modules.append((name, opts))
            known = name in KNOWN_MODULES
            neg = False
            continue
        if t in ("-j", "--jump", "-g", "--goto"):
            if i >= n:
                raise RuletraceError(f"{t} needs a target", origin=origin)
            out.target = tokens[i]
            out.goto = t in ("-g", "--goto")
            i += 1
            opts = out.target_opts
            known = False
            neg = False
            continue
        if t in ("-c", "--set-counters"):
            i += 2
            continue
        if t.startswith("-") and len(t) > 1:
            if opts is None:
                # "-p tcp --dport 80" without "-m tcp": iptables loads the protocol's match
                proto = next((v for _, letter, v in reversed(out.ip) if letter == "p"), None)
                name = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmp6", "132": "sctp"}.get(
                    str(_proto_or_none(proto)), proto or "")
                opts = []
                out.modules.append((name or "?", opts))
                known = name in KNOWN_MODULES
            args: list[str] = []
            if known and t in NO_ARG:
                pass
            elif known:
                k = 2 if t in TWO_ARGS else 1
                args = tokens[i : i + k]
                i += len(args)
            else:
                while i < n and not (tokens[i] == "!" or (tokens[i].startswith("-") and len(tokens[i]) > 1
                                                          and not tokens[i][1:2].isdigit())):
                    args.append(tokens[i])
                    i += 1
            opts.append((neg, t, args))
            neg = False
            continue
        raise RuletraceError(f"unexpected word {t!r} in rule", origin=origin)
    return out


def _proto_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_proto(text)
    except RuletraceError:
        return None


# --- helpers ---------------------------------------------------------------------------------


def _neg(fn: CondFn, neg: bool) -> CondFn:
    if not neg:
        return fn
    return lambda p, c: not fn(p, c)


def _iface(name: str) -> Callable[[str | None], bool]:
    # xt: a trailing "+" matches any interface name with that prefix (ifname_compare)
    if name.endswith("+"):
        prefix = name[:-1]
        return lambda have: (have or "").startswith(prefix)
    return lambda have: (have or "") == name


def _port(text: str, origin: Origin | None) -> int:
    if text.isdigit():
        n = int(text)
        if n > 65535:
            raise RuletraceError(f"port {n} out of range", origin=origin)
        return n
    try:
        return socket.getservbyname(text)
    except OSError:
        raise RuletraceError(f"unknown port {text!r}", origin=origin) from None


def _port_range(text: str, origin: Origin | None) -> tuple[int, int]:
    # "80", "80:90", ":90", "80:" (xtables parse_port_range); multiport also accepts "80-90"? no: ":" only
    if ":" in text:
        lo, _, hi = text.partition(":")
        return (_port(lo, origin) if lo else 0), (_port(hi, origin) if hi else 65535)
    n = _port(text, origin)
    return n, n


def _int(text: str, origin: Origin | None) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise RuletraceError(f"bad number {text!r}", origin=origin) from None


def _value_mask(text: str, origin: Origin | None) -> tuple[int, int]:
    v, _, m = text.partition("/")
    return _int(v, origin), (_int(m, origin) if m else 0xFFFFFFFF)


def _net_cond(letter: str, text: str, neg: bool, origin: Origin | None) -> Cond:
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
        fn = _neg(lambda p, c: any((getattr(p, attr) & m) == n for _, n, m in nets), neg)
        src = None
    return Cond(fn, f"{'! ' if neg else ''}-{letter} {text}", field, key=key, src=src)


# --- the rule compiler -----------------------------------------------------------------------


def compile_conds(rule: Rule, parsed: Parsed, v6: bool) -> list[Cond]:
    """The rule's conditions in kernel evaluation order."""
    origin = rule.origin
    where = f"{rule.table}:{rule.chain}:{rule.num}"
    conds: list[Cond] = []
    proto: int | None = None
    for neg, letter, val in parsed.ip:
        if letter in "sd":
            conds.append(_net_cond(letter, val, neg, origin))
        elif letter in "io":
            m = _iface(val)
            if letter == "i":
                fn = lambda p, c, m=m: m(p.iif)  # noqa: E731
                key = ("iif", val) if not neg and not val.endswith("+") else None
            else:
                fn = lambda p, c, m=m: m(p.oif)  # noqa: E731
                key = None
            conds.append(Cond(_neg(fn, neg), f"{'! ' if neg else ''}-{letter} {val}",
                              "IN" if letter == "i" else "OUT", key=key))
        elif letter == "p":
            n = parse_proto(val, origin)
            if n == 0:
                if neg:  # "! -p all" never matches
                    conds.append(Cond(lambda p, c: False, "! -p all", "PROTO"))
                continue
            if not neg:
                proto = n
            fn = (lambda p, c, n=n: p.proto != n) if neg else (lambda p, c, n=n: p.proto == n)
            conds.append(Cond(fn, f"{'! ' if neg else ''}-p {val}", "PROTO", key=None if neg else ("proto", n),
                              src=(f"p.proto {'!=' if neg else '=='} {{0}}", (n,))))
        elif letter == "f":
            # the simulated packet is never a non-first fragment
            conds.append(Cond(lambda p, c, neg=neg: neg, f"{'! ' if neg else ''}-f", "FRAG"))
    for name, opts in parsed.modules:
        conds.extend(_module(name, opts, rule, where, proto, v6))
    return conds


def _module(name: str, opts: list[tuple[bool, str, list[str]]], rule: Rule, where: str,
            proto: int | None, v6: bool) -> list[Cond]:
    origin = rule.origin
    text = _module_text(name, opts)
    if name == "comment":
        return []
    if name not in KNOWN_MODULES:
        return [_unknown(name, text, where, f"cannot evaluate -m {name}")]
    if name in BRANCH_MODULES:
        return [_branch(name, opts, text, rule, where)]
    out: list[Cond] = []
    for neg, opt, args in opts:
        a0 = args[0] if args else ""
        label = f"{'! ' if neg else ''}{opt}{' ' if args else ''}{' '.join(args)}"
        if name in ("tcp", "udp", "sctp", "udplite"):
            if opt in ("--sport", "--source-port", "--dport", "--destination-port"):
                lo, hi = _port_range(a0, origin)
                if opt in ("--sport", "--source-port"):
                    fn = lambda p, c, lo=lo, hi=hi: p.sport is not None and lo <= p.sport <= hi  # noqa: E731
                    src = None if neg else ("p.sport is not None and {0} <= p.sport <= {1}", (lo, hi))
                    out.append(Cond(_neg(fn, neg), label, "SPT", src=src))
                else:
                    fn = lambda p, c, lo=lo, hi=hi: p.dport is not None and lo <= p.dport <= hi  # noqa: E731
                    key = ("dport", lo) if lo == hi and not neg else None
                    src = None if neg else ("p.dport is not None and {0} <= p.dport <= {1}", (lo, hi))
                    out.append(Cond(_neg(fn, neg), label, "DPT", key=key, src=src))
                # xt_tcpudp: a negated port test still needs the protocol
                if neg:
                    out.append(Cond(lambda p, c: p.sport is not None, f"-p {name}", "PROTO"))
            elif opt in ("--tcp-flags", "--syn") and name == "tcp":
                if opt == "--syn":
                    mask, comp = 0x17, 0x02  # FIN,SYN,RST,ACK SYN
                else:
                    if len(args) != 2:
                        raise RuletraceError("--tcp-flags needs MASK COMP", origin=origin)
                    mask, comp = parse_tcp_flags(args[0], origin), parse_tcp_flags(args[1], origin)
                fn = lambda p, c, m=mask, k=comp: p.proto == 6 and ((p.tcpflags or 0) & m) == k  # noqa: E731
                ex = "p.proto == 6 and ((p.tcpflags or 0) & {0}) == {1}"
                out.append(Cond(_neg(fn, neg), label, "TCPFLAGS", src=(f"not ({ex})" if neg else ex, (mask, comp))))
            else:
                out.append(_unknown(name, f"-m {name} {label}", where, f"cannot evaluate -m {name} {opt}"))
        elif name == "multiport":
            ranges = [_port_range(x, origin) for x in a0.split(",")]
            if opt in ("--sports", "--source-ports"):
                fn = lambda p, c, r=ranges: p.sport is not None and any(lo <= p.sport <= hi for lo, hi in r)  # noqa
                f = "SPT"
            elif opt in ("--dports", "--destination-ports"):
                fn = lambda p, c, r=ranges: p.dport is not None and any(lo <= p.dport <= hi for lo, hi in r)  # noqa
                f = "DPT"
            else:
                fn = lambda p, c, r=ranges: p.sport is not None and any(  # noqa: E731
                    lo <= p.sport <= hi or lo <= p.dport <= hi for lo, hi in r)
                f = "SPT/DPT"
            if len(ranges) == 1 and f != "SPT/DPT":
                # one range, as one closure (kube-proxy's NodePort range rules)
                lo, hi = ranges[0]
                if f == "SPT":
                    fn = ((lambda p, c, lo=lo, hi=hi: p.sport is not None and not (lo <= p.sport <= hi)) if neg
                          else (lambda p, c, lo=lo, hi=hi: p.sport is not None and lo <= p.sport <= hi))
                elif neg:
                    fn = lambda p, c, lo=lo, hi=hi: (  # noqa: E731
                        p.sport is not None and not (p.dport is not None and lo <= p.dport <= hi))
                else:
                    fn = lambda p, c, lo=lo, hi=hi: (  # noqa: E731
                        p.sport is not None and p.dport is not None and lo <= p.dport <= hi)
                attr = "sport" if f == "SPT" else "dport"
                ex = f"p.sport is not None and p.{attr} is not None and {{0}} <= p.{attr} <= {{1}}"
                out.append(Cond(fn, label, f, src=(f"p.sport is not None and not (p.{attr} is not None and "
                                                   f"{{0}} <= p.{attr} <= {{1}})" if neg else ex, (lo, hi))))
                continue
            out.append(Cond(lambda p, c, fn=fn, neg=neg: p.sport is not None and fn(p, c) != neg, label, f))
        elif name in ("icmp", "icmp6", "icmpv6"):
            typ, code = parse_icmp_type(a0, name != "icmp", origin)
            want = 58 if name != "icmp" else 1
            lo, hi = (0, 255) if code is None else (code, code)

            def fn(p: Pkt, c: Ctx, typ=typ, lo=lo, hi=hi, want=want) -> bool:
                if p.proto != want or p.itype is None:
                    return False
                # icmp_type_code_match: type 0xFF matches any type
                return (typ == 0xFF or p.itype == typ) and lo <= (p.icode or 0) <= hi

            out.append(Cond(lambda p, c, fn=fn, neg=neg, want=want: p.proto == want and fn(p, c) != neg,
                            label, "TYPE"))
        elif name in ("conntrack", "state"):
            out.append(_conntrack(opt, args, neg, label, rule, v6))
        elif name in ("mark", "connmark"):
            val, mask = _value_mask(a0, origin)
            if name == "mark":
                if neg:
                    fn = lambda p, c, v=val, m=mask: (p.mark & m) != v  # noqa: E731
                else:
                    fn = lambda p, c, v=val, m=mask: (p.mark & m) == v  # noqa: E731
                out.append(Cond(fn, label, "MARK", key=("mark", val) if mask == 0xFFFFFFFF and not neg else None,
                                src=(f"(p.mark & {{0}}) {'!=' if neg else '=='} {{1}}", (mask, val))))
            else:
                # xt_connmark: no conntrack entry -> no match, also when inverted
                out.append(Cond(lambda p, c, v=val, m=mask, neg=neg: p.ct and ((p.ctmark & m) == v) != neg,
                                label, "CTMARK"))
        elif name == "addrtype":
            out.append(_addrtype(opt, a0, neg, label, origin))
        elif name == "physdev":
            if opt == "--physdev-in":
                m = _iface(a0)
                out.append(Cond(lambda p, c, m=m, neg=neg: p.physin is not None and m(p.physin) != neg,
                                label, "PHYSIN"))
            elif opt == "--physdev-out":
                m = _iface(a0)
                out.append(Cond(lambda p, c, m=m, neg=neg: p.physout is not None and m(p.physout) != neg,
                                label, "PHYSOUT"))
            elif opt == "--physdev-is-in":
                out.append(Cond(lambda p, c, neg=neg: (p.physin is not None) != neg, label, "PHYSIN"))
            elif opt == "--physdev-is-out":
                out.append(Cond(lambda p, c, neg=neg: (p.physout is not None) != neg, label, "PHYSOUT"))
            elif opt == "--physdev-is-bridged":
                out.append(Cond(lambda p, c, neg=neg: (p.physin is not None or p.physout is not None) != neg,
                                label, "PHYSIN"))
        elif name == "set":
            if opt == "--match-set":
                if len(args) != 2:
                    raise RuletraceError("--match-set needs NAME FLAGS", origin=origin)
                out.append(_set_cond(args[0], args[1].split(","), neg, label, where,
                                     any(o == "--return-nomatch" for _, o, _a in opts)))
            elif opt in ("--return-nomatch", "--update-counters", "--update-subcounters", "--no-counters"):
                continue
            else:
                out.append(_unknown("set", f"-m set {label}", where, f"cannot evaluate -m set {opt}"))
        elif name == "owner":
            out.append(_owner(opt, a0, neg, label, where, origin))
        elif name == "iprange":
            lo_t, _, hi_t = a0.partition("-")
            _, lo = to_int(lo_t, origin)
            _, hi = to_int(hi_t or lo_t, origin)
            if opt == "--src-range":
                out.append(Cond(_neg(lambda p, c, lo=lo, hi=hi: lo <= p.src <= hi, neg), label, "SRC"))
            else:
                out.append(Cond(_neg(lambda p, c, lo=lo, hi=hi: lo <= p.dst <= hi, neg), label, "DST"))
        elif name == "length":
            lo, _, hi = a0.partition(":")
            lo_i = _int(lo, origin) if lo else 0
            hi_i = _int(hi, origin) if hi else (lo_i if ":" not in a0 else 0xFFFF)
            out.append(Cond(_neg(lambda p, c, lo=lo_i, hi=hi_i: lo <= p.length <= hi, neg), label, "LEN"))
        elif name in ("ttl", "hl"):
            n = _int(a0, origin)
            op = opt.rsplit("-", 1)[-1]
            cmp = {"eq": lambda t, n=n: t == n, "lt": lambda t, n=n: t < n, "gt": lambda t, n=n: t > n}.get(op)
            if cmp is None:
                raise RuletraceError(f"unknown option {opt} for -m {name}", origin=origin)
            out.append(Cond(_neg(lambda p, c, cmp=cmp: cmp(p.ttl), neg), label, "TTL" if name == "ttl" else "HOPLIMIT"))
        elif name == "pkttype":
            want_t = a0.lower()

            def fn(p: Pkt, c: Ctx, want_t=want_t) -> bool:
                t = c.facts.addr_type(p.v, p.dst)
                kind = "broadcast" if t == "BROADCAST" else "multicast" if t == "MULTICAST" else "unicast"
                return kind == want_t

            out.append(Cond(_neg(fn, neg), label, "DST"))
        elif name == "mac":
            out.append(_mac(a0, neg, label, where))
        elif name in ("dscp", "tos"):
            if opt in ("--dscp",):
                n = _int(a0, origin)
                out.append(Cond(_neg(lambda p, c, n=n: (p.tos >> 2) == n, neg), label, "TOS"))
            elif opt == "--tos":
                val, mask = _value_mask(a0, origin) if "/" in a0 else (_int(a0, origin), 0xFF)
                out.append(Cond(_neg(lambda p, c, v=val, m=mask: (p.tos & m) == v, neg), label, "TOS"))
            else:
                out.append(_unknown(name, f"-m {name} {label}", where, f"cannot evaluate -m {name} {opt}"))
    return out


def _module_text(name: str, opts: list[tuple[bool, str, list[str]]]) -> str:
    words = [f"-m {name}"]
    for neg, opt, args in opts:
        words.append(("! " if neg else "") + " ".join([opt, *args]))
    return " ".join(words)


def _unknown(module: str, text: str, where: str, what: str) -> Cond:
    def fn(p: Pkt, c: Ctx) -> bool:
        o = c.override(where, module)
        if o is None:
            c.note(f"{where}: {what}: assumed no match; use --assume {module}=match to change")
            return False
        c.note(f"{where}: {what}: --assume says {'match' if o else 'no match'}")
        return o

    return Cond(fn, text, "", pure=False)


def _branch(name: str, opts: list[tuple[bool, str, list[str]]], text: str, rule: Rule, where: str) -> Cond:
    d = {o: (a[0] if a else "") for _, o, a in opts}
    inverted = any(neg for neg, _o, _a in opts)
    if name == "statistic":
        if d.get("--mode") == "nth":
            detail = f"every {d.get('--every', '?')}th packet (counter {d.get('--packet', '0')})"
        else:
            detail = f"with probability {d.get('--probability', '?')}"
        default = True
        why = f"matches {detail}"
    elif name == "limit":
        default, why = True, f"matches while under {d.get('--limit', '3/hour')} (burst {d.get('--limit-burst', '5')})"
    elif name == "hashlimit":
        above = "--hashlimit-above" in d
        default = not above
        why = "assumed the flow is under its hash limit"
    else:  # connlimit
        above = "--connlimit-above" in d
        default = not above
        why = "assumed few connections from this address"
    if inverted:
        default = not default

    notes: dict[tuple[bool, bool], str] = {}  # (assumed, taken) -> note, made on first use
    table, chain, num = rule.table, rule.chain, rule.num

    def fn(p: Pkt, c: Ctx) -> bool:
        o = c.override(where, name) if c.facts.assume else None
        taken = default if o is None else o
        key = (o is not None, taken)
        note = notes.get(key)
        if note is None:
            how = "--assume" if o is not None else "first branch"
            other = "nomatch" if taken else "match"
            note = notes[key] = (f"{how}: {'match' if taken else 'no match'} ({why}); "
                                 f"--assume {where}={other} or {name}={other} for the other branch")
        c.branches.append(Branch(table, chain, num, text, taken, note))
        return taken

    return Cond(fn, text, "", pure=False)


def _conntrack(opt: str, args: list[str], neg: bool, label: str, rule: Rule, v6: bool) -> Cond:
    origin = rule.origin
    where = f"{rule.table}:{rule.chain}:{rule.num}"
    a0 = args[0] if args else ""
    if opt in ("--ctstate", "--state"):
        states = frozenset(s.strip().upper() for s in a0.split(","))
        dnat, snat = "DNAT" in states, "SNAT" in states
        untracked, invalid = "UNTRACKED" in states, "INVALID" in states

        def fn(p: Pkt, c: Ctx) -> bool:
            # the state of Pkt.ct_state(), inlined: this runs for most packets in filter chains
            if p.ct:
                if p.ctstate in states:
                    return True
                # virtual states: the connection is being (or was) NATed
                return (dnat and p.dnat) or (snat and p.snat)
            return untracked if p.ctstate == "UNTRACKED" else invalid

        ex = ("((p.ctstate in {0} or ({1} and p.dnat) or ({2} and p.snat)) if p.ct "
              "else ({3} if p.ctstate == 'UNTRACKED' else {4}))")
        src = ("not " + ex if neg else ex, (states, dnat, snat, untracked, invalid))
        if neg:
            return Cond(lambda p, c: not fn(p, c), label, "CTSTATE", src=src)
        return Cond(fn, label, "CTSTATE", src=src)
    if opt == "--ctstatus":
        bits = 0
        for s in a0.split(","):
            if s.strip().upper() not in CTSTATUS_BITS:
                raise RuletraceError(f"unknown ctstatus {s!r}", origin=origin)
            bits |= CTSTATUS_BITS[s.strip().upper()]

        def fn(p: Pkt, c: Ctx) -> bool:
            if p.ctstate == "ESTABLISHED":
                c.note("ctstatus of the ESTABLISHED connection assumed SEEN_REPLY,CONFIRMED,ASSURED")
            return bool(p.ctstatus & bits)

        return Cond(lambda p, c: p.ct and fn(p, c) != neg, label, "CTSTATUS", pure=False)
    if opt in ("--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst"):
        _, net, mask = to_net(a0, origin)
        get = {
            "--ctorigsrc": lambda p: p.orig[0],
            "--ctorigdst": lambda p: p.orig[1],
            "--ctreplsrc": lambda p: p.repl_src,
            "--ctrepldst": lambda p: p.repl_dst,
        }[opt]
        return Cond(lambda p, c: p.ct and ((get(p) & mask) == net) != neg, label, opt[2:].upper())
    if opt in ("--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport", "--ctrepldstport"):
        lo, hi = _port_range(a0, origin)
        get = {
            "--ctorigsrcport": lambda p: p.orig[2],
            "--ctorigdstport": lambda p: p.orig[3],
            "--ctreplsrcport": lambda p: p.repl_sport,
            "--ctrepldstport": lambda p: p.repl_dport,
        }[opt]
        return Cond(lambda p, c: p.ct and get(p) is not None and (lo <= get(p) <= hi) != neg, label,
                    opt[2:].upper())
    if opt == "--ctproto":
        n = parse_proto(a0, origin)
        return Cond(lambda p, c: p.ct and (p.proto == n) != neg, label, "PROTO")
    if opt == "--ctdir":
        want = a0.upper()
        return Cond(lambda p, c: p.ct and (want == "ORIGINAL") != neg, label, "CTDIR")
    return _unknown("conntrack", f"-m conntrack {label}", where, f"cannot evaluate -m conntrack {opt}")


def _addrtype(opt: str, a0: str, neg: bool, label: str, origin: Origin | None) -> Cond:
    types = {t.strip().upper() for t in a0.split(",")}
    if opt in ("--limit-iface-in", "--limit-iface-out"):
        return Cond(lambda p, c: True, label, "")
    src = opt == "--src-type"

    def fn(p: Pkt, c: Ctx) -> bool:
        a = p.src if src else p.dst
        if "LOCAL" in types or not c.local_known:
            local = c.is_local(p, p.v, a)
            if local:
                return "LOCAL" in types
        t = c.facts.addr_type(p.v, a)
        if t == "LOCAL":
            t = "UNICAST"  # is_local said no (path-based fallback)
        return t in types

    # pure: its only note (an address assumed (not) local) is made up front for the packet's
    # addresses and again by every routing decision, whether or not this rule is evaluated
    return Cond(_neg(fn, neg), label, "SRC" if src else "DST")


def _set_cond(name: str, dirs: list[str], neg: bool, label: str, where: str, return_nomatch: bool) -> Cond:
    def fn(p: Pkt, c: Ctx) -> bool:
        sets = c.facts.ipsets
        s = sets.get(name) if sets is not None else None
        if s is None:
            o = c.override(where, "set")
            c.note(f"{where}: no contents for ipset {name!r} (give --ipset FILE): "
                   f"assumed {'match' if o else 'no match'}"
                   + ("" if o is not None else f"; use --assume set=match to change"))
            return bool(o)
        r = _in_set(s, sets, p, dirs, 0)
        if r is None:  # nomatch entry
            return return_nomatch
        return r != neg

    return Cond(fn, label, "", pure=False)


def _in_set(s: IpSet, sets: dict[str, IpSet], p: Pkt, dirs: list[str], depth: int) -> bool | None:
    if s.type == "list:set":
        if depth > 8:
            return False
        for (member,), _nm in s.entries:
            sub = sets.get(member)
            if sub is not None and _in_set(sub, sets, p, dirs, depth + 1):
                return True
        return False
    best: tuple[int, bool] | None = None
    for comps, nomatch in s.entries:
        spec = 0
        ok = True
        for i, comp in enumerate(comps):
            d = dirs[i] if i < len(dirs) else dirs[-1]
            is_src = d.startswith("src")
            if isinstance(comp, tuple) and comp[0] in ("net", "range"):
                addr = p.src if is_src else p.dst
                if comp[1] != p.v:
                    ok = False
                elif comp[0] == "net":
                    ok = (addr & comp[3]) == comp[2]
                    spec += bin(comp[3]).count("1")
                else:
                    ok = comp[2] <= addr <= comp[3]
            elif isinstance(comp, tuple):  # (proto, lo, hi)
                port = p.sport if is_src else p.dport
                pr = comp[0]
                want = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136}.get(pr)
                ok = port is not None and want == p.proto and comp[1] <= port <= comp[2]
            else:  # iface / mac: interface of the direction
                ok = comp == (p.iif if is_src else p.oif)
            if not ok:
                break
        if ok and (best is None or spec > best[0]):
            best = (spec, nomatch)
    if best is None:
        return False
    return None if best[1] else True


def _owner(opt: str, a0: str, neg: bool, label: str, where: str, origin: Origin | None) -> Cond:
    if opt == "--socket-exists":
        return Cond(lambda p, c: (p.hook in ("OUTPUT", "POSTROUTING")) != neg, label, "")
    if opt not in ("--uid-owner", "--gid-owner"):
        return _unknown("owner", f"-m owner {label}", where, f"cannot evaluate -m owner {opt}")
    lo_t, _, hi_t = a0.partition("-")
    try:
        lo, hi = int(lo_t), int(hi_t or lo_t)
    except ValueError:
        lo = hi = -1  # a user/group name: compared only through --assume
    attr = "uid" if opt == "--uid-owner" else "gid"

    def fn(p: Pkt, c: Ctx) -> bool:
        if p.hook not in ("OUTPUT", "POSTROUTING"):
            return False  # xt_owner: only locally generated packets have a socket
        have = getattr(p, attr)
        if have is None:
            o = c.override(where, "owner")
            c.note(f"{where}: packet {attr.upper()} not given: -m owner {opt} {a0} assumed "
                   f"{'match' if o else 'no match'}" + ("" if o is not None else "; use --assume owner=match"))
            return bool(o)
        return (lo <= have <= hi) != neg

    return Cond(fn, label, attr.upper(), pure=False)


def _mac(a0: str, neg: bool, label: str, where: str) -> Cond:
    want = a0.lower()

    def fn(p: Pkt, c: Ctx) -> bool:
        if p.mac is None:
            o = c.override(where, "mac")
            c.note(f"{where}: source MAC not given: -m mac assumed {'match' if o else 'no match'}")
            return bool(o)
        return (p.mac.lower() == want) != neg

    return Cond(fn, f"-m mac {label}", "MAC", pure=False)
