"""The session's tracing on the hooks before inet's: netdev ingress and the bridge family.

A packet meets netdev ingress chains (one per device) before any ip/inet hook, and a bridged
frame meets the bridge family's hooks instead of, or before, the inet ones. When the ruleset
has such base chains at the session's start, the session traces them too, with tables of its
own named like its inet table (``table netdev ruletrace_<sid>``, ``table bridge
ruletrace_<sid>``), made in the same ``nft -f`` transaction, owned and removed the same way:

* netdev: chain ``in<i>`` per device that has a netdev ingress base chain, ``type filter hook
  ingress device "<dev>"`` at priority -350, or 10 before the device's first netdev chain;
* bridge: chain ``pre``, ``type filter hook prerouting`` at priority -350, or 10 before the first
  bridge prerouting chain (bridged and passed-up frames all enter there);

each with the same two rules as the inet chains (``nftnative.table_script``: the filter, a
``:seen`` counter, the capped ``meta nftrace set 1``). The nftrace flag stays with the packet
from hook to hook, so a packet is traced by the first session chain it meets, and the later
chains leave it to that one: the bridge chain and the inet prerouting chain skip packets that
came in on a traced netdev device (``iifname != { … }``), the inet prerouting chain skips frames
a bridge passed up (``meta iifkind != "bridge"``, unless ``-i`` names the interface: the port and
the bridge never have the same name). Each packet then meets one rate cap and one counter, and
the summary's counts stay exact. netdev egress chains need nothing: a packet reaches egress
after the inet output or prerouting hook already traced it. Devices and bridge chains added
after the start are not traced by the session (it decides its hooks when it starts).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

PRIORITY = -350
GAP = 10  # how far before the first chain of a device / of bridge prerouting ours goes
# nft's match of an IP family in an inet table, and the same in netdev / bridge (ethertype)
_ETHER = {"meta nfproto ipv4": "meta protocol ip", "meta nfproto ipv6": "meta protocol ip6"}
_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_CHAIN = re.compile(r"^\s+chain (\S+) \{")
_DEVS = re.compile(r'hook ingress (?:device "?([^";\s]+)"?|devices = \{ ([^}]*) \})')
_CHAIN_NAME = re.compile(r"in\d+")


@dataclass
class EarlyHooks:
    """What the session traces before the inet hooks: device -> priority of its netdev chain,
    and the priority of its bridge prerouting chain (None: no bridge-family base chain)."""

    ingress: dict[str, int] = field(default_factory=dict)
    bridge: int | None = None

    def __bool__(self) -> bool:
        return bool(self.ingress) or self.bridge is not None

    def families(self) -> list[str]:
        """The nft families of the session's tables besides inet."""
        return (["netdev"] if self.ingress else []) + (["bridge"] if self.bridge is not None else [])


def read(chains_text: str, chains_json: str, own: object = None) -> EarlyHooks:
    """The early hooks a ruleset needs, from ``nft list chains`` (devices: ``nft -j`` of nft
    1.0 does not print them) and ``nft -j list chains`` (numeric priorities). ``own(table)``
    tells a session's table, left out."""
    def mine(table: str) -> bool:
        return bool(own(table)) if callable(own) else False

    prio: dict[tuple[str, str, str], int] = {}
    try:
        items = json.loads(chains_json).get("nftables", []) if chains_json.strip() else []
    except (ValueError, AttributeError):
        items = []
    out = EarlyHooks()
    bridge_pre: list[int] = []
    bridge_any = False
    for item in items:
        c = item.get("chain") if isinstance(item, dict) else None
        if not isinstance(c, dict) or not c.get("hook") or mine(str(c.get("table"))):
            continue
        p = c.get("prio")
        if isinstance(p, int):
            prio[(str(c.get("family")), str(c.get("table")), str(c.get("name")))] = p
        if c.get("family") == "bridge":
            bridge_any = True
            if c.get("hook") == "prerouting" and isinstance(p, int):
                bridge_pre.append(p)
    if bridge_any:
        out.bridge = min([PRIORITY] + [p - GAP for p in bridge_pre])
    family = table = chain = ""
    for line in chains_text.splitlines():
        if m := _TABLE.match(line):
            family, table = m[1], m[2]
        elif m := _CHAIN.match(line):
            chain = m[1]
        elif family == "netdev" and not mine(table) and (m := _DEVS.search(line)):
            devs = [m[1]] if m[1] else [d.strip().strip('"') for d in m[2].split(",") if d.strip()]
            p = prio.get((family, table, chain), 0)
            for d in devs:
                out.ingress[d] = min(out.ingress.get(d, PRIORITY), p - GAP)
    out.ingress = dict(sorted(out.ingress.items()))
    return out


def discover() -> EarlyHooks:
    """The early hooks of this namespace's ruleset now (nothing when nft cannot list it)."""
    from .nftnative import is_own_table, run_nft

    text = run_nft("list", "chains")
    js = run_nft("-j", "list", "chains")
    if text is None or js is None or text.returncode or js.returncode:
        return EarlyHooks()
    return read(text.stdout, js.stdout, is_own_table)


def ether(matches: list[str]) -> list[str]:
    """inet match expressions for the netdev / bridge families (an IP family is an ethertype there)."""
    return [_ETHER.get(m, m) for m in matches]


def ifname_set(devices: list[str]) -> str:
    return "{ " + ", ".join(f'"{d}"' for d in devices) + " }"


def skip_exprs(hooks: EarlyHooks, family: str, chain: str, *, iface: bool) -> list[str]:
    """What a session chain leaves to an earlier one (see the module's docstring)."""
    if chain not in ("PREROUTING", "bridge") or family == "netdev":
        return []
    out = [f"iifname != {ifname_set(list(hooks.ingress))}"] if hooks.ingress else []
    if family == "inet" and hooks.bridge is not None and not iface:
        out.append('meta iifkind != "bridge"')
    return out


def chain_heads(hooks: EarlyHooks, family: str) -> list[tuple[str, str]]:
    """``(chain name, base chain line)`` of the session's chains in a netdev or bridge table."""
    if family == "netdev":
        return [(f"in{i}", f'type filter hook ingress device "{d}" priority {p}; policy accept;')
                for i, (d, p) in enumerate(hooks.ingress.items())]
    if family == "bridge" and hooks.bridge is not None:
        return [("pre", f"type filter hook prerouting priority {hooks.bridge}; policy accept;")]
    return []


def chain_shape(family: str, c: dict[str, Any]) -> bool:
    """An ``nft -j`` chain of a session's netdev / bridge table, exactly as ``chain_heads`` makes it."""
    prio = c.get("prio")
    if c.get("type") != "filter" or c.get("policy") != "accept" or not isinstance(prio, int) or prio > PRIORITY:
        return False
    if family == "netdev":
        return c.get("hook") == "ingress" and _CHAIN_NAME.fullmatch(str(c.get("name"))) is not None
    return family == "bridge" and c.get("hook") == "prerouting" and c.get("name") == "pre"
