"""Kernel-log TRACE reader and the nf_log field parser, on real captures and the seed articles' pastes."""

from __future__ import annotations

import calendar
import gzip
import io
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from ruletrace.fields import PartialIdent
from ruletrace.logtext import parse_fields
from ruletrace.model import Origin, StepKind, TraceEvent
from ruletrace.sources.kernel_log import looks_like, read_events
from ruletrace.sources.stats import ReadStats

FIXTURES = Path(__file__).parents[1] / "fixtures" / "kernel_log"


def fixture(name: str) -> Path:
    return FIXTURES / name


def read(name: str) -> tuple[list[TraceEvent], ReadStats]:
    st = ReadStats()
    with open(fixture(name), "rb") as fh:
        return list(read_events(fh, name=name, stats=st)), st


def read_bytes(data: bytes, name: str = "t.log") -> tuple[list[TraceEvent], ReadStats]:
    st = ReadStats()
    return list(read_events(io.BytesIO(data), name=name, stats=st)), st


def wall(ts: float) -> tuple[int, ...]:
    """Month, day, hour, minute, second of an epoch stamp in local time."""
    return tuple(time.localtime(ts)[1:6])


# -- real kernel lines (capture.sh: kernel 6.18, iptables-legacy 1.8.9) ---------------------------


def test_dmesg_ipv4_steps_and_fields() -> None:
    evs, st = read("dmesg-ipv4.log")
    assert st.lines == 35 and st.events == 34 and st.skipped == 0
    assert st.log_lines == 1 and st.log_prefixes == {"rtkl-reject:": 1}
    e = evs[0]
    assert (e.table, e.chain, e.kind, e.num) == ("raw", "OUTPUT", StepKind.POLICY, 2)
    assert e.ts == pytest.approx(1006.790444)
    assert e.family == "ipv4" and e.source == "kernel-log"
    assert e.origin == Origin("dmesg-ipv4.log", 1)
    f = e.fields
    assert f["IN"] == "" and f["OUT"] == "rtkla0" and "MAC" not in f
    assert (f["SRC"], f["DST"], f["LEN"], f["TTL"], f["ID"], f["IPFLAGS"]) == (
        "10.231.1.2", "10.231.2.2", "60", "64", "6539", "DF")
    assert (f["PROTO"], f["TYPE"], f["CODE"], f["ICMPID"], f["ICMPSEQ"]) == ("ICMP", "8", "0", "1953", "1")
    assert (f["UID"], f["GID"]) == ("0", "0")
    # the user chain step and its number
    assert evs[6].tag == "filter:RTKL-FWD:rule:3"
    # a forwarded step: TTL went down, MAC kept and split
    f = evs[4].fields
    assert evs[4].tag == "mangle:FORWARD:policy:1"
    assert (f["IN"], f["OUT"], f["TTL"]) == ("rtklr0", "rtklr1", "63")
    assert f["MAC"] == "c6:5a:c7:8c:4d:92:2e:0e:59:2f:88:67:08:00"
    assert (f["MACDST"], f["MACSRC"], f["MACPROTO"]) == ("c6:5a:c7:8c:4d:92", "2e:0e:59:2f:88:67", "0800")


