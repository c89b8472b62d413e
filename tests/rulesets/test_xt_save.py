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


def test_placeholder_warning_goes_once_the_save_resolves_them():
    alone = load_rulesets([str(D / "ruleset.json")])
    assert any("xt placeholders" in w for rs in alone for w in rs.warnings)
    paired = load_rulesets([str(D / "ruleset.json"), str(D / "iptables-nft-save.txt")])
    assert not any("xt placeholders" in w for rs in paired for w in rs.warnings)
    ip = next(rs for rs in paired if rs.family == "ipv4")
    assert ip.rule("filter", "INPUT", 2).text == "-A INPUT -s 10.84.0.1/32 -p tcp -m multiport --dports 22,80 -j ALLOWED"


def test_simulate_keeps_walking_nft_text_when_a_save_is_given():
    """The simulator walks nft's text: `simulate -r listing -r save` is not paired (the kernel's
    decider for this SYN, from the recorded trace, is the ALLOWED chain's accept)."""
    import subprocess
    import sys

    for listing in ("ruleset-a.nft", "ruleset.nft"):
        p = subprocess.run([sys.executable, "-m", "ruletrace", "simulate", "-r", str(D / listing), "-r",
                            str(D / "iptables-nft-save.txt"), "--addrs", str(D / "addrs.json"), "--routes",
                            str(D / "routes.json"), "-p", "tcp", "-s", "10.84.0.1", "-d", "10.84.0.2", "--dport", "22",
                            "--sport", "48022", "-i", "eth0", "--no-color"], capture_output=True, text=True, timeout=60)
        assert "DELIVERED by filter:ALLOWED rule 1" in p.stdout, p.stdout + p.stderr
