"""`nft list ruleset` text reader: the native fixtures (tests/fixtures/nft_native), errors, fragments."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin, nft_rule_key
from ruletrace.pipeline import load_rulesets as load_files
from ruletrace.rulesets import load_ruleset, load_rulesets, nft_text

NATIVE = Path(__file__).parents[1] / "fixtures" / "nft_native"
NFT_JSON = Path(__file__).parents[1] / "fixtures" / "nft_json"


def fam(name: str, family: str):
    return next(rs for rs in load_rulesets(str(NATIVE / name)) if rs.family == family)


def test_zone_layout():
    rs = fam("zones.nft", "inet")
    assert rs.format == "nft-text"
    zones = rs.tables["zonefw"]
    c = zones["in_main"]
    assert (c.type, c.hook, c.priority, c.policy) == ("filter", "input", 10, "ACCEPT")
    assert zones["pre_raw"].priority == -290  # raw + 10
    assert zones["in_zones"].hook is None and zones["in_zones"].policy is None
    r = rs.rule("zonefw", "in_zones", 1)
    assert r.target is None and r.vmap == '{ "eth1" : goto zone_trusted, "eth0" : goto zone_public }'
    assert (rs.rule("zonefw", "in_zones", 2).target, rs.rule("zonefw", "in_zones", 2).goto) == ("zone_public", True)
    assert rs.rule("zonefw", "in_main", 6).text == "reject with icmpx admin-prohibited"
    assert rs.rule("zonefw", "in_main", 6).target == "REJECT"
    assert rs.rule("zonefw", "zone_public_allow", 3).text.endswith('accept comment "mdns"')


def test_router_layout():
    rs = fam("router.nft", "inet")
    t = rs.tables["rtr"]
    assert (t["input"].policy, t["dstnat"].priority, t["srcnat"].priority, t["mangle_forward"].priority) == \
        ("DROP", -100, 100, -150)
    assert rs.rule("rtr", "input", 2).vmap == "{ invalid : drop, established : accept, related : accept }"
    assert rs.rule("rtr", "dstnat_wan", 1).target == "DNAT"
    assert rs.rule("rtr", "srcnat_wan", 1).target == "MASQUERADE"
    assert rs.rule("rtr", "syn_flood", 1).target == "RETURN"
    s = rs.sets[("rtr", "lan_hosts")]
    assert (s.kind, s.key, s.interval, s.elements) == ("set", "ipv4_addr", True,
                                                        ["192.168.1.0/24", "10.10.0.0-10.10.0.255"])


def test_kube_proxy_layout():
    rs = fam("kubeproxy.nft", "ipv4")
    t = rs.tables["kp"]
    assert t["filter-prerouting"].priority == -110  # dstnat - 10
    assert t["reject-chain"].comment == "helper for @no-endpoint-services / @no-endpoint-nodeports"
    svc = rs.sets[("kp", "service-ips")]
    assert (svc.kind, svc.key, svc.data, svc.concat) == ("vmap", "ipv4_addr . inet_proto . inet_service",
                                                         "verdict", True)
    assert svc.elements[1] == "10.96.0.10 . udp . 53 : goto service-BBBB-kube-system/kube-dns/udp/dns"
    assert rs.sets[("kp", "no-endpoint-services")].elements == [
        '10.96.9.9 . tcp . 80 comment "ns1/svc-empty:http" : goto reject-chain']
    assert rs.rule("kp", "services", 1).vmap == "@service-ips"
    lb = rs.rule("kp", "service-BBBB-kube-system/kube-dns/udp/dns", 2)
    assert lb.text.startswith("numgen random mod 2 vmap {") and lb.target is None and lb.vmap.count("goto") == 2
    assert rs.rule("kp", "endpoint-B1-kube-system/kube-dns/udp/dns__10.244.0.3/53", 2).target == "DNAT"
    assert rs.rule("kp", "masquerading", 2).target is None  # meta mark set …
    assert rs.rule("kp", "mark-for-masquerade", 1).text == "meta mark set meta mark | 0x00004000"


def test_layered_families_priorities_and_objects():
    rss = load_rulesets(str(NATIVE / "layered.nft"))
    assert [rs.family for rs in rss] == ["netdev", "bridge", "ipv4", "inet", "ipv6", "arp"]
    by = {rs.family: rs for rs in rss}
    ing = by["netdev"].chain("edge", "ingress_lo")
    assert (ing.hook, ing.devices, ing.priority) == ("ingress", ("lo",), -500)
    assert by["bridge"].chain("br", "forwarding").priority == -200  # bridge filter
    assert by["bridge"].chain("br", "pre").priority == -300  # bridge dstnat
    v4 = by["ipv4"]
    assert set(v4.tables) == {"early", "late", "same"}  # "same" is also an inet and an ip6 table
    assert v4.chain("early", "in").priority == -155 and v4.chain("same", "in").priority == 50
    assert v4.chain("late", "out").type == "route" and v4.chain("late", "post").priority == 105
    # registration order: listing order over every family and table
    regs = [c.reg for rs in rss for t in rs.tables.values() for c in t.values()]
    assert sorted(regs) == list(range(1, len(regs) + 1))
    assert v4.chain("late", "in").reg < v4.chain("late", "in2").reg
    assert {k[1:] for k in v4.objects} == {("counter", "cnt_http"), ("quota", "q_big"), ("limit", "lim_ssh"),
                                              ("ct helper", "ftp-std"), ("ct timeout", "short-udp")}
    assert v4.objects[("late", "ct timeout", "short-udp")] == \
        "protocol udp; l3proto ip; policy = { unreplied : 10, replied : 30 }"
    b = v4.sets[("late", "blocked")]
    assert (b.flags, b.timeout, len(b.elements)) == (("interval", "timeout"), "1h", 2)
    assert v4.sets[("late", "markmap")].typeof and v4.sets[("late", "markmap")].key == "ct mark"
    assert v4.sets[("late", "portv")].kind == "vmap"
    assert v4.rule("late", "pre", 1).target == "DNAT"  # dnat to ip daddr map @dnatmap
    assert v4.rule("late", "pre", 2).target == "REDIRECT"
    assert v4.rule("late", "in", 2).counters is None  # counter name "cnt_http": a named counter


def test_flowtable():
    rs, = load_rulesets(str(NATIVE / "flowtable.nft"))
    assert rs.flowtables == {("fastlane", "fastpath"): "hook ingress priority filter + 1; devices = { eth0 }; counter"}
    assert rs.rule("fastlane", "forward", 1).text == "ip protocol { tcp, udp } flow add @fastpath"


def test_handles_and_counters_of_nft_a_listing():
    """The nft -a listing of tests/fixtures/nft_json: handles, counters, same rules as the JSON."""
    rs, = load_rulesets(str(NFT_JSON / "native.nft"))
    js, = load_rulesets(str(NFT_JSON / "native.json"))
    assert rs.handles.keys() == js.handles.keys()
    for k, r in rs.handles.items():
        assert r.num == js.handles[k].num and r.counters == js.handles[k].counters
        assert nft_rule_key(r.text) == nft_rule_key(js.handles[k].text)
    assert rs.chain("rth6", "input").handle == 4


def test_unknown_statements_are_kept():
    text = "table ip t {\n\tchain c {\n\t\tfrobnicate 7 with { a, b } zap\n\t\tsomething new\n\t}\n}\n"
    rs, = nft_text.parse(text, origin=Origin("u.nft"))
    assert [r.text for r in rs.chain("t", "c").rules] == ["frobnicate 7 with { a, b } zap", "something new"]
    assert rs.rule("t", "c", 2).origin == Origin("u.nft", 4)


def test_one_line_blocks_and_multiline_elements():
    text = ('table inet x { chain c { type filter hook input priority filter - 10; policy drop; tcp dport 22 accept; } '
            'set s { type ipv4_addr; elements = {\n 10.0.0.1,\n 10.0.0.2\n }\n }\n}\n')
    rs, = nft_text.parse(text, origin=Origin("o"))
    c = rs.chain("x", "c")
    assert (c.priority, c.policy, [r.text for r in c.rules]) == (-10, "DROP", ["tcp dport 22 accept"])
    assert rs.sets[("x", "s")].elements == ["10.0.0.1", "10.0.0.2"]


def test_fragment_without_table_is_read_with_a_warning(tmp_path):
    p = tmp_path / "frag.nft"
    p.write_text("chain input {\n\ttype filter hook input priority 0; policy drop;\n\ttcp dport 22 accept\n}\n")
    rs, = load_rulesets(str(p))
    assert rs.chain("pasted", "input").policy == "DROP" and "no 'table' line" in rs.warnings[0]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("table ip t {\n\tchain c {\n\t\taccept\n", "4:1", "expected '}' closing chain c"),
        ("table ip t {\n\tchain c {\n\t\taccept\n\t}\n", "5:1", r"expected '}' closing table t \(opened at line 1\)"),
        ("table ip t {\n}\n}\n", "3:1", "unexpected '}'"),
        ("table ipx t {\n}\n", "1:7", "unknown family 'ipx'"),
        ("table ip t {\n\tbogus x {\n\t}\n}\n", "2:2", "expected chain, set, map, flowtable or an object"),
        ("table ip t {\n\tchain c {\n\t\ttype filter hook sideways priority 0;\n\t}\n}\n", "3:3", "expected a hook"),
        ("table ip t {\n\tchain c {\n\t\ttype filter hook input priority nonsense;\n\t}\n}\n", "2", "priority"),
        ('table ip t {\n\tchain c {\n\t\tlog prefix "open\n\t}\n}\n', "3:14", "unterminated string"),
        ("add rule ip t c accept\n", None, "not a ruleset"),
        ("table ip t {\n\tchain c {\n\t\tip saddr { { { 1 } } }\n", "4:1", "expected '}'"),
    ],
)
def test_syntax_errors_name_file_line_and_column(tmp_path, text, where, message):
    p = tmp_path / "bad.nft"
    p.write_text(text)
    with pytest.raises(RuletraceError, match=message) as ei:
        load_rulesets(str(p))
    s = str(ei.value)
    assert "\n" not in s
    assert s.startswith(f"{p}:{where}:" if where else f"{p}: "), s


def test_statement_not_a_table(tmp_path):
    with pytest.raises(RuletraceError, match=r"expected 'table FAMILY NAME \{', found 'chainx'"):
        nft_text.parse("table ip t {\n}\nchainx y\n", origin=Origin("f.nft"))


def test_limits():
    with pytest.raises(RuletraceError, match="nested deeper"):
        nft_text.parse("table ip t {\n chain c {\n" + "{ " * 70 + "\n", origin=Origin("d"))
    with pytest.raises(RuletraceError, match="line longer"):
        nft_text.parse("table ip t {\n chain c {\n accept " + "x" * (nft_text.MAX_LINE + 1) + "\n }\n}\n",
                       origin=Origin("l"))


def test_load_ruleset_refuses_several_families_and_pipeline_flattens():
    with pytest.raises(RuletraceError, match=r"6 families .*load_rulesets"):
        load_ruleset(str(NATIVE / "layered.nft"))
    assert load_ruleset(str(NATIVE / "docker.nft")).family == "ipv4"
    got = load_files([str(NATIVE / "layered.nft"), str(NATIVE / "zones.nft")])
    assert [rs.family for rs in got] == ["netdev", "bridge", "ipv4", "inet", "ipv6", "arp", "inet"]
