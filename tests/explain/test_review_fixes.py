"""Small wrong statements a review found in explanations."""

from __future__ import annotations

FIREWALLD = """table inet firewalld {
	chain filter_OUTPUT {
		type filter hook output priority filter + 10; policy accept;
		oifname "lo" accept
	}
}
"""


def test_an_owner_decided_by_a_policy_is_placed_at_the_policy_not_a_rule(tmp_path, capsys):
    """'owner … at firewalld:filter_OUTPUT rule 2' for a chain of one rule: step 2 is its policy."""
    from ruletrace.cli import main

    (tmp_path / "fw.nft").write_text(FIREWALLD)
    main(["simulate", "-r", str(tmp_path / "fw.nft"), "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.9",
          "--dport", "80", "--path", "output", "--width", "200", "--no-color"])
    out = capsys.readouterr().out
    (owner,) = [ln for ln in out.splitlines() if ln.lstrip().startswith("owner")]
    assert owner.endswith("at firewalld:filter_OUTPUT policy") and "rule 2" not in owner


def test_the_rule_that_turned_tracing_on_is_matched_not_failed(capsys):
    """explain-miss said the TRACE rule 'did not match (the trace shows it)': a trace starts after it."""
    from ruletrace.cli import main

    main(["explain", "--example", "ipv6", "--packet", "1", "--explain-miss", "raw:PREROUTING", "--width", "200",
          "--no-color"])
    out = capsys.readouterr().out.splitlines()
    i = next(k for k, ln in enumerate(out) if ln.strip().startswith("raw:PREROUTING:2"))
    assert out[i + 1].strip() == ("matched: it turned tracing on (a trace starts after the rule that starts it, "
                                  "so never shows it)")
    j = next(k for k, ln in enumerate(out) if ln.strip().startswith("raw:PREROUTING:1"))
    assert "`-p tcp` did not match" in out[j + 1]  # a TRACE rule for other packets still fails as it does


def test_diff_does_not_blame_the_trace_rule_a_monitor_shows(capsys):
    """diff of one packet's kernel-log and nft-monitor traces: the monitor shows the `-j TRACE` rule, the log
    never does; the diff named it the first divergence and exited 1."""
    from pathlib import Path

    from ruletrace.cli import main

    ex = Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "examples" / "ipv6"
    code = main(["diff", "-r", str(ex / "ruleset6.rules"), "--left", f"{ex / 'kernel.log'}:3", "--right",
                 f"{ex / 'nft-monitor.txt'}:3", "--width", "200", "--no-color"])
    out = capsys.readouterr().out
    assert code == 0 and "the two paths are the same" in out and "-j TRACE" not in out


def test_without_a_listing_an_unnamed_base_chain_is_no_hook_it_was_not_in(capsys):
    """nft monitor text without its ruleset: rtr:srcnat (a postrouting chain) was drawn under FORWARD, the
    hook of the chain before it; a base chain nothing names is a hook of its own, '?'."""
    from pathlib import Path

    from ruletrace.cli import main

    cap = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures" / "router" / "nft-monitor-a.txt"
    main(["explain", str(cap), "--packet", "2", "--width", "200", "--no-color"])
    lines = capsys.readouterr().out.splitlines()
    heads = [ln for ln in lines if ln.startswith(("├── ", "└── "))]
    assert heads[-2].split()[1:] == ["FORWARD", "rtr"] and heads[-1].split()[1:] == ["?", "rtr"]
    last = lines.index(heads[-1])
    assert "rtr:srcnat policy" in lines[last + 1]


def test_diff_of_a_packet_with_itself_says_each_side_once(capsys):
    from ruletrace.cli import main

    assert main(["diff", "--example", "filter-basics", "3", "3", "--width", "120", "--no-color"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("left  packet 3  ") and out[2].startswith("right packet 3  ")


def test_a_verbose_steps_place_is_its_files_name_and_line(capsys):
    """review: `-v` at 80 columns broke the step's '/long/path/kernel.log:6' in the middle of the name;
    the header names the path whole once, each step its file's name and line."""
    from ruletrace.cli import main

    main(["explain", "--example", "ipv6", "-v", "--packet", "3", "--width", "80", "--no-color"])
    out = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("first seen at /") and ln.endswith("/ipv6/kernel.log:6") for ln in out)
    places = [ln.strip(" │") for ln in out if ln.strip(" │").startswith("at ")]
    assert places == ["at kernel.log:6", "at kernel.log:7"]


_HERE = __import__("pathlib").Path(__file__).resolve().parents[1]
_EX = _HERE.parent / "src" / "ruletrace" / "examples"


def test_a_multiport_ports_rule_taken_is_no_traceback(tmp_path, capsys):
    """final review: `-m multiport --ports` (either port) had no field: the new taken check raised KeyError."""
    from ruletrace.cli import main

    fb = _EX / "filter-basics"
    rules = tmp_path / "p.rules"
    rules.write_text((fb / "ruleset.rules").read_text().replace("--dports 22,80,8080", "--ports 22,80,8080"))
    assert main(["explain", str(fb / "kernel.log"), "-r", str(rules), "--match", "dport=22", "--no-color"]) == 0
    assert capsys.readouterr().out.count("DELIVERED by") == 3


def test_an_interface_known_by_index_only_is_never_a_misfit(capsys):
    """final review: NFLOG without --ifmap names interfaces if5; `-o rtl1440d0` is not 'not matching' it."""
    from ruletrace.cli import main

    d = _EX / "docker-portmap"
    main(["explain", str(d / "nflog.pcap"), "-r", str(d / "ruleset.rules"), "--no-color"])
    out, err = capsys.readouterr()
    assert "the trace shows this rule taken" not in out and "does not fit" not in err


def test_a_lost_mark_line_is_looked_for_where_it_can_have_been(capsys):
    """final review: the guess named mangle:PREROUTING rule 1 (a UDP rule, in a chain the packet left with
    mark 0x0) for a TCP packet whose lost line was mangle:INPUT rule 1."""
    from ruletrace.cli import main

    d = _HERE / "fixtures" / "explain" / "lost-mark"
    full = (d / "full.log").read_text().splitlines()
    assert next(ln for ln in full if ln not in (d / "lost.log").read_text().splitlines()).count("mangle:INPUT:rule:1")
    main(["explain", str(d / "lost.log"), "-r", str(d / "r.rules"), "--no-color", "--width", "200"])
    out = capsys.readouterr().out
    assert "MARK 0x0 -> 0x1 (probably mangle:INPUT rule 1 (it sets this mark)" in out and "PREROUTING rule 1" not in out


def test_ct_status_dnat_is_a_match_not_a_dnat(capsys):
    """final review: fw4's `ct status dnat accept` was read as a DNAT statement ('=> DNAT')."""
    from ruletrace.cli import main

    f = _HERE / "fixtures" / "nft_captures" / "router"
    main(["explain", str(f / "nft-monitor.txt"), "-r", str(f / "ruleset.nft"), "--packet", "2", "--no-color",
          "--width", "200"])
    out = capsys.readouterr().out
    assert "rtr:forward_wan rule 1" in out and "=> DNAT" not in out and "=> ACCEPT" in out