def test_ident_is_invariant_along_the_path_through_dnat_mark_and_ttl() -> None:
    evs, _ = read("dmesg-ipv4.log")
    syn = evs[10:20]
    assert [e.tag for e in syn][:4] == [
        "raw:PREROUTING:policy:2", "mangle:PREROUTING:rule:1", "mangle:PREROUTING:policy:2",
        "nat:PREROUTING:rule:1"]
    before, after = syn[3].fields, syn[4].fields
    assert (before["DST"], before["DPT"], before["TTL"]) == ("10.231.1.1", "8080", "64")
    assert (after["DST"], after["DPT"], after["TTL"]) == ("10.231.2.2", "80", "63")
    assert "MARK" not in syn[1].fields and syn[2].fields["MARK"] == "0x2a"
    f = syn[0].fields
    assert (f["SEQ"], f["ACK"], f["WINDOW"], f["RES"], f["TCPFLAGS"], f["URGP"]) == (
        "1199192473", "0", "64240", "0x00", "SYN", "0")
    assert f["OPT"].startswith("020405B4")
    assert len({e.ident for e in syn}) == 1
    # the ping, the SYN, the UDP datagram and the ICMP error are four different packets
    ping, udp, icmp_err = evs[0:10], evs[20:28], evs[28:32]
    assert len({e.ident for e in ping}) == 1 and len({e.ident for e in udp}) == 1
    assert len({e.ident for e in icmp_err}) == 1
    assert len({ping[0].ident, syn[0].ident, udp[0].ident, icmp_err[0].ident}) == 4
    # UDP: locally generated in a (UID/GID, TTL 64) and forwarded by r (TTL 63): one packet
    assert udp[0].fields["UID"] == "0" and udp[-1].fields["TTL"] == "63"
    assert udp[0].fields["ULEN"] == "28" and udp[0].fields["LEN"] == "48"


def test_icmp_error_keeps_the_quoted_packet() -> None:
    evs, _ = read("dmesg-ipv4.log")
    e = evs[28]
    assert e.tag == "raw:OUTPUT:policy:2"
    f = e.fields
    assert (f["TYPE"], f["CODE"], f["PREC"]) == ("3", "3", "0xC0")
    assert "ICMPID" not in f
    assert f["INNER"] == ("SRC=10.231.1.2 DST=10.231.2.2 LEN=48 TOS=0x00 PREC=0x00 TTL=63 ID=18313 DF "
                          "PROTO=UDP SPT=56829 DPT=9999 LEN=28")
    assert f["SRC"] == "10.231.1.1" and f["LEN"] == "76"  # the outer header, not the inner one


def test_ipv4_fragments() -> None:
    evs, _ = read("dmesg-ipv4.log")
    first, last = evs[32].fields, evs[33].fields
    assert (first["IPFLAGS"], first["FRAG"], first["LEN"], first["PROTO"]) == ("MF", "185", "1500", "UDP")
    assert "IPFLAGS" not in last and last["FRAG"] == "370" and "SPT" not in last
    assert evs[32].ident != evs[33].ident


def test_dmesg_ipv6() -> None:
    evs, st = read("dmesg-ipv6.log")
    assert st.events == 21 and st.log_prefixes == {"rtkl-drop6:": 1} and st.skipped == 0
    assert {e.family for e in evs} == {"ipv6"}
    f = evs[0].fields
    assert f["SRC"] == "fd31:0001:0000:0000:0000:0000:0000:0002"
    assert (f["LEN"], f["TC"], f["HOPLIMIT"], f["PROTO"], f["TYPE"], f["ICMPSEQ"]) == (
        "80", "0", "64", "ICMPv6", "128", "1")
    assert "TTL" not in f and "FLOWLBL" in f
    echo = [evs[0], evs[3], evs[4]]  # a OUTPUT, r PREROUTING, r FORWARD (HOPLIMIT 63)
    assert echo[2].fields["HOPLIMIT"] == "63"
    assert len({e.ident for e in echo}) == 1
    assert evs[1].fields["TYPE"] == "135" and evs[1].ident != evs[0].ident  # neighbour solicitation
    # fragments: the sender's OUTPUT sees the whole datagram, the router and b see fragments
    frags = evs[12:21]
    assert frags[0].fields["LEN"] == "3048" and "FRAG" not in frags[0].fields
    f = frags[1].fields
    assert (f["FRAG"], f["FRAGID"], f["IPFLAGS"], f["ULEN"]) == ("0", "c20cfe25", "MF", "3008")
    assert frags[1].ident == frags[2].ident == frags[3].ident  # r PREROUTING, r FORWARD, b PREROUTING
    f = frags[7].fields
    assert (f["FRAG"], f["FRAGID"], f["LEN"]) == ("2896", "c20cfe25", "160") and "IPFLAGS" not in f
    assert len({frags[1].ident, frags[4].ident, frags[7].ident, frags[0].ident}) == 4


