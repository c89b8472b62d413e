"""Native nf_tables live tracing and both-backends merging, without a kernel (issue 13 items 5, 6).

The kernel side is tests/live/test_native_kernel.py; here: the session table's script from a
filter, the listing without sessions' tables, change summaries, which packets are a session's,
table owners, and the merge of legacy and nf_tables steps of one packet.
"""

from __future__ import annotations

import json

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.explain.explain import Explainer
from ruletrace.live import backend as be
from ruletrace.live import both
from ruletrace.live import nfthooks as eh
from ruletrace.live import nftnative as nn
from ruletrace.live import nftsnapshot as snap
from ruletrace.live.grouper import LiveGrouper
from ruletrace.live.session import TraceSpec
from ruletrace.model import Fate, MonitorEvent, Packet, RulesetView, StepKind, TraceEvent
from ruletrace.rulesets import load_ruleset, load_rulesets

SID = "0123456789abcdef" * 2


def spec(**kw) -> TraceSpec:
    s = TraceSpec(**kw)
    s.validate()
    return s


def test_table_script_scopes_and_caps():
    text = nn.table_script(spec(proto="tcp", dport="8000:8080", src="!10.1.0.0/16", iface="eth+", direction="in",
                                rate=7), SID)
    assert text.splitlines() == [
        f"table inet ruletrace_{SID} {{",
        "\tchain pre {",
        "\t\ttype filter hook prerouting priority -350; policy accept;",
        '\t\tmeta nfproto ipv4 meta l4proto tcp ip saddr != 10.1.0.0/16 tcp dport 8000-8080 iifname "eth*" '
        f'counter comment "ruletrace:{SID}:seen"',
        '\t\tmeta nfproto ipv4 meta l4proto tcp ip saddr != 10.1.0.0/16 tcp dport 8000-8080 iifname "eth*" '
        f'limit rate 7/second burst 7 packets counter meta nftrace set 1 comment "ruletrace:{SID}"',
        "\t}",
        "}",
    ]


def test_table_script_both_directions_icmp_both_families():
    text = nn.table_script(spec(proto="icmp", iface="wg0"), SID)
    assert "hook prerouting priority -350" in text and "hook output priority -350" in text
    assert text.count("meta l4proto { icmp, ipv6-icmp }") == 4
    assert 'iifname "wg0"' in text and 'oifname "wg0"' in text


@pytest.mark.parametrize("kw", [{"raw_match": ["-m", "mark", "--mark", "1"]}, {"proto": "tcp; flush ruleset"},
                                {"proto": "tcp", "dport": "80 accept"}, {"iface": 'eth0" accept #'}])
def test_filters_nft_cannot_take_safely_are_refused(kw):
    with pytest.raises(RuletraceError):
        nn.table_script(spec(all=True, **kw), SID)


LISTING = f"""table inet filter {{ # handle 1
	chain input {{ # handle 1
		type filter hook input priority filter; policy accept;
		tcp dport 8080 accept # handle 2
	}}
}}
table inet ruletrace_{SID} {{ # handle 7
	chain pre {{ # handle 1
		type filter hook prerouting priority -350; policy accept;
	}}
}}
table ip nat {{ # handle 9
}}
"""


def test_sessions_tables_left_out_of_the_listing():
    assert snap.own_tables_in(LISTING) == [f"ruletrace_{SID}"]
    text = snap.strip_own_tables(LISTING)
    assert "ruletrace_" not in text and "table inet filter" in text and "table ip nat" in text
    assert not nn.is_own_table("ruletrace_ssh") and not nn.is_own_table("ruletrace_" + "A" * 32)


def test_changes_per_chain_counters_aside():
    old = snap.parse_snapshot(snap.strip_own_tables(LISTING))
    assert snap.changes(old, snap.parse_snapshot(snap.strip_own_tables(LISTING))) == []
    new = snap.parse_snapshot(snap.strip_own_tables(LISTING).replace(
        "tcp dport 8080 accept # handle 2", "udp dport 53 accept # handle 3\n\t\ttcp dport 8080 accept # handle 2"))
    assert snap.changes(old, new) == ["inet filter:input +1 -0"]
    pol = snap.parse_snapshot(snap.strip_own_tables(LISTING).replace("policy accept", "policy drop"))
    assert snap.changes(old, pol) == ["inet filter:input +0 -0 (base chain changed)"]


