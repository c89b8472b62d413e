"""Rule targets: what a matched rule does to the simulated packet and to the traversal.

Semantics follow the kernel's xt_*/ipt_* targets (net/netfilter/xt_MARK.c, xt_CONNMARK.c,
xt_nat.c, xt_REDIRECT.c, xt_MASQUERADE.c, xt_NETMAP.c, xt_CT.c, xt_TTL/HL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import RuletraceError
from ..model import Origin, Rule
from ..rulesets.options import int_pair, number, xmark
from .hostfacts import addr_text, to_int, to_net
from .semantics import ACCEPT, CONTINUE, DROP, FLOW, GOTO, JUMP, NAT, QUEUE, REJECT, RETURN, VERDICT
from .state import Ctx, Pkt

Effect = Callable[[Pkt, Ctx], None]

# targets that change nothing the simulation looks at and let the packet go on (XT_CONTINUE)
PASSIVE = frozenset({
    "LOG", "NFLOG", "ULOG", "TRACE", "AUDIT", "LED", "IDLETIMER", "RATEEST", "CHECKSUM", "TCPMSS",
    "TCPOPTSTRIP", "ECN", "CLASSIFY", "SECMARK", "CONNSECMARK", "DSCP", "TOS", "TEE", "HMARK", "SET",
    "CLUSTERIP", "NETMAP6",
})


class Target:
    """A compiled target: traversal kind, side effect on the packet, jump chain.

    ``flow`` and ``verdict`` are the kind's entries of semantics.FLOW and semantics.VERDICT;
    ``trace`` is True for TRACE (non-terminating, no effect: the walk notes where tracing started).
    """

    __slots__ = ("kind", "name", "effect", "chain", "args", "resolved", "flow", "verdict", "trace")

    def __init__(self, kind: str, name: str, effect: Effect | None = None, chain: str | None = None,
                 args: str = "") -> None:
        self.kind = kind
        self.name = name
        self.effect = effect
        self.chain = chain
        self.args = args
        self.resolved: Any = None  # the CChain of a jump/goto, filled on first use
        self.flow = FLOW[kind]
        self.verdict = VERDICT.get(kind)
        self.trace = kind == CONTINUE and name == "TRACE" and effect is None


def compile_target(rule: Rule, name: str | None, goto: bool, opts: list[tuple[bool, str, list[str]]],
                   chains: frozenset[str], v6: bool) -> Target:
    """The rule's target; a name that is a chain of the table is a jump (or goto)."""
    origin = rule.origin
    where = f"{rule.table}:{rule.chain}:{rule.num}"
    d = {o: (a[0] if a else "") for _, o, a in opts}
    args = " ".join(" ".join([o, *a]) for _, o, a in opts)
    if name is None:
        return Target(CONTINUE, "")
    if name in chains:
        return Target(GOTO if goto else JUMP, name, chain=name)
    if goto:
        raise RuletraceError(f"-g {name}: no such chain in table {rule.table}", origin=origin)
    simple = {"ACCEPT": ACCEPT, "DROP": DROP, "REJECT": REJECT, "QUEUE": QUEUE, "RETURN": RETURN}
    if name in simple:
        return Target(simple[name], name, args=args)
    if name == "NFQUEUE":
        def q(p: Pkt, c: Ctx) -> None:
            c.note(f"{where}: NFQUEUE hands the packet to a user-space program: its verdict is unknown "
                   "(simulation ends here)")
        return Target(QUEUE, name, q, args=args)
    if name == "MARK":
        return Target(CONTINUE, name, _mark(d, origin), args=args)
    if name == "CONNMARK":
        return Target(CONTINUE, name, _connmark(d, origin), args=args)
    if name in ("DNAT", "SNAT"):
        return Target(NAT, name, _nat(name, d, where, origin, v6), args=args)
    if name == "MASQUERADE":
        return Target(NAT, name, _masquerade(d, where, origin), args=args)
    if name == "REDIRECT":
        return Target(NAT, name, _redirect(d, where, origin), args=args)
    if name == "NETMAP":
        return Target(NAT, name, _netmap(d, origin), args=args)
    if name == "NOTRACK" or (name == "CT" and "--notrack" in d):
        return Target(CONTINUE, name, _notrack, args=args)
    if name == "CT":
        return Target(CONTINUE, name, None, args=args)
    if name in ("TTL", "HL"):
        return Target(CONTINUE, name, _ttl(d, origin), args=args)
    if name in PASSIVE:
        return Target(CONTINUE, name, None, args=args)

    # an extension the simulator does not model: say so on the step and go on
    def unknown(p: Pkt, c: Ctx) -> None:
        c.note(f"{where}: cannot simulate target {name}: assumed it lets the packet continue")

    return Target(CONTINUE, name, unknown, args=args)