VARIANTS = ["kern.log", "messages.log", "rfc3339.log", "journal-short.log", "journal-precise.log",
            "journal-iso.log", "journal-monotonic.log", "journal.json"]


@pytest.mark.parametrize("name", VARIANTS)
def test_syslog_and_journal_variants_give_the_same_events(name: str) -> None:
    ref, _ = read("dmesg-ipv4.log")
    evs, st = read(name)
    assert [e.tag for e in evs] == [e.tag for e in ref]
    assert [e.fields for e in evs] == [e.fields for e in ref]
    assert [e.ident for e in evs] == [e.ident for e in ref]
    assert st.log_prefixes == {"rtkl-reject:": 1}
    assert st.skipped == 0


# uptime 1006.790444 is 2026-11-23 03:49:10.790444 UTC (make_variants.py)
EPOCH = calendar.timegm((2026, 11, 23, 3, 49, 10))


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("kern.log", lambda ts: wall(ts) == (11, 23, 3, 49, 10)),  # syslog time wins over [uptime]
        ("messages.log", lambda ts: wall(ts) == (11, 23, 3, 49, 10)),
        ("journal-short.log", lambda ts: wall(ts) == (11, 23, 3, 49, 10)),
        ("journal-precise.log", lambda ts: wall(ts) == (11, 23, 3, 49, 10) and round(ts % 1, 6) == 0.790444),
        ("rfc3339.log", lambda ts: ts == pytest.approx(EPOCH + 0.790444)),
        ("journal-iso.log", lambda ts: ts == EPOCH),
        ("journal.json", lambda ts: ts == pytest.approx(EPOCH + 0.790444)),
        ("journal-monotonic.log", lambda ts: ts == pytest.approx(1006.790444)),
        ("dmesg-T.log", lambda ts: time.localtime(ts)[:6] == (2026, 11, 23, 3, 49, 10)),
        ("kmsg.log", lambda ts: ts == pytest.approx(1006.790834)),
    ],
)
def test_time_stamps(name: str, check) -> None:
    evs, _ = read(name)
    assert evs and evs[0].ts is not None and check(evs[0].ts)


def test_journal_json_message_as_byte_array() -> None:
    evs, st = read("journal.json")
    assert evs[2].tag == "mangle:PREROUTING:policy:2"  # its MESSAGE is a list of byte values
    assert evs[2].fields["IN"] == "rtklr0"
    assert evs[2].origin.line == 3
    assert st.lines == 36  # 35 kernel lines (34 TRACE, 1 LOG) + 1 sshd line


def test_kmsg_records() -> None:
    evs, _ = read("kmsg.log")
    assert [e.tag for e in evs[:4]] == ["raw:PREROUTING:policy:2", "mangle:PREROUTING:rule:1",
                                        "mangle:PREROUTING:policy:2", "nat:PREROUTING:rule:1"]
    assert len({e.ident for e in evs}) == 1


# -- the seed articles' pastes ---------------------------------------------------------------------


def test_seed_003_nodeport_52000_trace() -> None:
    evs, st = read("seed-003-52000.log")
    assert st.events == 25 and st.skipped == 0
    assert evs[0].tag == "raw:PREROUTING:policy:3"
    assert evs[-1].tag == "filter:KUBE-FIREWALL:rule:1"
    assert [e.tag for e in evs if e.chain == "KUBE-MARK-DROP"] == ["nat:KUBE-MARK-DROP:rule:1",
                                                                   "nat:KUBE-MARK-DROP:return:2"]
    i = [e.tag for e in evs].index("nat:KUBE-MARK-DROP:rule:1")
    assert "MARK" not in evs[i].fields and evs[i + 1].fields["MARK"] == "0x8000"  # set by that rule
    assert evs[-1].fields["MARK"] == "0x8000"
    assert len({e.ident for e in evs}) == 1
    assert wall(evs[0].ts) == (1, 1, 21, 23, 16)  # "Jan 1 21:23:16": one space, no year
    assert evs[0].ts is not None and evs[0].family == "ipv4"


