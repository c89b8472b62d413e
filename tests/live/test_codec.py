"""Netlink codec, NFT_MSG_TRACE / NFLOG decoding, rule planning and live grouping (no kernel needed)."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.live import netlink as nl
from ruletrace.live import nflog, nftrace
from ruletrace.live import session as ss
from ruletrace.live.tracer import LiveGrouper, diff_summary
from ruletrace.model import StepKind, TraceEvent
from ruletrace.rulesets import load_ruleset

H = "<" if sys.byteorder == "little" else ">"


def attr(kind: int, value: bytes) -> bytes:
    return nl.nla(kind, value)


SAVE = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p tcp -j TRACE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FOO - [0:0]
-A INPUT -p tcp -m comment --comment x -j ACCEPT
-A OUTPUT -j FOO
-A FOO -p udp -j ACCEPT
COMMIT
"""
# nft -j list ruleset of the same ruleset (trimmed to what attach_handles reads)
NFT_JSON = json.dumps({"nftables": [
    {"rule": {"family": "ip", "table": "raw", "chain": "OUTPUT", "handle": 2}},
    {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 2}},
    {"rule": {"family": "ip", "table": "filter", "chain": "FOO", "handle": 6}},
    {"rule": {"family": "ip", "table": "filter", "chain": "OUTPUT", "handle": 5}},
]})

# IPv4 + TCP SYN headers 127.0.0.1:56364 -> 127.0.0.1:52000, as NFTA_TRACE_NETWORK/TRANSPORT_HEADER
IP_HDR = bytes.fromhex("4500003c53a640004006e9137f0000017f000001")
TCP_HDR = bytes.fromhex("dc2ccb20a38869620000000 0a002ffd7fe300000".replace(" ", ""))


def trace_msg(table: str, chain: str, ttype: int, tid: int, *, handle: int | None = None,
              verdict: int | None = None, jump: str | None = None, policy: int | None = None,
              headers: bool = False, family: int = 2) -> bytes:
    body = nl.NFGENMSG.pack(family, 0, 0)
    body += attr(nftrace.NFTA_TRACE_NFPROTO, struct.pack("!I", family))
    body += attr(nftrace.NFTA_TRACE_TYPE, struct.pack("!I", ttype))
    body += attr(nftrace.NFTA_TRACE_ID, struct.pack("!I", tid))
    body += attr(nftrace.NFTA_TRACE_CHAIN, chain.encode() + b"\0")
    body += attr(nftrace.NFTA_TRACE_TABLE, table.encode() + b"\0")
    if handle is not None:
        body += attr(nftrace.NFTA_TRACE_RULE_HANDLE, struct.pack("!Q", handle))
    if verdict is not None:
        v = attr(nftrace.NFTA_VERDICT_CODE, struct.pack("!i", verdict))
        if jump:
            v += attr(nftrace.NFTA_VERDICT_CHAIN, jump.encode() + b"\0")
        body += nl.nla_nested(nftrace.NFTA_TRACE_VERDICT, v)
    if policy is not None:
        body += attr(nftrace.NFTA_TRACE_POLICY, struct.pack("!I", policy))
    if headers:
        body += attr(nftrace.NFTA_TRACE_OIF, struct.pack("!I", 1))
        body += attr(nftrace.NFTA_TRACE_NETWORK_HEADER, IP_HDR)
        body += attr(nftrace.NFTA_TRACE_TRANSPORT_HEADER, TCP_HDR)
    return body


@pytest.fixture
def ruleset():
    rs = load_ruleset("t.save", text=SAVE)
    rs.family = "ipv4"
    assert nftrace.attach_handles(rs, NFT_JSON, family="ipv4") == 4
    return rs


def test_attr_roundtrip_and_padding():
    a = nl.nla(3, b"abcde")
    assert len(a) == 12 and a[:4] == struct.pack(H + "HH", 9, 3)
    assert list(nl.iter_attrs(a + nl.nla(4, b""))) == [(3, b"abcde"), (4, b"")]
    with pytest.raises(RuletraceError):
        list(nl.iter_attrs(struct.pack(H + "HH", 40, 1) + b"xx"))


def test_split_messages():
    m1 = nl.NLMSG_HDR.pack(16 + 3, 0x0a11, 0, 7, 0) + b"abc"
    m2 = nl.NLMSG_HDR.pack(16, nl.NLMSG_DONE, 0, 8, 0)
    got = list(nl.split_messages(m1 + b"\0" + m2))
    assert got == [(0x0a11, 0, 7, b"abc"), (nl.NLMSG_DONE, 0, 8, b"")]


