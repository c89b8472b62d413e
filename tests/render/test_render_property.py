"""Property: any explanation renders without error, within the width, with no control character out."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from render_cases import render
from rich.cells import cell_len

from ruletrace.analyze.summary import Summary
from ruletrace.model import (
    CauseLink,
    Change,
    Explanation,
    Fate,
    Origin,
    Packet,
    Rule,
    Step,
    StepKind,
    TraceEvent,
    Verdict,
)
from ruletrace.render.json import dumps, from_json, to_json
from ruletrace.render.summary import to_renderable as summary_renderable
from ruletrace.render.tree import to_renderable

pytestmark = pytest.mark.property

# printable text plus the characters a hostile log could carry: ESC, BEL, CSI, CR, LF, RTL override
_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from("\x1b\x07\x9b\r\n\t\u202e[]")),
    max_size=40,
)
_rules = st.one_of(st.none(), _text.map(lambda t: Rule("nat", "X", 1, f"-A X {t}")))
_name = st.one_of(st.sampled_from(["PREROUTING", "INPUT", "FORWARD", "KUBE-SERVICES", "DOCKER"]), _text)


@st.composite
def explanations(draw) -> Explanation:
    n = draw(st.integers(0, 12))
    family = draw(st.one_of(st.none(), st.sampled_from(["ipv4", "ipv6", "bridge"])))
    fields = draw(st.dictionaries(st.sampled_from(["IN", "OUT", "SRC", "DST", "PROTO", "SPT", "DPT", "MARK"]), _text))
    events, steps = [], []
    for _ in range(n):
        kind = draw(st.sampled_from(list(StepKind)))
        table, chain = draw(st.sampled_from(["raw", "nat", "filter"])), draw(_name)
        num = draw(st.one_of(st.none(), st.integers(1, 10_000)))
        ts = draw(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 2**40)))
        origin = draw(st.one_of(st.none(), st.builds(Origin, _text, st.none() | st.integers(0, 10**6),
                                                     st.none() | st.integers(0, 999))))
        ev = TraceEvent(table, chain, kind, num, fields=fields, ts=ts, origin=origin, family=family)
        events.append(ev)
        rule = draw(st.one_of(st.none(), _text.map(lambda t, tb=table, c=chain, n=num: Rule(tb, c, n or 1, f"-A {c} {t}"))))
        steps.append(
            Step(
                ev,
                rule=rule,
                policy=draw(st.one_of(st.none(), _text)),
                returned_to=draw(st.one_of(st.none(), _name)),
                depth=draw(st.integers(0, 12)),  # gaps and jumps in depth are allowed
                action=draw(st.sampled_from(["", "accept", "drop", "jump"])),
                warning=draw(st.one_of(st.none(), _text)),
                note=draw(st.one_of(st.none(), _text)),
            )
        )
    idx = st.one_of(st.none(), st.integers(-2, n + 2))  # also out-of-range step indices
    verdict = draw(
        st.one_of(st.none(), st.builds(Verdict, _text, st.just("filter"), _name, st.none() | st.integers(1, 9), reason=_text))
    )
    return Explanation(
        Packet(draw(st.integers(1, 10**6)), events),
        steps=steps,
        fate=draw(st.sampled_from(list(Fate))),
        verdict=verdict,
        nat=draw(st.lists(st.builds(Change, _text, _text | st.none(), _text | st.none(), st.just("nat"), _name,
                                    st.none() | st.integers(1, 9), _rules, step=idx, note=_text), max_size=2)),
        marks=draw(st.lists(st.builds(Change, _text, _text | st.none(), _text | st.none(), step=idx), max_size=2)),
        cause=draw(st.lists(st.builds(CauseLink, _text, st.just("nat"), _name, st.none() | st.integers(1, 9), _rules,
                                      text=_text, step=idx), max_size=3)),
        warnings=draw(st.lists(_text, max_size=2)),
        notes=draw(st.lists(_text, max_size=2)),
        last_seen=draw(st.one_of(st.none(), _text)),
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expl=explanations(), width=st.integers(20, 140), verbose=st.booleans())
def test_any_explanation_renders_safely_within_width(expl: Explanation, width: int, verbose: bool) -> None:
    out = render(to_renderable(expl, verbose=verbose), width=width)
    assert all(cell_len(line) <= width for line in out.splitlines())
    assert not any(ch in out for ch in "\x1b\x07\x9b\r\u202e\t")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expl=explanations())
def test_any_explanation_round_trips_through_json_and_summary(expl: Explanation) -> None:
    j = to_json(expl)
    assert json.loads(dumps(j)) == j
    s = Summary()
    s.add(expl)
    assert s.to_json()["packets"] == 1
    render(summary_renderable(s), width=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expl=explanations())
def test_from_json_is_the_inverse_of_to_json(expl: Explanation) -> None:
    """What to_json writes, from_json reads back to a model that to_json writes the same again,
    also through the text (dumps, json.loads) the files hold."""
    j = to_json(expl)
    assert to_json(from_json(j)) == j
    assert to_json(from_json(json.loads(dumps(j)))) == j