def test_seed_003_port_80_dnat_changes_dpt_not_ident() -> None:
    evs, _ = read("seed-003-80.log")
    dnat = next(i for i, e in enumerate(evs) if e.tag == "nat:PREROUTING:rule:3")
    assert evs[dnat].fields["DPT"] == "80" and evs[dnat + 1].fields["DPT"] == "52000"
    assert evs[-1].tag == "nat:INPUT:policy:1"
    assert len({e.ident for e in evs}) == 1


def test_seed_002_damaged_paste() -> None:
    evs, st = read("seed-002-damaged.log")
    assert st.events == 13 and st.skipped == 0
    assert [e.tag for e in evs[:3]] == ["raw:PREROUTING:policy:2", "nat:PREROUTING:rule:1",
                                        "nat:quantum-l3-agent-PREROUTING:return:4"]
    assert evs[-1].tag == "nat:quantum-l3-agent-POSTROUTING:rule:1"
    f = evs[0].fields
    assert (f["IN"], f["OUT"], f["LEN"], f["TOS"], f["TTL"], f["ID"], f["IPFLAGS"]) == (
        "tap5c42978b-ac", "", "84", "0x00", "64", "0", "DF")
    assert (f["PROTO"], f["TYPE"], f["CODE"], f["ICMPID"], f["ICMPSEQ"]) == ("ICMP", "8", "0", "28976", "1")
    assert evs[4].fields["TTL"] == "63" and evs[4].fields["OUT"] == "br-ex"
    assert evs[-1].fields["IN"] == "" and "MAC" not in evs[-1].fields
    assert len({e.ident for e in evs}) == 1
    assert wall(evs[0].ts) == (4, 18, 11, 50, 23)  # "Apr 1811:50:23" lost its space too


def test_seed_004_glued_records_are_split() -> None:
    evs, st = read("seed-004-glued.log")
    assert st.lines == 1 and st.events == 54 and st.skipped == 0
    assert [e.tag for e in evs[:4]] == ["raw:PREROUTING:policy:2", "mangle:PREROUTING:policy:1",
                                        "nat:PREROUTING:rule:1", "nat:DOCKER:rule:31"]
    assert evs[11].tag == "nat:POSTROUTING:policy:102"
    assert all(e.origin.line == 1 for e in evs)
    first = evs[0].fields
    assert (first["LEN"], first["ULEN"], first["DPT"]) == ("1511", "1491", "10370")
    assert evs[0].raw.rstrip().endswith(b"LEN=1491")  # cut before the next record's header
    assert evs[4].fields["DST"] == "172.18.0.2"  # after DNAT in nat:DOCKER
    assert evs[0].ident == evs[11].ident
    assert evs[1].ts == pytest.approx(evs[0].ts)
    assert any(e.fields.get("PHYSIN") == "veth79e0ef5" for e in evs)


# -- odd lines -------------------------------------------------------------------------------------

LINE = (b"Jan  1 21:23:16 cos74 kernel: [1038991.870882] TRACE: nat:KUBE-SERVICES:rule:59 IN=eth0 OUT= "
        b"MAC=00:15:5d:12:e2:28:00:15:5d:12:e2:24:08:00 SRC=172.28.129.2 DST=172.28.129.4 LEN=60 TOS=0x00 "
        b"PREC=0x00 TTL=64 ID=41569 DF PROTO=TCP SPT=55694 DPT=52000 SEQ=2805899841 ACK=0 WINDOW=29200 "
        b"RES=0x00 SYN URGP=0 OPT (020405B40402080ACCEE00200000000001030307)\n")


