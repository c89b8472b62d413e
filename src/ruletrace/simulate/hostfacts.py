"""Host facts a simulation depends on: local addresses, routes, ipset contents, user assumptions.

Readers: ``ip -j addr`` / ``ip -j route`` JSON (iproute2) and ``ipset save`` text.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .. import routes as rt
from ..errors import RuletraceError
from ..fields import show_address
from ..model import Origin, RouteDecision

Net = tuple[int, int, int]  # (version, network as int, mask as int)
MAIN_TABLES = ("main", "local", "default")  # the tables the kernel's default ip rules look up


def to_int(addr: str, origin: Origin | None = None) -> tuple[int, int]:
    """Address text -> (version, int)."""
    r = parse_addr(addr)
    if r is None:
        raise RuletraceError(f"bad address {addr!r}", origin=origin)
    return r


@lru_cache(maxsize=1 << 16)
def parse_addr(text: str) -> tuple[int, int] | None:
    """Address text -> (version, int), None if it is not an address (to_int without the error)."""
    text = text.strip("[]")
    for fam, v in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return v, int.from_bytes(socket.inet_pton(fam, text), "big")
        except OSError:
            continue
    return None


def to_net(text: str, origin: Origin | None = None) -> Net:
    """``ADDR[/LEN]`` or ``ADDR/MASK`` -> (version, network, mask)."""
    try:
        n = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise RuletraceError(f"bad address or network {text!r}", origin=origin) from None
    return n.version, int(n.network_address), int(n.netmask)


@lru_cache(maxsize=1 << 16)
def addr_text(version: int, value: int) -> str:
    """(version, int) -> address text as the kernel log writes it."""
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


@dataclass(slots=True)
class LocalAddr:
    ifname: str | None
    version: int
    addr: int
    prefixlen: int
    broadcast: int | None = None


@dataclass(slots=True)
class Route:
    version: int
    net: int
    mask: int
    prefixlen: int
    dev: str | None
    type: str = "unicast"  # unicast, local, broadcast, blackhole, unreachable, prohibit, …
    gateway: str | None = None
    prefsrc: str | None = None
    table: str = "main"


@dataclass(slots=True)
class IpSet:
    name: str
    type: str  # "hash:ip", "hash:net,port", "list:set", …
    entries: list[tuple[tuple[Any, ...], bool]] = field(default_factory=list)  # (components, nomatch)

    @property
    def dims(self) -> list[str]:
        return self.type.partition(":")[2].split(",")


@dataclass(slots=True)
class HostFacts:
    """What the simulation knows about the host; everything not given is defaulted and stated."""

    local: list[LocalAddr] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    ipsets: dict[str, IpSet] | None = None  # None: no ipset data given
    assume: dict[str, bool] = field(default_factory=dict)  # "statistic" / "nat:CHAIN:3" -> match?
    values: dict[str, int] = field(default_factory=dict)  # "numgen" / "TABLE:CHAIN:3" -> the value a hash picks
    ip_forward: bool = True
    masters: dict[str, str] = field(default_factory=dict)  # bridge port -> its bridge (ip -j addr "master")
    sources: list[str] = field(default_factory=list)  # where the facts came from, for the output
    # the dumps as iproute2 prints them, for the policy-routing lookup (routes.resolve) and rp_filter
    raw_routes: list[dict[str, Any]] | None = None  # `ip -j route [show table all]`
    rules: list[dict[str, Any]] | None = None  # `ip -j rule`
    sysctls: dict[str, str] = field(default_factory=dict)  # `sysctl -a`
    sockets: Any = None  # `ss -lntu`: a sockets.Sockets (it imports this module); None: not known
    _n_local: int = -1  # len(local) and len(routes) when the caches below were made
    _n_routes: int = -1
    _local_set: set[tuple[int, int]] = field(default_factory=set)
    _local_routes: list[Route] = field(default_factory=list)
    _local_known: bool = False
    _routes_seen: dict[tuple[int, int], Route | None] = field(default_factory=dict)  # route() answers
    # (version, addr) -> is_local() / addr_type() answers: remembered until local or routes change
    # (_refresh makes new dicts); their references are _is_local and _addr_type
    local_seen: dict[tuple[int, int], bool] = field(default_factory=dict)
    _types_seen: dict[tuple[int, int], str] = field(default_factory=dict)
    # (point, version, dst, mark) -> the routing step's decision (routestep._default_rules)
    route_decisions: dict[tuple[Any, ...], RouteDecision] = field(default_factory=dict)

    def add_local(self, text: str) -> None:
        """Add ``[IFACE=]ADDR[/PLEN]`` (``--local-addr``)."""
        ifname, _, addr = text.rpartition("=")
        if "/" in addr:
            a, _, plen = addr.partition("/")
        else:
            a, plen = addr, ""
        v, n = to_int(a, Origin("--local-addr"))
        try:
            p = int(plen) if plen else (32 if v == 4 else 128)
        except ValueError:
            raise RuletraceError(f"bad prefix length in {text!r}", origin=Origin("--local-addr")) from None
        self.local.append(LocalAddr(ifname or None, v, n, p))
        shown = f"{ifname}={show_address(a)}" if ifname else show_address(a)
        self.sources.append(f"local address {shown}{'/' + plen if plen else ''} (--local-addr)")

    def _refresh(self) -> None:
        self._n_local = len(self.local)
        self._n_routes = len(self.routes)
        self._routes_seen = {}
        self.local_seen = {}
        self._types_seen = {}
        self.route_decisions = {}  # routestep._default_rules' answers read route(): forgotten with it
        self._local_set = {(la.version, la.addr) for la in self.local}
        self._local_routes = [r for r in self.routes if r.type == "local"]
        self._local_known = bool(self._local_set or self._local_routes)

    def knows_local(self) -> bool:
        """Whether any local address is known (given, or a route of type local)."""
        if len(self.local) != self._n_local or len(self.routes) != self._n_routes:
            self._refresh()
        return self._local_known

    def is_local(self, version: int, addr: int) -> bool:
        """Whether addr is an address of the host: _is_local's answer, remembered per address (a
        function of local and routes alone; a batch of probes asks about the same few addresses)."""
        if len(self.local) != self._n_local or len(self.routes) != self._n_routes:
            self._refresh()
        key = (version, addr)
        r = self.local_seen.get(key)
        if r is None:
            if len(self.local_seen) >= 1 << 16:
                self.local_seen.clear()
            r = self.local_seen[key] = self._is_local(version, addr)
        return r

    def _is_local(self, version: int, addr: int) -> bool:
        """is_local, the reference: the loopback prefixes, the local addresses, the local routes."""
        if version == 4 and addr >> 24 == 127:
            return True  # 127.0.0.0/8 is in the local routing table
        if version == 6 and addr == 1:
            return True
        if (version, addr) in self._local_set:
            return True
        for r in self._local_routes:
            if r.version == version and addr & r.mask == r.net:
                return True
        return False

    def local_dev(self, version: int, addr: int) -> str | None:
        """The interface a local address is on (its local route's device), None if not known."""
        if (version == 4 and addr >> 24 == 127) or (version == 6 and addr == 1):
            return "lo"
        for la in self.local:
            if la.version == version and la.addr == addr and la.ifname:
                return la.ifname
        for r in self.routes:
            if r.type == "local" and r.version == version and addr & r.mask == r.net and r.dev:
                return r.dev
        return None

    def primary(self, ifname: str | None, version: int) -> int | None:
        """First address of an interface (REDIRECT / MASQUERADE use it)."""
        for la in self.local:
            if la.version == version and (ifname is None or la.ifname == ifname):
                return la.addr
        return None

    def masquerade_addr(self, ifname: str | None, version: int, dst: int) -> int | None:
        """The source MASQUERADE gives a packet leaving on ifname (None: not known).

        IPv4 (inet_select_addr, scope universe): an address of the interface; on ``lo``, whose
        127.0.0.1 is host scope, the first global address of any interface (nf_nat_masquerade.c).
        IPv6 on ``lo`` (ipv6_dev_get_saddr): the local destination itself, the best source for it.
        """
        if ifname != "lo":
            return self.primary(ifname, version)
        if version == 6:
            return dst
        for la in self.local:
            if la.version == 4 and la.addr >> 24 != 127 and la.ifname != "lo":
                return la.addr
        return None

    def connected(self, version: int, addr: int) -> str | None:
        """The interface whose address prefix holds addr (the kernel's connected route), longest first."""
        best: LocalAddr | None = None
        width = 32 if version == 4 else 128
        for la in self.local:
            if la.version != version or not la.ifname or la.prefixlen >= width:
                continue
            mask = ((1 << width) - 1) ^ ((1 << (width - la.prefixlen)) - 1)
            if addr & mask == la.addr & mask and (best is None or la.prefixlen > best.prefixlen):
                best = la
        return best.ifname if best else None

    def route(self, version: int, addr: int) -> Route | None:
        """Longest-prefix route for an address (local routes first, as the local table is)."""
        if len(self.local) != self._n_local or len(self.routes) != self._n_routes:
            self._refresh()
        key = (version, addr)
        seen = self._routes_seen
        if key in seen:
            return seen[key]
        if len(seen) >= 1 << 16:
            seen.clear()
        r = seen[key] = self._route(version, addr)
        return r

    def _route(self, version: int, addr: int) -> Route | None:
        best: Route | None = None
        for r in self.routes:
            if r.version != version or addr & r.mask != r.net or r.table not in MAIN_TABLES:
                continue
            if best is None or (r.type == "local") > (best.type == "local") or (
                (r.type == "local") == (best.type == "local") and r.prefixlen > best.prefixlen
            ):
                best = r
        return best

    def addr_type(self, version: int, addr: int) -> str:
        """The addrtype of an address (RTN_* name as -m addrtype writes it): _addr_type's answer,
        remembered per address as is_local's is."""
        if len(self.local) != self._n_local or len(self.routes) != self._n_routes:
            self._refresh()
        key = (version, addr)
        t = self._types_seen.get(key)
        if t is None:
            if len(self._types_seen) >= 1 << 16:
                self._types_seen.clear()
            t = self._types_seen[key] = self._addr_type(version, addr)
        return t

    def _addr_type(self, version: int, addr: int) -> str:
        """addr_type, the reference: from the local addresses, the address's kind and its route."""
        if addr == 0:
            return "UNSPEC"
        if self._is_local(version, addr):
            return "LOCAL"
        if version == 4:
            if addr == 0xFFFFFFFF:
                return "BROADCAST"
            if addr >> 28 == 0xE:
                return "MULTICAST"
            for la in self.local:
                if la.version == 4 and la.broadcast == addr:
                    return "BROADCAST"
        elif addr >> 120 == 0xFF:
            return "MULTICAST"
        r = self._route(version, addr)
        if r is not None and r.type in ("broadcast", "blackhole", "unreachable", "prohibit", "anycast", "throw", "nat"):
            return r.type.upper()
        return "UNICAST"


def load_addrs(text: str, facts: HostFacts, *, origin: Origin) -> None:
    """Read ``ip -j addr`` output into facts.local."""
    data = _json_list(text, origin, "ip -j addr")
    n = 0
    for link in data:
        if not isinstance(link, dict):
            continue
        ifname = link.get("ifname")
        if ifname and isinstance(link.get("master"), str):
            facts.masters[ifname] = link["master"]
        for ai in link.get("addr_info") or []:
            local = ai.get("local")
            if not local:
                continue
            v, a = to_int(local, origin)
            bc = ai.get("broadcast")
            facts.local.append(LocalAddr(ifname, v, a, int(ai.get("prefixlen", 32 if v == 4 else 128)),
                                         to_int(bc, origin)[1] if bc else None))
            n += 1
    facts.sources.append(f"{n} local addresses from {origin.path} (ip -j addr)")


def load_routes(text: str, facts: HostFacts, *, origin: Origin) -> None:
    """Read ``ip -j route`` (or ``ip -j route show table all``) output into facts.routes."""
    data = _json_list(text, origin, "ip -j route")
    n = 0
    for r in data:
        if not isinstance(r, dict) or "dst" not in r:
            continue
        dst = r["dst"]
        family_v6 = ":" in dst or ":" in str(r.get("gateway", "")) or ":" in str(r.get("prefsrc", ""))
        if dst == "default":
            dst = "::/0" if family_v6 else "0.0.0.0/0"
        v, net, mask = to_net(dst, origin)
        plen = bin(mask).count("1")
        facts.routes.append(Route(v, net, mask, plen, r.get("dev"), r.get("type", "unicast"),
                                  r.get("gateway"), r.get("prefsrc"), str(r.get("table") or "main")))
        n += 1
    facts.raw_routes = (facts.raw_routes or []) + [r for r in data if isinstance(r, dict) and "dst" in r]
    facts.sources.append(f"{n} routes from {origin.path} (ip -j route)")


def load_rules(text: str, facts: HostFacts, *, origin: Origin) -> None:
    """Read ``ip -j rule`` output into facts.rules (policy routing)."""
    facts.rules = (facts.rules or []) + rt.load_json_list(text, origin.path or "--rules")
    facts.sources.append(f"{len(facts.rules)} ip rules from {origin.path} (ip -j rule)")


def load_sysctls(text: str, facts: HostFacts, *, origin: Origin) -> None:
    """Read a ``sysctl -a`` dump: ip_forward, per-interface forwarding and rp_filter decide fates."""
    facts.sysctls.update(rt.parse_sysctl(text, origin.path or "--sysctl"))
    if facts.sysctls.get("net.ipv4.ip_forward") == "0":
        facts.ip_forward = False
    keys = [k for k in ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter") if k in facts.sysctls]
    facts.sources.append(f"sysctls from {origin.path} (" + ", ".join(f"{k}={facts.sysctls[k]}" for k in keys) + ")")


def _json_list(text: str, origin: Origin, what: str) -> list[Any]:
    """The JSON list ``what`` (e.g. ``ip -j addr``) prints; else an error naming it."""
    data = _json(text, origin)
    if not isinstance(data, list):
        raise RuletraceError(f"expected a JSON list ({what})", origin=origin)
    return data


def _json(text: str, origin: Origin) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RuletraceError(f"not JSON: {e.msg}", origin=Origin(origin.path, e.lineno)) from e
    except (ValueError, RecursionError) as e:  # numbers over 4,300 digits, nesting too deep
        raise RuletraceError(f"not usable JSON: {str(e)[:80]}", origin=origin) from None


def load_ipsets(text: str, facts: HostFacts, *, origin: Origin) -> None:
    """Read ``ipset save`` output (create/add lines) into facts.ipsets."""
    sets = facts.ipsets if facts.ipsets is not None else {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        o = Origin(origin.path, lineno)
        if parts[0] in ("create", "-N", "-exist") and len(parts) >= 3:
            sets[parts[1]] = IpSet(parts[1], parts[2])
        elif parts[0] in ("add", "-A") and len(parts) >= 3:
            s = sets.get(parts[1])
            if s is None:
                raise RuletraceError(f"add to set {parts[1]!r} before its create line", origin=o)
            nomatch = "nomatch" in parts[3:]
            s.entries.append((_entry(s, parts[2], o), nomatch))
        else:
            raise RuletraceError(f"not an ipset save line: {line.strip()[:60]!r}", origin=o)
    facts.ipsets = sets
    facts.sources.append(f"{len(sets)} ipsets from {origin.path} (ipset save)")


def _entry(s: IpSet, text: str, o: Origin) -> tuple[Any, ...]:
    dims = s.dims
    if s.type == "list:set":
        return (text,)
    parts = text.split(",")
    if len(parts) != len(dims):
        raise RuletraceError(f"set {s.name} ({s.type}) entry {text!r} has {len(parts)} parts, "
                             f"expected {len(dims)}", origin=o)
    out: list[Any] = []
    for dim, part in zip(dims, parts):
        if dim in ("ip", "net"):
            if "-" in part and "/" not in part:
                lo, _, hi = part.partition("-")
                v, a = to_int(lo, o)
                out.append(("range", v, a, to_int(hi, o)[1]))
            else:
                v, net, mask = to_net(part, o)
                out.append(("net", v, net, mask))
        elif dim == "port":
            proto, _, port = part.rpartition(":")
            lo, _, hi = port.partition("-")
            try:
                out.append((proto or "tcp", int(lo), int(hi or lo)))
            except ValueError:
                # icmp:TYPE/CODE and named ports are kept as text and never match numerically
                out.append((proto, -1, -1))
        else:
            out.append(part)
    return tuple(out)