def test_nftrace_output_path(ruleset):
    dec = nftrace.TraceDecoder(lambda fam: ruleset if fam == "ipv4" else None, ifname=lambda i: f"if{i}")
    msgs = [
        # the TRACE rule itself (meta nftrace set 1): not reported, as legacy TRACE does not
        trace_msg("raw", "OUTPUT", 3, 0x76E547E1, handle=2, verdict=-1, headers=True),
        trace_msg("raw", "OUTPUT", 3, 0x76E547E1, verdict=-1),  # handle-less end of a base chain
        trace_msg("raw", "OUTPUT", 1, 0x76E547E1, policy=1),
        trace_msg("filter", "OUTPUT", 3, 0x76E547E1, handle=5, verdict=-3, jump="FOO", headers=True),
        trace_msg("filter", "FOO", 3, 0x76E547E1, verdict=-1),  # end of a user chain: return
        trace_msg("filter", "OUTPUT", 1, 0x76E547E1, policy=1),
    ]
    evs = [dec.decode(m, now=1.0) for m in msgs]
    assert evs[0] is None and evs[1] is None
    got = [(e.tag, e.verdict, e.handle) for e in evs[2:]]
    assert got == [
        ("raw:OUTPUT:policy:2", "accept", None),
        ("filter:OUTPUT:rule:1", "jump:FOO", 5),
        ("filter:FOO:return:2", "return", None),
        ("filter:OUTPUT:policy:2", "accept", None),
    ]
    f = evs[2].fields  # inherited from the first event of the trace id
    assert (f["SRC"], f["DST"], f["PROTO"], f["SPT"], f["DPT"], f["TCPFLAGS"], f["OUT"]) == (
        "127.0.0.1", "127.0.0.1", "TCP", "56364", "52000", "SYN", "if1")
    assert all(e.packet_id == 0x76E547E1 and e.family == "ipv4" for e in evs[2:])


def test_nftrace_unknown_handle_is_counted(ruleset):
    dec = nftrace.TraceDecoder(lambda fam: ruleset)
    ev = dec.decode(trace_msg("filter", "INPUT", 3, 9, handle=99, verdict=1))
    assert ev is not None and ev.num is None and ev.handle == 99 and dec.unknown_handles == 1


def test_verdict_names():
    assert nftrace.verdict_name(nl.nla(1, struct.pack("!i", 0))) == "drop"
    assert nftrace.verdict_name(nl.nla(1, struct.pack("!i", -4)) + nl.nla(2, b"X\0")) == "goto:X"


def test_nflog_packet_decodes_with_pcap_codec():
    # nfgenmsg (AF_INET, v0, group 0) then host-order TLVs with big-endian values
    body = nl.NFGENMSG.pack(2, 0, 0)
    body += nl.nla(10, b"TRACE: filter:INPUT:rule:1 \0")
    body += nl.nla(4, struct.pack("!I", 1))
    body += nl.nla(9, IP_HDR + TCP_HDR)
    ev = nflog.decode_packet(body, ifname=lambda i: "lo", now=5.0)
    assert isinstance(ev, TraceEvent)
    assert (ev.tag, ev.family, ev.fields["IN"], ev.fields["DPT"], ev.ts) == ("filter:INPUT:rule:1", "ipv4", "lo",
                                                                           "52000", 5.0)
    other = nl.NFGENMSG.pack(2, 0, 0) + nl.nla(10, b"my-log \0")
    assert nflog.decode_packet(other) is False


def test_plan_rules_order_and_tags():
    spec = ss.TraceSpec(proto="tcp", dport="52000", src="10.0.0.2", direction="in")
    spec.validate()
    assert spec.families == ("ipv4",)  # an IPv4 source cannot match IPv6
    rules = ss.plan_rules(spec, "abcd1234")
    assert [r.insert_cmd("legacy") for r in rules] == [
        ["iptables-legacy", "-w", "2", "-t", "raw", "-I", "PREROUTING", "1", "-p", "tcp", "-s", "10.0.0.2",
         "--dport", "52000", "-m", "limit", "--limit", "50/second", "--limit-burst", "50",
         "-m", "comment", "--comment", "ruletrace:abcd1234", "-j", "TRACE"],
        ["iptables-legacy", "-w", "2", "-t", "raw", "-I", "PREROUTING", "1", "-p", "tcp", "-s", "10.0.0.2",
         "--dport", "52000", "-m", "comment", "--comment", "ruletrace:abcd1234:seen"],
    ]
    assert rules[0].delete_cmd("nft")[:7] == ["iptables-nft", "-w", "2", "-t", "raw", "-D", "PREROUTING"]


