"""iptables-save reader: the real corpus rule by rule, quoting, counters, goto and every error's line."""

from __future__ import annotations

import json
import re
import time
from functools import cache
from pathlib import Path

import pytest
from kube_proxy_gen import kube_proxy_save

from ruletrace.errors import RuletraceError
from ruletrace.model import Origin
from ruletrace.rulesets.iptables_save import find_target, parse, tokenize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CORPUS = FIXTURES / "corpus"
SAVES = ["legacy-v4.save", "legacy-v6.save", "nft-v4.save", "nft-v6.save"]


@cache
def manifest() -> dict:
    return json.loads((CORPUS / "manifest.json").read_text())


def _parse(text: str, path: str = "t.save"):
    return parse(text, origin=Origin(path))


def _expected_target(save_line: str) -> tuple[str | None, bool]:
    # independent of the reader: drop quoted strings, then take the last -j/-g flag
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', save_line)
    flags = re.findall(r" -([jg]) (\S+)", bare)
    return (flags[-1][1], flags[-1][0] == "g") if flags else (None, False)


# --- the real corpus (tests/fixtures/corpus/README.md) ---


@pytest.mark.parametrize("name", SAVES)
def test_corpus_every_rule(name: str) -> None:
    entry = manifest()["saves"][name]
    rs = _parse((CORPUS / name).read_text(), str(CORPUS / name))
    assert rs.format == "iptables-save"
    assert rs.warnings == []
    # tables and chains in save order, with the manifest's rule counts
    got = {t: {c: len(ch.rules) for c, ch in chains.items()} for t, chains in rs.tables.items()}
    assert got == entry["tables"]
    assert list(got) == list(entry["tables"])
    assert {t: list(c) for t, c in got.items()} == {t: list(c) for t, c in entry["tables"].items()}
    assert rs.rule_count() == entry["rules_loaded"] == len(entry["rules"])
    lines = (CORPUS / name).read_text().split("\n")
    for want in entry["rules"]:
        rule = rs.rule(want["table"], want["chain"], want["num"])
        assert rule is not None, want
        assert (rule.table, rule.chain, rule.num) == (want["table"], want["chain"], want["num"])
        assert rule.text == want["save_line"]
        assert lines[rule.origin.line - 1] == want["save_line"]
        assert (rule.target, rule.goto) == _expected_target(want["save_line"])
        assert rule.counters is None


@pytest.mark.parametrize(("name", "family"), [("legacy-v4.save", "ipv4"), ("legacy-v6.save", "ipv6"),
                                              ("nft-v4.save", "ipv4"), ("nft-v6.save", "ipv6")])
def test_corpus_family_and_policies(name: str, family: str) -> None:
    rs = _parse((CORPUS / name).read_text())
    assert rs.family == family
    assert rs.chain("filter", "INPUT").policy == "ACCEPT"
    assert rs.chain("filter", "INPUT").counters == (0, 0)
    if name.startswith("legacy"):
        # the empty security table of the legacy saves is kept
        assert list(rs.tables["security"]) == ["INPUT", "FORWARD", "OUTPUT"]


def test_corpus_bare_rule_without_matches() -> None:
    # legacy drops "! -i +" and saves a bare "-A FORWARD" (corpus README)
    rs = _parse((CORPUS / "legacy-v4.save").read_text())
    bare = [r for r in rs.chain("filter", "FORWARD").rules if r.text == "-A FORWARD"]
    assert bare and bare[0].target is None and bare[0].spec == ""


# --- tokenize: iptables-restore's add_param_to_argv() ---


