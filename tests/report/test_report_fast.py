"""The report's per-path memo (render/report_data.ReportData, fast=True) gives the same document
as making every packet's shared part from its own explanation (fast=False), on every fixture,
example, lab capture and a generated kube-proxy log; and the page's document is the same too."""

from __future__ import annotations

import pytest

from ruletrace.pipeline import Run, load_rulesets
from ruletrace.render.html import ReportBuilder
from ruletrace.render.report_data import ReportData
from tests.corpus_cases import cases, kube_log


def _docs(rulesets, trace, cls=ReportData):
    rs = load_rulesets([str(r) for r in rulesets])
    expls = list(Run(rs, [str(trace)]).explanations())
    fast, ref = cls(rs), cls(rs, fast=False)
    for e in expls:
        fast.add(e)
        ref.add(e)
    return fast, ref


@pytest.mark.parametrize("name,rulesets,trace", cases(), ids=[c[0] for c in cases()])
def test_fast_equals_reference(name, rulesets, trace):
    fast, ref = _docs(rulesets, trace)
    assert fast.data() == ref.data()
    assert fast.deciders() == ref.deciders()


def test_fast_equals_reference_on_a_generated_kube_log(tmp_path):
    rules, log = kube_log(tmp_path, services=40, packets=800)
    fast, ref = _docs([rules], log, ReportBuilder)
    assert fast.packets == 800 and fast.shared > 400 and ref.shared == 0
    assert fast.data() == ref.data()  # ReportBuilder.data: with the diagram's hooks and labels
    assert fast.render(title="t") == ref.render(title="t")