@pytest.mark.parametrize("kw, msg", [
    ({}, "--all"),
    ({"dport": "80"}, "need -p"),
    ({"proto": "tcp", "rate": 0}, "at least 1"),
    ({"src": "not-an-ip"}, "not an address"),
])
def test_spec_errors(kw, msg):
    with pytest.raises(RuletraceError, match=msg):
        ss.TraceSpec(**kw).validate()


def test_icmp_maps_per_family():
    spec = ss.TraceSpec(proto="icmp", direction="out")
    spec.validate()
    assert spec.match_args("ipv6", "OUTPUT") == ["-p", "ipv6-icmp"]
    assert ss.TraceSpec(iface="!eth0").match_args("ipv4", "OUTPUT") == ["!", "-o", "eth0"]


def test_state_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setattr(ss, "STATE_DIR", tmp_path)
    st = ss.State("abcd", 1, None, {"id": "1:2", "name": "x"}, "nft",
                  ss.plan_rules(ss.TraceSpec(proto="udp"), "abcd"), {2: "nf_log_ipv4"}, 3.0)
    st.save()
    back = ss.State.load(tmp_path / "abcd.json")
    assert back == st and back.owner_gone() is None  # no start time, boot id, pid namespace: unknown
    assert [s.sid for _p, s in ss.all_states()] == ["abcd"]


def test_nf_log_bindings(tmp_path):
    p = tmp_path / "nf_log"
    p.write_text(" 0 NONE (nfnetlink_log)\n 2 nf_log_ipv4 (nf_log_ipv4,nfnetlink_log)\n10 NONE ()\n")
    assert ss.nf_log_bindings(str(p)) == {0: ("NONE", ["nfnetlink_log"]),
                                          2: ("nf_log_ipv4", ["nf_log_ipv4", "nfnetlink_log"]), 10: ("NONE", [])}


def test_diff_summary():
    new = SAVE.replace("-A FOO -p udp -j ACCEPT\n", "-A FOO -p udp -j ACCEPT\n-A FOO -p tcp -j DROP\n")
    assert diff_summary(SAVE, new) == ["filter:FOO +1 -0"]
    assert diff_summary(SAVE, SAVE.replace("[0:0]", "[5:300]")) == []


def test_live_grouper_flushes_idle_packets_in_order():
    g = LiveGrouper(idle=0.25)

    def ev(tag: str, pid: int) -> TraceEvent:
        t, c, k, n = tag.split(":")
        return TraceEvent(t, c, StepKind(k), int(n), packet_id=pid)

    g.add(ev("raw:PREROUTING:policy:1", 7), 0, 0.0)
    g.add(ev("filter:INPUT:rule:1", 7), 1, 0.2)
    g.add(ev("raw:PREROUTING:policy:1", 8), 0, 0.3)
    assert g.flush(0.3) == []  # both keys had a step less than 0.25 s ago
    out = g.flush(0.46)
    assert [(p.id, [e.tag for e in p.events], v) for p, v, _f in out] == [
        (1, ["raw:PREROUTING:policy:1", "filter:INPUT:rule:1"], [0, 1])]
    out = g.flush(0.47, everything=True)
    assert [(p.id, len(p.events)) for p, _v, _f in out] == [(2, 1)] and g.pending() == 0


# --- the NFLOG fast path (live/nflog.py record_tlvs + FastSteps) against the reference decoder ---

IP6_ICMP = bytes.fromhex("6000000000103a40fd000000000000000000000000000001fd000000000000000000000000000002"
                         "8000f7ff4242000172746c7372746c73")
ETH = bytes.fromhex("0a0000000002" "0a0000000001" "0800")


