"""The routing decision of a traced packet, asked of the kernel of the traced namespace.

``ip -j route get DST from SRC iif IN mark M`` (input, after PREROUTING) or ``ip -j route get
DST [from SRC] mark M`` (output, after OUTPUT), run as a child in this process's namespace; a
second lookup ("reroute") when NAT changed the destination or a rule changed the mark. The
``ip rule`` that chose the table is found from ``ip -j rule`` (``ruletrace.routes``). The
lookup happens when the packet is explained, a fraction of a second after it passed: a route
changed in between is not seen (said in the text).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .. import routes
from ..explain.fatecauses import mark_setter, routing_points
from ..model import Explanation, RouteDecision

TIMEOUT = 5.0
MEMO_SECONDS = 1.0  # answers of `ip` reused this long: a burst of one flow costs one lookup, not one a packet
MEMO_MAX = 1024
_memo: dict[tuple[str, ...], tuple[float, tuple[list[dict[str, Any]] | None, str]]] = {}


K = TypeVar("K")
V = TypeVar("V")


def _remembered(memo: dict[K, tuple[float, V]], key: K, get: Callable[[], V]) -> V:
    """``memo``'s answer for ``key`` while younger than MEMO_SECONDS, else ``get()`` remembered
    (the memo is emptied when it holds MEMO_MAX answers)."""
    now = time.monotonic()
    hit = memo.get(key)
    if hit is not None and now - hit[0] < MEMO_SECONDS:
        return hit[1]
    got = get()
    if len(memo) >= MEMO_MAX:
        memo.clear()
    memo[key] = (now, got)
    return got


def _ip(args: list[str]) -> tuple[list[dict[str, Any]] | None, str]:
    """``ip -j -d ARGS`` (answers remembered for MEMO_SECONDS: routes change rarely within a second)."""
    return _remembered(_memo, tuple(args), lambda: _ip_uncached(args))


def _ip_uncached(args: list[str]) -> tuple[list[dict[str, Any]] | None, str]:
    try:
        p = subprocess.run(["ip", "-j", "-d", *args], capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"ip {' '.join(args)}: {e}"
    if p.returncode != 0:
        return None, p.stderr.strip().removeprefix("RTNETLINK answers: ")[:200] or f"exit {p.returncode}"
    try:
        data = json.loads(p.stdout or "[]")
    except ValueError:
        return None, "ip printed no JSON"
    return (data if isinstance(data, list) else None), ""


_sysctls: dict[str, tuple[float, str | None]] = {}


def sysctl(name: str) -> str | None:
    """A sysctl's value in this namespace (remembered for MEMO_SECONDS, as ``ip``'s answers: a
    packet's routing reads about eight, and a burst of packets the same ones)."""
    return _remembered(_sysctls, name, lambda: _sysctl_uncached(name))


def _sysctl_uncached(name: str) -> str | None:
    try:
        return Path("/proc/sys/" + name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def host_sysctls(ifaces: list[str]) -> dict[str, str]:
    """ip_forward, and rp_filter / forwarding of the interfaces involved, in this namespace."""
    names = ["net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.forwarding"]
    for i in dict.fromkeys(ifaces):
        if i and "/" not in i and "." not in i:
            names += [f"net.ipv4.conf.{i}.rp_filter", f"net.ipv4.conf.{i}.forwarding"]
    out = {}
    for n in names:
        v = sysctl(n)
        if v is not None:
            out[n] = v
    return out


def _mark(v: str | None) -> int | None:
    if not v:
        return None
    try:
        return int(v, 16) if v.lower().startswith("0x") else int(v)
    except ValueError:
        return None


def lookup(point: str, *, dst: str, src: str | None, iif: str | None, mark: int | None,
           rules: list[dict[str, Any]] | None, mark_set: str | None = None) -> RouteDecision:
    args = ["route", "get", dst]
    if src:
        args += ["from", src]
    if iif and point != "output":
        args += ["iif", iif]
    if mark:
        args += ["mark", hex(mark)]
    data, err = _ip(args)
    d = RouteDecision(point, mark=hex(mark) if mark else None, mark_set=mark_set)
    if data is None or not data:
        # a failed lookup does not say which rule and table it ended in: the dumps do
        table_all, _e = _ip(["-6" if ":" in dst else "-4", "route", "show", "table", "all"])
        if table_all is not None:
            d = routes.resolve(point, rules, table_all, dst=dst, src=src, mark=mark,
                               iif=iif if point != "output" else None)
            d.mark_set = mark_set
        d.error = err or d.error or "no answer"
        if d.type is None and ("unreachable" in d.error.lower() or "no route" in d.error.lower()):
            d.type = "unreachable"
    else:
        r = data[0]
        d.type = r.get("type", "unicast")
        d.dev, d.gateway, d.table = r.get("dev"), r.get("gateway"), str(r.get("table") or "main")
        if d.type in ("local", "broadcast") and d.table == "main":
            d.table = "local"  # without custom ip rules the kernel merges table local into main and says main
        if rules:
            rule = routes.choosing_rule(rules, d.table, src=src, dst=dst, mark=mark,
                                        iif=iif if point != "output" else None)
            d.rule = routes.rule_text(rule) if rule else None
    d.sysctls = host_sysctls([iif or "", d.dev or ""])
    d.text = routes.describe(d, dst)
    return d


def decisions(expl: Explanation) -> list[RouteDecision]:
    """The routing points of a traced packet (fatecauses.routing_points), asked of the kernel."""
    pts = routing_points(expl)
    if not pts or not pts[0][1].get("DST"):
        return []
    dst0 = pts[0][1]["DST"]
    rules, _err = _ip(["-4" if ":" not in dst0 else "-6", "rule"])
    iif = pts[0][1].get("IN") or None
    out = []
    for point, f, after in pts:
        mark = _mark(f.get("MARK"))
        if point == "reroute" and not mark:  # a mark set by the last traced rule shows after it
            mark = next((_mark(c.new) for c in reversed(expl.marks) if c.new), None)
        out.append(lookup(point, dst=f.get("DST") or dst0, src=f.get("SRC"), iif=iif, mark=mark, rules=rules,
                          mark_set=mark_setter(expl, after, mark)))
    return out


def live_facts(ifaces: list[str], dst: str) -> routes.RouteFacts:
    """The routing facts of this namespace, as the offline ranking takes them from files."""
    fam = "-6" if ":" in dst else "-4"
    rules, _e = _ip([fam, "rule"])
    table_all, _e = _ip([fam, "route", "show", "table", "all"])
    names = [f"net.ipv4.conf.{i}.{k}" for i in ifaces if i for k in ("src_valid_mark",)]
    sy = host_sysctls(ifaces)
    sy.update({n: v for n in names if (v := sysctl(n)) is not None})
    where = {"sysctls": "this namespace", "routes": "this namespace"}
    return routes.RouteFacts(rules=rules, routes=table_all, sysctls=sy, where=where)
