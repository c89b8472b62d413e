"""Format detection from content, and the time-ordered merge of several inputs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.sources.stats import ReadStats

FIXTURES = Path(__file__).parents[1] / "fixtures"


def data(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def kernel_tags() -> list[str]:
    """Steps of the same traffic through the same rules (legacy iptables), from the kernel log."""
    from ruletrace.sources import kernel_log

    return [e.tag for e in kernel_log.read_events(io.BytesIO(data("nflog/kernel.log")), name="k")]


from ruletrace.sources import detect

CASES = {
    "nflog/nflog.pcap": "nflog-pcap",
    "nflog/nflog.pcapng": "nflog-pcap",
    "nflog/nflog-be.pcap": "nflog-pcap",
    "nflog/kernel.log": "kernel-log",
    "ulogd/ulogd.json": "ulogd-json",
    "ulogd/ulogd.logemu": "kernel-log",
    "wireshark/gui-export.csv": "wireshark-csv",
    "wireshark/tshark-fields.csv": "wireshark-csv",
    "xtables_monitor/xtables-monitor.txt": "xtables-monitor",
    "nft_monitor/native.txt": "nft-monitor",
    "nft_monitor/iptables-nft-a.txt": "nft-monitor",
}


@pytest.mark.parametrize("name,fmt", CASES.items(), ids=list(CASES))
def test_detect_by_content(name, fmt):
    assert detect.detect(data(name)[:8192], "whatever.txt") == fmt


def test_journal_json_is_kernel_log():
    line = b'{"__REALTIME_TIMESTAMP":"1700000000000000","MESSAGE":"TRACE: raw:PREROUTING:policy:2 IN=eth0 OUT= SRC=1.2.3.4 DST=5.6.7.8 LEN=60 PROTO=TCP SPT=1 DPT=2"}\n'
    assert detect.detect(line, "j") == "kernel-log"


def test_unknown_content():
    with pytest.raises(RuletraceError, match="not a trace format"):
        detect.detect(b"hello world\n", "x.txt")


def test_read_any_merges_in_time_order_and_reports_formats(tmp_path):
    seen = []
    paths = [str(FIXTURES / "ulogd/ulogd.json"), str(FIXTURES / "nflog/nflog.pcap")]
    ev = list(detect.read_any(paths, on_format=lambda p, f: seen.append(f)))
    assert seen == ["ulogd-json", "nflog-pcap"]
    assert len(ev) == 52
    # the pcap was captured ~12 s before the ulogd run: its events come first despite the order
    assert [e.source for e in ev[:26]] == ["nflog-pcap"] * 26
    ts = [e.ts for e in ev]
    assert ts == sorted(ts)


def test_read_any_forced_format_and_stats():
    made = {}

    def stats(path, fmt):
        made[fmt] = ReadStats()
        return made[fmt]

    ev = list(detect.read_any([str(FIXTURES / "ulogd/ulogd.logemu")], "ulogd-logemu", stats=stats))
    assert len(ev) == 26 and made["kernel-log"].events == 26


def test_read_any_passes_ifmap_only_where_taken():
    paths = [str(FIXTURES / "nflog/nflog.pcap"), str(FIXTURES / "nflog/kernel.log")]
    ev = list(detect.read_any(paths, ifmap={2: "eth7"}))
    assert {e.fields["IN"] for e in ev if e.source == "nflog-pcap" and e.fields["IN"]} == {"eth7"}
