"""nft statements: counter, log, limit, quota, meta/ct mark set, NAT, reject, notrack, queue.

``statement(toks, i, w)`` reads one statement at toks[i] and returns (next index, item or None,
verdict or None, sets nftrace) — or None when toks[i] starts a match, not a statement.
Effects follow nft_meta.c, nft_ct.c, nft_nat.c, nft_masq.c, nft_redir.c, nft_reject*.c.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .hostfacts import to_int
from .nft_code import code_fn, embed
from .nft_selectors import selector
from .nft_sets import NSet, Where, unknown_item
from .semantics import NAT, QUEUE, REJECT
from .state import Branch
from .targets import masquerade, parse_nat_range, set_dst, set_src

Result = tuple[int, Any, Any, bool]
_LOG_OPTS = frozenset({"prefix", "level", "group", "snaplen", "queue-threshold"})
_NAT_FLAGS = frozenset({"persistent", "random", "fully-random"})
_OPS = {"|": "|", "or": "|", "&": "&", "and": "&", "^": "^", "xor": "^", "<<": "<<", ">>": ">>"}  # as Python operators


def statement(toks: list[str], i: int, w: Where) -> Result | None:
    t = toks[i]
    n = len(toks)
    nxt = toks[i + 1] if i + 1 < n else ""
    if t == "counter":
        j = i + 1
        if nxt == "packets":
            j += 4
        elif nxt == "name":
            j += 2
        return j, None, None, False
    if t == "comment":
        return i + 2, None, None, False
    if t == "log":
        j = i + 1
        while j < n and toks[j] in _LOG_OPTS | {"flags"}:
            j += 2
            while toks[j - 1] != "flags" and j < n and toks[j] == ",":
                j += 2
        return j, None, None, False
    if t in ("limit", "quota"):
        return _rate(toks, i, w)
    if t == "notrack":
        return i + 1, _notrack, None, False
    if t == "reject":
        j = i + 1
        if j < n and toks[j] == "with":
            j += 3 if (j + 2 < n and toks[j + 1] != "tcp") or toks[j + 2:j + 3] == ["reset"] else 2
            if j < n and toks[j - 1] == "type":
                j += 1
        return j, None, (REJECT, None, "drop"), False
    if t == "queue":
        j = i + 1
        while j < n and toks[j] in ("num", "to", "flags", "bypass", "fanout", ","):
            j += 2 if toks[j] in ("num", "to", "flags") else 1
        return j, None, (QUEUE, None, "queue"), False
    if t in ("dnat", "snat", "masquerade", "redirect"):
        return _nat(toks, i, w)
    if t == "flow" and nxt in ("add", "offload"):
        return i + 3, _note(w, f"'{' '.join(toks[i:i + 3])}': flow offload is not simulated (the first "
                               "packet takes the normal path)"), None, False
    if t == "xt":
        what = toks[i + 2].strip('"') if i + 2 < n else "?"
        if nxt == "match":
            return i + 3, unknown_item(f"xt match {what}", what, w), None, False
        return i + 3, _note(w, f"cannot simulate xt target {what}: assumed it lets the packet continue"), None, False
    if t in ("synproxy", "tproxy", "dup", "fwd"):
        return n, _note(w, f"cannot simulate '{' '.join(toks[i:])}': assumed the packet continues"), None, False
    if t in ("meta", "ct") and i + 2 < n and toks[i + 2] == "set":
        return _set(toks, i, w, f"{t} {nxt}", i + 3)
    if t in ("mark", "nftrace") and nxt == "set":
        return _set(toks, i, w, f"meta {t}", i + 2)
    # payload mangling (ip dscp set cs1, tcp option maxseg size set rt mtu)
    j = i + 4 if t == "tcp" and nxt == "option" else i + 2
    if j < n and toks[j] == "set":
        end = j + (3 if toks[j + 1:j + 2] == ["rt"] else 2)
        return end, _note(w, f"'{' '.join(toks[i:end])}' is not simulated (it changes no field the "
                             "simulation reads)"), None, False
    return None


def _note(w: Where, text: str) -> Callable[[Any, Any], bool]:
    msg = f"{w.key}: {text}"

    def item(p: Any, c: Any) -> bool:
        c.note(msg)
        return True

    return item


def _notrack(p: Any, c: Any) -> bool:
    p.ctstate = "UNTRACKED"
    p.ct = False
    return True


def _rate(toks: list[str], i: int, w: Where) -> Result:
    """limit / quota: whether the packet is under the rate cannot be known: a branch."""
    n = len(toks)
    j = i + 1
    over = False
    if j < n and toks[j] == "name":
        kind = toks[i]
        body = w.objects.get((w.table, kind, toks[j + 1].strip('"')), "")
        over = "over" in body.split()
        j += 2
    else:
        if j < n and toks[j] == "rate":
            j += 1
        if j < n and toks[j] in ("over", "until"):
            over = toks[j] == "over"
            j += 1
        j += 1  # N/unit or N
        while j < n and (toks[j] in ("bytes", "kbytes", "mbytes", "packets", "burst", "used")
                         or toks[j][:1].isdigit() or toks[j].startswith("/")):
            j += 1
    expr = " ".join(toks[i:j])
    key, word = w.key, toks[i]
    where = (w.table, w.chain, w.num)
    default = not over  # under the limit / quota: a limit matches, an "over" one does not

    def item(p: Any, c: Any) -> bool:
        o = c.override(key, word)
        taken = default if o is None else o
        how = "--assume" if o is not None else "assumed"
        c.branches.append(Branch(*where, expr, taken, f"{'matched' if taken else 'did not match'} ({how}: "
                                 f"{'within' if not over else 'not over'} the limit); --assume {key}="
                                 f"{'nomatch' if taken else 'match'} to take the other branch"))
        return taken

    return j, item, None, False


def value_expr(toks: list[str], i: int, w: Where) -> tuple[int, Callable[[Any, Any], Any]]:
    """``0x10``, ``meta mark | 0x4000``, ``ct mark``, ``ct mark map @m``: an int-valued expression."""
    n = len(toks)
    sel = selector(toks, i, w) if not toks[i][:1].isdigit() else None
    if sel is not None:
        i, get, _typ, _text = sel
    else:
        try:
            const = int(toks[i], 0)
        except ValueError:
            raise w.error(f"cannot read value {toks[i]!r}") from None
        get = code_fn("{0}", (const,))
        i += 1
    while i + 1 < n and toks[i] in _OPS:
        op, arg = _OPS[toks[i]], int(toks[i + 1].strip("()"), 0)
        k: list[Any] = []
        get = code_fn(f"None if (v := {embed(get, k)}) is None else (v {op} {{{len(k)}}}) & 0xFFFFFFFF",
                      (*k, arg))
        i += 2
    if i < n and toks[i] == "map":
        m, i = NSet.inline_or_named(toks, i + 1, w, "int", "int")
        get = m.map_fn(get)
    return i, get


def _set(toks: list[str], i: int, w: Where, what: str, j: int) -> Result:
    if what == "meta nftrace":
        return j + 1, None, None, toks[j:j + 1] == ["1"]
    if what in ("meta mark", "ct mark"):
        end, get = value_expr(toks, j, w)
        if what == "meta mark":
            def item(p: Any, c: Any) -> bool:
                v = get(p, c)
                if v is None:
                    return False
                p.mark = v
                p.snap = None
                return True
        else:
            def item(p: Any, c: Any) -> bool:
                v = get(p, c)
                if v is None or not p.ct:
                    return False
                p.ctmark = v
                return True
        return end, item, None, False
    end = j + 1
    return end, _note(w, f"'{' '.join(toks[i:end])}' is not simulated (no effect on the path)"), None, False


def _nat(toks: list[str], i: int, w: Where) -> Result:
    kind = toks[i]
    n = len(toks)
    j = i + 1
    if j < n and toks[j] in ("ip", "ip6") and toks[j + 1:j + 2] == ["to"]:
        j += 1
    get: Callable[[Any, Any], Any] | None = None
    text = ""
    if j < n and toks[j] == "to":
        j += 1
        if j + 1 < n and toks[j + 1:j + 2] != [] and (toks[j] in ("ip", "ip6", "tcp", "udp", "th", "meta", "ct")
                                                    or toks[j].startswith("@")):
            end = j
            while end < n and toks[end] != "map":
                end += 1
            sel = selector(toks, j, w)
            if sel is None or end >= n:
                return n, _note(w, f"cannot read the NAT mapping of {w.text!r}: assumed no NAT"), (NAT, None, "accept"), False
            _k, kget, ktyp, _t = sel
            dtyp = "addr6" if w.v6 else "addr4"
            m, j = NSet.inline_or_named(toks, end + 1, w, ktyp, dtyp)
            get = m.map_fn(kget)
            text = " ".join(toks[i:j])
        else:
            text = toks[j]
            j += 1
    while j < n and toks[j] in _NAT_FLAGS | {","}:
        j += 1
    where = w.key
    if kind == "masquerade":
        port = _port_of(text)
        what = f"{where}: masquerade"

        def masq(p: Any, c: Any) -> bool:
            masquerade(p, c, what, port)
            p.snap = None
            return True
        return j, masq, (NAT, None, "accept"), False
    if kind == "redirect":
        port = _port_of(text)

        def redir(p: Any, c: Any) -> bool:
            if p.hook == "OUTPUT":
                a = 1 if p.v == 6 else 0x7F000001
            else:
                a = c.facts.primary(p.iif, p.v)
                if a is None:
                    c.note(f"{where}: redirect uses the primary address of {p.iif}, which is not known "
                           "(give --addrs): DST kept, treated as local")
                    a = p.dst
            if not p.redirected:
                p.redirected = set()
            p.redirected.add(a)
            set_dst(p, a, port)
            p.snap = None
            return True
        return j, redir, (NAT, None, "accept"), False
    setter = set_dst if kind == "dnat" else set_src
    if get is not None:
        def mapped(p: Any, c: Any) -> bool:
            d = get(p, c)
            if d is None:
                return False  # a map miss breaks the rule
            addr, port = (d[0], d[1]) if type(d) is tuple else (d, None)
            setter(p, addr, port)
            p.snap = None
            return True
        return j, mapped, (NAT, None, "accept"), False
    lo, hi, plo, phi = parse_nat_range(text, w.v6, w.origin) if text else (None, None, None, None)
    addr = to_int(lo, w.origin)[1] if lo else None
    ranged = bool(hi and hi != lo) or (phi is not None and phi != plo)

    def nat(p: Any, c: Any) -> bool:
        if ranged:
            c.note(f"{where}: {kind} to {text} picks from a range: assumed the first address/port")
        setter(p, addr, plo)
        p.snap = None
        return True
    return j, nat, (NAT, None, "accept"), False


def _port_of(text: str) -> int | None:
    if not text:
        return None
    t = text.rpartition(":")[2] if ":" in text else text
    try:
        return int(t.partition("-")[0])
    except ValueError:
        return None
