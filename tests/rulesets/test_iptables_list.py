"""iptables -L reader: the real corpus listings, table markers, banners, glued pastes, -x, no -v."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin
from ruletrace.rulesets.iptables_list import parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CORPUS = FIXTURES / "corpus"
RULESETS = FIXTURES / "rulesets"
SAVES = ["legacy-v4.save", "legacy-v6.save", "nft-v4.save", "nft-v6.save"]
# -L prints the kernel target's name; iptables-save prints the alias the rule was given
# (libxt_CT.c: NOTRACK is CT --notrack)
ALIASES = {"NOTRACK": "CT"}


@cache
def manifest() -> dict:
    return json.loads((CORPUS / "manifest.json").read_text())


def _parse(text: str, path: str = "t.list"):
    return parse(text, origin=Origin(path))


def _save_target(save_line: str) -> str | None:
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', save_line)
    flags = re.findall(r" -[jg] (\S+)", bare)
    return ALIASES.get(flags[-1], flags[-1]) if flags else None


@pytest.mark.parametrize("name", SAVES)
def test_corpus_listing(name: str) -> None:
    entry = manifest()["saves"][name]
    path = CORPUS / entry["list_file"]
    rs = parse(path.read_text(errors="strict"), origin=Origin(str(path)))
    assert rs.format == "iptables-list"
    assert rs.family == ("ipv6" if "v6" in name else "ipv4")
    got = {t: {c: len(ch.rules) for c, ch in chains.items()} for t, chains in rs.tables.items()}
    assert got == entry["tables"]
    # tables in the order the file announces them (raw, mangle, nat, filter[, security])
    assert list(got) == [t for t in ("raw", "mangle", "nat", "filter", "security") if t in entry["tables"]]
    by_pos = {(r["table"], r["chain"], r["num"]): r for r in entry["rules"]}
    for t, chains in rs.tables.items():
        for c, chain in chains.items():
            assert chain.policy == "ACCEPT" and chain.counters == (0, 0)
            for i, rule in enumerate(chain.rules, 1):
                assert (rule.table, rule.chain, rule.num) == (t, c, i)
                want = by_pos[(t, c, i)]
                assert rule.target == _save_target(want["save_line"]), (rule.text, want["save_line"])
                assert "\x00" not in rule.text
    # the only stray lines are the 11 "Warning: cannot open …connlabel.conf" lines after "# stderr:"
    assert len(rs.warnings) == 1 and "11 line(s) outside any chain" in rs.warnings[0]


@pytest.mark.parametrize("name", SAVES)
def test_corpus_counters_and_nul_rows(name: str) -> None:
    entry = manifest()["saves"][name]
    rs = _parse((CORPUS / entry["list_file"]).read_text())
    # iptables.t (IPv4 only) has "-c 2,3 -j ACCEPT": the listing shows pkts 2, bytes 3 (corpus README)
    placed = [r for r in entry["rules"] if r["test_rule"].startswith("-c 2,3")]
    assert len(placed) == (1 if "v4" in name else 0)
    for want in placed:
        rule = rs.rule(want["table"], want["chain"], want["num"])
        assert rule.counters == (2, 3) and rule.target == "ACCEPT"
    # the bpf match's row ends in a NUL byte in every .list file
    bpf = [r for ch in rs.tables["filter"].values() for r in ch.rules if "match bpf" in r.text]
    assert bpf and all(r.text.endswith("6,6 0 0 1,6 0 0 0") for r in bpf)


def _dump(rs):
    return [(t, c, ch.policy, ch.counters, [(r.num, r.text, r.target, r.goto, r.counters) for r in ch.rules])
            for t, chains in rs.tables.items() for c, ch in chains.items()]


def test_banner_listing_seed_004_style() -> None:
    rs = _parse((RULESETS / "banner-v.list").read_text())
    assert list(rs.tables) == ["nat", "filter"] and rs.warnings == []
    assert rs.family == "ipv4"
    inp = rs.chain("filter", "INPUT")
    # "(policy ACCEPT 8134 packets, 566K bytes)": K is 1000 (xtables_print_num)
    assert inp.policy == "ACCEPT" and inp.counters == (8134, 566000)
    assert rs.chain("filter", "FORWARD").policy == "DROP"
    docker = rs.chain("nat", "DOCKER")
    assert docker.policy is None and not docker.builtin
    r1, r2, r3, r4, r5 = inp.rules
    assert (r1.target, r1.counters) == ("ACCEPT", (250000, 123000000))  # "250K  123M"
    assert r1.text == "ACCEPT 0 -- * * 0.0.0.0/0 0.0.0.0/0 ctstate RELATED,ESTABLISHED"
    assert (r2.target, r2.goto) == ("SSH-IN", True)
    assert r3.text == 'ACCEPT 6 -- * * 0.0.0.0/0 0.0.0.0/0 /* it\'s a "quoted" comment -j FAKE */ tcp dpt:80'
    assert r4.text == "LOGDROP 1 -- * * !192.168.0.0/16 0.0.0.0/0 icmptype 8"
    assert r5.target is None and r5.text == "0 -- * * 0.0.0.0/0 0.0.0.0/0 limit: avg 3/hour burst 5"
    assert rs.rule("filter", "SSH-IN", 1).target is None
    dnat = rs.rule("nat", "DOCKER", 2)
    assert (dnat.target, dnat.counters) == ("DNAT", (7, 420))
    assert dnat.origin == Origin("t.list", 22)  # grep -n DNAT banner-v.list


def test_glued_paste_equals_banner_listing() -> None:
    glued = (RULESETS / "banner-v-glued.list").read_text()
    assert glued.count("\n") == 1
    assert _dump(_parse(glued)) == _dump(_parse((RULESETS / "banner-v.list").read_text()))


def test_marked_listing_exact_counts_and_line_numbers() -> None:
    rs = _parse((RULESETS / "marked-vx.list").read_text())
    assert list(rs.tables) == ["filter", "nat"] and rs.warnings == []
    assert rs.chain("filter", "INPUT").counters == (8134, 566123)
    assert rs.rule("filter", "INPUT", 1).counters == (250000, 123456789)
    assert [r.target for r in rs.chain("filter", "SSH-IN").rules] == [None, "LOGDROP", "ACCEPT"]
    assert rs.rule("nat", "PREROUTING", 1).counters == (1193, 73848)


def test_listing_without_v_or_marker_is_filter() -> None:
    rs = _parse((RULESETS / "plain.list").read_text())
    assert list(rs.tables) == ["filter"]
    inp = rs.chain("filter", "INPUT")
    assert inp.policy == "ACCEPT" and inp.counters is None
    assert [r.target for r in inp.rules] == ["ACCEPT", "SSH-IN", "ACCEPT", "LOGDROP", None]
    assert inp.rules[1].goto and inp.rules[1].text == "SSH-IN 6 -- 10.0.0.0/8 0.0.0.0/0 [goto] tcp dpt:22"
    assert all(r.counters is None for r in inp.rules)
    assert rs.chain("filter", "LOGDROP").rules[0].text.endswith('prefix "drop -j x: "')


def test_save_and_listing_agree_on_fixture() -> None:
    from ruletrace.rulesets.iptables_save import parse as parse_save

    save = parse_save((RULESETS / "docker-legacy.save").read_text(), origin=Origin("s"))
    listing = _parse((RULESETS / "marked-vx.list").read_text())
    for t, chains in save.tables.items():
        for c, chain in chains.items():
            other = listing.chain(t, c)
            assert other is not None and other.policy == chain.policy
            assert [(r.num, r.target, r.goto, r.counters) for r in other.rules] == [
                (r.num, r.target, r.goto, r.counters) for r in chain.rules
            ]


SHELL_PROMPTS = """\
root@host:~# iptables -L -n
Chain INPUT (policy DROP)
target     prot opt source               destination
ACCEPT     all  --  0.0.0.0/0            0.0.0.0/0

