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
from pathlib import Path
from typing import Any

from .. import routes
from ..model import Explanation, RouteDecision

TIMEOUT = 5.0
MEMO_SECONDS = 1.0  # answers of `ip` reused this long: a burst of one flow costs one lookup, not one a packet
MEMO_MAX = 1024
_memo: dict[tuple[str, ...], tuple[float, tuple[list[dict[str, Any]] | None, str]]] = {}


def _ip(args: list[str]) -> tuple[list[dict[str, Any]] | None, str]:
    """``ip -j -d ARGS`` (answers remembered for MEMO_SECONDS: routes change rarely within a second)."""
    key = tuple(args)
    now = time.monotonic()
    hit = _memo.get(key)
    if hit is not None and now - hit[0] < MEMO_SECONDS:
        return hit[1]
    got = _ip_uncached(args)
    if len(_memo) >= MEMO_MAX:
        _memo.clear()
    _memo[key] = (now, got)
    return got


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


def sysctl(name: str) -> str | None:
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
           rules: list[dict[str, Any]] | None) -> RouteDecision:
    args = ["route", "get", dst]
    if src:
        args += ["from", src]
    if iif and point != "output":
        args += ["iif", iif]
    if mark:
        args += ["mark", hex(mark)]
    data, err = _ip(args)
    d = RouteDecision(point, mark=hex(mark) if mark else None)
    if data is None or not data:
        d.error = err or "no answer"
        d.type = "unreachable" if "unreachable" in d.error.lower() or "no route" in d.error.lower() else None
    else:
        r = data[0]
        d.type = r.get("type", "unicast")
        d.dev, d.gateway, d.table = r.get("dev"), r.get("gateway"), str(r.get("table") or "main")
        if d.type in ("local", "broadcast") and d.table == "main":
            d.table = "local"  # without custom ip rules the kernel merges table local into main and says main
    if rules and not d.error:  # a failed lookup does not say which table it ended in
        rule = routes.choosing_rule(rules, d.table, src=src, dst=dst, mark=mark, iif=iif if point != "output" else None)
        d.rule = routes.rule_text(rule) if rule else None
    d.sysctls = host_sysctls([iif or "", d.dev or ""])
    d.text = describe(d, dst)
    return d


def describe(d: RouteDecision, dst: str) -> str:
    """"after PREROUTING: ip rule 100 fwmark 0x1 → table 100 → via 10.0.0.1 dev tun0"."""
    where = {"input": "after PREROUTING", "output": "after OUTPUT", "reroute": "re-routed after NAT/mark"}[d.point]
    head = (f"mark {d.mark} → " if d.mark else "") + (f"ip rule {d.rule} → " if d.rule else "")
    if d.error:
        return f"{where}: {head}route lookup for {dst} failed: {d.error}"
    if d.type == "local":
        tail = f"table {d.table} → local delivery"
    else:
        tail = f"table {d.table} → " + (f"via {d.gateway} " if d.gateway else "") + f"dev {d.dev}" + (
            f" ({d.type})" if d.type not in ("unicast", None) else "")
    fwd = d.sysctls.get("net.ipv4.ip_forward")
    extra = f"; ip_forward={fwd}" if fwd is not None and d.point == "input" and d.type != "local" else ""
    return f"{where}: {head}{tail}{extra}"


def decisions(expl: Explanation) -> list[RouteDecision]:
    """The routing points of a traced IPv4 packet (IPv6 lookups the same way, without sysctls)."""
    evs = expl.packet.events
    if not evs:
        return []
    first, last = evs[0].fields, evs[-1].fields
    dst = first.get("DST")
    if not dst:
        return []
    rules, _err = _ip(["-4" if ":" not in dst else "-6", "rule"])
    iif = first.get("IN") or None
    point = "input" if iif else "output"
    out = [lookup(point, dst=dst, src=first.get("SRC"), iif=iif, mark=_mark(first.get("MARK")), rules=rules)]
    marks = [_mark(ev.fields.get("MARK")) for ev in evs]
    ldst, lmark = last.get("DST") or dst, marks[-1]
    if ldst != dst or (lmark or 0) != (marks[0] or 0) or expl.marks:
        mk = lmark if lmark is not None else next((_mark(c.new) for c in reversed(expl.marks) if c.new), None)
        out.append(lookup("reroute", dst=ldst, src=last.get("SRC"), iif=iif, mark=mk, rules=rules))
    return out
