"""nf_tables trace events (NFT_MSG_TRACE on NFNLGRP_NFTRACE), what ``nft monitor trace`` reads.

Spec: include/uapi/linux/netfilter/nf_tables.h (``enum nft_trace_attributes``,
``enum nft_trace_types``), net/netfilter/nf_tables_trace.c. Events carry the rule handle, not
its number: numbers come from the ruleset snapshot (``attach_handles``: handle order within a
chain = iptables rule number). The packet headers (and IIF/OIF) are sent only with the first
event of each base-chain walk, so later events of the same trace id inherit them.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable

from ..errors import RuletraceError
from ..fields import packet_ident
from ..model import BUILTIN_CHAINS, Origin, Ruleset, StepKind, TraceEvent
from ..sources import nflog
from .netlink import be16, be32, be32s, be64, cstr, parse_attrs
from .nflog import interface_name

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15  # a new ruleset generation was committed (any rule/chain/table change)
NFT_MSG_TRACE = 17
NFNLGRP_NFTABLES = 7  # ruleset change notifications
NFNLGRP_NFTRACE = 9

# enum nft_trace_attributes
NFTA_TRACE_TABLE = 1  # string
NFTA_TRACE_CHAIN = 2  # string
NFTA_TRACE_RULE_HANDLE = 3  # be64
NFTA_TRACE_TYPE = 4  # be32 enum nft_trace_types
NFTA_TRACE_VERDICT = 5  # nested NFTA_VERDICT_*
NFTA_TRACE_ID = 6  # be32, same for every event of one packet
NFTA_TRACE_LL_HEADER = 7  # bytes, at most 16 (NFT_TRACETYPE_LL_HSIZE)
NFTA_TRACE_NETWORK_HEADER = 8  # bytes, at most 40 (NFT_TRACETYPE_NETWORK_HSIZE)
NFTA_TRACE_TRANSPORT_HEADER = 9  # bytes, at most 20 (NFT_TRACETYPE_TRANSPORT_HSIZE)
NFTA_TRACE_IIF = 10  # be32
NFTA_TRACE_IIFTYPE = 11  # be16 ARPHRD_*
NFTA_TRACE_OIF = 12  # be32
NFTA_TRACE_OIFTYPE = 13  # be16
NFTA_TRACE_MARK = 14  # be32 (only when nonzero)
NFTA_TRACE_NFPROTO = 15  # be32: protocol family of the packet (an inet table sees ip and ip6)
NFTA_TRACE_POLICY = 16  # be32: the base chain's policy verdict

# enum nft_trace_types
NFT_TRACETYPE_POLICY = 1
NFT_TRACETYPE_RETURN = 2
NFT_TRACETYPE_RULE = 3

NFTA_VERDICT_CODE = 1  # signed be32
NFTA_VERDICT_CHAIN = 2  # string: jump/goto target

# include/uapi/linux/netfilter.h NF_DROP/NF_ACCEPT/…, nf_tables.h enum nft_verdicts
VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
            -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}
NFPROTO = {2: "ipv4", 10: "ipv6", 1: "inet", 7: "bridge", 3: "arp", 5: "netdev"}

SOURCE = "nftrace"
_CARRY_MAX = 4096  # trace ids whose packet fields are remembered
_MEMO_MAX = 256  # table/chain names and verdicts remembered


class _Memo(dict[bytes, str]):
    """``memo[raw]`` is ``fn(raw)``, computed once and kept (at most _MEMO_MAX at a time: then all
    are forgotten); a hit is a plain dict lookup. What ``fn`` raises is raised, nothing kept."""

    def __init__(self, fn: Callable[[bytes], str]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, raw: bytes) -> str:
        if len(self) >= _MEMO_MAX:
            self.clear()
        v = self[raw] = self.fn(raw)
        return v


def verdict_name(attr: bytes) -> str:
    """NFTA_TRACE_VERDICT (nested) -> ``accept`` / ``drop`` / ``jump:CHAIN`` …"""
    a = parse_attrs(attr)
    code = be32s(a[NFTA_VERDICT_CODE]) if NFTA_VERDICT_CODE in a else None
    name = VERDICTS.get(code, str(code)) if code is not None else ""
    if name in ("jump", "goto") and NFTA_VERDICT_CHAIN in a:
        return f"{name}:{cstr(a[NFTA_VERDICT_CHAIN])}"
    return name


def attach_handles(ruleset: Ruleset, nft_json: str, *, family: str) -> int:
    """Fill ``ruleset.handles`` (and ``Rule.handle``) from ``nft -j list ruleset``; returns rules paired.

    iptables-nft keeps one nft rule per iptables rule in the same order, so the n-th rule of a
    chain in the listing is rule n of the iptables-save chain.
    """
    nft_family = {"ipv4": "ip", "ipv6": "ip6"}.get(family, family)
    try:
        items = json.loads(nft_json).get("nftables", [])
    except (ValueError, AttributeError) as e:
        raise RuletraceError(f"nft -j list ruleset: not JSON: {e}") from e
    pos: dict[tuple[str, str], int] = {}
    paired = 0
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not rule or rule.get("family") != nft_family:
            continue
        key = (rule.get("table"), rule.get("chain"))
        n = pos[key] = pos.get(key, 0) + 1
        r = ruleset.rule(key[0], key[1], n)
        if r is not None and "handle" in rule:
            r.handle = int(rule["handle"])
            ruleset.handles[(key[0], key[1], r.handle)] = r
            paired += 1
    return paired


class TraceDecoder:
    """Turns NFT_MSG_TRACE bodies into TraceEvents numbered against the current ruleset."""

    def __init__(self, rulesets: Callable[[str], Ruleset | None],
                 ifname: Callable[[int], str] | None = None, *, keep_trace_rule: bool = False) -> None:
        self.rulesets = rulesets  # family -> the ruleset snapshot live now
        self.ifname = ifname or interface_name
        self.keep_trace_rule = keep_trace_rule
        self.unknown_handles = 0  # rule handles not in the snapshot (rules added after it)
        self.records = 0
        # raw attribute -> its text, remembered: a trace names the same few tables, chains and
        # verdicts again and again (a damaged verdict raises each time and is not kept)
        self._texts = _Memo(cstr)
        self._verdicts = _Memo(verdict_name)
        self._carry: OrderedDict[int, tuple[dict[str, str], tuple[str, ...]]] = OrderedDict()

    def decode(self, body: bytes, *, now: float | None = None) -> TraceEvent | None:
        """One message body (nfgenmsg + attributes) -> an event, or None for steps not shown."""
        self.records += 1
        table_family = body[0] if body else 0
        a = parse_attrs(body, 4)
        table = self._texts[a.get(NFTA_TRACE_TABLE, b"")]
        chain = self._texts[a.get(NFTA_TRACE_CHAIN, b"")]
        ttype = be32(a[NFTA_TRACE_TYPE]) if NFTA_TRACE_TYPE in a else 0
        tid = be32(a[NFTA_TRACE_ID]) if NFTA_TRACE_ID in a else None
        proto = be32(a[NFTA_TRACE_NFPROTO]) if NFTA_TRACE_NFPROTO in a else table_family
        family = NFPROTO.get(proto, str(proto))
        fields, ident = self._fields(tid, proto, a)
        handle = be64(a[NFTA_TRACE_RULE_HANDLE]) if NFTA_TRACE_RULE_HANDLE in a else None
        verdict = self._verdicts[a[NFTA_TRACE_VERDICT]] if NFTA_TRACE_VERDICT in a else None
        rs = self.rulesets(family)
        ch = rs.chain(table, chain) if rs is not None else None
        end_num = len(ch.rules) + 1 if ch is not None else None
        num: int | None = None
        if ttype == NFT_TRACETYPE_POLICY:
            kind = StepKind.POLICY
            num = end_num
            if NFTA_TRACE_POLICY in a:
                verdict = VERDICTS.get(be32(a[NFTA_TRACE_POLICY]), verdict)
        elif ttype == NFT_TRACETYPE_RETURN or (ttype == NFT_TRACETYPE_RULE and handle is None):
            # a handle-less RULE event is the end of the chain (verdict continue): in a user
            # chain that is the legacy "return:N", in a base chain the policy event follows
            if chain in BUILTIN_CHAINS and (ch is None or ch.builtin):
                return None
            kind = StepKind.RETURN
            num = end_num
            verdict = "return"
        elif ttype == NFT_TRACETYPE_RULE:
            kind = StepKind.RULE
            rule = rs.handles.get((table, chain, handle)) if rs is not None and handle is not None else None
            if rule is not None:
                num = rule.num
                if rule.target == "TRACE" and verdict == "continue" and not self.keep_trace_rule:
                    return None  # the rule that switched tracing on: legacy TRACE does not report it
            else:
                self.unknown_handles += 1
        else:
            return None
        return TraceEvent(table, chain, kind, num, ts=now if now is not None else time.time(), family=family,
                          handle=handle, ident=ident, packet_id=tid, verdict=verdict,
                          origin=Origin("netlink", self.records), source=SOURCE, fields=fields)

    def _fields(self, tid: int | None, proto: int, a: dict[int, bytes]) -> tuple[dict[str, str], tuple[str, ...]]:
        """The step's fields and their ``packet_ident`` (MARK is no part of it: a carried ident stays)."""
        net = a.get(NFTA_TRACE_NETWORK_HEADER)
        carried = self._carry.get(tid) if tid is not None else None
        carry = carried[0] if carried else None
        ident = carried[1] if carried else None
        if net is None:
            f = dict(carry) if carry else {}
        else:
            ident = None
            # the headers as the NFLOG decoder reads them (sources/nflog.py): same fields, same text
            iif, oif, ll = a.get(NFTA_TRACE_IIF), a.get(NFTA_TRACE_OIF), a.get(NFTA_TRACE_LL_HEADER)
            f = {}
            try:
                nflog.link_fields(f, self.ifname, be32(iif) if iif else None, be32(oif) if oif else None,
                                  ll, be16(a[NFTA_TRACE_IIFTYPE]) if NFTA_TRACE_IIFTYPE in a else None)
                payload = net + a.get(NFTA_TRACE_TRANSPORT_HEADER, b"")
                if payload and not nflog.payload_fields(payload, f) and proto not in (nflog.AF_INET, nflog.AF_INET6):
                    f["PROTO"] = "?"
            except nflog.DECODE_ERRORS:
                f = dict(carry) if carry else {}
                ident = carried[1] if carried else None
        f.pop("MARK", None)
        if NFTA_TRACE_MARK in a and be32(a[NFTA_TRACE_MARK]):
            f["MARK"] = f"{be32(a[NFTA_TRACE_MARK]):#x}"
        if ident is None:
            ident = packet_ident(f)
        if tid is not None:
            self._carry[tid] = (f, ident)
            self._carry.move_to_end(tid)
            if len(self._carry) > _CARRY_MAX:
                self._carry.popitem(last=False)
        return f, ident


def is_trace(mtype: int) -> bool:
    return mtype == (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE)


def is_newgen(mtype: int) -> bool:
    return mtype == (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN)

