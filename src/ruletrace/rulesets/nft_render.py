"""libnftables JSON expressions and statements printed the way ``nft list ruleset`` prints them.

Checked against nft 1.0.6 listings of the same rulesets (tests/rulesets/test_nft_native.py):
``==`` is implicit, flag values join with ``,``, marks print as ``0x%08x``, interface names are
quoted, defaults (``reject``'s port-unreachable, ``limit``'s burst 5, ``numgen``'s offset 0) are
left out. A kind not known here raises ``Unknown`` (the caller keeps the JSON).
"""

from __future__ import annotations

from typing import Any


class Unknown(Exception):
    pass


VERDICTS = ("accept", "drop", "continue", "return")
_QUOTED_META = frozenset({"iif", "oif", "iifname", "oifname", "ibrname", "obrname", "ibriport", "obriport", "iifkind",
                          "oifkind", "sdifname", "ibrvproto"})
_UNQUALIFIED_META = frozenset({"iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"})
_HEX32 = frozenset({"mark"})  # meta mark, ct mark
_DEFAULT_REJECT = {"ip": "icmp", "ip6": "icmpv6"}  # other families: icmpx
_BINOPS = ("&", "|", "^", "<<", ">>")


def render_rule(exprs: Any, family: str, comment: Any = None) -> str:
    if not isinstance(exprs, list):
        raise Unknown
    parts = [stmt(e, family) for e in exprs]
    if isinstance(comment, str):
        parts.append(f"comment {_q(comment)}")
    return " ".join(p for p in parts if p)


def _q(s: str) -> str:
    return f'"{s}"'


def _hint(x: Any) -> Any:
    """How values compared with expression ``x`` print: "str" (quoted), "hex", a list (concat), None."""
    if isinstance(x, dict) and len(x) == 1:
        (k, v), = x.items()
        if k == "meta" and isinstance(v, dict):
            key = v.get("key")
            return "str" if key in _QUOTED_META else "hex" if key in _HEX32 else None
        if k == "ct" and isinstance(v, dict):
            return "hex" if v.get("key") in _HEX32 else "str" if v.get("key") == "helper" else None
        if k == "concat" and isinstance(v, list):
            return [_hint(i) for i in v]
        if k in _BINOPS and isinstance(v, list) and v:
            return _hint(v[0])
    return None


def stmt(e: Any, fam: str) -> str:
    if not isinstance(e, dict) or len(e) != 1:
        raise Unknown
    k: str
    (k, v), = e.items()
    if k == "match":
        return _match(v)
    if k in VERDICTS:
        return k
    if k in ("jump", "goto"):
        return f"{k} {v['target']}"
    if k == "counter":
        if isinstance(v, str):
            return f"counter name {_q(v)}"
        if isinstance(v, dict) and "packets" in v:
            p, b = v["packets"], v.get("bytes", 0)
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (p, b)):
                raise TypeError("counter values are not numbers")  # a damaged rule (nft_json counts it)
            return f"counter packets {p} bytes {b}"
        return "counter"
    if k == "mangle":
        return f"{expr(v['key'])} set {expr(v['value'], _hint(v['key']))}"
    if k == "log":
        return _log(v)
    if k == "reject":
        return _reject(v, fam)
    if k in ("snat", "dnat"):
        return _nat(k, v)
    if k in ("masquerade", "redirect"):
        out: str = k
        if v and "port" in v:
            out += f" to :{expr(v['port'])}"
        if v and "flags" in v:
            out += " " + _flags(v["flags"], " ")
        return out
    if k == "limit":
        return _limit(v)
    if k == "quota":
        return _quota(v)
    if k in ("ct helper", "ct timeout", "ct expectation") and isinstance(v, str):
        return f"{k} set {_q(v)}"
    if k == "vmap":
        return f"{expr(v['key'])} vmap {expr(v['data'], _hint(v['key']))}"
    if k == "notrack":
        return "notrack"
    if k == "flow" and isinstance(v, dict):
        return f"flow {v.get('op', 'add')} {v['flowtable']}"
    if k == "queue":
        return _queue(v)
    if k == "xt" and isinstance(v, dict):
        return f'xt {v.get("type", "")} {_q(str(v.get("name", "")))}'
    if k == "set" and isinstance(v, dict):  # "add @s { ip saddr }"
        return f"{v['op']} {v['set']} {{ {expr(v['elem'])} }}"
    raise Unknown


