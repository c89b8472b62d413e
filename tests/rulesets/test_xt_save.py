"""iptables-nft's tables of a host with native tables too, paired with their iptables-nft-save lines
(rulesets/xt_save.py), on the kernel-recorded `mixed` scenario (tests/fixtures/nft_captures/mixed)."""

from __future__ import annotations

from pathlib import Path

from ruletrace.pipeline import load_rulesets
from ruletrace.rulesets import load_ruleset
from ruletrace.rulesets import load_rulesets as load_listing
from ruletrace.rulesets.xt_save import fitting_tables, pair_save

D = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures" / "mixed"
SAVE = (D / "iptables-nft-save.txt").read_text()


def _ip(name: str):
    return next(rs for rs in load_listing(str(D / name)) if rs.family == "ipv4")


def _save_lines() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    table = ""
    for line in SAVE.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            out.setdefault((table, line.split()[1]), []).append(line)
    return out


def test_every_iptables_nft_table_takes_its_save_lines_and_keeps_handles():
    rs = _ip("ruleset-a.nft")
    handles = {(r.table, r.chain, r.num): r.handle for t in rs.tables.values() for c in t.values() for r in c.rules}
    nft_text = {(r.table, r.chain, r.num): r.text for t in rs.tables.values() for c in t.values() for r in c.rules}
    assert sorted(pair_save(rs, load_ruleset("save", text=SAVE))) == ["filter", "mangle", "nat"]
    lines = _save_lines()
    for t in rs.tables.values():
        for c in t.values():
            for r in c.rules:
                assert r.text == lines[(r.table, r.chain)][r.num - 1]
                assert r.handle == handles[(r.table, r.chain, r.num)] and r.handle is not None
                assert r.listed == nft_text[(r.table, r.chain, r.num)]
    assert rs.chain("filter", "INPUT").hook == "input" and rs.rule("filter", "INPUT", 4).target == "REJECT"


def test_native_tables_and_other_families_are_left_as_listed():
    every = load_rulesets([str(D / "ruleset.nft"), str(D / "iptables-nft-save.txt")])
    assert [rs.format for rs in every] == ["nft-text", "nft-text"]  # the save went into the ip ruleset
    inet = next(rs for rs in every if rs.family == "inet")
    assert inet.rule("host", "input", 2).text.startswith("tcp dport 80 drop")
    assert inet.rule("host", "input", 2).listed is None


def test_a_save_that_does_not_describe_the_table_is_not_paired():
    short = SAVE.replace("-A ALLOWED -p tcp -m tcp --dport 22 -j ACCEPT\n", "")  # one rule fewer
    rs = _ip("ruleset.nft")
    assert "filter" not in fitting_tables(rs, load_ruleset("save", text=short))
    # same counts, another verdict: a save of another host (or of legacy iptables) is no pair
    other = SAVE.replace("--dport 81 -m comment --comment \"web alt\" -j ACCEPT", "--dport 81 -j DROP")
    assert "filter" not in fitting_tables(rs, load_ruleset("save", text=other))
    assert sorted(fitting_tables(rs, load_ruleset("save", text=other))) == ["mangle", "nat"]
    six = SAVE.replace("iptables-nft-save", "ip6tables-nft-save")
    assert fitting_tables(rs, load_ruleset("save", text=six)) == []  # an ip6tables save: another family
