"""One table name in two families on one path (``table inet same`` and ``table ip same``, as a host
with nftables.conf's ``inet filter`` and Docker's iptables-nft ``ip filter`` has): every view names
those tables with their family, nft's words, and leaves every other table's name as it is.

The lab capture ``nft_captures/layered``: an IPv4 SYN to port 22 is accepted by ``inet same``'s
rule 1 and then by ``ip same``'s policy, which decides; before, both read ``same:in``, so the tree
said "same:in rule 1 … accept" and then "same:in policy ACCEPT" as if the accept had not held.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ruletrace.analyze.live import decider_text, decider_words
from ruletrace.analyze.summary import Summary
from ruletrace.pipeline import Run, load_rulesets
from ruletrace.render.json import to_json
from ruletrace.render.json_model import from_json
from ruletrace.render.tree import render_explanations
from ruletrace.rulesets.nft_model import shared_tables, table_label

LAYERED = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures" / "layered"


def _explained():
    run = Run(load_rulesets([str(LAYERED / "ruleset-a.nft")]), [str(LAYERED / "nft-monitor-a.txt")])
    return list(run.explanations())


def _ssh4(expls):
    return next(e for e in expls if e.first.get("DPT") == "22" and e.first.get("SRC") == "10.77.0.1"
                and e.first.get("TCPFLAGS") == "SYN")


def test_the_rule_names_a_shared_table_with_its_family_only():
    class Ev:
        def __init__(self, table, family, nftables=True):
            self.table, self.family, self.nftables = table, family, nftables

    path = [Ev("early", "ipv4"), Ev("same", "inet"), Ev("late", "ipv4"), Ev("same", "ipv4"), Ev("x", None)]
    assert shared_tables(path) == {"same"}
    assert table_label("same", "ipv4", {"same"}) == "ip same"
    assert table_label("same", "inet", {"same"}) == "inet same"
    assert table_label("same", "ipv6", {"same"}) == "ip6 same"
    assert table_label("early", "ipv4", {"same"}) == "early"  # a name only one family has: as it is
    assert table_label("same", None, {"same"}) == "same"  # no family known: nothing made up
    assert shared_tables([Ev("filter", "ipv4"), Ev("filter", "ipv4")]) == frozenset()
    # a legacy xtables step is never an nf_tables table of a family (review: "ip filter" on legacy steps)
    assert shared_tables([Ev("filter", "ipv4", nftables=False), Ev("filter", "inet")]) == frozenset()


def test_tree_why_and_deciders_say_which_family():
    e = _ssh4(_explained())
    assert e.shared == {"same"}
    buf = io.StringIO()
    from rich.console import Console

    render_explanations([e], Console(file=buf, width=200, color_system=None), verbose=False)
    out = buf.getvalue()
    assert "DELIVERED by ip same:in policy ACCEPT" in out
    assert "INPUT  early -> inet same -> late -> ip same" in out
    assert "├── inet same:in rule 1  tcp dport 22 accept" in out
    assert "└── ip same:in policy 2  ACCEPT" in out
    assert "accepted by the ACCEPT policy of ip same:in" in out
    assert " same:in" not in out.replace("inet same:in", "").replace("ip same:in", "")
    # the deciders of a summary: "ip same" and "ip6 same" apart (they read "same:in" twice before)
    s = Summary()
    for x in _explained():
        s.add(x)
    words = [decider_words(d) for d, _n in s.ranked()]
    assert "ip same:in policy ACCEPT" in words and "ip6 same:in policy ACCEPT" in words
    assert s.to_json()["deciding"][0]["family"] in ("ipv4", "ipv6")
    # a table only one family has keeps its plain name everywhere
    assert "early:in rule 1" in out and "ip early" not in out


def test_json_says_the_family_of_a_shared_tables_steps_and_reads_it_back():
    e = _ssh4(_explained())
    pkt = json.loads(json.dumps(to_json(e)))
    fams = {(s["table"], s.get("family")) for s in pkt["steps"]}
    assert ("same", "inet") in fams and ("same", "ipv4") in fams
    # the packet's family is its first step's (inet: the tracing table); a step of another family's
    # table says its own, so that a reader puts it in that family's listing (review: report --from-json)
    assert pkt["family"] == "inet" and ("early", "ipv4") in fams and ("rttrace", None) in fams
    assert pkt["shared"] == ["same"]
    assert pkt["verdict"]["family"] == "ipv4"
    back = from_json(pkt, pkt["tables"])
    assert back.shared == {"same"} and back.verdict is not None and back.verdict.family == "ipv4"


def test_the_family_keys_are_in_the_json_schema():
    import pytest

    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "json-schema.json").read_text())
    e = _ssh4(_explained())
    jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/packet"}).validate(
        json.loads(json.dumps(to_json(e))))
    s = Summary()
    s.add(e)
    jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/summary"}).validate(s.to_json())


def test_a_path_that_meets_one_of_the_tables_names_it_with_its_family_too(tmp_path):
    """The ruleset gives `same` to three families: a packet that meets only `inet same` names it so
    too (review: it read `same:in`, and the summary put `ip same:in` beside a bare `same:in`), in
    the tree and in JSON read back."""
    trace = (LAYERED / "nft-monitor-a.txt").read_text().splitlines()
    first = trace[0].split()[2]
    one = [x for x in trace if x.split()[2] == first and " ip same " not in x]  # the SYN, without ip same
    assert len(one) < len([x for x in trace if x.split()[2] == first])
    (tmp_path / "t.txt").write_text("\n".join(one) + "\n")
    (e,) = list(Run(load_rulesets([str(LAYERED / "ruleset-a.nft")]), [str(tmp_path / "t.txt")]).explanations())
    assert "same" in e.shared and {s.event.family for s in e.steps if s.table == "same"} == {"inet"}
    buf = io.StringIO()
    from rich.console import Console

    render_explanations([e], Console(file=buf, width=200, color_system=None), verbose=False)
    out = buf.getvalue()
    assert "inet same:in rule 1" in out
    assert " same:in" not in out.replace("inet same:in", "").replace("ip same:in", "")
    pkt = json.loads(json.dumps(to_json(e)))
    back = from_json(pkt, pkt["tables"])
    assert back.shared == {"same"}
    assert {(s["table"], s.get("family")) for s in pkt["steps"] if s["table"] == "same"} == {("same", "inet")}


def test_diff_never_aligns_two_families_tables_as_one():
    """review: `diff` of the IPv4 and the IPv6 SSH packet put `ip same:in policy 2` as equal to
    `ip6 same:in policy 3`, and said both headlines as `same:in`."""
    from ruletrace.analyze.diff import DiffPacket, diff_packets

    expls = _explained()
    v4 = _ssh4(expls)
    v6 = next(e for e in expls if e.first.get("DST") == "fd77::2" and e.first.get("TCPFLAGS") == "SYN")
    a, b = DiffPacket.of(v4), DiffPacket.of(v6)
    assert (a.decided, b.decided) == ("ip same:in policy ACCEPT", "ip6 same:in policy ACCEPT")
    pd = diff_packets(a, b)
    same = [(a.steps[r.left].table, b.steps[r.right].table) for r in pd.rows if r.tag == "same"]
    assert ("inet same", "inet same") in same and all(x == y for x, y in same)
    assert not any(r.tag == "same" and a.steps[r.left].table == "ip same" for r in pd.rows)


def test_the_decisive_step_is_the_verdicts_familys():
    """review: the last step at the verdict's table, chain and number was taken as decisive,
    whichever family's table it was."""
    from dataclasses import replace

    from ruletrace.render.tree import decisive_step

    e = _ssh4(_explained())
    k = decisive_step(e)
    assert (e.steps[k].table, e.steps[k].event.family, e.steps[k].kind.value) == ("same", "ipv4", "policy")
    # a verdict in inet same's `in` at a number the later ip same step has too: the inet step
    inet = next(i for i, s in enumerate(e.steps) if s.table == "same" and s.event.family == "inet")
    e.steps[k].event.num = e.steps[inet].num  # (this test's own events: the ip step gets that number)
    e.verdict = replace(e.verdict, num=e.steps[inet].num, family="inet")
    e.cause = []
    assert inet < k and decisive_step(e) == inet


EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "examples"
BOTH_NFT = """table ip filter {
\tchain INPUT {
\t\ttype filter hook input priority filter; policy accept;
\t\ttcp dport 23 counter accept
\t}
}
table inet filter {
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\ttcp dport 24 drop
\t}
}
"""


def test_legacy_xtables_tables_are_never_named_with_a_family(tmp_path, capsys):
    """review: legacy iptables-save + ip6tables-save beside an nft listing with `inet filter` named
    every legacy step `ip filter`; both backends simulated named legacy filter `ip filter` too."""
    from ruletrace.cli import main

    nft = tmp_path / "nft.nft"
    nft.write_text(BOTH_NFT)
    fb = EXAMPLES / "filter-basics"
    assert main(["explain", "-r", str(fb / "ruleset.rules"), "-r", str(EXAMPLES / "ipv6" / "ruleset6.rules"),
                 "-r", str(nft), str(fb / "kernel.log"), "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "filter:INPUT" in out and "ip filter" not in out and "ip6 filter" not in out
    main(["simulate", "-r", str(fb / "ruleset.rules"), "-r", str(nft), "-p", "tcp", "-s", "10.10.0.2", "-d",
          "10.10.0.1", "--dport", "22", "--path", "input", "--no-color", "--width", "300"])
    out = capsys.readouterr().out
    head = out.splitlines()[1]
    assert head.startswith("DELIVERED by filter:ALLOWED rule 1: accepted by nft ip filter:INPUT policy ACCEPT, "
                           "then accepted by legacy filter:ALLOWED rule 1")
    assert "INPUT  inet filter -> ip filter -> filter" in out


V4 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p tcp -j LOG
COMMIT
"""
V6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -d fd99::1/128 -j DROP
-A OUTPUT -d fd99::2/128 -j DROP
COMMIT
"""
_TAIL4 = ("IN= OUT=eth0 SRC=10.0.0.1 DST=10.0.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID={id} DF PROTO=TCP SPT=1000 "
          "DPT=80 SEQ=1 ACK=0 WINDOW=64240 RES=0x00 SYN URGP=0")
_TAIL6 = ("IN= OUT=eth0 SRC=fd00::1 DST=fd00::2 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL={id} PROTO=TCP SPT=1000 DPT=80 "
          "SEQ=1 ACK=0 WINDOW=64240 RES=0x00 SYN URGP=0")


def _legacy_both(tmp_path, six=True):
    (tmp_path / "v4.save").write_text(V4)
    (tmp_path / "v6.save").write_text(V6)
    lines = [f"[  100.00000{i}] TRACE: filter:OUTPUT:rule:1 {_TAIL4.format(id=i)}\n"
             f"[  100.00000{i}] TRACE: filter:OUTPUT:policy:2 {_TAIL4.format(id=i)}" for i in (1, 2)]
    if six:
        lines.append(f"[  100.000003] TRACE: filter:OUTPUT:policy:3 {_TAIL6.format(id=3)}")
    (tmp_path / "t.log").write_text("\n".join(lines) + "\n")
    return [str(tmp_path / "v4.save"), str(tmp_path / "v6.save"), str(tmp_path / "t.log")]


def test_a_summary_tells_iptables_tables_from_ip6tables_ones(tmp_path, capsys):
    """Left from the last session: iptables-save + ip6tables-save, IPv4 and IPv6 packets ending at
    filter:OUTPUT's policy: `--summary` showed two rows both reading "filter:OUTPUT policy ACCEPT" (the
    policies' numbers differ). They are two tables: the summary names each in its tool's words, never
    nft's (`ip filter` is the nf_tables table on a mixed host), and the tree of one packet stays as it was."""
    from ruletrace.cli import main

    v4, v6, log = _legacy_both(tmp_path)
    assert main(["explain", "-r", v4, "-r", v6, log, "--summary", "--no-color", "--width", "120"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines() if "policy" in ln]
    assert rows == [["2", "accept", "iptables", "filter:OUTPUT", "policy", "ACCEPT"],
                    ["1", "accept", "ip6tables", "filter:OUTPUT", "policy", "ACCEPT"]]
    assert main(["explain", "-r", v4, "-r", v6, log, "--json"]) == 0
    deciding = json.loads(capsys.readouterr().out)["summary"]["deciding"]
    assert [(d["family"], d["num"], d["count"]) for d in deciding] == [("ipv4", 2, 2), ("ipv6", 3, 1)]
    assert main(["explain", "-r", v4, "-r", v6, log, "--no-color"]) == 0
    tree, _, summary = capsys.readouterr().out.partition("3 packets")
    assert "iptables" not in tree and "ip filter" not in tree and "SENT by filter:OUTPUT policy ACCEPT" in tree
    assert "ip6tables filter:OUTPUT policy" in summary  # the summary after the trees: two tables


def test_one_familys_legacy_deciders_keep_their_plain_names(tmp_path, capsys):
    from ruletrace.cli import main

    v4, v6, log = _legacy_both(tmp_path, six=False)
    assert main(["explain", "-r", v4, "-r", v6, log, "--json"]) == 0
    (d,) = json.loads(capsys.readouterr().out)["summary"]["deciding"]
    assert "family" not in d and d["count"] == 2
    s = Summary()
    for e in Run(load_rulesets([v4, v6]), [log]).explanations():
        s.add(e)
        assert decider_text(e) == "filter:OUTPUT policy ACCEPT"  # the live line
    assert [decider_words(d) for d, _ in s.ranked()] == ["filter:OUTPUT policy ACCEPT"]