def _match(v: dict[str, Any]) -> str:
    op, left, right = v.get("op", "=="), v["left"], v["right"]
    h = _hint(left)
    # flag test "tcp flags syn / fin,syn,rst,ack": a bitmask with a list of flags
    if isinstance(left, dict) and isinstance(left.get("&"), list) and len(left["&"]) == 2 \
            and isinstance(left["&"][1], list) and op == "==":
        return f"{expr(left['&'][0])} {expr(right, h)} / {expr(left['&'][1], h)}"
    ls = expr(left)
    rs = expr(right, h)
    if isinstance(left, dict) and "fib" in left and isinstance(right, bool):
        rs = "exists" if right else "missing"
    if op in ("==", "in"):
        if isinstance(left, dict) and any(b in left for b in _BINOPS):
            return f"{ls} == {rs}" if op == "==" else f"{ls} {rs}"
        return f"{ls} {rs}"
    return f"{ls} {op} {rs}"


def _log(v: Any) -> str:
    if not v:
        return "log"
    out = ["log"]
    for a, b in v.items():
        if a == "prefix":
            out.append(f"prefix {_q(b)}")
        elif a == "flags":
            out.append("flags " + _flags(b, " flags "))
        else:
            out.append(f"{a} {b}")
    return " ".join(out)


def _reject(v: Any, fam: str) -> str:
    if not v:
        return "reject"
    t, x = v.get("type"), v.get("expr")
    if t == "tcp reset":
        return "reject with tcp reset"
    if x == "port-unreachable" and t == _DEFAULT_REJECT.get(fam, "icmpx"):
        return "reject"
    return f"reject with {t} {x}" if x is not None else f"reject with {t}"


def _nat(k: str, v: dict[str, Any]) -> str:
    out = k
    if "family" in v:
        out += f" {v['family']}"
    to = ""
    if "addr" in v:
        a = expr(v["addr"])
        to = f"[{a}]" if ":" in a and "port" in v else a
    if "port" in v:
        to += f":{expr(v['port'])}"
    if to:
        out += f" to {to}"
    if "flags" in v:
        out += " " + _flags(v["flags"], " ")
    return out


def _flags(f: Any, sep: str) -> str:
    return sep.join(f) if isinstance(f, list) else str(f)


def _limit(v: Any) -> str:
    if isinstance(v, str):
        return f"limit name {_q(v)}"
    out = "limit rate " + ("over " if v.get("inv") else "")
    unit = v.get("rate_unit", "packets")
    if unit == "packets":
        out += f"{v['rate']}/{v.get('per', 'second')}"
        burst = v.get("burst", 5)
        if burst != 5:
            out += f" burst {burst} packets"
    else:
        out += f"{v['rate']} {unit}/{v.get('per', 'second')}"
        if v.get("burst"):
            out += f" burst {v['burst']} {v.get('burst_unit', 'bytes')}"
    return out


def _quota(v: Any) -> str:
    if isinstance(v, str):
        return f"quota name {_q(v)}"
    out = "quota " + ("over " if v.get("inv") else "") + f"{v['val']} {v.get('val_unit', 'bytes')}"
    if v.get("used"):
        out += f" used {v['used']} {v.get('used_unit', 'bytes')}"
    return out


def _queue(v: Any) -> str:
    if not v:
        return "queue"
    out = "queue"
    if "flags" in v:
        out += " flags " + _flags(v["flags"], ",")
    if "num" in v:
        out += f" to {expr(v['num'])}"
    return out


