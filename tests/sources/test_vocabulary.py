"""The one packet vocabulary (fields.py) and the one NFLOG decoder (sources/nflog.py), as their users see them."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ruletrace.fields import PROTO_NAMES, TCP_FLAG_BITS, proto_name, tcp_flags_ordered, tcp_flags_text
from ruletrace.inputs import compression
from ruletrace.live import netlink as nl
from ruletrace.live import nftrace
from ruletrace.pcap import looks_like_capture
from ruletrace.rulesets import load_ruleset
from ruletrace.rulesets.options import parse_tcp_flags
from ruletrace.simulate.engine import simulate
from ruletrace.simulate.probe import Probe
from ruletrace.sources import nflog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# IPv4 + TCP SYN 127.0.0.1:56364 -> 127.0.0.1:52000 (the headers tests/live/test_codec.py uses)
IP_HDR = bytes.fromhex("4500003c53a640004006e9137f0000017f000001")
TCP_HDR = bytes.fromhex("dc2ccb20a38869620000000 0a002ffd7fe300000".replace(" ", ""))


def test_tcp_flags_in_the_kernel_logs_order():
    # nf_log_dump_tcp_header prints CWR ECE URG ACK PSH RST SYN FIN
    assert tcp_flags_text(0x12) == "ACK SYN"
    assert tcp_flags_text(0x29) == "URG PSH FIN"
    assert tcp_flags_text(0) == ""
    assert tcp_flags_text(0x1FF) == "CWR ECE URG ACK PSH RST SYN FIN"  # bits above the flag byte ignored
    assert tcp_flags_ordered({"SYN", "ACK", "NS?"}) == "ACK SYN"
    assert tcp_flags_ordered(["FIN", "AE"]) == "AE FIN"  # AccECN's bit comes first, as 6.x prints it
    # --tcp-flags reads the same names
    for bits in (0x02, 0x12, 0x11, 0xFF):
        assert parse_tcp_flags(tcp_flags_text(bits)) == bits
    assert set(TCP_FLAG_BITS) <= set(tcp_flags_text(0xFF).split())


def test_proto_names_as_nf_log_prints_them():
    assert [proto_name(n) for n in (1, 6, 17, 58, 136, 50, 51)] == ["ICMP", "TCP", "UDP", "ICMPv6", "UDPLITE",
                                                                  "ESP", "AH"]
    assert proto_name(132) == "132"  # SCTP has no name in nf_log_syslog.c: PROTO=132
    assert 132 not in PROTO_NAMES


def test_simulated_sctp_step_says_proto_132():
    rs = load_ruleset("t.save", text="*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p sctp -j ACCEPT\nCOMMIT\n")
    res = simulate(rs, Probe(proto=132, src="10.0.0.1", dst="10.0.0.2", dport=9, path="input"))
    assert res.events and {e.fields["PROTO"] for e in res.events} == {"132"}


@pytest.mark.parametrize("name", ["nflog.pcap", "nflog-be.pcap", "nflog.pcapng"])
def test_capture_magics(name):
    head = (FIXTURES / "nflog" / name).read_bytes()[:16]
    assert looks_like_capture(head)
    assert compression(head) is None
    assert not looks_like_capture(b"Jan  1 00:00:00 host kernel: TRACE: raw:PREROUTING:rule:1 IN=")


def test_nftrace_headers_read_by_the_nflog_decoder():
    """An nf_tables trace and an NFLOG record of the same packet give the same fields."""
    tlvs = {0: bytes([nflog.AF_INET]), nflog.NFULA_PAYLOAD: IP_HDR + TCP_HDR,
            nflog.NFULA_IFINDEX_OUTDEV: struct.pack("!I", 1)}
    from_nflog = nflog.packet_fields(tlvs, lambda i: f"if{i}")
    body = nl.NFGENMSG.pack(2, 0, 0)
    for kind, value in ((nftrace.NFTA_TRACE_NFPROTO, struct.pack("!I", 2)),
                        (nftrace.NFTA_TRACE_TYPE, struct.pack("!I", nftrace.NFT_TRACETYPE_RULE)),
                        (nftrace.NFTA_TRACE_ID, struct.pack("!I", 7)),
                        (nftrace.NFTA_TRACE_CHAIN, b"OUTPUT\0"), (nftrace.NFTA_TRACE_TABLE, b"filter\0"),
                        (nftrace.NFTA_TRACE_RULE_HANDLE, struct.pack("!Q", 9)),
                        (nftrace.NFTA_TRACE_OIF, struct.pack("!I", 1)),
                        (nftrace.NFTA_TRACE_NETWORK_HEADER, IP_HDR),
                        (nftrace.NFTA_TRACE_TRANSPORT_HEADER, TCP_HDR)):
        body += nl.nla(kind, value)
    ev = nftrace.TraceDecoder(lambda fam: None, ifname=lambda i: f"if{i}").decode(body)
    assert ev is not None
    assert ev.fields == from_nflog
    assert from_nflog["PROTO"] == "TCP" and from_nflog["TCPFLAGS"] == "SYN" and from_nflog["OUT"] == "if1"