def test_truncated_and_bad_lines_are_skipped_with_their_numbers() -> None:
    data = (
        b"Jan  1 21:23:16 cos74 kernel: eth0: link up\n"  # 1 ordinary kernel line
        + LINE  # 2
        + LINE[:150] + b"\n"  # 3 cut inside the IP header
        + b"Jan  1 21:23:16 cos74 kernel: TRACE: nat:KUBE\n"  # 4 cut inside the tag
        + LINE[: LINE.index(b"WINDOW")] + b"\n"  # 5 cut inside the TCP header
        + b"xtables-monitor: TRACE: 2 9ab5f3a1 raw:PREROUTING:rule:0x3:CONTINUE\n"  # 6 not nf_log
        + LINE.rstrip(b"\n")  # 7 last line without a newline
    )
    evs, st = read_bytes(data)
    # issue 12: line 5 keeps its step; its fields are those before the cut, its ident the part
    # of the packet's identity they hold (a prefix of the whole line's ident)
    assert [e.origin.line for e in evs] == [2, 5, 7]
    assert st.skipped == 3 and st.skipped_lines == [3, 4, 6]
    assert st.lines == 7 and st.bytes_read == len(data)
    assert evs[0].ident == evs[2].ident
    assert isinstance(evs[1].ident, PartialIdent) and evs[0].ident.startswith(evs[1].ident)
    assert evs[1].fields["DPT"] == "52000" and "SEQ" in evs[1].fields and "WINDOW" not in evs[1].fields


def test_bare_lines_crlf_and_prose_prefix() -> None:
    bare = LINE[LINE.index(b"TRACE: ") :]
    prose = "我们有如下一条日志:".encode() + LINE.replace(b"Jan  1", b"Jan 1").rstrip() + ",各个字段".encode() + b"\n"
    evs, st = read_bytes(bare + LINE.replace(b"\n", b"\r\n") + prose)
    assert len(evs) == 3 and st.skipped == 0
    assert evs[0].ts is None  # nothing but the record
    assert wall(evs[1].ts) == wall(evs[2].ts) == (1, 1, 21, 23, 16)
    assert evs[1].raw.endswith(b")")  # CR stripped
    assert len({e.ident for e in evs}) == 1
    assert evs[0].fields["OPT"] == "020405B40402080ACCEE00200000000001030307"


def test_dmesg_raw_and_level_prefixes() -> None:
    rec = LINE[LINE.index(b"TRACE: ") :]
    evs, _ = read_bytes(b"<4>[ 1038991.870882] " + rec + b"kern  :warn  : [1038991.870900] " + rec)
    assert [e.ts for e in evs] == [pytest.approx(1038991.870882), pytest.approx(1038991.8709)]


def test_chain_names_with_colons_and_events_lazy_fields() -> None:
    evs, _ = read_bytes(b"TRACE: filter:odd:name:rule:7 IN=lo OUT= SRC=127.0.0.1 DST=127.0.0.1 LEN=84 "
                        b"TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=47 \n")
    (e,) = evs
    assert (e.table, e.chain, e.kind, e.num) == ("filter", "odd:name", StepKind.RULE, 7)
    assert e._fields is None  # not parsed yet
    assert e.fields["PROTO"] == "47"
    assert e.fields is e.fields


