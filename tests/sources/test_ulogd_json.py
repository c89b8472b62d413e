"""ulogd2 JSON and LOGEMU readers: real ulogd 2.0.8 output (tests/fixtures/ulogd)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin, StepKind
from ruletrace.sources.stats import ReadStats

FIXTURES = Path(__file__).parents[1] / "fixtures"


def data(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def kernel_tags() -> list[str]:
    """Steps of the same traffic through the same rules (legacy iptables), from the kernel log."""
    from ruletrace.sources import kernel_log

    return [e.tag for e in kernel_log.read_events(io.BytesIO(data("nflog/kernel.log")), name="k")]


from ruletrace.sources import ulogd_json


def read(raw: bytes, **kw):
    return list(ulogd_json.read_events(io.BytesIO(raw), name="u.json", **kw))


def test_same_steps_as_kernel_log():
    assert [e.tag for e in read(data("ulogd/ulogd.json"))] == kernel_tags()


def test_fields_of_first_and_output_and_ipv6_records():
    ev = read(data("ulogd/ulogd.json"))
    e = ev[0]
    assert (e.table, e.chain, e.kind, e.num, e.family) == ("raw", "PREROUTING", StepKind.POLICY, 4, "ipv4")
    assert e.ts == pytest.approx(1795405168.951194) and e.origin == Origin("u.json", 1)
    f = e.fields
    assert (f["IN"], f["OUT"], f["SRC"], f["DST"], f["PROTO"], f["SPT"], f["DPT"]) == (
        "rth6s0", "", "10.206.6.1", "10.206.6.2", "TCP", "45442", "8080")
    assert (f["ID"], f["SEQ"], f["TCPFLAGS"], f["IPFLAGS"], f["LEN"], f["TTL"]) == (
        "29705", "439748895", "SYN", "DF", "60", "64")
    assert f["MAC"] == "42:7e:c9:30:42:98:22:86:90:8c:9c:19:08:00" and f["MACPROTO"] == "0800"
    assert ev[2].fields["MARK"] == "0x10" and "MARK" not in ev[0].fields
    out = ev[20]
    assert (out.fields["IN"], out.fields["OUT"], out.fields["TYPE"], out.fields["ICMPSEQ"]) == ("", "rth6s0", "0", "1")
    v6 = ev[-1]
    assert v6.family == "ipv6" and (v6.fields["LEN"], v6.fields["ULEN"], v6.fields["FLOWLBL"]) == ("53", "13", "237857")


def test_ident_groups_one_packet():
    ev = read(data("ulogd/ulogd.json"))
    assert len({e.ident for e in ev[:6]}) == 1 and ev[6].ident != ev[0].ident


def test_missing_prefix_key_and_garbage_lines():
    lines = data("ulogd/ulogd.json").splitlines(keepends=True)
    obj = json.loads(lines[1])
    del obj["oob.prefix"]
    lines[1] = json.dumps(obj).encode() + b"\n"
    lines.insert(4, b"ulogd: interleaved garbage\n")
    raw = b"".join(lines)
    st = ReadStats()
    ev = read(raw, stats=st)
    assert len(ev) == 25 and st.skipped == 2 and st.skipped_lines == [2, 5]
    got = []
    with pytest.raises(RuletraceError) as ei:
        for e in ulogd_json.read_events(io.BytesIO(raw), name="u.json"):
            got.append(e)
    assert len(got) == 25 and ei.value.origin == Origin("u.json", 2)
    assert "oob.prefix" in ei.value.message and "1 more" in ei.value.message


def test_ifindex_only_records_use_ifmap():
    line = json.loads(data("ulogd/ulogd.json").splitlines()[0])
    del line["oob.in"]
    ev = read(json.dumps(line).encode(), ifmap={2: "eth9"})
    assert ev[0].fields["IN"] == "eth9"


def test_logemu_via_kernel_log_reader():
    ev = list(ulogd_json.read_logemu(io.BytesIO(data("ulogd/ulogd.logemu")), name="l"))
    assert [e.tag for e in ev] == kernel_tags()
    assert ev[0].source == "ulogd-logemu" and ev[0].fields["SRC"] == "10.206.6.1"