@pytest.mark.parametrize(
    ("spec", "tokens"),
    [
        ("-A INPUT -p tcp  -j ACCEPT", ["-A", "INPUT", "-p", "tcp", "-j", "ACCEPT"]),
        ("-A INPUT\t-p\ttcp", ["-A", "INPUT", "-p", "tcp"]),
        ('--comment "it\\\'s a \\"quoted\\" comment"', ["--comment", 'it\'s a "quoted" comment']),
        ('--comment "two  spaces"', ["--comment", "two  spaces"]),
        ('--comment ""', ["--comment", ""]),
        ('--comment "a\\\\b"', ["--comment", "a\\b"]),
        ("--log-prefix a\\b", ["--log-prefix", "a\\b"]),  # backslash is literal outside quotes
        ('"foo"bar', ["foo", "bar"]),  # the closing quote ends the argument
        ('foo"bar baz"', ["foobar baz"]),  # an opening quote continues it
        ("! -s 10.0.0.0/8 ! --dport 22", ["!", "-s", "10.0.0.0/8", "!", "--dport", "22"]),
        ("a\x0bb", ["a\x0bb"]),  # only space, tab and newline separate
        ("", []),
    ],
)
def test_tokenize(spec: str, tokens: list[str]) -> None:
    assert tokenize(spec) == tokens


@pytest.mark.parametrize("spec", ['--comment "open', '--comment "ends in backslash\\"', '"'])
def test_tokenize_unbalanced(spec: str) -> None:
    with pytest.raises(RuletraceError, match="unbalanced quote"):
        tokenize(spec)


@pytest.mark.parametrize(
    ("line", "target", "goto"),
    [
        ("-A INPUT -j ACCEPT", "ACCEPT", False),
        ("-A INPUT -p tcp -g SSH", "SSH", True),
        ("-A INPUT --jump DROP", "DROP", False),
        ("-A INPUT --goto USER", "USER", True),
        ("-A INPUT -m limit --limit 3/hour", None, False),
        ('-A INPUT -m comment --comment "x -j FAKE" -j ACCEPT', "ACCEPT", False),
        ('-A INPUT -j LOG --log-prefix "a -j b "', "LOG", False),
        ('-A INPUT -m comment --comment "only -j FAKE"', None, False),
        ('-A INPUT -m comment --comment "q\\" -j FAKE" -j RETURN', "RETURN", False),
        ("-A INPUT\t-j\tACCEPT", "ACCEPT", False),
        ("-A INPUT -j DNAT --to-destination 10.0.0.1:80", "DNAT", False),
    ],
)
def test_find_target(line: str, target: str | None, goto: bool) -> None:
    assert find_target(line) == (target, goto)


# --- parse: real fixture with counters, goto and quoting ---


def test_docker_fixture_counters_goto_quotes() -> None:
    path = FIXTURES / "rulesets" / "docker-legacy.save"
    rs = _parse(path.read_text(), str(path))
    assert rs.family == "ipv4" and rs.warnings == []
    inp = rs.chain("filter", "INPUT")
    assert inp.policy == "ACCEPT" and inp.counters == (8134, 566123) and inp.builtin
    assert rs.chain("filter", "FORWARD").policy == "DROP"
    ssh = rs.chain("filter", "SSH-IN")
    assert ssh.policy is None and not ssh.builtin and len(ssh.rules) == 3
    r1, r2, r3, r4, r5 = inp.rules
    assert r1.counters == (250000, 123456789)
    assert r1.text == "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"  # no "[…]" prefix
    assert (r2.target, r2.goto, r2.counters) == ("SSH-IN", True, (3, 180))
    assert r3.target == "ACCEPT" and '"it\\\'s a \\"quoted\\" comment -j FAKE"' in r3.text
    assert tokenize(r3.spec)[5] == 'it\'s a "quoted" comment -j FAKE'
    assert r4.text.startswith("-A INPUT ! -s 192.168.0.0/16") and r4.target == "LOGDROP"
    assert r5.target is None and r5.num == 5
    log = rs.rule("filter", "LOGDROP", 1)
    assert log.target == "LOG" and log.target_args == '--log-prefix "drop -j x: "'
    dnat = rs.rule("nat", "DOCKER", 2)
    assert dnat.target == "DNAT" and dnat.target_args == "--to-destination 172.18.0.2:10399"
    assert dnat.origin == Origin(str(path), 35)  # grep -n DNAT docker-legacy.save
    assert list(rs.tables) == ["filter", "nat"]