def test_log_target_lines_are_counted_not_events() -> None:
    data = (b"Jan  1 21:23:16 h kernel: [12.5] IPT-DROP: IN=eth0 OUT= "
            b"MAC=00:15:5d:12:e2:28:00:15:5d:12:e2:24:08:00 SRC=1.2.3.4 DST=5.6.7.8 LEN=60 TOS=0x00 PREC=0x00 "
            b"TTL=64 ID=1 DF PROTO=TCP SPT=1 DPT=2 WINDOW=1 RES=0x00 SYN URGP=0 \n"
            b"Jan  1 21:23:17 h kernel: IPT-DROP: IN=eth0 OUT= SRC=1.2.3.4 DST=5.6.7.8 LEN=60 TOS=0x00 "
            b"PREC=0x00 TTL=64 ID=2 DF PROTO=TCP SPT=1 DPT=2 WINDOW=1 RES=0x00 SYN URGP=0 \n"
            b"Jan  1 21:23:18 h sshd[1]: LOGIN=root OUT=whatever\n")
    evs, st = read_bytes(data)
    assert evs == [] and st.log_lines == 2 and st.log_prefixes == {"IPT-DROP:": 2}


def test_gzip_stream_and_progress_counters() -> None:
    data = LINE * 3
    evs, st = read_bytes(gzip.decompress(gzip.compress(data)))
    assert len(evs) == 3 and st.bytes_read == len(data) and st.events == 3


