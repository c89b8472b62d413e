"""Rulesets from any input: bounded memory, bounded numbers, one line instead of a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.rulesets import load_ruleset

HEADER = "Chain INPUT (policy ACCEPT)\nnum  target     prot opt source               destination\n"


def test_iptables_list_rule_number_jump_allocates_nothing_per_number() -> None:
    text = HEADER + "1    ACCEPT     all  --  0.0.0.0/0            0.0.0.0/0\n" \
                    "30000000 ACCEPT     all  --  0.0.0.0/0            0.0.0.0/0\n"
    prog = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from ruletrace.errors import RuletraceError
        from ruletrace.rulesets import load_ruleset
        try:
            load_ruleset("l", text={text!r})
        except RuletraceError as e:
            print("ERR", e)
    """)
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ERR l:4: rule number 30000000 in chain INPUT after rule 1")


def test_iptables_list_small_gap_still_kept() -> None:
    text = HEADER + "1    ACCEPT     all  --  0.0.0.0/0            0.0.0.0/0\n" \
                    "5    DROP       all  --  0.0.0.0/0            0.0.0.0/0\n"
    rs = load_ruleset("l", text=text)
    assert [r.num for r in rs.tables["filter"]["INPUT"].rules] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("num", ["\u00b2", "9" * 5000])
def test_iptables_list_odd_rule_numbers(num: str) -> None:
    text = HEADER + f"{num}    ACCEPT     all  --  0.0.0.0/0            0.0.0.0/0\n"
    try:
        rs = load_ruleset("l", text=text)
    except RuletraceError:
        return
    assert all(r.num < 10**10 for c in rs.tables["filter"].values() for r in c.rules)


@pytest.mark.parametrize("count", ["\u00b2", "9" * 5000])
def test_iptables_list_odd_counters(count: str) -> None:
    text = ("Chain INPUT (policy ACCEPT 0 packets, 0 bytes)\n"
            " pkts bytes target     prot opt in     out     source               destination\n"
            f" {count}  0 ACCEPT     all  --  *      *       0.0.0.0/0            0.0.0.0/0\n")
    try:
        load_ruleset("l", text=text)
    except RuletraceError:
        pass


@pytest.mark.parametrize("count", ["\u00b2", "9" * 5000])
def test_iptables_save_odd_counters(count: str) -> None:
    text = f"*filter\n:INPUT ACCEPT [{count}:0]\n[{count}:1] -A INPUT -j ACCEPT\nCOMMIT\n"
    try:
        load_ruleset("s", text=text)
    except RuletraceError:
        pass


def nft(*rules: dict) -> str:
    items = [{"table": {"family": "ip", "name": "filter"}},
             {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "hook": "input", "policy": "accept"}}]
    items += [{"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 10 + i, **r}}
              for i, r in enumerate(rules)]
    return json.dumps({"nftables": items})


@pytest.mark.parametrize("damaged", [{"expr": None}, {"expr": [{"match": {"op": "=="}}]},
                                     {"expr": [{"jump": {}}]}, {"expr": [{"counter": {"packets": []}}]}])
def test_nft_json_damaged_rule_is_kept_as_text_and_counted(damaged: dict) -> None:
    good = {"expr": [{"accept": None}]}
    rs = load_ruleset("n", text=nft(good, damaged, good))
    rules = rs.tables["filter"]["INPUT"].rules
    assert [r.num for r in rules] == [1, 2, 3] and rules[2].target == "ACCEPT"
    assert rules[1].text == json.dumps(damaged["expr"], separators=(",", ":"))
    assert any("1 rule(s) with unreadable expressions" in w for w in rs.warnings)


def test_nft_json_deep_nesting() -> None:
    with pytest.raises(RuletraceError, match="nested too deeply"):
        load_ruleset("n", text='{"nftables": ' + "[" * 100_000 + "]" * 100_000 + "}")