def test_crlf_and_trailing_blank_lines() -> None:
    text = "*filter\r\n:INPUT DROP [0:0]\r\n-A INPUT -j ACCEPT\r\nCOMMIT\r\n\r\n"
    rs = _parse(text)
    rule = rs.rule("filter", "INPUT", 1)
    assert rule.text == "-A INPUT -j ACCEPT" and rule.target == "ACCEPT"
    assert rs.chain("filter", "INPUT").policy == "DROP"


def test_family_without_header() -> None:
    v6 = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p ipv6-icmp -j ACCEPT\nCOMMIT\n"
    v6addr = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s fe80::/10 -j ACCEPT\nCOMMIT\n"
    v4 = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.0.0.0/8 -j ACCEPT\nCOMMIT\n"
    unknown = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n"
    assert _parse(v6).family == "ipv6"
    assert _parse(v6addr).family == "ipv6"
    assert _parse(v4).family == "ipv4"
    assert _parse(unknown).family is None
    assert _parse("# Generated by ip6tables-nft-save v1.8.9 (nf_tables) on x\n" + unknown).family == "ipv6"


def test_builtin_chain_not_declared_is_created() -> None:
    rs = _parse("*filter\n-A INPUT -j DROP\nCOMMIT\n")
    assert rs.rule("filter", "INPUT", 1).target == "DROP"
    # its policy is the kernel's, which the paste does not show: unknown, never an assumed ACCEPT (README)
    assert rs.chain("filter", "INPUT").policy is None and rs.chain("filter", "INPUT").builtin
    assert len(rs.warnings) == 1 and "t.save:2" in rs.warnings[0] and "its policy is unknown" in rs.warnings[0]


def test_missing_commit_is_a_warning() -> None:
    rs = _parse("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n")
    assert rs.rule("filter", "INPUT", 1).target == "ACCEPT"
    assert len(rs.warnings) == 1 and "no COMMIT" in rs.warnings[0]
    rs = _parse("*nat\n:PREROUTING ACCEPT [0:0]\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    assert list(rs.tables) == ["nat", "filter"]
    assert len(rs.warnings) == 1 and "t.save:3" in rs.warnings[0] and "nat" in rs.warnings[0]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("-A PREROUTING -j DNAT --to-destination 1.2.3.4\n-A OUTPUT -j NOTRACK\n", 2, "several tables"),
        ("\n-A FORWARD -j DNAT --to-destination 1.2.3.4\n", 2, "table nat has no chain FORWARD"),
        ("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n-A INPUT -j ACCEPT\n", 4, "after COMMIT"),
        ("*filter\n:INPUT ACCEPT [0:0]\n-A FOO -j ACCEPT\nCOMMIT\n", 3, "FOO, which is not declared"),
        ('*filter\n:INPUT ACCEPT [0:0]\n\n-A INPUT -m comment --comment "x -j ACCEPT\nCOMMIT\n', 4,
         "unbalanced quote"),
        ('*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment "x\\" -j ACCEPT\nCOMMIT\n', 3,
         "unbalanced quote"),
        ("*filter\n:INPUT ACCEPT [0:0]\nhello world\nCOMMIT\n", 3, "not an iptables-save line"),
        ("*filter\n:INPUT ACCEPT [0:0]\n-I INPUT -j ACCEPT\nCOMMIT\n", 3, "unexpected command '-I'"),
        ("*filter\nCOMMIT\n*nat\nCOMMIT\n*filter\nCOMMIT\n", 5,
         "table filter appears twice \\(first at line 1\\)"),
        ("*filter\n[1:x] -A INPUT -j ACCEPT\nCOMMIT\n", 2, "bad counters"),
        ("*filter\n:INPUT ACCEPT 0:0\nCOMMIT\n", 2, "bad counters"),
        ("*filter\n:FOO - [0:0]\n:FOO - [0:0]\nCOMMIT\n", 3, "declared twice"),
        ("*filter\n:INPUT MAYBE [0:0]\nCOMMIT\n", 2, "bad policy"),
        ("*filter\n:FOO DROP [0:0]\nCOMMIT\n", 2, "not a built-in chain"),
        ("*bogus\nCOMMIT\n", 1, "unknown table 'bogus'"),
        ("COMMIT\n", 1, "COMMIT outside a table"),
        (":INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n*filter\n", 3, "after rules that had none"),
    ],
)
def test_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(RuletraceError, match=message) as exc:
        _parse(text)
    assert exc.value.origin == Origin("t.save", line)
    assert str(exc.value).startswith(f"t.save:{line}: ")


