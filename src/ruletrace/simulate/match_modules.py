"""Match modules on the packet's own headers and its conntrack entry (xt_tcpudp, xt_multiport,
xt_icmp, xt_conntrack/xt_state, xt_mark/xt_connmark, xt_addrtype, xt_physdev, xt_iprange,
xt_length, xt_ttl/xt_hl, xt_pkttype, xt_dscp/xt_tos): one function per module, which
matches.MODULES registers. Each turns the module's options into conditions in rule order.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import RuletraceError
from ..model import Rule
from ..rulesets.options import number, parse_icmp_type, parse_proto, parse_tcp_flags, port_range, value_mask
from .conds import Cond, Mod, ModuleFn, iface_test, negate, per_option, unknown
from .hostfacts import addr_text, to_int, to_net
from .state import CTSTATUS_BITS, Ctx, Pkt


def _tcpudp(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    name, origin, where = m.name, m.origin, m.where
    a0 = args[0] if args else ""
    if opt in ("--sport", "--source-port", "--dport", "--destination-port"):
        lo, hi = port_range(a0, origin)
        if opt in ("--sport", "--source-port"):
            fn = lambda p, c, lo=lo, hi=hi: p.sport is not None and lo <= p.sport <= hi
            src = None if neg else ("p.sport is not None and {0} <= p.sport <= {1}", (lo, hi))
            out.append(Cond(negate(fn, neg), label, "SPT", src=src))
        else:
            fn = lambda p, c, lo=lo, hi=hi: p.dport is not None and lo <= p.dport <= hi
            key = ("dport", lo) if lo == hi and not neg else None
            src = None if neg else ("p.dport is not None and {0} <= p.dport <= {1}", (lo, hi))
            out.append(Cond(negate(fn, neg), label, "DPT", key=key, src=src))
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
        fn = lambda p, c, m=mask, k=comp: p.proto == 6 and ((p.tcpflags or 0) & m) == k
        ex = "p.proto == 6 and ((p.tcpflags or 0) & {0}) == {1}"
        out.append(Cond(negate(fn, neg), label, "TCPFLAGS", src=(f"not ({ex})" if neg else ex, (mask, comp))))
    else:
        out.append(unknown(name, f"-m {name} {label}", where, f"cannot evaluate -m {name} {opt}"))


def _multiport(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    origin = m.origin
    a0 = args[0] if args else ""
    ranges = [port_range(x, origin) for x in a0.split(",")]
    if opt in ("--sports", "--source-ports"):
        fn = lambda p, c, r=ranges: p.sport is not None and any(lo <= p.sport <= hi for lo, hi in r)
        f = "SPT"
    elif opt in ("--dports", "--destination-ports"):
        fn = lambda p, c, r=ranges: p.dport is not None and any(lo <= p.dport <= hi for lo, hi in r)
        f = "DPT"
    else:
        fn = lambda p, c, r=ranges: p.sport is not None and any(
            lo <= p.sport <= hi or lo <= p.dport <= hi for lo, hi in r)
        f = "SPT/DPT"
    if len(ranges) == 1 and f != "SPT/DPT":
        # one range, as one closure (kube-proxy's NodePort range rules)
        lo, hi = ranges[0]
        if f == "SPT":
            fn = ((lambda p, c, lo=lo, hi=hi: p.sport is not None and not (lo <= p.sport <= hi)) if neg
                  else (lambda p, c, lo=lo, hi=hi: p.sport is not None and lo <= p.sport <= hi))
        elif neg:
            fn = lambda p, c, lo=lo, hi=hi: (
                p.sport is not None and not (p.dport is not None and lo <= p.dport <= hi))
        else:
            fn = lambda p, c, lo=lo, hi=hi: (
                p.sport is not None and p.dport is not None and lo <= p.dport <= hi)
        attr = "sport" if f == "SPT" else "dport"
        ex = f"p.sport is not None and p.{attr} is not None and {{0}} <= p.{attr} <= {{1}}"
        out.append(Cond(fn, label, f, src=(f"p.sport is not None and not (p.{attr} is not None and "
                                           f"{{0}} <= p.{attr} <= {{1}})" if neg else ex, (lo, hi))))
        return
    out.append(Cond(lambda p, c, fn=fn, neg=neg: p.sport is not None and fn(p, c) != neg, label, f))


def _icmp(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    name, origin = m.name, m.origin
    a0 = args[0] if args else ""
    typ, code = parse_icmp_type(a0, name != "icmp", origin)
    want = 58 if name != "icmp" else 1
    lo, hi = (0, 255) if code is None else (code, code)

    def fn(p: Pkt, c: Ctx, typ: int = typ, lo: int = lo, hi: int = hi, want: int = want) -> bool:
        if p.proto != want or p.itype is None:
            return False
        # icmp_type_code_match: type 0xFF matches any type
        return (typ == 0xFF or p.itype == typ) and lo <= (p.icode or 0) <= hi

    out.append(Cond(lambda p, c, fn=fn, neg=neg, want=want: p.proto == want and fn(p, c) != neg,
                    label, "TYPE"))


def _conntrack_opt(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    rule, v6 = m.rule, m.v6
    out.append(_conntrack(opt, args, neg, label, rule, v6))


def _mark(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    name, origin = m.name, m.origin
    a0 = args[0] if args else ""
    val, mask = value_mask(a0, origin)
    if name == "mark":
        if neg:
            fn = lambda p, c, v=val, m=mask: (p.mark & m) != v
        else:
            fn = lambda p, c, v=val, m=mask: (p.mark & m) == v
        out.append(Cond(fn, label, "MARK", key=("mark", val) if mask == 0xFFFFFFFF and not neg else None,
                        src=(f"(p.mark & {{0}}) {'!=' if neg else '=='} {{1}}", (mask, val))))
    else:
        # xt_connmark: no conntrack entry -> no match, also when inverted
        out.append(Cond(lambda p, c, v=val, m=mask, neg=neg: p.ct and ((p.ctmark & m) == v) != neg,
                        label, "CTMARK"))


def _addrtype_opt(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    if opt in _LIMIT_IFACE:
        return  # a flag of the module's type tests (_addrtype reads it), no test of its own
    limit = next((_LIMIT_IFACE[o] for _, o, _ in m.opts if o in _LIMIT_IFACE), None)
    out.append(_addrtype(opt, args[0] if args else "", neg, label, m.v6, limit))


def _physdev(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    a0 = args[0] if args else ""
    if opt == "--physdev-in":
        t = iface_test(a0)
        out.append(Cond(lambda p, c, m=t, neg=neg: p.physin is not None and m(p.physin) != neg,
                        label, "PHYSIN"))
    elif opt == "--physdev-out":
        t = iface_test(a0)
        out.append(Cond(lambda p, c, m=t, neg=neg: p.physout is not None and m(p.physout) != neg,
                        label, "PHYSOUT"))
    elif opt == "--physdev-is-in":
        out.append(Cond(lambda p, c, neg=neg: (p.physin is not None) != neg, label, "PHYSIN"))
    elif opt == "--physdev-is-out":
        out.append(Cond(lambda p, c, neg=neg: (p.physout is not None) != neg, label, "PHYSOUT"))
    elif opt == "--physdev-is-bridged":
        out.append(Cond(lambda p, c, neg=neg: (p.physin is not None or p.physout is not None) != neg,
                        label, "PHYSIN"))


def _iprange(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    origin = m.origin
    a0 = args[0] if args else ""
    lo_t, _, hi_t = a0.partition("-")
    _, lo = to_int(lo_t, origin)
    _, hi = to_int(hi_t or lo_t, origin)
    if opt == "--src-range":
        out.append(Cond(negate(lambda p, c, lo=lo, hi=hi: lo <= p.src <= hi, neg), label, "SRC"))
    else:
        out.append(Cond(negate(lambda p, c, lo=lo, hi=hi: lo <= p.dst <= hi, neg), label, "DST"))


def _length(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    origin = m.origin
    a0 = args[0] if args else ""
    lo, _, hi = a0.partition(":")
    lo_i = number(lo, origin) if lo else 0
    hi_i = number(hi, origin) if hi else (lo_i if ":" not in a0 else 0xFFFF)
    out.append(Cond(negate(lambda p, c, lo=lo_i, hi=hi_i: lo <= p.length <= hi, neg), label, "LEN"))


def _ttl(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    name, origin = m.name, m.origin
    a0 = args[0] if args else ""
    n = number(a0, origin)
    op = opt.rsplit("-", 1)[-1]
    cmp = {"eq": lambda t, n=n: t == n, "lt": lambda t, n=n: t < n, "gt": lambda t, n=n: t > n}.get(op)
    if cmp is None:
        raise RuletraceError(f"unknown option {opt} for -m {name}", origin=origin)
    out.append(Cond(negate(lambda p, c, cmp=cmp: cmp(p.ttl), neg), label, "TTL" if name == "ttl" else "HOPLIMIT"))


def _pkttype(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    a0 = args[0] if args else ""
    want_t = a0.lower()

    def fn(p: Pkt, c: Ctx, want_t: str = want_t) -> bool:
        t = c.facts.addr_type(p.v, p.dst)
        kind = "broadcast" if t == "BROADCAST" else "multicast" if t == "MULTICAST" else "unicast"
        return kind == want_t

    out.append(Cond(negate(fn, neg), label, "DST"))


def _dscp(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    name, origin, where = m.name, m.origin, m.where
    a0 = args[0] if args else ""
    if opt in ("--dscp",):
        n = number(a0, origin)
        out.append(Cond(negate(lambda p, c, n=n: (p.tos >> 2) == n, neg), label, "TOS"))
    elif opt == "--tos":
        val, mask = value_mask(a0, origin) if "/" in a0 else (number(a0, origin), 0xFF)
        out.append(Cond(negate(lambda p, c, v=val, m=mask: (p.tos & m) == v, neg), label, "TOS"))
    else:
        out.append(unknown(name, f"-m {name} {label}", where, f"cannot evaluate -m {name} {opt}"))


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
        get: Callable[[Pkt], int] = {
            "--ctorigsrc": lambda p: p.orig[0],
            "--ctorigdst": lambda p: p.orig[1],
            "--ctreplsrc": lambda p: p.repl_src,
            "--ctrepldst": lambda p: p.repl_dst,
        }[opt]
        return Cond(lambda p, c: p.ct and ((get(p) & mask) == net) != neg, label, opt[2:].upper())
    if opt in ("--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport", "--ctrepldstport"):
        lo, hi = port_range(a0, origin)
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
    return unknown("conntrack", f"-m conntrack {label}", where, f"cannot evaluate -m conntrack {opt}")


_LIMIT_IFACE = {"--limit-iface-in": "in", "--limit-iface-out": "out"}


def _addrtype(opt: str, a0: str, neg: bool, label: str, v6: bool, limit: str | None) -> Cond:
    """xt_addrtype.c: IPv4 asks the local routing table (an address of the host is LOCAL, never
    UNICAST; with --limit-iface-in/out only when it is on the packet's IN/OUT interface); IPv6
    tests the address kind (a local unicast address is LOCAL and UNICAST)."""
    types = {t.strip().upper() for t in a0.split(",")}
    src = opt == "--src-type"

    def dev_of(p: Pkt, c: Ctx, a: int) -> bool:
        """Whether local address a counts on the limiting interface."""
        dev = p.iif if limit == "in" else p.oif
        have = c.facts.local_dev(p.v, a)
        if have is None:
            c.note(f"{label}: the interface of {addr_text(p.v, a)} is not known (give --addrs): "
                   f"assumed {'IN' if limit == 'in' else 'OUT'}={dev}")
            return True
        return have == dev

    def fn4(p: Pkt, c: Ctx) -> bool:
        a = p.src if src else p.dst
        if c.is_local(p, 4, a):
            t = "LOCAL" if limit is None or dev_of(p, c, a) else "UNICAST"
        else:
            t = c.facts.addr_type(4, a)
            if t == "LOCAL":
                t = "UNICAST"  # a local route the packet's locality (c.is_local) does not count
        return t in types

    def fn6(p: Pkt, c: Ctx) -> bool:
        a = p.src if src else p.dst
        if "MULTICAST" in types and a >> 120 != 0xFF:
            return False
        if "UNICAST" in types and (a == 0 or a >> 120 == 0xFF):
            return False
        if "UNSPEC" in types and a != 0:
            return False
        if types & {"LOCAL", "ANYCAST", "UNREACHABLE"}:
            if c.is_local(p, 6, a) and (limit is None or dev_of(p, c, a)):
                return "LOCAL" in types
            return "UNREACHABLE" in types and c.facts.addr_type(6, a) in ("UNREACHABLE", "BLACKHOLE", "PROHIBIT")
        return True

    # pure without --limit-iface-*: its only note (an address assumed (not) local) is made up
    # front for the packet's addresses and again by every routing decision, whether or not this
    # rule is evaluated
    return Cond(negate(fn6 if v6 else fn4, neg), label, "SRC" if src else "DST", pure=limit is None)


# module name -> its match function (matches.MODULES adds the rest)
HEADER_MODULES: dict[str, ModuleFn] = {
    **dict.fromkeys(("tcp", "udp", "sctp", "udplite"), per_option(_tcpudp)),
    "multiport": per_option(_multiport),
    **dict.fromkeys(("icmp", "icmp6", "icmpv6"), per_option(_icmp)),
    **dict.fromkeys(("conntrack", "state"), per_option(_conntrack_opt)),
    **dict.fromkeys(("mark", "connmark"), per_option(_mark)),
    "addrtype": per_option(_addrtype_opt),
    "physdev": per_option(_physdev),
    "iprange": per_option(_iprange),
    "length": per_option(_length),
    **dict.fromkeys(("ttl", "hl"), per_option(_ttl)),
    "pkttype": per_option(_pkttype),
    **dict.fromkeys(("dscp", "tos"), per_option(_dscp)),
}
