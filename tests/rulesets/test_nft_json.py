"""nft -j list ruleset reader: real nft 1.0.6 listings (tests/fixtures/nft_json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin
from ruletrace.rulesets import nft_json

FIXTURES = Path(__file__).parents[1] / "fixtures" / "nft_json"


def parse(name: str, **kw):
    return nft_json.parse((FIXTURES / name).read_text(), origin=Origin(name), **kw)


def test_native_inet_table():
    rs = parse("native.json")
    assert rs.format == "nft-json" and list(rs.tables) == ["rth6"]
    chains = rs.tables["rth6"]
    assert [c for c in chains] == ["pre", "web", "udpchk", "input"]
    assert chains["input"].policy == "ACCEPT" and chains["web"].policy is None
    r = rs.rule("rth6", "input", 3)
    assert (r.handle, r.target, r.goto, r.text) == (14, "web", False, "ip protocol tcp jump web")
    assert rs.handles[("rth6", "udpchk", 11)].num == 2
    assert rs.rule("rth6", "input", 5).counters == (2, 86)
    assert rs.rule("rth6", "pre", 1).text == "ip saddr 10.206.6.1 meta l4proto { icmp, tcp, udp } meta nftrace set 1"


def test_handles_match_nft_a_listing():
    """Every '# handle N' of `nft -a list ruleset` sits at the position the reader numbered."""
    rs = parse("native.json")
    chain = None
    pos = 0
    for line in (FIXTURES / "native.nft").read_text().splitlines():
        s = line.strip()
        if s.startswith("chain "):
            chain, pos = s.split()[1], 0
        elif "# handle" in s and chain and not s.startswith(("table", "type")):
            pos += 1
            h = int(s.rsplit("# handle ", 1)[1])
            assert rs.handles[("rth6", chain, h)].num == pos


def test_iptables_nft_families():
    rs = parse("iptables-nft.json")
    assert rs.family == "ipv4" and rs.warnings and "ip6 filter" in rs.warnings[0]
    assert rs.chain("filter", "FORWARD").policy == "DROP"
    assert [r.handle for r in rs.chain("filter", "INPUT").rules] == [5, 6, 7]
    assert rs.rule("mangle", "PREROUTING", 1).target == "MARK"  # xt target, no arguments in JSON
    rs6 = parse("iptables-nft.json", family="ip6")
    assert rs6.family == "ipv6" and not rs6.warnings and len(rs6.chain("filter", "INPUT").rules) == 1


def test_unknown_expression_kept_as_json():
    text = '{"nftables": [{"chain": {"family": "ip", "table": "t", "name": "c"}}, {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": 2, "expr": [{"weird": {"x": 1}}]}}]}'
    rs = nft_json.parse(text, origin=Origin("x"))
    assert rs.rule("t", "c", 1).text == '[{"weird":{"x":1}}]'


@pytest.mark.parametrize("text", ["not json", '{"x": 1}', '{"nftables": [{"rule": {"expr": []}}]}'])
def test_bad_input(text):
    with pytest.raises(RuletraceError) as ei:
        nft_json.parse(text, origin=Origin("bad.json"))
    assert str(ei.value).startswith("bad.json: ")