def _ev(table: str, chain: str, kind=StepKind.RULE, num=None, *, handle=None, verdict="continue", tid=5,
        fields=None, family="inet") -> MonitorEvent:
    return MonitorEvent(table, chain, kind, num, family=family, handle=handle, packet_id=tid, verdict=verdict,
                        source="nftrace", fields=fields or {"PROTO": "TCP", "DPT": "8080", "IN": "eth0"})


def test_judge_by_own_tracing_rule_and_cap():
    own = f"ruletrace_{SID}"
    other = "ruletrace_" + "f" * 32
    handles = {("inet", 3): "seen", ("inet", 4): "trace", ("netdev", 4): "seen", ("netdev", 3): "trace"}
    s = spec(proto="tcp", dport="8080")
    host = [_ev("filter", "input", num=1, verdict="accept")]
    mine = nn.judge(Packet(1, [_ev(own, "pre", handle=4), *host]), [0, 0], SID, s, others=False, handles=handles)
    assert mine.own and [e.chain for e in mine.events] == ["input"]
    # another session started the trace, our tracing rule matched too: ours as well
    both_ = [_ev(other, "pre", handle=9), _ev(own, "pre", handle=3), _ev(own, "pre", handle=4), *host]
    assert nn.judge(Packet(2, both_), [0] * 4, SID, s, others=True, handles=handles).own
    # only our counter rule: our cap left it out
    capped = [_ev(other, "pre", handle=9), _ev(own, "pre", handle=3), *host]
    assert not nn.judge(Packet(3, capped), [0] * 3, SID, s, others=True, handles=handles).own
    # the start lost: the filter decides, and the path is said to be incomplete
    lost = nn.judge(Packet(4, host), [0], SID, s, others=True, handles=handles)
    assert lost.own and lost.incomplete
    assert not nn.judge(Packet(5, [_ev("filter", "input", num=1, fields={"PROTO": "UDP", "IN": "eth0"})]), [0],
                        SID, s, others=False, handles=handles).own
    # handles are per table: the netdev table's handle 3 is its tracing rule, the inet one's is the counter
    early = [_ev(other, "pre", handle=9), _ev(own, "in0", handle=3, family="netdev"), *host]
    assert nn.judge(Packet(6, early), [0] * 3, SID, s, others=True, handles=handles).own
    capped_early = [_ev(other, "pre", handle=9), _ev(own, "in0", handle=4, family="netdev"), *host]
    assert not nn.judge(Packet(7, capped_early), [0] * 3, SID, s, others=True, handles=handles).own


def test_owners_by_name():
    assert be.owner("inet", "firewalld", ["filter_INPUT"]) == "firewalld"
    assert be.owner("inet", "fw4", ["input"]) == "OpenWrt fw4"
    assert be.owner("ip", "kube-proxy", ["services"]) == "kube-proxy (nftables mode)"
    assert be.owner("ip", "filter", ["INPUT", "FORWARD", "DOCKER-USER", "DOCKER"]) == "iptables-nft (docker chains)"
    assert be.owner("ip", "nat", ["PREROUTING", "KUBE-SERVICES"]) == "iptables-nft (kube-proxy (iptables mode) chains)"
    assert be.owner("inet", "filter", ["input"]) == "native"
    assert be.owner("ip", "filter", ["input"]) == "native"  # iptables-nft names its chains INPUT, …
    # every iptables-nft rule has a counter (checked in the lab); a `table ip filter` with a rule
    # that has none was written with nft (review: it was traced as iptables-nft, its rules unread)
    assert be.owner("ip", "filter", ["INPUT"], uncounted=0) == "iptables-nft"
    assert be.owner("ip", "filter", ["INPUT"], uncounted=2) == "native"


def test_a_native_ip_filter_table_keeps_its_nft_rules(monkeypatch):
    # iptables-nft-save on a table nft wrote prints only "# Table `filter' is incompatible, use 'nft'
    # tool." -- that failure made the whole live ruleset unread ("steps show the kernel's verdicts
    # without rule text"); now the table keeps its nft rules
    text = ("table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n"
            "\t\ttcp dport 22 accept\n\t\ttcp dport 2222 counter reject with tcp reset\n\t}\n}\n")
    monkeypatch.setattr(be, "save", lambda backend, fam: "# Table `filter' is incompatible, use 'nft' tool.\n")
    got, why = snap.read_snapshot(text)
    assert why is None
    rules = got["ipv4"].tables["filter"]["INPUT"].rules
    assert [r.text for r in rules] == ["tcp dport 22 accept", "tcp dport 2222 counter reject with tcp reset"]