# --- generated kube-proxy dump: correctness and speed ---


def test_kube_proxy_dump() -> None:
    text = kube_proxy_save(1250)  # 10,000 rules
    start = time.perf_counter()
    rs = _parse(text)
    elapsed = time.perf_counter() - start
    nat = rs.tables["nat"]
    assert rs.rule_count() == 7 + 1250 * 8
    assert len(nat) == 4 + 3 + 1250 * 3
    svc = nat["KUBE-SVC-00000000000004D1"]
    assert [r.target for r in svc.rules] == [
        "KUBE-MARK-MASQ", "KUBE-SEP-00000000000009A2", "KUBE-SEP-00000000000009A3"
    ]
    sep = nat["KUBE-SEP-00000000000009A3"].rules[1]
    assert sep.target == "DNAT" and sep.target_args.startswith("--to-destination 10.244.9.")
    # ~5 µs a rule on this machine kind; a generous bound catches an accidental O(n²)
    assert elapsed < 2.0


# --- rules pasted without their "*table" line (issue 12: partial rulesets are normal)

def _parse_text(text):
    return parse(text, origin=Origin("paste.rules", None))


def test_headerless_rules_are_read_as_filter_and_the_guess_is_said():
    rs = _parse_text("-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -j DROP\n")
    assert [r.num for r in rs.tables["filter"]["INPUT"].rules] == [1, 2]
    assert any("no '*table' line" in w and "table filter" in w and "a guess" in w for w in rs.warnings)


def test_headerless_user_chains_need_no_declaration():
    rs = _parse_text("-A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP\n-A INPUT -j KUBE-FIREWALL\n")
    assert rs.tables["filter"]["KUBE-FIREWALL"].rules[0].target == "DROP"
    assert rs.tables["filter"]["KUBE-FIREWALL"].policy is None


def test_headerless_nat_rules_are_read_as_nat_from_a_nat_only_target():
    text = ('-A KUBE-SVC-X -m statistic --mode random --probability 0.5 -j KUBE-SEP-A\n'
            '-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.244.1.5:8080\n')
    rs = _parse_text(text)
    assert set(rs.tables) == {"nat"}
    assert [w for w in rs.warnings if "DNAT target at line 2" in w and "a guess" not in w]


def test_headerless_forward_and_prerouting_can_only_be_mangle():
    rs = _parse_text("-A PREROUTING -j ACCEPT\n-A FORWARD -j ACCEPT\n")
    assert set(rs.tables) == {"mangle"}
    assert not any("a guess" in w for w in rs.warnings)


def test_headerless_prerouting_alone_is_not_filter():
    rs = _parse_text("-A PREROUTING -p udp -j ACCEPT\n")
    assert "filter" not in rs.tables and "PREROUTING" in next(iter(rs.tables.values()))
    assert any("a guess" in w for w in rs.warnings)


def test_headerless_raw_only_target_picks_raw():
    rs = _parse_text("-A PREROUTING -p udp --dport 53 -j CT --notrack\n")
    assert set(rs.tables) == {"raw"}