def nflog_body(prefix: bytes, *, family: int = 2, payload: bytes = IP_HDR + TCP_HDR, indev: int | None = 1,
               outdev: int | None = None, hw: bytes | None = None, mark: int = 0, seq: int | None = None,
               stamp: tuple[int, int] | None = None, uid: int | None = None, version: int = 0) -> bytes:
    body = struct.pack("!BBH", family, version, 0) + nl.nla(10, prefix)
    if indev is not None:
        body += nl.nla(4, struct.pack("!I", indev))
    if outdev is not None:
        body += nl.nla(5, struct.pack("!I", outdev))
    if hw is not None:
        body += nl.nla(15, struct.pack("!H", 1)) + nl.nla(16, hw)
    if mark:
        body += nl.nla(2, struct.pack("!I", mark))
    if seq is not None:
        body += nl.nla(12, struct.pack("!I", seq))
    if stamp is not None:
        body += nl.nla(3, struct.pack("!QQ", *stamp))
    if uid is not None:
        body += nl.nla(11, struct.pack("!I", uid))
    return body + nl.nla(9, payload)


def _bodies() -> list[bytes]:
    good = [
        nflog_body(b"TRACE: filter:INPUT:rule:1 \0"),
        nflog_body(b"TRACE: filter:INPUT:rule:2 \0", hw=ETH, mark=0x10, seq=7),
        nflog_body(b"TRACE: raw:OUTPUT:policy:3 \0", indev=None, outdev=2, uid=0, stamp=(1700000000, 250000)),
        nflog_body(b"TRACE: filter:FOO:return:4 \0", family=10, payload=IP6_ICMP, hw=ETH),
        nflog_body(b"TRACE: filter:INPUT:rule:1 \0", payload=IP_HDR[:12]),  # damaged IPv4 header
        nflog_body(b"TRACE: filter:INPUT:rule:1 \0", family=7, payload=b"\x00\x01"),  # not IP
        nflog_body(b"my-log \0"),  # an ordinary NFLOG rule
        nflog_body(b"TRACE: garbage\0"),
    ]
    damaged = [good[0][:3], good[1][:-3], nflog_body(b"TRACE: filter:INPUT:rule:1 \0", version=1),
               good[0][:4] + struct.pack(H + "HH", 2, 10) + good[0][8:], good[0] + b"\x01\x00"]
    return good + damaged


def _reference(body: bytes, record: int) -> object:
    from ruletrace.sources import nflog as ref

    try:
        ref.decode_record(body, H, None)
    except RuletraceError:
        return "broken record"
    return nflog.decode_packet(body, record=record, ifname=lambda i: f"if{i}x", now=5.0)


def _same(a: object) -> object:
    if not isinstance(a, TraceEvent):
        return a
    return {k: getattr(a, k) for k in ("table", "chain", "kind", "num", "ts", "family", "ident", "origin",
                                       "source", "packet_id", "verdict", "handle")} | {"fields": a.fields}


def test_nflog_record_tlvs_equals_decode_record():
    from ruletrace.sources import nflog as ref

    for body in _bodies():
        try:
            want = ref.decode_record(body, H, None)
        except RuletraceError:
            want = None
        assert nflog.record_tlvs(body) == want, body.hex()


def test_nflog_fast_steps_equal_decode_packet_also_when_repeated():
    fast = nflog.FastSteps(lambda i: f"if{i}x")
    bodies = _bodies()
    for round_ in range(3):  # the second and third rounds come from the memo
        for i, body in enumerate(bodies):
            tlvs = nflog.record_tlvs(body)
            got = "broken record" if tlvs is None else fast.decode(tlvs, i + 1, now=5.0)
            assert _same(got) == _same(_reference(body, i + 1)), (round_, i)
    a = fast.decode(nflog.record_tlvs(bodies[1]), 1, now=5.0)
    b = fast.decode(nflog.record_tlvs(bodies[1]), 2, now=5.0)
    a.fields["MARK"] = "changed"  # each step owns its fields
    assert b.fields["MARK"] == "0x10" and b.fields["MACSRC"] == "0a:00:00:00:00:01"


def test_parse_attrs_equals_the_iter_attrs_walk():
    whole = (nl.nla(3, b"abcde") + nl.nla(4 | nl.NLA_F_NET_BYTEORDER, b"") + nl.nla(3, b"second")
             + nl.nla_nested(5, nl.nla(1, b"x")))
    bufs = [whole, whole + b"\x01\x00", whole[:-2], struct.pack(H + "HH", 40, 1) + b"xx",
            struct.pack(H + "HH", 2, 1) + whole, b"", trace_msg("filter", "INPUT", 3, 9, handle=2, headers=True)]
    for buf in bufs:
        for offset in (0, 4):
            try:
                want: object = {}
                for kind, value in nl.iter_attrs(buf, offset):
                    want.setdefault(kind, value)
            except RuletraceError as e:
                want = str(e)
            try:
                got: object = nl.parse_attrs(buf, offset)
            except RuletraceError as e:
                got = str(e)
            assert got == want, (buf.hex(), offset)


