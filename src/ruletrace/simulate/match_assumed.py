"""Match modules whose result the packet alone does not decide: chance and rate (statistic,
limit, hashlimit, connlimit: a branch the result records), ipset contents (xt_set), the socket
owner (xt_owner) and the source MAC (xt_mac), which the probe may not give. Each records the
assumption it makes; ``--assume`` overrides it.
"""

from __future__ import annotations

from ..errors import RuletraceError
from ..model import Origin, Rule
from .conds import Cond, Mod, ModuleFn, per_option, unknown
from .hostfacts import IpSet
from .state import Branch, Ctx, Pkt


def _set(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    origin, where, opts = m.origin, m.where, m.opts
    if opt == "--match-set":
        if len(args) != 2:
            raise RuletraceError("--match-set needs NAME FLAGS", origin=origin)
        out.append(_set_cond(args[0], args[1].split(","), neg, label, where,
                             any(o == "--return-nomatch" for _, o, _a in opts)))
    elif opt in ("--return-nomatch", "--update-counters", "--update-subcounters", "--no-counters"):
        return
    else:
        out.append(unknown("set", f"-m set {label}", where, f"cannot evaluate -m set {opt}"))


def _owner_opt(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    origin, where = m.origin, m.where
    a0 = args[0] if args else ""
    out.append(_owner(opt, a0, neg, label, where, origin))


def _mac_opt(m: Mod, neg: bool, opt: str, args: list[str], label: str, out: list[Cond]) -> None:
    where = m.where
    a0 = args[0] if args else ""
    out.append(_mac(a0, neg, label, where))


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


def _set_cond(name: str, dirs: list[str], neg: bool, label: str, where: str, return_nomatch: bool) -> Cond:
    def fn(p: Pkt, c: Ctx) -> bool:
        sets = c.facts.ipsets
        s = sets.get(name) if sets is not None else None
        if s is None:
            o = c.override(where, "set")
            c.note(f"{where}: no contents for ipset {name!r} (give --ipset FILE): "
                   f"assumed {'match' if o else 'no match'}"
                   + ("" if o is not None else "; use --assume set=match to change"))
            return bool(o)
        r = _in_set(s, sets or {}, p, dirs, 0)  # sets is not None here: s came from it
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
        return unknown("owner", f"-m owner {label}", where, f"cannot evaluate -m owner {opt}")
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
        inside: bool = lo <= have <= hi
        return inside != neg

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


ASSUMED_MODULES: dict[str, ModuleFn] = {
    **dict.fromkeys(("statistic", "limit", "hashlimit", "connlimit"), lambda m: [_branch(m.name, m.opts, m.text, m.rule, m.where)]),
    "set": per_option(_set),
    "owner": per_option(_owner_opt),
    "mac": per_option(_mac_opt),
}