def _mark(d: dict[str, str], origin: Origin | None) -> Effect:
    xm = xmark(d, origin)
    if xm is None:
        raise RuletraceError("MARK needs --set-xmark/--set-mark/--and-mark/--or-mark/--xor-mark", origin=origin)
    val, mask = xm

    def effect(p: Pkt, c: Ctx) -> None:
        p.mark = ((p.mark & ~mask) ^ val) & 0xFFFFFFFF

    return effect


def _connmark(d: dict[str, str], origin: Origin | None) -> Effect:
    nfmask = number(d.get("--nfmask") or d.get("--mask") or "0xffffffff", origin)
    ctmask = number(d.get("--ctmask") or d.get("--mask") or "0xffffffff", origin)
    if "--save-mark" in d:
        def save(p: Pkt, c: Ctx) -> None:
            if p.ct:  # xt_CONNMARK: nothing to do without a conntrack entry
                # ct->mark = (ct->mark & ~ctmask) ^ (skb->mark & nfmask)
                p.ctmark = ((p.ctmark & ~ctmask) ^ (p.mark & nfmask)) & 0xFFFFFFFF
        return save
    if "--restore-mark" in d:
        def restore(p: Pkt, c: Ctx) -> None:
            if p.ct:
                # skb->mark = (skb->mark & ~nfmask) ^ (ct->mark & ctmask)
                p.mark = ((p.mark & ~nfmask) ^ (p.ctmark & ctmask)) & 0xFFFFFFFF
        return restore
    xm = xmark(d, origin)
    if xm is None:
        raise RuletraceError("CONNMARK needs --set-xmark/--set-mark/--save-mark/--restore-mark", origin=origin)
    val, mask = xm

    def effect(p: Pkt, c: Ctx) -> None:
        if p.ct:
            p.ctmark = ((p.ctmark & ~mask) ^ val) & 0xFFFFFFFF

    return effect


def _notrack(p: Pkt, c: Ctx) -> None:
    p.ctstate = "UNTRACKED"
    p.ct = False


def _ttl(d: dict[str, str], origin: Origin | None) -> Effect:
    for opt, op in (("--ttl-set", "set"), ("--hl-set", "set"), ("--ttl-inc", "inc"), ("--hl-inc", "inc"),
                    ("--ttl-dec", "dec"), ("--hl-dec", "dec")):
        if opt in d:
            n = number(d[opt], origin)

            def effect(p: Pkt, c: Ctx, op: str = op, n: int = n) -> None:
                t = n if op == "set" else p.ttl + n if op == "inc" else p.ttl - n
                p.ttl = max(0, min(255, t))

            return effect
    return lambda p, c: None


def parse_nat_range(text: str, v6: bool, origin: Origin | None) -> tuple[str | None, str | None, int | None, int | None]:
    """``[ip[-ip]][:port[-port]]`` (IPv6 in brackets) -> (ip_lo, ip_hi, port_lo, port_hi)."""
    addr, ports = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RuletraceError(f"bad address {text!r}", origin=origin)
        addr, rest = text[1:end], text[end + 1 :]
        ports = rest[1:] if rest.startswith(":") else ""
    elif v6 and text.count(":") > 1:
        addr = text
    elif ":" in text:
        addr, _, ports = text.partition(":")
    lo, _, hi = addr.partition("-")
    plo = phi = None
    if ports:
        plo, phi = int_pair(ports, "-", f"bad port range in {text!r}", origin)
        phi = plo if phi is None else phi
    return (lo or None), (hi or None), plo, phi


