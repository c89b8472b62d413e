"""explain/pathcache.py: an explanation made once per path and field changes equals the reference
``Explainer.explain`` for every packet of every fixture, example, lab capture and a generated
kube-proxy log — including the packets that were copied from a cached one."""

from __future__ import annotations

import pytest

from ruletrace.correlate.group import group_packets
from ruletrace.explain.explain import Explainer
from ruletrace.model import RulesetView
from ruletrace.pipeline import Run, load_rulesets
from tests.corpus_cases import cases, kube_log


def _packets(rulesets, path):
    run = Run(rulesets, [str(path)])
    return list(group_packets(run.read_events()))


def _check(rulesets, path) -> tuple[int, int]:
    packets = _packets(rulesets, path)
    ref = Explainer(RulesetView(rulesets))
    fast = Explainer(RulesetView(rulesets))
    for p in packets:
        want = ref.explain(p)
        got = fast.explain_cached(p)
        assert got == want, f"packet {p.id} of {path}"
        assert got.path_key == fast.explain(p).path_key
    assert fast.misfit_packets == 2 * ref.misfit_packets  # counted by explain_cached and explain alike
    return fast.paths.hits, len(packets)


@pytest.mark.parametrize("name,rulesets,trace", cases(), ids=[c[0] for c in cases()])
def test_cached_equals_full(name, rulesets, trace):
    _check(load_rulesets([str(r) for r in rulesets]), trace)


def test_cached_equals_full_on_a_generated_kube_log(tmp_path):
    rules, log = kube_log(tmp_path, services=40, packets=600)
    hits, n = _check(load_rulesets([str(rules)]), log)
    assert n == 600 and hits > 300  # most packets were copied, not annotated again


def test_a_copied_explanation_has_its_own_values(tmp_path):
    """The masquerade named after the last step carries each packet's own source; lists are not shared."""
    rules, log = kube_log(tmp_path, services=5, packets=200)
    rs = load_rulesets([str(rules)])
    ex = Explainer(RulesetView(rs))
    out = [ex.explain_cached(p) for p in _packets(rs, log)]
    assert ex.paths.hits > 100
    masq = [(e, c) for e in out for c in e.nat if c.note.startswith("applied as the packet leaves")]
    assert len({c.old for _, c in masq}) > 10
    for e, c in masq:
        f = e.steps[c.step].event.fields
        assert c.old == f"{f['SRC']}:{f['SPT']}"
    a, b = (e for e in out if e.path_key == out[-1].path_key and e is not out[-1]).__next__(), out[-1]
    a.notes.append("x")
    assert "x" not in b.notes