def test_nftrace_carried_ident_is_the_fields_ident(ruleset):
    from ruletrace.fields import packet_ident

    d = nftrace.TraceDecoder(lambda fam: ruleset, lambda i: "lo")
    damaged = nl.NFGENMSG.pack(2, 0, 0) + attr(nftrace.NFTA_TRACE_TYPE, struct.pack("!I", 3)) + attr(
        nftrace.NFTA_TRACE_ID, struct.pack("!I", 7)) + attr(nftrace.NFTA_TRACE_CHAIN, b"INPUT\0") + attr(
        nftrace.NFTA_TRACE_TABLE, b"filter\0") + attr(nftrace.NFTA_TRACE_RULE_HANDLE, struct.pack("!Q", 2)) + attr(
        nftrace.NFTA_TRACE_NETWORK_HEADER, IP_HDR[:9])  # a header cut short: the carried fields stay
    seq = [trace_msg("filter", "INPUT", 3, 7, handle=2, verdict=-1, headers=True),
           trace_msg("filter", "INPUT", 3, 7, handle=2, verdict=-1),
           trace_msg("filter", "INPUT", 3, 7, handle=2, verdict=-1) + attr(nftrace.NFTA_TRACE_MARK,
                                                                            struct.pack("!I", 0x10)),
           damaged, trace_msg("filter", "INPUT", 3, 8, handle=2, verdict=-1),  # no carry: empty fields
           trace_msg("filter", "INPUT", 3, 7, handle=2, verdict=1)]
    evs = [d.decode(m, now=1.0) for m in seq]
    assert [ev is not None and ev.ident == packet_ident(ev.fields) for ev in evs] == [True] * len(evs)
    assert evs[2].fields["MARK"] == "0x10" and "MARK" not in evs[1].fields and evs[3].fields["DPT"] == "52000"
    assert evs[4].fields == {} and evs[5].ident == evs[0].ident


def test_nftrace_remembered_names_and_verdicts_equal_the_plain_decoding(ruleset):
    d = nftrace.TraceDecoder(lambda fam: ruleset, lambda i: "lo")
    msgs = [trace_msg("filter", "OUTPUT", 3, 5, handle=5, verdict=-3, jump="FOO", headers=True),
            trace_msg("filter", "FOO", 3, 5, handle=6, verdict=1),
            trace_msg("filter", "INPUT", 3, 6, handle=2, verdict=-1, headers=True)]
    for _ in range(3):  # the later rounds come from the memos
        got = [(e.table, e.chain, e.verdict) for e in map(d.decode, msgs)]
        assert got == [("filter", "OUTPUT", "jump:FOO"), ("filter", "FOO", "accept"), ("filter", "INPUT", "continue")]
    bad = trace_msg("filter", "INPUT", 3, 6, handle=2) + attr(nftrace.NFTA_TRACE_VERDICT, struct.pack(H + "HH", 40, 1))
    for _ in range(2):  # a damaged verdict raises each time: it is not remembered
        with pytest.raises(RuletraceError):
            d.decode(bad)


def test_a_damaged_nftrace_message_is_counted_not_a_traceback():
    """Review: a short NFTA_TRACE_TYPE (2 bytes) raised struct.error out of the live loop. The poll
    skips and counts it (accounting 'damaged'), and the good message after it still arrives."""
    from types import SimpleNamespace

    from ruletrace.live import accounting as acc
    from ruletrace.live.modes import NftModes
    from ruletrace.live.netlink import nla
    from ruletrace.live.nftrace import (
        NFNL_SUBSYS_NFTABLES,
        NFT_MSG_TRACE,
        NFTA_TRACE_CHAIN,
        NFTA_TRACE_TABLE,
        NFTA_TRACE_TYPE,
        TraceDecoder,
    )

    mtype = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE
    head = bytes([2, 0, 0, 0])  # nfgenmsg: NFPROTO_IPV4
    names = nla(NFTA_TRACE_TABLE, b"filter\0") + nla(NFTA_TRACE_CHAIN, b"input\0")
    short = head + names + nla(NFTA_TRACE_TYPE, b"\0\1")
    good = head + names + nla(NFTA_TRACE_TYPE, (2).to_bytes(4, "big"))  # NFT_TRACETYPE_POLICY

    class Source:
        def messages(self, timeout):
            yield mtype, 0, 0, short
            yield mtype, 0, 0, good

    me = SimpleNamespace(decoder=TraceDecoder(lambda family: None, lambda i: f"if{i}"),
                         stats=acc.new_stats(), versions=SimpleNamespace(latest_n=0), refresh=lambda: None)
    out = NftModes._poll_nft(me, Source(), 0)  # type: ignore[arg-type]
    assert me.stats["damaged"] == 1
    assert [ev.chain for ev, _v in out] == ["input"]
    assert "1 trace message(s) that could not be decoded, skipped" in acc.summary(me.stats, 0, 50)


