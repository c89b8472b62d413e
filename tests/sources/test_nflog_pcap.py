"""NFLOG pcap/pcapng reader: real lab capture (tests/fixtures/nflog), variants and broken files."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.model import StepKind
from ruletrace.sources import kernel_log, nflog, nflog_pcap
from ruletrace.sources.stats import ReadStats

FIXTURES = Path(__file__).parents[1] / "fixtures"


def fixture(name: str) -> Path:
    return FIXTURES / name


PCAP = fixture("nflog/nflog.pcap").read_bytes()
IFMAP = nflog_pcap.load_ifmap(str(fixture("nflog/links.json")))
# run-specific values: the kernel-log capture is the same traffic sent once more
PER_RUN = {"ID", "SEQ", "SPT", "OPT", "FLOWLBL"}


def read(data: bytes, **kw):
    return list(nflog_pcap.read_events(io.BytesIO(data), name="cap.pcap", **kw))


def test_first_event_fields():
    ev = read(PCAP, ifmap=IFMAP)
    assert len(ev) == 26
    e = ev[0]
    assert (e.table, e.chain, e.kind, e.num) == ("raw", "PREROUTING", StepKind.POLICY, 4)
    assert e.family == "ipv4" and e.source == "nflog-pcap"
    assert e.origin.path == "cap.pcap" and e.origin.line == 1
    assert e.ts == pytest.approx(1795405156.429209)  # NFULA_TIMESTAMP, as tshark shows it
    f = e.fields
    assert f["IN"] == "rth6s0" and f["OUT"] == ""
    assert f["MAC"] == "2e:dd:78:fa:7d:f6:ea:9b:2b:29:21:51:08:00"
    assert (f["SRC"], f["DST"], f["PROTO"], f["DPT"], f["TCPFLAGS"]) == ("10.206.6.1", "10.206.6.2", "TCP", "8080", "SYN")
    assert (f["ID"], f["SEQ"], f["LEN"], f["IPFLAGS"]) == ("19308", "2238636029", "60", "DF")


def test_without_ifmap_indexes_stay():
    assert read(PCAP)[0].fields["IN"] == "if2"


def test_mark_icmp_output_and_ipv6():
    ev = read(PCAP, ifmap=IFMAP)
    assert ev[2].tag == "mangle:PREROUTING:policy:2" and ev[2].fields["MARK"] == "0x10"
    out = ev[20]
    assert out.tag == "raw:OUTPUT:policy:2"
    assert (out.fields["IN"], out.fields["OUT"], out.fields["TYPE"], out.fields["ICMPID"]) == ("", "rth6s0", "0", "16962")
    assert "MAC" not in out.fields
    v6 = ev[-1]
    assert v6.family == "ipv6" and v6.tag == "filter:INPUT:rule:1"
    assert v6.fields["SRC"] == "fd06:0006:0000:0000:0000:0000:0000:0001"  # as nf_log's %pI6
    assert (v6.fields["LEN"], v6.fields["ULEN"], v6.fields["HOPLIMIT"]) == ("53", "13", "64")


def test_same_steps_and_fields_as_kernel_log():
    """The kernel-log capture of the same traffic: same tags; same fields but the per-run ones."""
    kl = list(kernel_log.read_events(io.BytesIO(fixture("nflog/kernel.log").read_bytes()), name="k"))
    ev = read(PCAP, ifmap=IFMAP)
    assert [e.tag for e in ev] == [e.tag for e in kl]
    for a, b in zip(ev, kl):
        fa = {k: v for k, v in a.fields.items() if k not in PER_RUN}
        fb = {k: v for k, v in b.fields.items() if k not in PER_RUN}
        assert fa == fb, a.tag


@pytest.mark.parametrize("variant", ["nflog.pcapng", "nflog-be.pcap"])
def test_variants_read_the_same(variant):
    base = read(PCAP)
    other = read(fixture(f"nflog/{variant}").read_bytes())
    assert [(e.tag, e.fields, e.ts) for e in other] == [(e.tag, e.fields, e.ts) for e in base]


def test_truncated_file_keeps_events_then_names_record():
    cut = PCAP[:-30]
    got = []
    with pytest.raises(RuletraceError) as ei:
        for e in nflog_pcap.read_events(io.BytesIO(cut), name="cut.pcap"):
            got.append(e)
    assert len(got) == 25
    assert ei.value.origin.line == 26 and "truncated" in str(ei.value)
    assert str(ei.value).startswith("cut.pcap:26: ")


def test_wrong_link_type():
    eth = PCAP[:20] + struct.pack("<I", 1) + PCAP[24:]
    with pytest.raises(RuletraceError, match=r"link type 1, not NFLOG \(239\)"):
        read(eth)


def test_bad_magic():
    with pytest.raises(RuletraceError, match="not a pcap"):
        read(b"GARBAGE!" + PCAP[8:])


def test_bad_tlv_skips_record_and_counts():
    # record 1 starts at 24 + 16; its first TLV length (LE u16 after the 4-byte nflog header) -> 2
    b = bytearray(PCAP)
    struct.pack_into("<H", b, 24 + 16 + 4, 2)
    st = ReadStats()
    ev = read(bytes(b), stats=st)
    assert len(ev) == 25 and st.skipped == 1 and st.skipped_lines == [1]
    with pytest.raises(RuletraceError) as ei:
        read(bytes(b))
    assert ei.value.origin.line == 1 and "TLV length 2" in ei.value.message


def test_tlv_walk_literal_bytes():
    # nflog hdr: AF_INET, v0, group 0; PREFIX TLV (len 12 = 4 + "TRACE: x" NUL-less 8)
    body = bytes.fromhex("02000000") + struct.pack("<HH", 12, 10) + b"abcdefgh"
    tlvs = nflog.decode_record(body, "<", None)
    assert tlvs[10] == b"abcdefgh" and tlvs[0] == b"\x02"


def test_ifmap_text_forms(tmp_path):
    p = tmp_path / "map"
    p.write_text("2 eth0\n3=veth1@if4\n# comment\n")
    assert nflog_pcap.load_ifmap(str(p)) == {2: "eth0", 3: "veth1"}
    p.write_text("eth0 2\n")
    with pytest.raises(RuletraceError) as ei:
        nflog_pcap.load_ifmap(str(p))
    assert ei.value.origin.line == 1
