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
from typing import Any, NamedTuple

from ..errors import RuletraceError
from ..fields import packet_ident
from ..model import BUILTIN_CHAINS, Origin, Ruleset, StepKind, TraceEvent
from ..rulesets.nft_model import NFT_WORDS
from ..sources import nflog
from .netlink import Shape, be16, be32, be32s, be64, cstr, parse_attrs
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
    nft_family = NFT_WORDS.get(family, family)
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
        self._shapes: dict[int, list[Shape]] = {}  # decode_fast: message shapes by length
        self._steps: dict[tuple[bytes, ...], tuple[Any, _Step | None, Ruleset | None]] = {}

    def decode(self, body: bytes, *, now: float | None = None) -> TraceEvent | None:
        """One message body (nfgenmsg + attributes) -> an event, or None for steps not shown.

        The reference: every attribute walked (``parse_attrs``). ``decode_fast`` gives the same."""
        self.records += 1
        a = parse_attrs(body, 4)
        pre = self._pre(body[0] if body else 0, a)
        tid = be32(a[NFTA_TRACE_ID]) if NFTA_TRACE_ID in a else None
        fields, ident = self._fields(tid, pre[3], a)
        step = self._step(pre, a)
        return self._event(step, tid, fields, ident, now)

    def decode_fast(self, body: bytes, *, now: float | None = None) -> TraceEvent | None:
        """``decode``, with what an event says of its step (table, chain, kind, rule number,
        verdict) worked out once per distinct message bytes apart from the trace id, mark and
        packet headers (``netlink.Shape``; numbers checked against the ruleset live now), and
        only those few attributes read for each event. Equal to ``decode`` (tests/live/test_codec.py)."""
        shape = self._shape(body)
        if shape is None:
            ev = self.decode(body, now=now)
            if len(self._shapes) < _MEMO_MAX:
                self._shapes.setdefault(len(body), []).append(Shape(body, 4, _VARYING))
            return ev
        self.records += 1
        first = shape.first
        a = {k: body[s] for k, s in shape.vary}
        key = tuple(map(body.__getitem__, shape.keep))
        hit = self._steps.get(key)
        tid = be32(a[NFTA_TRACE_ID]) if NFTA_TRACE_ID in a else None
        if hit is not None and self.rulesets(hit[0][4]) is hit[2]:
            pre, step = hit[0], hit[1]
            carried = self._carry.get(tid) if tid is not None and NFTA_TRACE_NETWORK_HEADER not in a else None
            if carried is not None:
                # _fields for a step without headers whose mark is the carried one: its result
                # equals the carried entry, which is kept (one object: explain skips comparing
                # steps that share it) and copied only when the step's fields are read
                m = a.get(NFTA_TRACE_MARK)
                mark = be32(m) if m is not None else 0
                if carried[0].get("MARK") == (f"{mark:#x}" if mark else None):
                    self._carry.move_to_end(tid)  # type: ignore[arg-type]  # tid is set with carried
                    if step is None:
                        return None
                    return self._event(step, tid, None, carried[1], now, raw=carried)
            fields, ident = self._fields(tid, pre[3], a)
        else:  # the reference's order: the step's own part, the packet's fields, then the rest
            whole = {k: body[s] for k, s in first.items()}
            pre = self._pre(body[0], whole)
            fields, ident = self._fields(tid, pre[3], a)
            step = self._step(pre, whole)
            if len(self._steps) >= _MEMO_MAX:
                self._steps.clear()
            self._steps[key] = (pre, step, self.rulesets(pre[4]))
        return self._event(step, tid, fields, ident, now)

    def _shape(self, body: bytes) -> Shape | None:
        for shape in self._shapes.get(len(body), ()):
            if shape.match(body):
                return shape
        return None

    def _pre(self, table_family: int, a: dict[int, bytes]) -> tuple[str, str, int, int, str]:
        """(table, chain, trace type, protocol family, its name): read before the packet's fields."""
        table = self._texts[a.get(NFTA_TRACE_TABLE, b"")]
        chain = self._texts[a.get(NFTA_TRACE_CHAIN, b"")]
        ttype = be32(a[NFTA_TRACE_TYPE]) if NFTA_TRACE_TYPE in a else 0
        if NFTA_TRACE_ID in a:
            be32(a[NFTA_TRACE_ID])  # (a short id fails here, before the fields, as it always did)
        proto = be32(a[NFTA_TRACE_NFPROTO]) if NFTA_TRACE_NFPROTO in a else table_family
        return table, chain, ttype, proto, NFPROTO.get(proto, str(proto))

    def _step(self, pre: tuple[str, str, int, int, str], a: dict[int, bytes]) -> _Step | None:
        """What the event says of its step, numbered against the ruleset live now; None: not shown."""
        table, chain, ttype, _proto, family = pre
        handle = be64(a[NFTA_TRACE_RULE_HANDLE]) if NFTA_TRACE_RULE_HANDLE in a else None
        verdict = self._verdicts[a[NFTA_TRACE_VERDICT]] if NFTA_TRACE_VERDICT in a else None
        rs = self.rulesets(family)
        ch = rs.chain(table, chain) if rs is not None else None
        end_num = len(ch.rules) + 1 if ch is not None else None
        num: int | None = None
        unknown = False
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
                unknown = True
        else:
            return None
        return _Step(table, chain, kind, num, family, handle, verdict, unknown)

    def _event(self, step: _Step | None, tid: int | None, fields: dict[str, str] | None, ident: tuple[str, ...],
               now: float | None, raw: tuple[dict[str, str], tuple[str, ...]] | None = None) -> TraceEvent | None:
        if step is None:
            return None
        if step.unknown:
            self.unknown_handles += 1
        return TraceEvent(step.table, step.chain, step.kind, step.num, ts=now if now is not None else time.time(),
                          family=step.family, handle=step.handle, ident=ident, packet_id=tid, verdict=step.verdict,
                          origin=Origin("netlink", self.records), source=SOURCE, fields=fields, raw=raw,
                          parse=_own_fields if raw is not None else None)

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


def _own_fields(carried: tuple[dict[str, str], tuple[str, ...]]) -> dict[str, str]:
    """A step's own copy of the fields carried for its trace id (made when first read)."""
    return dict(carried[0])


class _Step(NamedTuple):
    table: str
    chain: str
    kind: StepKind
    num: int | None
    family: str
    handle: int | None
    verdict: str | None
    unknown: bool  # a rule handle not in the snapshot


# the attributes a step's fields come from, and its trace id: read for every event
_VARYING = frozenset({NFTA_TRACE_ID, NFTA_TRACE_MARK, NFTA_TRACE_LL_HEADER, NFTA_TRACE_NETWORK_HEADER,
                      NFTA_TRACE_TRANSPORT_HEADER, NFTA_TRACE_IIF, NFTA_TRACE_IIFTYPE, NFTA_TRACE_OIF,
                      NFTA_TRACE_OIFTYPE})


def is_trace(mtype: int) -> bool:
    return mtype == (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE)


def is_newgen(mtype: int) -> bool:
    return mtype == (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN)