def test_nflog_shapes_equal_the_walk_for_every_step():
    """NflogListener.decode_bodies (record shapes learned, the attribute walk skipped) gives, body by
    body, what the reference decoder gives: the same events, the same damaged count, the same gaps."""
    prefixes = [b"TRACE: raw:PREROUTING:policy:3 \0", b"TRACE: filter:INPUT:rule:1 \0",
                b"TRACE: filter:INPUT:rule:12 \0", b"TRACE: filter:INPUT:policy:101 \0", b"my-log \0"]
    bodies = []
    for p, payload in enumerate([IP_HDR + TCP_HDR, IP6_ICMP, IP_HDR[:12], IP_HDR + TCP_HDR[:4]]):
        fam = 10 if payload is IP6_ICMP else 2
        for k, prefix in enumerate(prefixes * 2):
            bodies.append(nflog_body(prefix, family=fam, payload=payload, hw=ETH, mark=k % 3 // 2,
                                     seq=len(bodies) + (k == 7), stamp=(1700000000 + p, k)))
        bodies.append(nflog_body(prefixes[1], family=fam, payload=payload))  # no time stamp, no sequence
    bodies += _bodies() * 2
    listener = nflog.NflogListener([2], ifname=lambda i: f"if{i}x")
    ref_seq = nflog.NflogListener([2])  # its sequence check fed the reference way
    bad = 0
    for i, body in enumerate(bodies):
        got = listener.decode_bodies([body])
        want = _reference(body, i + 1) if not got else nflog.decode_packet(
            body, record=i + 1, ifname=lambda i: f"if{i}x", now=got[0].ts)
        tlvs = nflog.record_tlvs(body)
        if tlvs is not None:
            ref_seq._sequence(tlvs.get(12))
        bad += want is None or want == "broken record"
        assert [_same(e) for e in got] == ([_same(want)] if isinstance(want, TraceEvent) else []), i
    assert listener.bad == bad and listener.records == len(bodies)
    assert (listener.gaps, listener.lost_steps) == (ref_seq.gaps, ref_seq.lost_steps) != (0, 0)
    a, b = listener.decode_bodies(bodies[0:2])
    assert a.raw is b.raw and a.fields == b.fields and a.fields is not b.fields  # one packet entry, own copies


def test_packet_bodies_takes_whole_messages_of_one_type():
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        _check_packet_bodies(a, b)


def _check_packet_bodies(a, b) -> None:
    sock = nl.NetlinkSocket.__new__(nl.NetlinkSocket)
    sock.sock, sock._pending, sock.overruns = a, [], 0
    sock._buf = bytearray(1 << 16)
    sock._view = memoryview(sock._buf)

    def msg(mtype: int, body: bytes) -> bytes:
        return nl.NLMSG_HDR.pack(16 + len(body), mtype, 0, 1, 0) + body + b"\0" * (nl.align4(len(body)) - len(body))

    one, other, two = msg(0x400, b"first"), msg(0x401, b"other"), msg(0x400, b"2nd") + msg(0x400, b"third!!!")
    for d in (one, other, two, msg(0x400, b"")):
        b.send(d)
    got = sock.packet_bodies(1.0, 0x400)
    want = [body for d in (one, other, two, msg(0x400, b""))
            for t, _f, _s, body in nl.split_messages(d) if t == 0x400]
    assert got == want and got[:3] == [b"first", b"2nd", b"third!!!"]
    assert sock.packet_bodies(0, 0x400) == []
