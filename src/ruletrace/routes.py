"""Policy routing read from ``ip -j rule`` / ``ip -j route get`` output: which rule chose the table.

Pure functions over the JSON iproute2 prints, shared by live tracing (which asks the kernel)
and explain (which is given the dumps). Nothing here runs a command.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import RuletraceError
from .fields import bounded_int
from .model import Origin, RouteDecision

Json = dict[str, Any]  # one object of `ip -j` output


def _int(v: object) -> int | None:
    if v is None:
        return None
    if isinstance(v, int):
        return v
    s = str(v)
    return bounded_int(s[2:], 16) if s.lower().startswith("0x") else bounded_int(s)


def _in(addr: str | None, sel: str | None, bits: int | None) -> bool:
    if sel in (None, "all"):
        return True
    if not addr:
        return False
    try:
        net = ipaddress.ip_network(f"{sel}/{bits}" if bits is not None else sel, strict=False)
        return ipaddress.ip_address(addr) in net
    except ValueError:
        return False


def rule_matches(r: dict[str, Any], *, src: str | None, dst: str | None, mark: int | None, iif: str | None,
                 oif: str | None = None) -> bool:
    """Do a packet's selectors match one ``ip -j rule`` entry? (``not`` inverts, as the kernel does)"""
    ok = (_in(src, r.get("src"), r.get("srclen")) and _in(dst, r.get("dst"), r.get("dstlen")))
    if "fwmark" in r:
        want = _int(r["fwmark"]) or 0
        mask = _int(r.get("fwmask")) if "fwmask" in r else 0xFFFFFFFF
        ok = ok and ((mark or 0) & (mask if mask is not None else 0xFFFFFFFF)) == want
    if "iif" in r:
        ok = ok and iif == r["iif"]
    if "oif" in r:
        ok = ok and oif == r["oif"]
    if r.get("not"):
        ok = not ok
    return ok


def rule_text(r: dict[str, Any]) -> str:
    """An ``ip -j rule`` entry as ``ip rule`` prints it: "100: from all fwmark 0x1 lookup 100"."""
    parts = [f"{r.get('priority', 0)}:"]
    if r.get("not"):
        parts.append("not")
    src = r.get("src", "all")
    parts.append(f"from {src}" + (f"/{r['srclen']}" if "srclen" in r else ""))
    if "dst" in r:
        parts.append(f"to {r['dst']}" + (f"/{r['dstlen']}" if "dstlen" in r else ""))
    if "fwmark" in r:
        parts.append(f"fwmark {r['fwmark']}" + (f"/{r['fwmask']}" if "fwmask" in r else ""))
    for k in ("iif", "oif"):
        if k in r:
            parts.append(f"{k} {r[k]}")
    act = r.get("action")
    parts.append(f"lookup {r['table']}" if "table" in r and act in (None, "lookup", "to_tbl") else str(act or ""))
    return " ".join(p for p in parts if p)


def choosing_rule(rules: list[dict[str, Any]], table: str | None, *, src: str | None, dst: str | None,
                  mark: int | None, iif: str | None, oif: str | None = None) -> dict[str, Any] | None:
    """The first rule (by priority) that matches the packet and looks up ``table`` (None: main)."""
    want = table or "main"
    for r in sorted(rules, key=lambda r: _int(r.get("priority")) or 0):
        if rule_matches(r, src=src, dst=dst, mark=mark, iif=iif, oif=oif):
            if str(r.get("table")) == want:
                return r
            if r.get("action") in ("unreachable", "prohibit", "blackhole"):
                return r
    return None


def load_json_list(text: str, path: str) -> list[dict[str, Any]]:
    """``ip -j …`` output (a JSON list), or one clear error naming the file."""
    try:
        data = json.loads(text or "[]")
    except json.JSONDecodeError as e:
        raise RuletraceError(f"not the JSON of `ip -j`: {e.msg}", origin=Origin(path, e.lineno)) from None
    except ValueError as e:  # not a syntax error: e.g. an integer over Python's digit limit
        raise RuletraceError(f"not the JSON of `ip -j`: {e}", origin=Origin(path)) from None
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise RuletraceError("expected a JSON list of objects (`ip -j rule` / `ip -j route show table all`)",
                             origin=Origin(path, 1))
    return data


# --- offline route resolution: ip rules + routes of every table (`ip -j route show table all`) ---

DEFAULT_RULES = [{"priority": 0, "src": "all", "table": "local"}, {"priority": 32766, "src": "all", "table": "main"},
                 {"priority": 32767, "src": "all", "table": "default"}]
