"""The one-line live view (render/live.py, analyze/live.py) on the bundled examples' real packets,
at 80 and 200 columns, on a terminal (cut to the width, rewritten in place) and not (whole lines)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from ruletrace.analyze.live import Repeats, decider_text, decider_words, line_of
from ruletrace.cli.options import example_paths
from ruletrace.model import Fate
from ruletrace.pipeline import Run
from ruletrace.render import json as rjson
from ruletrace.render.live import LiveView, json_object, summary_lines, to_text
from ruletrace.rulesets import load_ruleset

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "json-schema.json").read_text())
NOW = 1_780_000_000.25
FATES = tuple(f.value.upper() for f in Fate)


def explanations(example: str) -> list:
    rulesets, logs = example_paths(example)
    return list(Run([load_ruleset(r) for r in rulesets], logs[:1]).explanations())


def view_output(example: str, width: int, terminal: bool, **kw) -> tuple[str, LiveView]:
    buf = io.StringIO()
    view = LiveView(Console(file=buf, width=width, force_terminal=terminal, color_system=None),
                    wall=lambda: NOW, **kw)
    for e in explanations(example):
        view.show(e)
    view.finish()
    return buf.getvalue(), view


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("example", ["ipv6", "k8s-nodeport", "docker-portmap"])
def test_not_a_terminal_one_whole_line_per_path(example, width):
    out, view = view_output(example, width, terminal=False)
    lines = out.splitlines()
    expls = explanations(example)
    distinct = len(view.repeats.paths)
    # one line per distinct path, plus one at the end for each path repeated after its line
    assert len(lines) == distinct + len([r for r in view.repeats.repeated() if r.count > 1])
    for line in lines:  # never wrapped: every line has the whole packet, its fate and its decider
        assert re.match(r"\d\d:\d\d:\d\d\.\d{3}  \S+ \S+ -> \S+", line), line
        assert any(f"  {f}  " in line for f in FATES), line
    first = expls[0]
    assert lines[0].startswith(line_of(first, NOW).time)
    assert f"  {decider_text(first)}" in lines[0]
    assert sum(r.count for r in view.repeats.paths.values()) == len(expls)


@pytest.mark.parametrize("width", [80, 200])
def test_terminal_lines_fit_and_repeats_rewrite_in_place(width):
    out, _view = view_output("ipv6", width, terminal=True)
    rows = [r for r in out.replace("\x1b[1A\x1b[2K", "\n<up>").splitlines() if r]
    assert "<up>" in out.replace("\x1b[1A\x1b[2K", "<up>")  # the ACK repeat rewrote its own row
    for row in rows:
        text = row.removeprefix("<up>")
        assert len(text) <= width, text
        assert re.search(rf" ({'|'.join(FATES)}) +filter:\S+ (rule \d+|policy [A-Z]+)", text), text
    rewritten = [r for r in rows if r.startswith("<up>")]
    assert rewritten and all(r.endswith("×2") for r in rewritten[:1])
    if width == 200:
        assert "fd00:10::2 -> fd00:10::1" in out and "0010:0000" not in out


def test_narrow_terminal_drops_columns_in_order():
    expl = explanations("k8s-nodeport")[0]
    line = line_of(expl)
    full = to_text(line).plain
    assert line.cause in full and line.iface in full and line.time in full
    at80 = to_text(line, 3, 80).plain
    assert len(at80) <= 80 and at80.endswith("×3")
    assert line.cause not in at80 and line.time not in at80
    assert re.search(" DROPPED +filter:KUBE-FIREWALL rule 1 +×3$", at80)
    assert "TCP 172.28.129.2 -> 172.28.129.4:52000" in at80  # fewer words, but the addresses whole
    assert to_text(line, 3, 260).plain == full + "  ×3"  # wide enough for every column, the owner too


def test_tree_for_the_first_packet_of_each_path_then_lines():
    out, view = view_output("ipv6", 200, terminal=False, tree=True)
    assert out.count("\npacket ") + out.startswith("packet ") == len(view.repeats.paths)
    assert "×2" in out  # a repeat is a line, not another tree


def test_every_packet_as_a_tree_with_v():
    out, _view = view_output("ipv6", 200, terminal=False, every=True, verbose=True)
    assert out.count("packet ") == len(explanations("ipv6")) and "×" not in out


def test_summary_lines_count_fates_deciders_and_repeats():
    rep = Repeats()
    for e in explanations("ipv6"):
        rep.add(e)
    lines = summary_lines(rep, 1000)
    assert lines[0] == "11 packet(s): 1 dropped, 1 rejected, 4 delivered, 5 sent"
    assert lines[1].startswith("decided by: filter:OUTPUT policy ACCEPT ×5, ")
    assert lines[2] == "3 packet(s) took a path already shown (2 path(s) repeated)"
    assert len(lines) == 3  # one line while it fits


def test_summary_deciders_one_a_line_when_they_do_not_fit():
    """A kube node's deciders with their owners made one line of ~350 characters; past the width
    each decider gets its own line, its count first, the rest counted."""
    rep = Repeats()
    for name in ("k8s-nodeport", "ipv6", "docker-portmap", "filter-basics"):
        for e in explanations(name):
            rep.add(e)
    wide = summary_lines(rep, 1000)
    assert len(wide) == 3 and wide[1].startswith("decided by: ") and wide[1].endswith(" more")
    narrow = summary_lines(rep, 80)
    assert narrow[0] == wide[0] and narrow[1] == "decided by:" and narrow[-1] == wide[-1]
    listed = narrow[2:-1]
    ranked = rep.summary.ranked()
    assert len(listed) == 6  # five deciders and the rest
    for line, (d, n) in zip(listed[:5], ranked):
        assert re.fullmatch(rf" +{n}  " + re.escape(decider_words(d)), line), line
    rest = sum(n for _d, n in ranked[5:])
    assert re.fullmatch(rf" +{rest}  {len(ranked) - 5} more", listed[-1])
    assert len({len(x) - len(x.lstrip()) + len(x.split()[0]) for x in listed}) == 1  # counts right-aligned


def test_json_line_has_time_session_schema_and_passes_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    expl = explanations("ipv6")[0]
    obj = json_object(rjson.to_json(expl), "ab12cd34", 1_780_000_000.25)
    assert obj["time"] == "2026-05-28T20:26:40.250+00:00" and obj["session"] == "ab12cd34" and obj["schema"] == 2
    packet_schema = {"$defs": SCHEMA["$defs"], **SCHEMA["$defs"]["packet"]}
    jsonschema.validate(json.loads(rjson.dumps(obj)), packet_schema)
    assert rjson.to_json(rjson.from_json(obj)) == rjson.to_json(expl)  # diff / report --from-json read it


def test_decider_words():
    by = {decider_text(e) for e in explanations("ipv6")}
    assert {"filter:ICMP6 rule 3", "filter:OUTPUT policy ACCEPT", "filter:INPUT policy DROP"} <= by


def test_a_repeat_whose_line_scrolled_away_is_reprinted_at_most_every_few_seconds():
    from ruletrace.render.live import REPRINT_AFTER

    now = [100.0]
    buf = io.StringIO()
    view = LiveView(Console(file=buf, width=200, color_system=None), clock=lambda: now[0], wall=lambda: NOW)
    syn, ping = explanations("k8s-nodeport")[0], explanations("k8s-nodeport")[4]  # two paths
    view.show(syn)
    view.show(ping)
    view.show(syn)  # its line is not the last one, and it was printed just now: counted only
    assert buf.getvalue().count("\n") == 2
    now[0] += REPRINT_AFTER
    view.show(syn)  # a while later: printed again, with its count
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and lines[2].endswith("  ×3") and "DROPPED" in lines[2]
    view.finish()  # every count was printed: nothing more
    assert len(buf.getvalue().splitlines()) == 3


def test_known_lines_word_for_word():
    """Literal lines for packets whose story is known from the lab (not built by the code under
    test): the NodePort SYN dropped through the kube-proxy mark, and IPv6 port 25 dropped by the
    policy with the multiport rule as the near miss."""
    k8s, _v = view_output("k8s-nodeport", 250, terminal=False)
    v6, _v = view_output("ipv6", 250, terminal=False)
    rest = [line.split("  ", 1)[1] for line in (k8s + v6).splitlines()]  # the time is local: left out
    assert ("TCP 172.28.129.2:40000 -> 172.28.129.4:52000 [SYN]  in rtl961n0  DROPPED  filter:KUBE-FIREWALL rule 1  "
            "kubernetes ns/ingress-nginx:http  has no local endpoints; mark 0x8000 set by nat:KUBE-MARK-DROP rule 1"
            ) in rest
    assert ("TCP 172.28.129.2:40001 -> 172.28.129.4:80 [SYN]  in rtl961n0  DELIVERED  filter:INPUT policy ACCEPT  "
            "DNAT to 172.28.129.4:52000") in rest
    assert ("TCP [fd00:10::2]:40003 -> [fd00:10::1]:25 [SYN]  in rtl2483s0  DROPPED  filter:INPUT policy DROP  "
            "no rule matched; nearly filter:INPUT rule 4") in rest
    assert ("TCP [fd00:10::1]:22 -> [fd00:10::2]:40001 [ACK SYN]  out rtl2483s0  SENT  filter:OUTPUT policy ACCEPT  "
            "no rule matched  ×3") in rest


def test_cause_names_the_near_miss_not_netfilters_own_drop_reason():
    # lab (firewalld-style inet table, drop reasons on): every REJECT also came with the kernel's
    # NETFILTER_DROP, and the line's cause read "kernel: a netfilter rule or chain policy dropped it"
    # -- true of every rule drop, and it hid the near miss. A reason other than netfilter's stays first.
    from ruletrace.analyze.live import cause_text
    from ruletrace.kernel_facts import NETFILTER_DROP
    from ruletrace.model import KernelDrop
    from ruletrace.pipeline import explain_files

    d = Path(__file__).resolve().parents[1] / "fixtures" / "owners" / "firewalld-zone"
    e = explain_files(str(d / "ruleset.nft"), [str(d / "nft-monitor.txt")]).explanations[0]
    e.drops = [KernelDrop(NETFILTER_DROP, "nft_do_chain", "a netfilter rule or chain policy dropped it")]
    assert cause_text(e) == "reject with icmpx admin-prohibited; nearly firewalld:filter_IN_public_allow rule 3"
    e.drops.insert(0, KernelDrop("NO_SOCKET", None, "no socket listens on tcp/8443"))
    assert cause_text(e) == "kernel: no socket listens on tcp/8443"


def test_80_columns_keep_both_ipv6_addresses_whole_the_chain_gives_way():
    # lab (firewalld-style table, IPv6 SYN): at 80 columns the line read
    # "TCP fd00:99:1::2…0:99:1::1]:9091  REJECTED  firewalld:filter_INPUT_POLICIES rule 3": the
    # addresses were cut while the long chain name stayed whole
    from ruletrace.analyze.live import LiveLine

    line = LiveLine(time="01:02:03.456", packet="TCP [fd00:99:1::2]:40000 -> [fd00:99:1::1]:9091 [SYN]",
                    iface="in veth0", fate="REJECTED", decider="firewalld:filter_INPUT_POLICIES rule 3",
                    cause="reject with icmpx admin-prohibited", short="TCP fd00:99:1::2 -> [fd00:99:1::1]:9091",
                    owner="firewalld zone public", miss="")
    at80 = to_text(line, 2, 80).plain
    assert len(at80) <= 80 and at80.endswith("×2")
    assert "TCP fd00:99:1::2 -> [fd00:99:1::1]:9091 REJECTED firewalld:" in at80
    assert re.search(r"firewalld:\w+…\w*ICIES rule 3", at80)
    at60 = to_text(line, 2, 60).plain  # past the chain's least, the packet is cut as before
    assert len(at60) <= 60 and "REJECTED" in at60 and "…" in at60


def test_piped_line_keeps_the_whole_rule_text_as_its_cause():
    # lab, output piped: "filter:INPUT rule 1  -m conntrack --ctstate RELATED,ESTABLISHED -j A…" --
    # the rule text was cut at 48 characters even where lines are never cut
    from ruletrace.analyze.live import cause_text

    e = next(e for e in explanations("filter-basics") if e.verdict is not None and e.verdict.rule is not None
             and len(e.verdict.rule.spec) > 48 and not e.drops)
    assert e.verdict.rule.spec in cause_text(e)
    out, _view = view_output("filter-basics", 80, terminal=False)
    assert e.verdict.rule.spec in out and "…" not in out


def test_a_rule_missing_from_the_ruleset_is_no_policy():
    # review (a native `table ip filter` read as iptables-nft, so no rule text): the tree said
    # "REJECTED by filter:INPUT rule ?" while the line said "filter:INPUT policy DROP  no rule matched"
    from ruletrace.analyze.live import cause_text, decider_text
    from ruletrace.model import Explanation, Fate, Packet, StepKind, Verdict

    e = Explanation(Packet(1), fate=Fate.REJECTED,
                    verdict=Verdict("reject", "filter", "INPUT", None, None, "rejected by a rule of filter:INPUT",
                                    StepKind.RULE))
    assert decider_text(e) == "filter:INPUT rule ?"
    assert cause_text(e) == "a rule not in the ruleset"
    policy = Explanation(Packet(2), fate=Fate.DROPPED, verdict=Verdict("drop", "filter", "INPUT", 3, None, "",
                                                                      StepKind.POLICY))
    assert decider_text(policy) == "filter:INPUT policy DROP" and cause_text(policy) == "no rule matched"
