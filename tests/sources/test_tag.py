"""Issue 11: one TRACE tag grammar for every reader, one identity rule for both kernel-log readers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ruletrace.correlate.group import group_packets
from ruletrace.fastpath.kernel_log_paths import read_paths
from ruletrace.model import StepKind
from ruletrace.sources import kernel_log, nflog_pcap, tag, ulogd_json, wireshark_csv

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize("text,want,cut", [
    (b"filter:INPUT:rule:3", ("filter", "INPUT", StepKind.RULE, 3), 19),
    (b"filter:KUBE:FW:rule:3", ("filter", "KUBE:FW", StepKind.RULE, 3), 21),
    (b"nat:a:b:c:return:12", ("nat", "a:b:c", StepKind.RETURN, 12), 19),
    (b"raw:PREROUTING:policy:2IN=eth0", ("raw", "PREROUTING", StepKind.POLICY, 2), 23),
    (b"filter:KUBE:FW:policy:2IN=eth0", ("filter", "KUBE:FW", StepKind.POLICY, 2), 23),
])
def test_grammar(text, want, cut):
    assert tag.parse(text) == (want, cut)


@pytest.mark.parametrize("text", [b"filter::rule:3", b"Filter:INPUT:rule:3", b"filter:INPUT:jump:3",
                                  b"filter:INPUT:rule:", b"filter:INPUT:rule:12345678901", b":INPUT:rule:1"])
def test_not_a_tag(text):
    assert tag.parse(text) == (None, 0)


def test_prefix_of_the_nflog_readers():
    assert tag.from_prefix(b"TRACE: filter:KUBE:FW:rule:1 ") == ("filter", "KUBE:FW", StepKind.RULE, 1)
    assert tag.from_prefix(b"TRACE: filter:INPUT:rule:1x ") is None
    assert tag.from_prefix(b"DROP: ") is None


# -- a chain named with a colon keeps its steps in every reader (it was dropped uncounted) -------

def _steps(evs) -> list:
    return [(e.table, e.chain, e.kind, e.num) for e in evs]


def _kernel_tags(raw: bytes) -> list:
    return _steps(kernel_log.read_events(io.BytesIO(raw), name="k"))


WANT = _kernel_tags((FIXTURES / "nflog" / "kernel.log").read_bytes().replace(b":WEB:", b":W:B:"))


def test_colon_chain_in_the_kernel_log():
    assert sum(t[1] == "W:B" for t in WANT) == 2 and not any(t[1] == "WEB" for t in WANT)


@pytest.mark.parametrize("read,path", [
    (nflog_pcap.read_events, "nflog/nflog.pcap"),
    (nflog_pcap.read_events, "nflog/nflog-be.pcap"),
    (ulogd_json.read_events, "ulogd/ulogd.json"),
])
def test_colon_chain_in_nflog_readers(read, path):
    raw = (FIXTURES / path).read_bytes()
    assert raw.count(b":WEB:") == 2
    evs = list(read(io.BytesIO(raw.replace(b":WEB:", b":W:B:")), name="x"))  # same length: TLVs hold
    assert _steps(evs) == WANT


@pytest.mark.parametrize("path", ["wireshark/gui-export.csv", "wireshark/tshark-fields.csv"])
def test_colon_chain_in_wireshark_csv(path):
    raw = (FIXTURES / path).read_bytes()
    plain = _steps(wireshark_csv.read_events(io.BytesIO(raw), name="x"))
    got = _steps(wireshark_csv.read_events(io.BytesIO(raw.replace(b":WEB:", b":W:B:")), name="x"))
    assert got == [(t[0], "W:B", *t[2:]) if t[1] == "WEB" else t for t in plain]
    assert sum(t[1] == "W:B" for t in got) == 2


def test_live_nflog_uses_the_same_grammar():
    from ruletrace.live import nflog as live
    from ruletrace.sources import nflog

    # the live listener decodes records with the capture reader's decoder, which reads the tag here
    assert live.nflog is nflog
    assert nflog.parse_tag is tag.from_prefix


# -- two interleaved packets that differ only in LEN are two packets (one was made of both) ------

V4 = ("[{t}.0] TRACE: {tag} IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN={ln} TOS=0x00 PREC=0x00 "
      "TTL={ttl} ID=7 DF PROTO=TCP SPT=5000 DPT=80 SEQ=1 ACK=1 WINDOW=100 RES=0x00 ACK URGP=0 \n")
V6 = ("[{t}.0] TRACE: {tag} IN=eth0 OUT= SRC=2001:db8::1 DST=2001:db8::2 LEN={ln} TC=0 "
      "HOPLIMIT={ttl} FLOWLBL=5 PROTO=TCP SPT=5000 DPT=80 SEQ=1 ACK=1 WINDOW=100 RES=0x00 ACK URGP=0 \n")


def _len_pair(fmt: str) -> bytes:
    """Packet A (LEN=60) and B (LEN=80) interleaved: A raw, B raw, A mangle, B mangle (TTL as sent)."""
    out = []
    for k, tg in enumerate(("raw:PREROUTING:policy:2", "mangle:PREROUTING:policy:1")):
        for ln in (60, 80):
            out.append(fmt.format(t=k, tag=tg, ln=ln, ttl=64))
    return "".join(out).encode()


@pytest.mark.parametrize("fmt", [V4, V6], ids=["ipv4", "ipv6"])
def test_len_pair_is_two_packets_in_both_kernel_log_readers(fmt):
    raw = _len_pair(fmt)
    packets = list(group_packets(kernel_log.read_events(io.BytesIO(raw), name="k")))
    assert [[e.origin.line for e in p.events] for p in packets] == [[1, 3], [2, 4]]
    paths = []
    read_paths(io.BytesIO(raw), name="k", emit=lambda fam, steps, key, a, b: paths.append((a, b, len(steps))))
    assert sorted(paths) == [(1, 3, 2), (2, 4, 2)]
