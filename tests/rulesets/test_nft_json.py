"""nft -j list ruleset reader: real nft 1.0.6 listings (tests/fixtures/nft_json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin
from ruletrace.rulesets import nft_json

FIXTURES = Path(__file__).parents[1] / "fixtures" / "nft_json"


def parse(name: str, **kw):
    return nft_json.parse_family((FIXTURES / name).read_text(), origin=Origin(name), **kw)


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
    assert rs.family == "inet" and chains["input"].hook == "input" and chains["input"].priority == 5


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
    rss = nft_json.parse((FIXTURES / "iptables-nft.json").read_text(), origin=Origin("x"))
    assert [rs.family for rs in rss] == ["ipv4", "ipv6"]  # ip and ip6 tables of the same names
    rs, rs6 = rss
    assert rs.chain("filter", "FORWARD").policy == "DROP"
    assert [r.handle for r in rs.chain("filter", "INPUT").rules] == [5, 6, 7]
    assert rs.rule("mangle", "PREROUTING", 1).target == "MARK"  # xt target, no arguments in JSON
    assert rs6.family == "ipv6" and len(rs6.chain("filter", "INPUT").rules) == 1
    one = parse("iptables-nft.json")
    assert one.family == "ipv4" and "ipv6 (" in one.warnings[-1]
    assert parse("iptables-nft.json", family="ip6").chain("filter", "INPUT").rules[0].handle is not None


def test_xt_placeholders_resolved_from_the_save_listing():
    from ruletrace.rulesets import iptables_save

    save = iptables_save.parse((FIXTURES / "iptables-nft.save").read_text(), origin=Origin("s"))
    text = (FIXTURES / "iptables-nft.json").read_text()
    bare = nft_json.parse(text, origin=Origin("j"))[0]
    assert bare.rule("mangle", "PREROUTING", 1).text.endswith('xt target "MARK"')
    assert "xt placeholders" in bare.warnings[0] and "iptables-save" in bare.warnings[0]
    rs = nft_json.parse(text, origin=Origin("j"), save=save)[0]
    r = rs.rule("mangle", "PREROUTING", 1)
    assert r.text == "-A PREROUTING -p tcp -m tcp --dport 8080 -j MARK --set-xmark 0x10/0xffffffff"
    assert r.target == "MARK" and r.handle == bare.rule("mangle", "PREROUTING", 1).handle
    assert "resolved from the save" in rs.warnings[0]


def test_named_objects_do_not_crash():
    """A named counter / quota / limit object (the issue: a traceback) is kept as an object."""
    text = json.dumps({"nftables": [
        {"table": {"family": "ip", "name": "t", "handle": 1}},
        {"counter": {"family": "ip", "name": "c1", "table": "t", "handle": 2, "packets": 3, "bytes": 180}},
        {"quota": {"family": "ip", "name": "q", "table": "t", "handle": 3, "bytes": 100, "used": 0}},
        {"limit": {"family": "ip", "name": "l", "table": "t", "handle": 4, "rate": 10, "per": "minute"}},
        {"chain": {"family": "ip", "table": "t", "name": "c", "handle": 5}},
        {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": 6,
                  "expr": [{"counter": "c1"}, {"quota": "q"}, {"limit": "l"}, {"accept": None}]}},
    ]})
    rs, = nft_json.parse(text, origin=Origin("o.json"))
    assert set(rs.objects) == {("t", "counter", "c1"), ("t", "quota", "q"), ("t", "limit", "l")}
    r = rs.rule("t", "c", 1)
    assert r.text == 'counter name "c1" quota name "q" limit name "l" accept' and r.target == "ACCEPT"
    assert r.counters is None


def test_unknown_expression_kept_as_json():
    text = '{"nftables": [{"chain": {"family": "ip", "table": "t", "name": "c"}}, {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": 2, "expr": [{"weird": {"x": 1}}]}}]}'
    rs, = nft_json.parse(text, origin=Origin("x"))
    assert rs.rule("t", "c", 1).text == '[{"weird":{"x":1}}]'


@pytest.mark.parametrize("text", ["not json", '{"x": 1}', '{"nftables": [{"rule": {"expr": []}}]}'])
def test_bad_input(text):
    with pytest.raises(RuletraceError) as ei:
        nft_json.parse(text, origin=Origin("bad.json"))
    assert str(ei.value).startswith("bad.json: ")
