"""Wireshark / tshark CSV reader: tshark 4.0.17 exports of the lab capture (tests/fixtures/wireshark)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin
from ruletrace.sources.stats import ReadStats

FIXTURES = Path(__file__).parents[1] / "fixtures"


def data(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def kernel_tags() -> list[str]:
    """Steps of the same traffic through the same rules (legacy iptables), from the kernel log."""
    from ruletrace.sources import kernel_log

    return [e.tag for e in kernel_log.read_events(io.BytesIO(data("nflog/kernel.log")), name="k")]


from ruletrace.sources import wireshark_csv


def read(raw: bytes, **kw):
    return list(wireshark_csv.read_events(io.BytesIO(raw), name="w.csv", **kw))


@pytest.mark.parametrize("name", ["gui-export.csv", "tshark-fields.csv"])
def test_same_steps_as_kernel_log(name):
    assert [e.tag for e in read(data(f"wireshark/{name}"))] == kernel_tags()


def test_fields_from_columns_and_info():
    ev = read(data("wireshark/gui-export.csv"), ifmap={2: "rth6s0"})
    f = ev[0].fields
    assert (f["IN"], f["SRC"], f["DST"], f["PROTO"], f["SPT"], f["DPT"]) == (
        "rth6s0", "10.206.6.1", "10.206.6.2", "TCP", "39548", "8080")
    assert (f["ID"], f["SEQ"], f["TCPFLAGS"]) == ("19308", "2238636029", "SYN")  # ip.id 0x4b6c
    assert ev[0].origin == Origin("w.csv", 2) and ev[0].ts == 0.0
    reply = ev[20]
    assert (reply.fields["OUT"], reply.fields["TYPE"], reply.fields["ICMPID"]) == ("rth6s0", "0", "16962")


def test_column_order_and_extra_columns_tolerated():
    rows = list(csv.reader(io.StringIO(data("wireshark/gui-export.csv").decode())))
    order = list(reversed(range(len(rows[0]))))
    out = io.StringIO()
    w = csv.writer(out)
    for r in rows:
        w.writerow([r[i] for i in order] + ["extra"])
    ev = read(out.getvalue().encode())
    assert [e.tag for e in ev] == kernel_tags()
    assert ev[0].fields["SEQ"] == "2238636029"


def test_missing_prefix_column_says_so():
    with pytest.raises(RuletraceError) as ei:
        read(data("wireshark/no-prefix.csv"))
    assert ei.value.origin == Origin("w.csv", 1) and "no NFLOG prefix column" in ei.value.message


def test_short_row_counted_and_raised():
    lines = data("wireshark/gui-export.csv").splitlines(keepends=True)
    lines.insert(3, b'"7","0.1"\n')
    st = ReadStats()
    assert len(read(b"".join(lines), stats=st)) == 26 and st.skipped_lines == [4]
    with pytest.raises(RuletraceError) as ei:
        read(b"".join(lines))
    assert ei.value.origin.line == 4