def test_looks_like() -> None:
    with open(fixture("kern.log"), "rb") as fh:
        assert looks_like(fh.read())
    with open(fixture("journal.json"), "rb") as fh:
        assert looks_like(fh.read())
    assert looks_like(LINE[LINE.index(b"TRACE") :])
    assert not looks_like(b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j TRACE\nCOMMIT\n")
    assert not looks_like(b"trace id 9ab5f3a1 ip filter INPUT packet: iif \"eth0\"\n")
    xt = b"PACKET: 2 9ab5f3a1 IN=eth0 \nTRACE: 2 9ab5f3a1 raw:PREROUTING:rule:0x3:CONTINUE\n"
    assert not looks_like(xt)  # xtables-monitor --trace
    assert not looks_like(b"")


# -- the field parser ------------------------------------------------------------------------------


def test_parse_fields_glued_keys() -> None:
    f = parse_fields("IN=tap0 OUT= SRC=10.0.0.4 DST=192.168.0.19 LEN=84TOS=0x00 PREC=0x00 TTL=64ID=0 DF "
                     "PROTO=ICMP TYPE=8CODE=0ID=28976SEQ=1 UID=0GID=5")
    assert (f["LEN"], f["TOS"], f["TTL"], f["ID"], f["IPFLAGS"]) == ("84", "0x00", "64", "0", "DF")
    assert (f["TYPE"], f["CODE"], f["ICMPID"], f["ICMPSEQ"]) == ("8", "0", "28976", "1")
    assert (f["UID"], f["GID"]) == ("0", "5")
    assert parse_fields("IN=OUT=eth1 SRC=1.1.1.1")["OUT"] == "eth1"


def test_parse_fields_bridge_macdecode_and_incomplete() -> None:
    f = parse_fields(b"IN=br0 OUT=br0 PHYSIN=veth1 PHYSOUT=veth2 MACSRC=aa:bb:cc:dd:ee:ff "
                     b"MACDST=11:22:33:44:55:66 VPROTO=8100 VID=10 MACPROTO=0800 SRC=1.2.3.4 DST=5.6.7.8 LEN=40 "
                     b"TOS=0x10 PREC=0x00 TTL=1 ID=9 CE PROTO=TCP INCOMPLETE [12 bytes] MARK=0xff ")
    assert (f["PHYSIN"], f["PHYSOUT"], f["MACSRC"], f["MACDST"], f["MACPROTO"], f["VID"]) == (
        "veth1", "veth2", "aa:bb:cc:dd:ee:ff", "11:22:33:44:55:66", "0800", "10")
    assert "MAC" not in f and f["IPFLAGS"] == "CE" and f["INCOMPLETE"] == "12" and f["MARK"] == "0xff"


def test_parse_fields_ip_options_esp_and_tcp_flags() -> None:
    f = parse_fields("IN=eth0 OUT= SRC=1.2.3.4 DST=5.6.7.8 LEN=64 TOS=0x00 PREC=0x00 TTL=64 ID=7 DF "
                     "OPT (94040000) PROTO=TCP SPT=1 DPT=2 SEQ=5 ACK=6 WINDOW=7 RES=0x00 ACK PSH FIN URGP=0 ")
    assert f["IPOPT"] == "94040000" and "OPT" not in f and f["TCPFLAGS"] == "ACK PSH FIN"
    f = parse_fields("IN=eth0 OUT= SRC=1.2.3.4 DST=5.6.7.8 LEN=64 TOS=0x00 PREC=0x00 TTL=64 ID=7 "
                     "PROTO=ESP SPI=0x1f ")
    assert (f["PROTO"], f["SPI"]) == ("ESP", "0x1f")


def test_request_and_reply_with_the_same_echo_id_are_different_packets() -> None:
    req = (b"TRACE: raw:PREROUTING:policy:2 IN=rtklr0 OUT= SRC=fd31:0001:0000:0000:0000:0000:0000:0002 "
           b"DST=fd31:0002:0000:0000:0000:0000:0000:0002 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=421818 PROTO=ICMPv6 "
           b"TYPE=128 CODE=0 ID=1953 SEQ=1 \n")
    rep = (b"TRACE: raw:PREROUTING:policy:2 IN=rtklr1 OUT= SRC=fd31:0002:0000:0000:0000:0000:0000:0002 "
           b"DST=fd31:0001:0000:0000:0000:0000:0000:0002 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=421818 PROTO=ICMPv6 "
           b"TYPE=129 CODE=0 ID=1953 SEQ=1 \n")
    evs, _ = read_bytes(req + req.replace(b"HOPLIMIT=64", b"HOPLIMIT=63") + rep)
    assert evs[0].ident == evs[1].ident != evs[2].ident
    seq2 = req.replace(b"SEQ=1", b"SEQ=2")
    evs, _ = read_bytes(req + seq2)
    assert evs[0].ident != evs[1].ident


def test_progress_counters_move_while_reading() -> None:
    data = LINE * 20000
    st = ReadStats()
    it = read_events(io.BytesIO(data), name="big", stats=st)
    for _ in range(17000):
        next(it)
    assert st.lines >= 16384 and st.bytes_read == st.lines * len(LINE)
    assert sum(1 for _ in it) == 3000
    assert st.lines == 20000 and st.bytes_read == len(data) and st.events == 20000


def test_origin_is_built_on_demand_and_can_be_replaced() -> None:
    evs, _ = read_bytes(b"\n" + LINE, name="k.log")
    e = evs[0]
    assert e.origin == Origin("k.log", 2) and e.origin is e.origin
    assert repr(e) == "TraceEvent(nat:KUBE-SERVICES:rule:59 @ k.log:2)"
    e.origin = Origin("other", 9)
    assert e.origin == Origin("other", 9)


def _capture_skip_reason() -> str | None:
    import os
    import shutil

    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables, the kernel ring buffer)"
    for tool in ("ip", "iptables-legacy", "ip6tables-legacy", "dmesg", "sysctl"):
        if shutil.which(tool) is None:
            return f"no {tool}"
    if not os.access("/dev/kmsg", os.R_OK | os.W_OK):
        return "/dev/kmsg is not readable and writable"
    return None


@pytest.mark.kernel
def test_live_kernel_capture(tmp_path: Path) -> None:
    """capture.sh against the running kernel: every TRACE line it gets is read, none skipped."""
    import subprocess

    reason = _capture_skip_reason()
    if reason:
        pytest.skip(reason)
    subprocess.run(["bash", str(fixture("capture.sh")), str(tmp_path)], check=True, capture_output=True,
                   timeout=120)
    for name in ("dmesg.raw", "dmesg-T.raw", "kmsg.raw"):
        data = (tmp_path / name).read_bytes()
        evs, st = read_bytes(data, name)
        assert st.skipped == 0, (name, st.skipped_lines)
        assert st.events == data.count(b"TRACE: ") >= 80
        assert st.log_prefixes == {"rtkl-reject:": 1, "rtkl-drop6:": 1}
        assert {e.family for e in evs} == {"ipv4", "ipv6"}
        syn = [e for e in evs if e.family == "ipv4" and e.fields.get("TCPFLAGS") == "SYN"]
        assert [e.fields["DPT"] for e in syn][:1] == ["8080"] and syn[-1].fields["DPT"] == "80"
        assert len({e.ident for e in syn}) == 1  # DNAT and forwarding do not change the ident
        assert any("INNER" in e.fields for e in evs)
        assert any(e.fields.get("FRAGID") for e in evs)


