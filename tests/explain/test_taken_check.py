"""A ruleset newer or older than the log by a rule inserted above (review, pasted data): the trace's rule
numbers then point at other rules, and the rule named as taken contradicted the packet with no warning
(`DELIVERED by filter:INPUT rule 2 -i lo -j ACCEPT` for a packet in on rtl2181s0)."""

from __future__ import annotations

from pathlib import Path

from ruletrace.analyze.rule_check import taken_mismatch
from ruletrace.model import Rule
from ruletrace.pipeline import Run, load_rulesets

FB = Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "examples" / "filter-basics"


def _shifted(tmp_path):
    text = (FB / "ruleset.rules").read_text()
    first = text.index("-A INPUT")
    (tmp_path / "shift.rules").write_text(text[:first] + "-A INPUT -p tcp --dport 9999 -j DROP\n" + text[first:])
    (tmp_path / "p.log").write_text("".join(x for x in (FB / "kernel.log").read_text().splitlines(keepends=True)
                                            if "ID=17706 " in x))
    return str(tmp_path / "shift.rules"), str(tmp_path / "p.log")


def test_a_taken_rule_that_cannot_match_the_packet_is_a_misfit(tmp_path):
    rules, log = _shifted(tmp_path)
    run = Run(load_rulesets([rules]), [log])
    (e,) = list(run.explanations())
    step = next(s for s in e.steps if s.table == "filter" and s.num == 2)
    assert step.rule is not None and step.rule.text == "-A INPUT -i lo -j ACCEPT"
    assert step.warning == ("the trace shows this rule taken, but its `-i lo` does not match the packet's "
                            "IN=rtl2181s0: the ruleset's rules are not numbered as the kernel's were (rules "
                            "added or removed since?)")
    assert any("or rules taken that cannot match the packet" in w for w in run.warnings)


def test_the_right_ruleset_has_no_such_warning():
    run = Run(load_rulesets([str(FB / "ruleset.rules")]), [str(FB / "kernel.log")])
    assert not [s.warning for e in run.explanations() for s in e.steps if s.warning and "taken" in s.warning]


def test_only_what_the_log_wrote_is_read():
    r = Rule("filter", "INPUT", 3, "-A INPUT -p tcp -m tcp --dport 22 -m mark --mark 0x8000/0x8000 -j ACCEPT")
    assert taken_mismatch(r, {"PROTO": "TCP"}) is None  # a line cut before DPT: not blamed
    assert taken_mismatch(r, {"PROTO": "TCP", "DPT": "22"}) is None  # MARK=0 left out of the log: not blamed
    assert taken_mismatch(r, {"PROTO": "TCP", "DPT": "80"}) == "its `--dport 22` does not match the packet's DPT=80"
    assert taken_mismatch(r, {"PROTO": "UDP", "DPT": "22"}) == "its `-p tcp` does not match the packet's PROTO=UDP"
    assert taken_mismatch(Rule("filter", "INPUT", 1, "-A INPUT -s 10.0.0.0/8 -j DROP"), {"SRC": "x.x.x.x"}) is None


def test_a_summary_does_not_claim_the_taken_check_it_did_not_run(tmp_path):
    """final review: --summary reads no fields, so it never checks taken rules: its misfit warning must not
    name them as a possible reason."""
    rules, _log = _shifted(tmp_path)
    run = Run(load_rulesets([rules]), [str(FB / "kernel.log")], detail=False)
    list(run.explanations())
    said = [w for w in run.warnings if "does not fit" in w]
    assert said and not any("rules taken" in w for w in said)
