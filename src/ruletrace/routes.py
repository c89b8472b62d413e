"""Policy routing read from ``ip -j rule`` / ``ip -j route get`` output: which rule chose the table.

Pure functions over the JSON iproute2 prints, shared by live tracing (which asks the kernel)
and explain (which is given the dumps). Nothing here runs a command.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from .errors import RuletraceError
from .fields import bounded_int
from .model import Origin


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