def type_hint(t: Any) -> Any:
    """Value hint for a set's datatype name(s) (``mark`` prints in hex, ``ifname`` quoted)."""
    if isinstance(t, list):
        return [type_hint(i) for i in t]
    return "hex" if t == "mark" else "str" if t in ("ifname", "string") else None


def element(e: Any, h: Any = None, dh: Any = None) -> str:
    """A set element or a map entry ``[key, value]`` (``h``, ``dh``: key and data hints)."""
    if isinstance(e, list) and len(e) == 2:
        return f"{element(e[0], h)} : {expr(e[1], dh)}"
    if isinstance(e, dict) and "elem" in e and isinstance(e["elem"], dict):
        el = e["elem"]
        out = expr(el["val"], h)
        for a in ("timeout", "expires"):
            if a in el:
                out += f" {a} {el[a]}s"
        if "comment" in el:
            out += f" comment {_q(el['comment'])}"
        return out
    return expr(e, h)


def expr(x: Any, h: Any = None) -> str:
    if isinstance(x, bool):
        return "exists" if x else "missing"
    if isinstance(x, int):
        return f"0x{x:08x}" if h == "hex" else str(x)
    if isinstance(x, str):
        return _q(x) if h == "str" and not x.startswith("@") else x
    if isinstance(x, list):  # flag combination
        return ",".join(expr(i, h) for i in x)
    if not isinstance(x, dict) or len(x) != 1:
        raise Unknown
    (k, v), = x.items()
    if k == "payload":
        if "protocol" in v:
            return f"{v['protocol']} {v['field']}"
        return "@{},{},{}".format(v.get("base"), v.get("offset"), v.get("len"))
    if k == "meta":
        key = v["key"]
        return key if key in _UNQUALIFIED_META else f"meta {key}"
    if k == "ct":
        parts = ["ct"]
        if "dir" in v:
            parts.append(v["dir"])
        if "family" in v:
            parts.append(v["family"])
        parts.append(v["key"])
        return " ".join(parts)
    if k == "set":
        items = v if isinstance(v, list) else [v]
        return "{ " + ", ".join(element(i, h) for i in items) + " }"
    if k == "prefix":
        return f"{expr(v['addr'])}/{v['len']}"
    if k == "range":
        return f"{expr(v[0], h)}-{expr(v[1], h)}"
    if k in _BINOPS:
        hh = _hint(v[0])
        return f" {k} ".join([expr(v[0])] + [expr(i, hh) for i in v[1:]])
    if k == "concat":
        hs = h if isinstance(h, list) and len(h) == len(v) else [None] * len(v)
        return " . ".join(expr(i, hh) for i, hh in zip(v, hs))
    if k == "fib":
        flags = v.get("flags", [])
        flags = flags if isinstance(flags, list) else [flags]
        return "fib {} {}".format(" . ".join(flags), v.get("result"))
    if k == "numgen":
        out = f"numgen {v.get('mode', 'inc')} mod {v['mod']}"
        return out + (f" offset {v['offset']}" if v.get("offset") else "")
    if k == "map":
        return f"{expr(v['key'])} map {expr(v['data'], _hint(v['key']))}"
    if k == "rt":
        return f"rt {v['family']} {v['key']}" if "family" in v else f"rt {v['key']}"
    if k == "tcp option":
        return f"tcp option {v['name']} {v['field']}" if "field" in v else f"tcp option {v['name']}"
    if k == "elem":
        return element(x, h)
    if k in ("jhash", "symhash"):
        out = f"{k}"
        if "expr" in v:
            out += f" {expr(v['expr'])}"
        out += f" mod {v['mod']}"
        if v.get("seed") is not None:
            out += f" seed 0x{v['seed']:x}"
        return out + (f" offset {v['offset']}" if v.get("offset") else "")
    if k in VERDICTS:
        return str(k)
    if k in ("jump", "goto"):
        return f"{k} {v['target']}"
    raise Unknown