def _nat(name: str, d: dict[str, str], where: str, origin: Origin | None, v6: bool) -> Effect:
    opt = "--to-destination" if name == "DNAT" else "--to-source"
    text = d.get(opt) or d.get("--to") or ""
    lo, hi, plo, phi = parse_nat_range(text, v6, origin) if text else (None, None, None, None)
    new = to_int(lo, origin)[1] if lo else None
    ranged = bool(hi and hi != lo) or (phi is not None and phi != plo)

    def effect(p: Pkt, c: Ctx) -> None:
        if ranged:
            c.note(f"{where}: {name} {opt} {text} picks from a range: assumed the first address/port")
        if name == "DNAT":
            set_dst(p, new, plo)
        else:
            set_src(p, new, plo)

    return effect


# set_dst and set_src mirror each other field for field (destination NAT / source NAT and the
# reply tuple conntrack reverses); kept as two flat functions, one call per translated packet.
# Checked by tests/simulate/test_engine.py::test_dnat_reroutes_to_forward_with_route_and_ttl
# (DNAT then MASQUERADE) and, against the kernel, tests/simulate/test_kernel_diff.py.
def set_dst(p: Pkt, addr: int | None, port: int | None) -> None:
    if addr is not None:
        p.dst = addr
    if port is not None and p.dport is not None:
        p.dport = port
    p.dnat = True
    p.repl_src = p.dst
    p.repl_sport = p.dport


def set_src(p: Pkt, addr: int | None, port: int | None) -> None:
    if addr is not None:
        p.src = addr
    if port is not None and p.sport is not None:
        p.sport = port
    p.snat = True
    p.repl_dst = p.src
    p.repl_dport = p.sport


def _ports(d: dict[str, str], origin: Origin | None) -> int | None:
    t = d.get("--to-ports")
    if not t:
        return None
    try:
        return int(t.partition("-")[0])
    except ValueError:
        raise RuletraceError(f"bad --to-ports {t!r}", origin=origin) from None


def _masquerade(d: dict[str, str], where: str, origin: Origin | None) -> Effect:
    port = _ports(d, origin)

    def effect(p: Pkt, c: Ctx) -> None:
        masquerade(p, c, f"{where}: MASQUERADE", port)

    return effect


def masquerade(p: Pkt, c: Ctx, what: str, port: int | None) -> None:
    """Source NAT to the address the out interface has (iptables MASQUERADE, nft masquerade)."""
    a = c.facts.masquerade_addr(p.oif, p.v, p.dst)
    if a is None:
        key = (what, p.oif)
        text = _MASQ_NOTES.get(key)
        if text is None:
            text = f"{what} uses {masq_whose(p.oif)}, which is not known (give --addrs): SRC left as is"
            if len(_MASQ_NOTES) < 1 << 12:
                _MASQ_NOTES[key] = text
        c.note(text)
    set_src(p, a, port)


_MASQ_NOTES: dict[tuple[str, str | None], str] = {}  # masquerade's note, made once per (rule, interface)


def masq_whose(oif: str | None) -> str:
    """Whose address MASQUERADE takes, in words (HostFacts.masquerade_addr)."""
    if oif == "lo":
        return "the first global address of the host (the packet leaves on lo)"
    return f"the address of {oif or 'the output interface'}"


def _redirect(d: dict[str, str], where: str, origin: Origin | None) -> Effect:
    port = _ports(d, origin)

    def effect(p: Pkt, c: Ctx) -> None:
        a: int | None
        if p.hook == "OUTPUT":
            a = 1 if p.v == 6 else 0x7F000001  # xt_REDIRECT: locally generated -> loopback
        else:
            a = c.facts.primary(p.iif, p.v)
            if a is None:
                c.note(f"{where}: REDIRECT uses the primary address of {p.iif or 'the input interface'}, "
                       f"which is not known (give --addrs): DST {addr_text(p.v, p.dst)} kept, "
                       "treated as local")
                a = p.dst
        if not p.redirected:
            p.redirected = set()
        p.redirected.add(a)  # type: ignore[union-attr]  # a set now (the shared empty frozenset replaced above)
        set_dst(p, a, port)

    return effect


def _netmap(d: dict[str, str], origin: Origin | None) -> Effect:
    _, net, mask = to_net(d.get("--to", ""), origin)

    def effect(p: Pkt, c: Ctx) -> None:
        if p.hook in ("PREROUTING", "OUTPUT"):
            set_dst(p, (net & mask) | (p.dst & ~mask), None)
        else:
            set_src(p, (net & mask) | (p.src & ~mask), None)

    return effect