REFUSING = ("unreachable", "blackhole", "prohibit")  # route / rule types that end the lookup with an error
# the kernel's errors for them (fib_props; the message `ip route get` prints)
ERRORS = {"unreachable": "No route to host", "prohibit": "Permission denied", "blackhole": "Invalid argument",
          None: "Network is unreachable"}


def _family(r: Json) -> int:
    for k in ("dst", "gateway", "prefsrc"):
        v = str(r.get(k) or "")
        if ":" in v:
            return 6
    return 4


def _net(dst: str, v: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if dst == "default":
        dst = "::/0" if v == 6 else "0.0.0.0/0"
    try:
        return ipaddress.ip_network(dst, strict=False)
    except ValueError:
        return None


def table_lookup(routes: list[Json], table: str, dst: str) -> Json | None:
    """Longest-prefix match for ``dst`` among the routes of one table (lowest metric on a tie)."""
    try:
        a = ipaddress.ip_address(dst)
    except ValueError:
        return None
    best, key = None, None
    for r in routes:
        if str(r.get("table") or "main") != table or "dst" not in r:
            continue
        net = _net(str(r["dst"]), _family(r))
        if net is None or net.version != a.version or a not in net:
            continue
        k = (net.prefixlen, -(_int(r.get("metric")) or 0))
        if key is None or k > key:
            best, key = r, k
    return best


def resolve(point: str, rules: list[Json] | None, routes: list[Json], *, dst: str, src: str | None,
            mark: int | None, iif: str | None) -> RouteDecision:
    """The kernel's fib lookup from the dumps: the first matching ``ip rule`` (by priority) whose
    table has a route for ``dst`` (a ``throw`` route or no route goes on to the next rule)."""
    d = RouteDecision(point, mark=hex(mark) if mark else None, dst=dst)
    for r in sorted(rules if rules else DEFAULT_RULES, key=lambda r: _int(r.get("priority")) or 0):
        if not rule_matches(r, src=src, dst=dst, mark=mark, iif=iif or "lo"):
            continue
        act = r.get("action")
        if act in REFUSING:
            d.rule, d.type, d.error = rule_text(r), act, ERRORS[act]
            return d
        if "table" not in r or act not in (None, "lookup", "to_tbl"):
            continue  # goto / nop: not followed here
        route = table_lookup(routes, str(r["table"]), dst)
        if route is None or route.get("type") == "throw":
            continue
        d.rule, d.table = rule_text(r), str(r["table"])
        d.type = str(route.get("type") or "unicast")
        d.dev = route_dev(d.type, route.get("dev"))
        d.gateway = route.get("gateway")
        if d.type in REFUSING:
            d.error = ERRORS[d.type]
        return d
    d.type, d.error = "unreachable", ERRORS[None]  # no table had a route: the kernel's res type then
    return d


def route_dev(rtype: str | None, dev: str | None) -> str | None:
    """The device a lookup answers: a local route delivers through loopback, so the kernel says dev lo,
    not the device the address sits on (lab-measured: `ip route get`, rtnetlink; simulate's OUT agrees)."""
    return "lo" if rtype == "local" else dev


def drop_reason(d: RouteDecision, forwarding: str | None) -> str | None:
    """The kernel's drop reason for an input lookup that failed (ip_error, kernel 6.x; lab-measured):
    with forwarding off every failure is IP_INADDRERRORS; with it on, no route at all is
    IP_INNOROUTES and an unreachable/prohibit/blackhole route NOT_SPECIFIED (ICMP sent, no reason named)."""
    if not d.error:
        return None
    if forwarding == "0":
        return "IP_INADDRERRORS"
    return "IP_INNOROUTES" if d.table is None and d.type == "unreachable" and d.rule is None else "NOT_SPECIFIED"


def rp_mode(sysctls: dict[str, str], iif: str | None) -> int:
    """rp_filter in force on ``iif``: the higher of conf.all and conf.IIF (0 off, 1 strict, 2 loose)."""
    vals = [sysctls.get("net.ipv4.conf.all.rp_filter"), sysctls.get(f"net.ipv4.conf.{iif}.rp_filter") if iif else None]
    return max((int(v) for v in vals if v and v.isdigit()), default=0)


def forwarding_key(sysctls: dict[str, str], iif: str | None, *, v6: bool = False) -> str:
    """The sysctl that decides whether a packet in on ``iif`` is forwarded: IPv4 conf.IIF.forwarding
    (else net.ipv4.ip_forward); IPv6 net.ipv6.conf.all.forwarding (ip6_forward reads only that)."""
    if v6:
        return "net.ipv6.conf.all.forwarding"
    key = f"net.ipv4.conf.{iif}.forwarding"
    return key if iif and key in sysctls else "net.ipv4.ip_forward"


def forwarding(sysctls: dict[str, str], iif: str | None, *, v6: bool = False) -> str | None:
    """Whether a packet in on ``iif`` is forwarded ("0"/"1", None: unknown), by ``forwarding_key``."""
    return sysctls.get(forwarding_key(sysctls, iif, v6=v6))


def rp_check(rules: list[Json] | None, routes: list[Json], sysctls: dict[str, str], *, src: str, dst: str,
             iif: str, mark: int | None = None) -> str | None:
    """Why reverse-path filtering refuses a packet (fib_validate_source), None when it passes or is off.

    The reverse lookup is for the source, from the destination, as if from ``lo``; strict (1) wants
    its device to be ``iif``, loose (2) any usable route."""
    mode = rp_mode(sysctls, iif)
    if mode == 0 or ":" in src:
        return None
    vmark = mark if sysctls.get(f"net.ipv4.conf.{iif}.src_valid_mark") == "1" else None
    back = resolve("input", rules, routes, dst=src, src=dst, mark=vmark, iif="lo")
    name = "strict" if mode == 1 else "loose"
    setting = f"rp_filter={mode} ({name}) on {iif}"
    if back.error or back.type not in ("unicast", None):
        return f"{setting}: no route back to {src} ({back.error or back.type})"
    if mode == 1 and back.dev != iif:
        return f"{setting}: the route back to {src} leaves by {back.dev}, not {iif}"
    return None


def parse_sysctl(text: str, path: str) -> dict[str, str]:
    """A ``sysctl -a`` dump ("name = value" lines; ``net/ipv4/…`` names too) -> {dotted name: value}."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        name, eq, value = s.partition("=")
        if not eq or not name.strip() or " " in name.strip():
            if s.startswith(("sysctl:", "error:")) or "permission denied" in s.lower():
                continue  # `sysctl -a` complaining about a key it may not read
            raise RuletraceError(f"not a `sysctl -a` line (name = value): {s[:60]!r}", origin=Origin(path, n))
        out[name.strip().replace("/", ".")] = value.strip()
    return out


@dataclass(slots=True)
class RouteFacts:
    """The host's routing facts given to explain/simulate (or read live): the dumps, as iproute2 prints them."""

    rules: list[Json] | None = None  # `ip -j rule` (None: the kernel's three default rules)
    routes: list[Json] | None = None  # `ip -j route show table all`
    sysctls: dict[str, str] = field(default_factory=dict)  # `sysctl -a`
    local: set[str] = field(default_factory=set)  # the host's addresses (`ip -j addr`, and local routes)
    where: dict[str, str] = field(default_factory=dict)  # "sysctls" / "routes" / "rules" / "addrs" -> file

    def __bool__(self) -> bool:
        return bool(self.rules or self.routes or self.sysctls or self.local)

    def is_local(self, addr: str) -> bool:
        if addr in self.local:
            return True
        d = resolve("input", [DEFAULT_RULES[0]], self.routes or [], dst=addr, src=None, mark=None, iif=None)
        return d.type == "local"


def describe(d: RouteDecision, dst: str) -> str:
    """"after PREROUTING: mark 0x1 set in mangle:PREROUTING rule 3 → ip rule 100: from all fwmark 0x1
    lookup 100 → table 100 → via 10.0.0.1 dev tun0"."""
    where = {"input": "after PREROUTING", "output": "after OUTPUT", "reroute": "re-routed after NAT/mark"}[d.point]
    mark = (f"mark {d.mark} set in {d.mark_set} → " if d.mark_set else f"mark {d.mark} → ") if d.mark else ""
    head = mark + (f"ip rule {d.rule} → " if d.rule else "")
    fwd = d.sysctls.get("net.ipv4.ip_forward")
    if d.error:
        if d.table and d.type in REFUSING:
            tail = f"table {d.table} → {d.type} ({d.error})"
        elif d.table and d.dev:  # the kernel refused although the tables have a route: not forwarding
            tail = (f"table {d.table} → dev {d.dev}, yet the kernel's lookup failed: {d.error}"
                    + (f"; ip_forward={fwd}" if fwd is not None else ""))
        else:
            tail = f"route lookup for {dst} failed: {d.error}"
        return f"{where}: {head}{tail}"
    if d.type == "local":
        tail = f"table {d.table} → local delivery"
    else:
        tail = f"table {d.table} → " + (f"via {d.gateway} " if d.gateway else "") + f"dev {d.dev}" + (
            f" ({d.type})" if d.type not in ("unicast", None) else "")
    extra = f"; ip_forward={fwd}" if fwd is not None and d.point == "input" and d.type != "local" else ""
    return f"{where}: {head}{tail}{extra}"
