"""The simulated packet as it travels, and the context that records what was assumed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .hostfacts import HostFacts, addr_text
from .probe import LOG_PROTO, flags_text

# xt_conntrack status bits (uapi nf_conntrack_common.h IPS_*_BIT)
IPS_EXPECTED = 1 << 0
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_CONFIRMED = 1 << 3
CTSTATUS_BITS = {"EXPECTED": IPS_EXPECTED, "SEEN_REPLY": IPS_SEEN_REPLY, "ASSURED": IPS_ASSURED,
                 "CONFIRMED": IPS_CONFIRMED, "NONE": 0}


NONE: frozenset[int] = frozenset()


class Pkt:
    """Mutable packet state: header fields as ints, interfaces, marks, conntrack view."""

    __slots__ = (
        "v", "src", "dst", "proto", "sport", "dport", "itype", "icode", "tcpflags",
        "iif", "oif", "physin", "physout", "mark", "ctmark", "ctstate", "ct", "ctstatus",
        "orig", "repl_src", "repl_dst", "repl_sport", "repl_dport", "dnat", "snat",
        "length", "ttl", "tos", "uid", "gid", "mac", "hook", "redirected", "nat_done", "snap",
    )

    # the attributes and their types (set when the engine builds the packet, changed by targets and nft statements)
    v: int
    src: int
    dst: int
    proto: int
    sport: int | None
    dport: int | None
    itype: int | None
    icode: int | None
    tcpflags: int | None
    iif: str | None
    oif: str | None
    physin: str | None
    physout: str | None
    mark: int
    ctmark: int
    ctstate: str
    ct: bool
    ctstatus: int
    orig: tuple[int, int, int | None, int | None]
    repl_src: int
    repl_dst: int
    repl_sport: int | None
    repl_dport: int | None
    dnat: bool
    snat: bool
    length: int
    ttl: int
    tos: int
    uid: int | None
    gid: int | None
    mac: str | None
    hook: str
    redirected: frozenset[int] | set[int]
    nat_done: tuple[str, ...]
    snap: tuple[object, ...] | None

    def __init__(self) -> None:
        self.ct = False  # a conntrack entry is attached (not in raw, not when untracked)
        self.ctstatus = 0
        self.dnat = False
        self.snat = False
        self.redirected = NONE  # addresses REDIRECT made local (a set once it adds one)
        self.nat_done = ()  # "dst" / "src": the nat manips set up for this connection
        self.hook = ""
        self.snap = None  # snapshot() cache; None after anything changed

    def ct_state(self) -> str:
        """The state xt_conntrack / xt_state sees now."""
        if self.ct:
            return self.ctstate
        return "UNTRACKED" if self.ctstate == "UNTRACKED" else "INVALID"

    def snapshot(self) -> tuple[Any, ...]:
        """The fields a TRACE step shows, as a tuple (snapshot_fields names them); shared until snap is reset."""
        s = self.snap
        if s is None:
            # _snapshot, inlined: this runs for each step after the packet changed (specialised slot
            # reads; an operator.attrgetter of the names costs more: a generic look-up per name)
            s = self.snap = (self.v, self.src, self.dst, self.proto, self.sport, self.dport, self.itype, self.icode,
                             self.tcpflags, self.iif, self.oif, self.physin, self.physout, self.mark, self.length,
                             self.ttl, self.tos, self.uid, self.gid)
        return s

    def _snapshot(self) -> tuple[Any, ...]:
        return (self.v, self.src, self.dst, self.proto, self.sport, self.dport, self.itype, self.icode,
                self.tcpflags, self.iif, self.oif, self.physin, self.physout, self.mark, self.length,
                self.ttl, self.tos, self.uid, self.gid)


def snapshot_fields(s: tuple[Any, ...]) -> dict[str, str]:
    """A snapshot as TraceEvent.fields (kernel-log names, nf_log_syslog.c order)."""
    (v, src, dst, proto, sport, dport, itype, icode, tcpflags, iif, oif, physin, physout, mark, length,
     ttl, tos, uid, gid) = s
    f: dict[str, str] = {"IN": iif or "", "OUT": oif or ""}
    if physin:
        f["PHYSIN"] = physin
    if physout:
        f["PHYSOUT"] = physout
    f["SRC"] = addr_text(v, src)
    f["DST"] = addr_text(v, dst)
    f["LEN"] = str(length)
    if v == 4:
        f["TOS"] = f"0x{tos & 0xFF:02X}"
        f["PREC"] = f"0x{tos & 0xE0:02X}"
        f["TTL"] = str(ttl)
    else:
        f["TC"] = str(tos)
        f["HOPLIMIT"] = str(ttl)
    f["PROTO"] = LOG_PROTO.get(proto, str(proto))
    if sport is not None:
        f["SPT"] = str(sport)
        f["DPT"] = str(dport)
    if proto == 6 and tcpflags is not None:
        f["TCPFLAGS"] = flags_text(tcpflags)
    if itype is not None:
        f["TYPE"] = str(itype)
        f["CODE"] = str(icode or 0)
    if mark:
        f["MARK"] = f"0x{mark:x}"
    if uid is not None:
        f["UID"] = str(uid)
    if gid is not None:
        f["GID"] = str(gid)
    return f


@dataclass(slots=True)
class Branch:
    """A match whose result is chance or rate (statistic, limit): the branch taken and how to take the other."""

    table: str
    chain: str
    num: int
    match: str  # "-m statistic --mode random --probability 0.5"
    taken: bool  # True: the match matched
    note: str


class Ctx:
    """Facts, the probe's path and the record of every assumption made."""

    __slots__ = ("facts", "assumptions", "branches", "path", "orig_dst", "orig_src", "local_known", "guessed",
                 "local_seen")

    def __init__(self, facts: HostFacts, path: str, local_known: bool | None = None) -> None:
        self.facts = facts
        self.assumptions: dict[str, None] = {}  # ordered set
        self.branches: list[Branch] = []
        self.guessed: list[str] = []  # --assume keys of matches assumed not to match (conds.unknown)
        self.path = path
        self.orig_dst: tuple[int, int] = (0, 0)
        self.orig_src: tuple[int, int] = (0, 0)
        self.local_known = facts.knows_local() if local_known is None else local_known
        # facts.is_local's remembered answers: the facts were checked (knows_local) just before
        # this packet and do not change during its walk, so is_local reads them without the check
        self.local_seen = facts.local_seen

    def note(self, text: str) -> None:
        self.assumptions[text] = None

    def override(self, key: str, module: str) -> bool | None:
        """The user's --assume for this rule ("nat:CHAIN:3") or module ("statistic"), if any."""
        a = self.facts.assume
        if not a:
            return None
        v = a.get(key)
        return a.get(module) if v is None else v

    def is_local(self, p: Pkt, v: int, addr: int) -> bool:
        """Whether an address is the host's own, from facts or from the probe's path."""
        if addr in p.redirected:
            return True
        if self.local_known:
            r = self.local_seen.get((v, addr))
            return self.facts.is_local(v, addr) if r is None else r
        if self.facts.is_local(v, addr):
            return True
        if (v, addr) == self.orig_dst and self.path == "input":
            self.note(f"no local addresses given: {addr_text(v, addr)} assumed local (path input)")
            return True
        if (v, addr) == self.orig_src and self.path == "output":
            self.note(f"no local addresses given: {addr_text(v, addr)} assumed local (path output)")
            return True
        self.note(f"no local addresses given: {addr_text(v, addr)} assumed not local "
                  "(give --local-addr or --addrs)")
        return False