root@host:~# iptables -t nat -nvL
Chain PREROUTING (policy ACCEPT 5 packets, 300 bytes)
 pkts bytes target     prot opt in     out     source               destination
    5   300 DOCKER     all  --  *      *       0.0.0.0/0   0.0.0.0/0    ADDRTYPE match dst-type LOCAL
"""


def test_shell_prompt_command_lines_mark_tables() -> None:
    rs = _parse(SHELL_PROMPTS)
    assert rs.chain("filter", "INPUT").policy == "DROP"
    assert rs.rule("filter", "INPUT", 1).text == "ACCEPT all -- 0.0.0.0/0 0.0.0.0/0"
    assert rs.rule("nat", "PREROUTING", 1).counters == (5, 300)
    assert rs.warnings == []


# ip6tables before 1.8 printed the opt column blank (print_firewall() in ip6tables.c)
OLD_IP6TABLES = """\
Chain INPUT (policy ACCEPT 0 packets, 0 bytes)
 pkts bytes target     prot opt in     out     source               destination
   10   800 ACCEPT     ipv6-icmp    *      *       ::/0                 ::/0
    0     0            tcp      *      *       ::/0                 ::/0                 tcp dpt:22
"""


def test_old_ip6tables_blank_opt_column() -> None:
    rs = _parse(OLD_IP6TABLES)
    assert rs.family == "ipv6"
    r1, r2 = rs.chain("filter", "INPUT").rules
    assert (r1.target, r1.counters) == ("ACCEPT", (10, 800))
    assert (r2.target, r2.text) == (None, "tcp * * ::/0 ::/0 tcp dpt:22")


GAPPY = """\
Chain DOCKER (1 references)
num   pkts bytes target     prot opt in     out     source               destination
1        0     0 ACCEPT     udp  --  !docker0 docker0  0.0.0.0/0            172.18.0.2           udp dpt:10399
4        0     0 ACCEPT     udp  --  !docker0 docker0  0.0.0.0/0            172.18.0.2           udp dpt:10396
"""


def test_rows_left_out_keep_kernel_numbers() -> None:
    rs = _parse(GAPPY)
    rules = rs.chain("filter", "DOCKER").rules
    assert [r.num for r in rules] == [1, 2, 3, 4]
    assert rs.rule("filter", "DOCKER", 4).text.endswith("dpt:10396")
    assert rules[1].target is None and "not in the listing" in rules[1].text
    assert len(rs.warnings) == 1 and "t.list:4" in rs.warnings[0] and "rules 2-3" in rs.warnings[0]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("Chain INPUT (policy ACCEPT)\nfoo bar\n", 2, "expected the column header"),
        ("Chain INPUT (policy ACCEPT)\ntarget prot opt source destination\n\n"
         "Chain INPUT (policy ACCEPT)\n", 4,
         "chain INPUT listed twice for table filter \\(first at line 1\\)"),
        ("Chain INPUT (policy ACCEPT)\nnum target prot opt source destination\n"
         "2 ACCEPT all -- 0.0.0.0/0 0.0.0.0/0\n1 ACCEPT all -- 0.0.0.0/0 0.0.0.0/0\n", 4, "rule number 1"),
        ("Chain INPUT (mystery)\n", 1, "bad chain header"),
    ],
)
def test_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(RuletraceError, match=message) as exc:
        _parse(text)
    assert exc.value.origin == Origin("t.list", line)


def test_no_chain_header_is_an_error() -> None:
    with pytest.raises(RuletraceError, match="no 'Chain") as exc:
        _parse("hello\n")
    assert str(exc.value).startswith("t.list: ")


_NAT_ROWS = """Chain PREROUTING (policy ACCEPT 0 packets, 0 bytes)
num   pkts bytes target     prot opt in     out     source               destination
1        0     0 DNAT       6    --  *      *       0.0.0.0/0            0.0.0.0/0            tcp dpt:80 to:10.0.0.2:8080

