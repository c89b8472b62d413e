"""xtables-monitor --trace reader: real iptables-nft capture (tests/fixtures/xtables_monitor)."""

from __future__ import annotations

import io
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


from ruletrace.rulesets import nft_json
from ruletrace.sources import xtables_monitor
from ruletrace.sources.handles import resolve_handles


def read(raw: bytes, **kw):
    return list(xtables_monitor.read_events(io.BytesIO(raw), name="xtm.txt", **kw))


def ruleset(family: str | None = None):
    text = data("xtables_monitor/ruleset.json").decode()
    return nft_json.parse_family(text, origin=Origin("ruleset.json"), family=family)


def test_events_carry_trace_id_handle_verdict_and_packet():
    ev = read(data("xtables_monitor/xtables-monitor.txt"))
    e = ev[4]
    assert (e.table, e.chain, e.kind, e.num) == ("filter", "INPUT", StepKind.RULE, None)
    assert (e.handle, e.verdict, e.packet_id, e.family) == (6, "jump:WEB", "fcf1f971", "ipv4")
    assert e.source == "xtables-monitor" and e.origin.line == 10
    assert e.fields["MARK"] == "0x10" and e.fields["DPT"] == "8080" and e.fields["TCPFLAGS"] == "SYN"
    assert ev[0].fields["MACDST"] == "f6:05:0a:a2:d7:08"  # the tool prints "8" for "08"; padded
    assert ev[0].tag == "raw:PREROUTING:policy:?" and ev[0].verdict == "accept"


def test_trace_rule_dropped_unless_asked():
    kept = read(data("xtables_monitor/xtables-monitor.txt"), keep_trace_rule=True)
    assert kept[0].handle == 3 and kept[0].verdict == "continue"
    assert len(kept) == len(read(data("xtables_monitor/xtables-monitor.txt"))) + 5


def test_implied_return_added():
    ev = read(data("xtables_monitor/xtables-monitor.txt"))
    pkt = [e for e in ev if e.packet_id == "691ab135"]
    assert [e.tag for e in pkt][-3:] == ["filter:INPUT:rule:?", "filter:WEB:return:?", "filter:INPUT:policy:?"]


def test_same_steps_as_kernel_log_after_resolving_handles():
    ev = read(data("xtables_monitor/xtables-monitor.txt"))
    v4 = list(resolve_handles([e for e in ev if e.family == "ipv4"], ruleset()))
    assert [e.tag for e in v4] == kernel_tags()[:24]
    # xtables-monitor 1.8.9 died on the ip6 rule ("Parsing nftables rule failed"): one step left
    v6 = list(resolve_handles([e for e in ev if e.family == "ipv6"], ruleset("ip6")))
    assert [e.tag for e in v6] == ["raw:PREROUTING:rule:1"]


def test_resolve_by_text_against_iptables_save():
    from ruletrace.rulesets import iptables_save

    rs = iptables_save.parse(data("xtables_monitor/ipt_nft.save").decode(), origin=Origin("s"))
    ev = list(resolve_handles(read(data("xtables_monitor/xtables-monitor.txt")), rs))
    web = [e for e in ev if e.tag.startswith("filter:WEB:rule")]
    assert web[0].tag == "filter:WEB:rule:2"


def test_garbage_lines_counted_and_raised_with_line():
    raw = data("xtables_monitor/xtables-monitor.txt").splitlines(keepends=True)
    raw.insert(3, b"some garbage\n")
    st = ReadStats()
    assert len(read(b"".join(raw), stats=st)) == 25 and st.skipped_lines == [4]
    got = []
    with pytest.raises(RuletraceError) as ei:
        for e in xtables_monitor.read_events(io.BytesIO(b"".join(raw)), name="xtm.txt"):
            got.append(e)
    assert len(got) == 25 and ei.value.origin == Origin("xtm.txt", 4)
