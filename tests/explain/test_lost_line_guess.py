"""One trace line lost from a paste (review, pasted data): the change it made is still put on the rule the
ruleset has for it, as a guess said as one, never "changed outside the traced rules"."""

from __future__ import annotations

from pathlib import Path

from ruletrace.pipeline import Run, load_rulesets

K8S = Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "examples" / "k8s-nodeport"


def _explained(tmp_path, lost: int):
    lines = (K8S / "kernel.log").read_text().splitlines(keepends=True)
    assert lines[lost - 1].split("TRACE: ")[1].startswith(
        {6: "nat:KUBE-MARK-DROP:rule:1 ", 21: "nat:PREROUTING:rule:2 "}[lost])
    log = tmp_path / "lost.log"
    log.write_text("".join(lines[: lost - 1] + lines[lost:]))
    return list(Run(load_rulesets([str(K8S / "ruleset.rules")]), [str(log)]).explanations())


def test_a_lost_mark_line_names_the_mark_rule_as_a_guess(tmp_path):
    e = _explained(tmp_path, 6)[0]
    (m,) = e.marks
    assert (m.old, m.new) == ("0x0", "0x8000")
    assert m.note == "probably nat:KUBE-MARK-DROP rule 1 (it sets this mark); its trace line is not in the log"


def test_a_lost_dnat_line_names_the_dnat_rule_as_a_guess(tmp_path):
    e = next(x for x in _explained(tmp_path, 21) if any(c.what == "DST" for c in x.nat))
    (c,) = [c for c in e.nat if c.what == "DST"]
    assert (c.old, c.new) == ("172.28.129.4:80", "172.28.129.4:52000")
    assert c.note == "probably nat:PREROUTING rule 2; its trace line is not in the log"


def test_no_rule_that_makes_the_mark_is_no_guess(tmp_path):
    text = (K8S / "ruleset.rules").read_text().replace("--set-xmark 0x8000/0x8000", "--set-xmark 0x4/0x4")
    (tmp_path / "r.rules").write_text(text)
    lines = (K8S / "kernel.log").read_text().splitlines(keepends=True)
    (tmp_path / "lost.log").write_text("".join(lines[:5] + lines[6:]))
    e = next(iter(Run(load_rulesets([str(tmp_path / "r.rules")]), [str(tmp_path / "lost.log")]).explanations()))
    assert [m.note for m in e.marks] == ["changed outside the traced rules (conntrack, routing or an untraced table)"]