@pytest.mark.parametrize("text,needle", [
    ("-A PREROUTING -j DNAT --to-destination 1.2.3.4\n-A OUTPUT -j NOTRACK\n", "several tables"),
    ("-A FORWARD -j DNAT --to-destination 1.2.3.4\n", "table nat has no chain FORWARD"),
    ("-A INPUT -j ACCEPT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "after rules that had none"),
    ("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n-A INPUT -j ACCEPT\n", "after COMMIT"),
])
def test_headerless_rules_that_cannot_be_placed_give_one_clear_line(text, needle):
    with pytest.raises(RuletraceError, match=needle):
        _parse_text(text)


def test_rule_spec_is_one_cut_for_every_view() -> None:
    # Rule.spec (tree, near miss, simulator) and rule_spec (diff, summary, report) cut alike: before
    # they were one home, the report showed a bare counting rule as "-A FORWARD" where the tree
    # showed nothing, and Rule.spec cut "-A FOO" off a "-A FOOBAR" text
    from ruletrace.model import Rule, rule_spec

    assert rule_spec("-A FORWARD", "FORWARD") == ""
    assert rule_spec("-A FOO -j X", "FOO") == "-j X"
    assert rule_spec("-A FOO   -j X", "FOO") == "-j X"
    assert rule_spec("-A FOOBAR -j X", "FOO") == "-A FOOBAR -j X"
    assert rule_spec("ip saddr 10.0.0.1 drop", "input") == "ip saddr 10.0.0.1 drop"
    assert rule_spec(None, "FOO") is None
    assert Rule("filter", "FOO", 1, "-A FOOBAR -j X").spec == "-A FOOBAR -j X"
    seen = 0
    for path in sorted(CORPUS.glob("*.save")):
        rs = _parse(path.read_text())
        for table in rs.tables.values():
            for chain in table.values():
                for r in chain.rules:
                    assert r.spec == rule_spec(r.text, r.chain)
                    assert not r.spec.startswith(f"-A {r.chain} ")
                    seen += 1
    assert seen > 1000


def test_headerless_builtin_chain_policy_is_unknown():
    # a pasted chain without its ':INPUT DROP' line: its policy was assumed ACCEPT (with a warning no
    # view showed), so a packet the host dropped read "DELIVERED by filter:INPUT policy ACCEPT"
    rs = _parse_text("-A INPUT -i lo -j ACCEPT\n-A INPUT -j SERVICES\n")
    assert rs.tables["filter"]["INPUT"].policy is None


def test_iptables_S_reads_as_iptables_save():
    # `iptables -S` / `-S -v` (real output, fixtures/rulesets/README.md) give the chains, policies,
    # rules and counters that iptables-save of the same ruleset does
    from ruletrace.model import rule_spec

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "rulesets"
    save = parse((Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "examples" / "filter-basics"
                  / "ruleset.rules").read_text(), origin=Origin("ruleset.rules"))
    for name in ("filter-basics.S", "filter-basics.Sv"):
        rs = parse((fixtures / name).read_text(), origin=Origin(name))
        for cname, ch in save.tables["filter"].items():
            got = rs.tables["filter"][cname]
            assert got.policy == ch.policy, (name, cname)
            assert [(r.num, rule_spec(r.text, cname), r.target, r.goto) for r in got.rules] == \
                [(r.num, rule_spec(r.text, cname), r.target, r.goto) for r in ch.rules], (name, cname)
        if name.endswith("Sv"):
            assert rs.tables["filter"]["INPUT"].counters == (0, 0)
            assert all(r.counters == (0, 0) for r in rs.tables["filter"]["INPUT"].rules)
    with pytest.raises(RuletraceError, match="expected '-P CHAIN POLICY' or '-N CHAIN'"):
        _parse_text("-P INPUT\n")


def test_doubled_blank_after_dash_A_names_the_chain():
    # review: "-A  INPUT -j ACCEPT" (a paste's doubled blank) failed with "rule appended to chain ,
    # which is not declared"
    rs = _parse_text("*filter\n:INPUT DROP [0:0]\n-A  INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n")
    (r,) = rs.tables["filter"]["INPUT"].rules
    assert r.target == "ACCEPT" and r.spec == "-p tcp --dport 22 -j ACCEPT"