Chain POSTROUTING (policy ACCEPT 0 packets, 0 bytes)
num   pkts bytes target     prot opt in     out     source               destination
"""


def test_a_nat_listing_without_its_table_line_is_read_as_nat():
    """review (pasted data): a `-t nat` listing pasted without its '# iptables … -t nat' line was read as
    table filter, silently: filter then had PREROUTING and POSTROUTING, which it cannot have."""
    rs = _parse(_NAT_ROWS)
    assert list(rs.tables) == ["nat"]
    assert rs.chain("nat", "PREROUTING").rules[0].table == "nat" and rs.rule("nat", "PREROUTING", 1).target == "DNAT"
    assert len(rs.warnings) == 1 and "read as table nat, as filter has no PREROUTING, POSTROUTING" in rs.warnings[0]
    assert "a guess" not in rs.warnings[0]  # DNAT runs in nat only


def test_unannounced_chains_filter_can_have_stay_filter():
    rs = _parse(_NAT_ROWS.replace("PREROUTING", "INPUT").replace("POSTROUTING", "OUTPUT").replace("DNAT", "ACCEPT")
                .replace(" to:10.0.0.2:8080", ""))
    assert list(rs.tables) == ["filter"] and not rs.warnings


def test_a_mangle_listing_without_a_sure_sign_is_a_guess():
    rs = _parse(_NAT_ROWS.replace("DNAT  ", "MARK  ").replace(" to:10.0.0.2:8080", " MARK set 0x1"))
    assert list(rs.tables) == ["nat"]  # PREROUTING and POSTROUTING: nat first of the tables that have both
    assert rs.warnings[0].endswith("— a guess")


_DOCKER_ROWS = """Chain DOCKER (2 references)
num   pkts bytes target     prot opt in     out     source               destination
1        0     0 DNAT       6    --  !docker0 *     0.0.0.0/0            0.0.0.0/0            tcp dpt:8080 to:172.17.0.2:80
"""


def test_a_listing_known_only_by_its_targets_says_so_in_words():
    """final review: a user chain of DNAT rows read as nat with the warning '… as filter has no its targets'."""
    rs = _parse(_DOCKER_ROWS)
    assert list(rs.tables) == ["nat"]
    assert rs.warnings[0].endswith("read as table nat, as DNAT runs only in nat")


def test_a_listing_whose_chains_and_targets_name_no_one_table_is_said_to_be_doubtful():
    """final review: DNAT rows in INPUT (filter-only beside FORWARD) were read as filter silently."""
    text = _NAT_ROWS.replace("PREROUTING", "INPUT").replace("POSTROUTING", "FORWARD")
    rs = _parse(text)
    assert list(rs.tables) == ["filter"]
    assert len(rs.warnings) == 1 and "read as filter (iptables' default), but DNAT run only in nat" in rs.warnings[0]