def test_policies_not_accept_count():
    save = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [3:180]\n:USER - [0:0]\nCOMMIT\n"
    assert be.count_policies(save) == 1 and be.count_rules(save) == 0


# --- both backends: one packet, both parts ---------------------------------------------------

LEGACY = load_ruleset("legacy.save", text="*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
                      "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
LEGACY.family = "ipv4"
NFT = RulesetView(load_rulesets("nft.txt", text="""table inet filter { # handle 1
	chain input { # handle 1
		type filter hook input priority filter; policy accept;
		tcp dport 8080 accept # handle 2
	}
}
"""))
F = {"PROTO": "TCP", "SRC": "10.0.0.1", "DST": "10.0.0.2", "DPT": "8080", "IN": "eth0", "OUT": "", "ID": "7"}


def _legacy(table, chain, kind, num):
    return TraceEvent(table, chain, kind, num, family="ipv4", source="nflog", fields=F)


def _nft_accept():
    return MonitorEvent("filter", "input", StepKind.RULE, 1, family="inet", handle=2, packet_id=9, verdict="accept",
                        source="nftrace", fields=F, text="tcp dport 8080 accept", base=True)


def _parts(with_legacy=True, with_nft=True):
    parts = []
    if with_nft:
        parts.append((both.NFT_LABEL, Explainer(NFT).explain(Packet(1, [_nft_accept()]))))
    if with_legacy:
        legacy = [_legacy("raw", "PREROUTING", StepKind.POLICY, 1), _legacy("filter", "INPUT", StepKind.POLICY, 1)]
        parts.append((both.LEGACY_LABEL, Explainer(LEGACY).explain(Packet(1, legacy))))
    return parts


def test_merge_accept_then_legacy_policy_drop():
    parts = _parts()
    assert [e.fate for _l, e in parts] == [Fate.DELIVERED, Fate.DROPPED]
    m = both.merge(Packet(1, []), parts, missing=[])
    assert m.fate is Fate.DROPPED
    assert (m.verdict.action, m.verdict.table, m.verdict.chain, m.verdict.rule) == ("drop", "filter", "INPUT", None)
    assert m.verdict.reason == "accepted by nft filter:input rule 1, then dropped by legacy filter:INPUT policy DROP"
    # kernel order: legacy raw PREROUTING (-300), then INPUT: the nft accept before the legacy drop
    assert [(s.note, s.chain) for s in m.steps] == [("legacy xtables", "PREROUTING"), ("nf_tables", "input"),
                                                   ("legacy xtables", "INPUT")]


def test_merge_keeps_each_backends_shared_table_names_and_the_deciders_family():
    """review: the merged explanation lost the nf_tables part's family labels (Explanation.shared,
    Verdict.family); a legacy table is told by its step's note, never named ``ip filter``."""
    nft_part = _parts(with_legacy=False)[0][1]
    nft_part.shared = frozenset({"filter"})  # as when the nft listing holds ip filter and inet filter
    m = both.merge(Packet(1, []), [(both.NFT_LABEL, nft_part)], missing=[])
    assert m.shared == {"filter"}
    parts = _parts()
    parts[1][1].verdict.family = "ipv4"
    m = both.merge(Packet(1, []), parts, missing=[])
    assert m.verdict.family == "ipv4" and m.verdict.kind is StepKind.POLICY


def test_one_backend_accept_is_never_the_fate():
    m = both.merge(Packet(1, []), _parts(with_legacy=False), missing=["legacy xtables"])
    assert m.fate is Fate.UNKNOWN and m.verdict is None
    assert any(w.startswith("fate incomplete: legacy xtables") for w in m.warnings)
    # a drop seen is final even when the other backend left no step
    m = both.merge(Packet(1, []), _parts(with_nft=False), missing=["nf_tables"])
    assert m.fate is Fate.DROPPED and m.verdict.reason.startswith("legacy: ")
    # a session that traced one backend only
    (_l, e), = _parts(with_legacy=False)
    both.only_one(e, "legacy xtables")
    assert e.fate is Fate.UNKNOWN and e.verdict is None and "--backend both" in e.warnings[-1]


def test_merged_causes_point_at_the_merged_steps():
    m = both.merge(Packet(1, []), _parts(), missing=[])
    decided = [c for c in m.cause if c.role == "decided"]
    assert decided and all(m.steps[c.step].note == "legacy xtables" and m.steps[c.step].chain == "INPUT"
                           for c in decided if c.step is not None)
    assert any(c.role.startswith("nft: ") and m.steps[c.step].chain == "input" for c in m.cause if c.step is not None)


def test_a_mark_one_backend_saw_change_is_the_other_backends_rule():
    nft_rs = RulesetView(load_rulesets("nft.txt", text="""table ip mangle { # handle 1
	chain PREROUTING { # handle 1
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto tcp meta mark set 0x5 # handle 2
	}
}
"""))
    marked = {**F, "MARK": "0x5"}
    nft = [MonitorEvent("mangle", "PREROUTING", StepKind.RULE, 1, family="ipv4", handle=2, packet_id=9,
                        verdict="continue", source="nftrace", fields=marked, text="meta l4proto tcp meta mark set 0x5",
                        base=True),
           MonitorEvent("mangle", "PREROUTING", StepKind.POLICY, 2, family="ipv4", packet_id=9, verdict="accept",
                        source="nftrace", fields=marked)]
    legacy = [_legacy("raw", "PREROUTING", StepKind.POLICY, 1),
              TraceEvent("filter", "INPUT", StepKind.POLICY, 1, family="ipv4", source="nflog", fields=marked)]
    parts = [(both.NFT_LABEL, Explainer(nft_rs).explain(Packet(1, nft))),
             (both.LEGACY_LABEL, Explainer(LEGACY).explain(Packet(1, legacy)))]
    assert [c.rule for c in parts[1][1].marks] == [None]  # the legacy part alone cannot tell who
    m = both.merge(Packet(1, []), parts, missing=[])
    assert [(c.table, c.chain, c.num, c.new) for c in m.marks] == [("mangle", "PREROUTING", 1, "0x5")]
    assert m.steps[m.marks[0].step].note == "nf_tables"


NFT_DNAT = RulesetView(load_rulesets("nft.txt", text="""table ip nat { # handle 1
	chain pre { # handle 1
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 8080 dnat to 10.0.0.2:8081 # handle 2
	}
}
"""))
LEGACY_OPEN = load_ruleset("legacy.save", text="*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
                           "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                           "-A INPUT -p tcp --dport 8081 -j ACCEPT\nCOMMIT\n")
LEGACY_OPEN.family = "ipv4"


def _dnat_parts():
    """nf_tables DNATs in its only chain (nat prerouting), legacy filter INPUT accepts the new port."""
    nft = [MonitorEvent("nat", "pre", StepKind.RULE, 1, family="ipv4", handle=2, packet_id=9, verdict="accept",
                        source="nftrace", fields=F, text="tcp dport 8080 dnat to 10.0.0.2:8081", base=True)]
    after = {**F, "DPT": "8081"}
    legacy = [_legacy("raw", "PREROUTING", StepKind.POLICY, 1),
              TraceEvent("filter", "INPUT", StepKind.RULE, 1, family="ipv4", source="nflog", fields=after)]
    return [(both.NFT_LABEL, Explainer(NFT_DNAT).explain(Packet(1, nft))),
            (both.LEGACY_LABEL, Explainer(LEGACY_OPEN).explain(Packet(1, legacy)))]


def test_a_part_that_ends_at_an_earlier_hook_let_the_packet_through():
    parts = _dnat_parts()
    assert parts[0][1].fate is Fate.UNKNOWN  # alone, nf_tables last saw it in PREROUTING
    assert [c.rule for c in parts[1][1].nat] == [None]  # alone, legacy cannot tell who rewrote it
    events = [ev for _l, e in parts for ev in e.packet.events]
    holds = {both.NFT_LABEL: both.held(NFT_DNAT.rulesets, "ipv4", events),
             both.LEGACY_LABEL: both.held([LEGACY_OPEN], None, events)}
    assert holds == {both.NFT_LABEL: {"PREROUTING"}, both.LEGACY_LABEL: {"PREROUTING", "OUTPUT", "INPUT", "FORWARD"}}
    m = both.merge(Packet(1, []), parts, missing=[], holds=holds)
    assert m.fate is Fate.DELIVERED and not m.warnings, m.warnings
    assert m.verdict.reason == "accepted (DNAT) by nft nat:pre rule 1, then accepted by legacy filter:INPUT rule 1"
    assert not any("last seen" in n for n in m.notes), m.notes
    assert [(c.what, c.table, c.chain, c.num, c.new) for c in m.nat] == [("DST", "nat", "pre", 1, "10.0.0.2:8081")]
    assert m.steps[m.nat[0].step].note == "nf_tables"
    # nf_tables holding a chain on INPUT that left no step there: its part is cut, the fate incomplete
    m = both.merge(Packet(1, []), _dnat_parts(), missing=[], holds={**holds, both.NFT_LABEL: {"PREROUTING", "INPUT"}})
    assert m.fate is Fate.UNKNOWN and m.verdict is None
    assert any(w.startswith("fate incomplete: nft holds rules on INPUT") for w in m.warnings), m.warnings
    # a later packet of the connection skips nat: nat chains are not on its way
    assert both.held(NFT_DNAT.rulesets, "ipv4", [_legacy("filter", "INPUT", StepKind.RULE, 1)]) == set()


def test_own_table_items_of_nft_json():
    assert snap.own_item({"table": {"family": "inet", "name": f"ruletrace_{SID}"}})
    assert snap.own_item({"rule": {"family": "inet", "table": f"ruletrace_{SID}", "chain": "pre"}})
    assert not snap.own_item({"chain": {"family": "inet", "table": "filter", "name": "input"}})
    assert not snap.own_item({"metainfo": {"version": "1.0.6"}})


# --- --raw-match on a native host (live/nftraw.py) ---------------------------------------------


def test_raw_match_goes_into_both_rules_after_the_filters():
    s = spec(proto="tcp", raw_text='ip saddr { 10.0.0.0/8, 192.168.0.0/16 } iifname "eth0" tcp dport 443',
             raw_match=["x"], direction="in")
    lines = nn.table_script(s, SID).splitlines()
    assert [x.split(" counter")[0].split(" limit")[0] for x in lines if "ruletrace:" in x] == [
        '\t\tmeta l4proto tcp ip saddr { 10.0.0.0/8, 192.168.0.0/16 } iifname "eth0" tcp dport 443'] * 2


@pytest.mark.parametrize(("raw", "says"), [
    ("tcp dport 443 accept", "'accept' is a statement"),
    ("meta mark set 1", "'set' is a statement"),
    ("tcp dport 443 counter", "'counter' is a statement"),
    ("ip saddr 10.0.0.1 ; flush ruleset", "would end the rule"),
    ("tcp dport 1 # x", "would end the rule"),
    ("tcp dport 1\ntable ip x", "line break"),
    ("tcp dport { 1, 2", "without its"),
    ("tcp dport 1 } }", "without its"),
    ('iifname "eth0', "not closed"),
    ("-m mark --mark 1", "iptables options"),
])
def test_raw_match_that_is_not_one_match_is_refused(raw, says):
    with pytest.raises(RuletraceError, match=says):
        nn.table_script(spec(raw_text=raw, raw_match=raw.split()), SID)


def test_raw_match_quoted_words_are_values_not_statements():
    s = spec(raw_text='iifname "accept" meta mark 0x10', raw_match=["x"])
    assert 'iifname "accept" meta mark 0x10 counter' in nn.table_script(s, SID)


@pytest.mark.parametrize(("raw", "native", "both", "says"), [
    ("-m mark --mark 1", True, False, "nft match expression"),
    ("! -s 10.0.0.1", True, False, "nft match expression"),
    ("meta mark 0x10", False, False, "iptables match options"),
    ("meta mark 0x10", True, True, "both syntaxes"),
    ("-m mark --mark 1", True, True, "both syntaxes"),
])
def test_raw_match_syntax_must_fit_the_session(raw, native, both, says):
    from ruletrace.live.nftraw import check_syntax

    with pytest.raises(RuletraceError, match=says):
        check_syntax(raw, native=native, both=both)


def test_raw_match_in_the_right_syntax_passes():
    from ruletrace.live.nftraw import check_syntax

    check_syntax("! -s 10.0.0.1 -m mark --mark 1", native=False, both=False)
    check_syntax("ip saddr != 10.0.0.1", native=True, both=False)


# --- the early hooks: netdev ingress and bridge chains (nfthooks) ------------------------------

CHAINS_TEXT = f"""table netdev edge {{
	chain ingress-eth0 {{
		type filter hook ingress device "eth0" priority -450; policy accept;
	}}
	chain multi {{
		type filter hook ingress devices = {{ eth1, wan }} priority filter - 10; policy accept;
	}}
}}
table netdev egress {{
	chain out {{
		type filter hook egress device "eth9" priority 0; policy accept;
	}}
}}
table bridge lanbridge {{
	chain prerouting {{
		type filter hook prerouting priority dstnat; policy accept;
	}}
	chain forward {{
		type filter hook forward priority filter; policy accept;
	}}
}}
table netdev ruletrace_{SID} {{
	chain in0 {{
		type filter hook ingress device "lo" priority -350; policy accept;
	}}
}}
"""
CHAINS_JSON = json.dumps({"nftables": [
    {"chain": {"family": "netdev", "table": "edge", "name": "ingress-eth0", "hook": "ingress", "prio": -450}},
    {"chain": {"family": "netdev", "table": "edge", "name": "multi", "hook": "ingress", "prio": -10}},
    {"chain": {"family": "netdev", "table": "egress", "name": "out", "hook": "egress", "prio": 0}},
    {"chain": {"family": "bridge", "table": "lanbridge", "name": "prerouting", "hook": "prerouting", "prio": -300}},
    {"chain": {"family": "bridge", "table": "lanbridge", "name": "forward", "hook": "forward", "prio": -200}},
    {"chain": {"family": "netdev", "table": f"ruletrace_{SID}", "name": "in0", "hook": "ingress", "prio": -350}},
]})


def test_early_hooks_from_the_chain_listing():
    h = eh.read(CHAINS_TEXT, CHAINS_JSON, nn.is_own_table)
    # 10 before each device's first netdev chain, -350 at most; egress needs nothing; sessions' tables left out
    assert h.ingress == {"eth0": -460, "eth1": -350, "wan": -350}
    assert h.bridge == -350 and h.families() == ["netdev", "bridge"]
    assert eh.read(CHAINS_TEXT.replace("dstnat", "-400"), CHAINS_JSON.replace("-300", "-400")).bridge == -410
    assert not eh.read("table inet f {\n}\n", '{"nftables": []}')
    odd = CHAINS_TEXT.replace('device "eth0"', 'device "eth0;x"')
    assert "eth0;x" not in eh.read(odd, CHAINS_JSON).ingress  # never written into an nft script


def test_early_hook_tables_scope_cap_and_leave_packets_to_the_first():
    h = eh.EarlyHooks({"eth0": -460}, -350)
    s = spec(proto="tcp", dport="22", direction="in", families=("ipv4",), rate=5)
    scripts = nn.own_scripts(s, SID, h)
    assert list(scripts) == ["inet", "netdev", "bridge"]
    net, br, inet = scripts["netdev"], scripts["bridge"], scripts["inet"]
    assert f"table netdev ruletrace_{SID} {{" in net
    assert 'type filter hook ingress device "eth0" priority -460; policy accept;' in net
    # an IP family is an ethertype outside ip/inet tables
    assert ("meta protocol ip meta l4proto tcp tcp dport 22 limit rate 5/second burst 5 packets counter "
            f'meta nftrace set 1 comment "ruletrace:{SID}"') in net
    assert 'meta protocol ip meta l4proto tcp tcp dport 22 iifname != { "eth0" } counter' in br
    assert "type filter hook prerouting priority -350; policy accept;" in br
    assert 'iifname != { "eth0" } meta iifkind != "bridge" counter' in inet and "meta nfproto ipv4" in inet
    assert nn.table_script(s, SID, h) == inet + net + br
    # -i: port and bridge never share a name, the inet chain keeps passed-up frames
    with_if = nn.own_scripts(spec(iface="br0", direction="in"), SID, h)
    assert "iifkind" not in with_if["inet"] and 'iifname "br0"' in with_if["bridge"]
    # outgoing only: nothing before the inet output hook
    assert list(nn.own_scripts(spec(proto="udp", direction="out"), SID, h)) == ["inet"]


def test_live_grouper_keeps_a_bridged_up_frame_one_packet():
    """The bridge -> IP hop gives a new trace id: the new id joins the packet (correlate's rule)."""
    g = LiveGrouper(idle=0.25)
    ident = b"same-packet"
    evs = [_ev(f"ruletrace_{SID}", "pre", tid=1, family="bridge"), _ev("lanbridge", "input", tid=1, family="bridge"),
           _ev(f"ruletrace_{SID}", "pre", tid=2), _ev("host", "input", tid=2, verdict="accept")]
    other = _ev("host", "input", tid=3, verdict="accept")
    for i, e in enumerate(evs):
        e.ident = ident
        g.add(e, 0, i * 0.01)
    other.ident = b"another"
    g.add(other, 0, 0.2)
    out = g.flush(0.27)  # the bridge half is idle for 0.25 s, its IP half is not: both wait
    assert out == []
    out = g.flush(0.5, everything=True)
    assert [[(e.family, e.table) for e in p.events] for p, _v, _f in out] == [
        [("bridge", f"ruletrace_{SID}"), ("bridge", "lanbridge"), ("inet", f"ruletrace_{SID}"), ("inet", "host")],
        [("inet", "host")]]


def test_live_grouper_reused_trace_id_does_not_hold_back_the_packet_before():
    """The kernel gives the next packet of a flow the same trace id (same buffer, same flow hash):
    the first packet is complete, flushed in its turn, not held open by the second's steps."""
    g = LiveGrouper(idle=0.25)
    syn = [_ev("host", "input", tid=7, verdict="accept") for _ in range(2)]
    ack = [_ev("host", "input", tid=7, verdict="accept") for _ in range(2)]
    for e in syn:
        e.ident = (b"syn",)
    for e in ack:
        e.ident = (b"ack",)
    g.add(syn[0], 0, 0.0)
    g.add(syn[1], 0, 0.0)
    g.add(ack[0], 0, 0.2)
    out = g.flush(0.3)  # the SYN is idle: out, before the ACK that reused its id
    assert [[e.ident for e in p.events] for p, _v, _f in out] == [[(b"syn",), (b"syn",)]]
    g.add(ack[1], 0, 0.35)
    out = g.flush(0.7)
    assert [[e.ident for e in p.events] for p, _v, _f in out] == [[(b"ack",), (b"ack",)]] and g.pending() == 0


def test_live_grouper_two_identical_packets_under_one_trace_id_are_two():
    """Two identical IPv6 multicast reports within the idle time, one trace id (CI saw it: the
    kernel traced 12 packets, 11 "arrived"): the session's base chain opening again is a new packet."""
    g = LiveGrouper(idle=0.25)
    for i in range(2):
        for e in (MonitorEvent(f"ruletrace_{SID}", "pre", StepKind.RULE, 1, family="inet", handle=3, packet_id=9,
                               verdict="continue", source="nftrace", fields={"PROTO": "ICMPv6"}, base=True),
                  MonitorEvent(f"ruletrace_{SID}", "pre", StepKind.POLICY, 2, family="inet", packet_id=9,
                               verdict="accept", source="nftrace", fields={"PROTO": "ICMPv6"})):
            e.ident = (b"report",)
            g.add(e, 0, i * 0.1)
    out = g.flush(1.0)
    assert [[e.kind for e in p.events] for p, _v, _f in out] == [[StepKind.RULE, StepKind.POLICY]] * 2


def test_a_pairing_with_the_save_is_no_ruleset_change():
    from pathlib import Path

    from ruletrace.rulesets.xt_save import pair_save

    mixed = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures" / "mixed"
    text = (mixed / "ruleset-a.nft").read_text()
    plain, paired = snap.parse_snapshot(text), snap.parse_snapshot(text)
    assert pair_save(paired["ipv4"], load_ruleset("save", text=(mixed / "iptables-nft-save.txt").read_text()))
    assert paired["ipv4"].rule("filter", "INPUT", 1).text.startswith("-A INPUT")
    assert snap.changes(plain, paired) == []  # (one snapshot paired, the next not: nothing changed)