def test_fast_field_parser_agrees_with_the_general_one() -> None:
    from ruletrace.logtext import _parse_regular, _parse_tokens

    fast = 0
    for path in sorted(FIXTURES.glob("*.log")) + [FIXTURES / "journal.json"]:
        for ev in read(path.name)[0]:
            text = ev.raw.decode()
            got = _parse_regular(text)
            if got is not None:
                fast += 1
                assert got == _parse_tokens(text), (path.name, ev.origin)
    assert fast > 300  # most real lines take the fast path


def test_parse_fields_returns_a_fresh_dict_each_time() -> None:
    raw = LINE[LINE.index(b"IN=") :]
    a = parse_fields(raw)
    a["SRC"] = "changed"
    b = parse_fields(raw)
    assert b["SRC"] == "172.28.129.2" and a is not b


# -- robustness: whatever the bytes, the reader and the parser do not raise -----------------------

_PIECES = [b"TRACE: ", b"raw:PREROUTING:policy:2", b"filter:X:rule:", b"IN=", b"OUT=eth0 ", b"LEN=60 ",
           b"TOS=0x00 ", b"TTL=64 ", b"ID=1 ", b"TC=0 ", b"HOPLIMIT=1 ", b"FLOWLBL=0 ", b"PROTO=TCP ",
           b"PROTO=ICMP ", b"PROTO=UDP ", b"SPT=1 ", b"LEN=", b"SEQ=", b"URGP=0 ", b"TYPE=8 ", b"CODE=0 ",
           b"ID=", b"[", b"]", b"OPT (", b")", b"\n", b" ", b"{", b'"MESSAGE":[',
           b"Jan  1 21:23:16 h kernel: ", b"[ 12.5] ", b"2026-01-01T00:00:00.5+00:00 ", b"\xff", b"\x00", b"0"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hst.lists(hst.sampled_from(_PIECES) | hst.binary(max_size=8), max_size=60))
def test_reader_never_raises(parts: list[bytes]) -> None:
    data = b"".join(parts)
    stats = ReadStats()
    evs = list(read_events(io.BytesIO(data), name="fuzz", stats=stats))
    for e in evs:
        assert isinstance(e.fields, dict)
        assert e.origin.path == "fuzz" and 1 <= e.origin.line <= data.count(b"\n") + 1
    assert stats.events == len(evs)


@settings(max_examples=300, deadline=None)
@given(hst.text(alphabet="INOUTSRCDLEPROTCY=[]() 0123456789:xMAF", max_size=120))
def test_parse_fields_never_raises(text: str) -> None:
    f = parse_fields(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in f.items())


def test_looks_like_a_syslog_file_whose_trace_lines_come_later() -> None:
    head = b"".join(b"Nov 23 03:49:%02d rtkl-r sshd[812]: Accepted publickey\n" % i for i in range(50))
    assert looks_like(head)
    assert not looks_like(b"hello\nworld\n" * 20)


def test_events_pickle_for_worker_processes() -> None:
    import pickle

    evs, _ = read("kern.log")
    e = pickle.loads(pickle.dumps(evs[3]))
    assert (e.tag, e.origin) == (evs[3].tag, Origin("kern.log", 4))
    assert (e.ident, e.fields) == (evs[3].ident, evs[3].fields)
