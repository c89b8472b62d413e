"""render/tree_plain.py prints byte for byte what the rich tree (render/tree.py, the reference)
prints without colour, on every fixture, example and lab capture at 80 and 200 columns, verbose
too, and on a generated kube-proxy log; and render_explanations picks it for output without colour."""

from __future__ import annotations

import io
import random

import pytest
from rich.console import Console
from rich.text import Text

from ruletrace.model import Change, Explanation, Fate, Packet, Rule, Step, StepKind, TraceEvent, Verdict
from ruletrace.pipeline import Run, load_rulesets
from ruletrace.render.theme import THEME
from ruletrace.render.tree import render_explanations, to_renderable
from ruletrace.render.tree_plain import PlainTree
from tests.corpus_cases import cases, kube_log


def _rich(expls, width: int, verbose: bool = False) -> str:
    """The reference: each packet through rich, as render_explanations does with colour."""
    buf = io.StringIO()
    con = Console(file=buf, width=width, color_system=None, highlight=False, emoji=False, theme=THEME)
    with con.use_theme(THEME):
        for n, e in enumerate(expls):
            if n:
                con.print()
            con.print(to_renderable(e, verbose=verbose))
    return buf.getvalue()


def _plain(expls, width: int, verbose: bool = False) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=width, color_system=None, highlight=False, emoji=False, theme=THEME)
    render_explanations(expls, con, verbose=verbose)
    return buf.getvalue()


def _explained(rulesets, trace) -> list[Explanation]:
    return list(Run(load_rulesets([str(r) for r in rulesets]), [str(trace)]).explanations())


@pytest.mark.parametrize("name,rulesets,trace", cases(), ids=[c[0] for c in cases()])
def test_plain_equals_rich(name, rulesets, trace):
    expls = _explained(rulesets, trace)
    for width in (80, 200):
        assert _plain(expls, width) == _rich(expls, width), width
    assert _plain(expls, 80, True) == _rich(expls, 80, True)


def test_plain_equals_rich_on_a_generated_kube_log(tmp_path):
    rules, log = kube_log(tmp_path, services=30, packets=300)
    expls = _explained([rules], log)
    for width in (80, 200, 41, 30):
        assert _plain(expls, width) == _rich(expls, width), width


def _odd_packet() -> Explanation:
    """Words rich would treat specially: wide and combining characters, control characters, long
    words to fold, blank runs, a deep call chain, empty and blank notes."""
    f = {"IN": "eth0", "SRC": "10.0.0.2", "DST": "10.0.0.1", "PROTO": "TCP", "SPT": "40000", "DPT": "22",
         "TCPFLAGS": "SYN"}
    evs = [TraceEvent("filter", "INPUT", StepKind.RULE, 1, fields=f)]
    chains = ["INPUT"] + [f"CHAIN-{'X' * (i * 7)}{i}" for i in range(1, 9)]
    for d, c in enumerate(chains[1:], 1):
        evs.append(TraceEvent("filter", c, StepKind.RULE, d, fields=f))
    steps = []
    for d, ev in enumerate(evs):
        target = chains[d + 1] if d + 1 < len(chains) else "DROP"
        comment = ["服务 ingress 端口", "ca\u0301fe\u0301   spaced    out", "a\x1b[31mred\x07", "x" * 150,
                   "tab\there", "", " ", "é" * 90, "ok"][d % 9]
        text = f'-A {ev.chain} -m comment --comment "{comment}" -j {target}'
        steps.append(Step(ev, Rule("filter", ev.chain, d + 1, text, target), depth=d,
                          action="jump" if target != "DROP" else "drop",
                          note=["", " ", "n\u00f6te " * 30, None][d % 4], warning="w " * 60 if d == 3 else None))
    drop = steps[-1].rule
    return Explanation(Packet(7, evs), steps=steps, fate=Fate.DROPPED,
                       verdict=Verdict("drop", "filter", chains[-1], 8, drop, "dropped by 防火墙 " + "y" * 100),
                       nat=[Change("DST", "10.0.0.1:22", "10.9.9.9:2222", "nat", "X", 3, None, 2, note="é" * 40)],
                       notes=["", "   ", "\x00bad"], warnings=["ｗｉｄｅ " * 20])


@pytest.mark.parametrize("width", [200, 120, 80, 60, 45, 30, 12, 1])
def test_plain_equals_rich_on_odd_text(width):
    e = _odd_packet()
    assert _plain([e, e], width) == _rich([e, e], width)
    assert _plain([e], width, True) == _rich([e], width, True)


def test_wrap_is_riches_wrap_on_random_text():
    """Greedy wrapping, folding, blank runs: wrap_text against rich's Text.wrap on random words."""
    rng = random.Random(16)
    con = Console(width=80)
    pt = PlainTree(80)
    for _ in range(3000):
        words = [rng.choice(["a", "bb", "x" * rng.randint(1, 30), "", "é", "-j", "0x4000/0x4000"])
                 for _ in range(rng.randint(0, 12))]
        text = "".join(w + " " * rng.choice([0, 1, 1, 1, 2, 5]) for w in words)
        width = rng.randint(1, 40)
        want = []
        for line in Text(text).wrap(con, width, overflow="fold"):
            line.rstrip()
            want.append(line.plain)
        assert pt.wrap_text(text, width) == want, (text, width)


def test_colour_still_goes_through_rich():
    buf = io.StringIO()
    con = Console(file=buf, width=80, force_terminal=True, color_system="standard", theme=THEME)
    e = _odd_packet()
    render_explanations([e], con)
    assert "\x1b[" in buf.getvalue()


def test_kept_footer_rows_follow_each_packets_own_objects(tmp_path):
    """Footer rows are kept by the identity of the changes and causes they show (shared by the
    packets of a path): a packet whose lists hold other objects, or fewer, or more, gets its own words."""
    import dataclasses

    rules, log = kube_log(tmp_path, services=30, packets=40)
    expls = _explained([rules], log)
    e = next(x for x in expls if x.nat and len(x.cause) > 2)
    c0 = e.cause[0]
    variants = [
        e,
        dataclasses.replace(e, cause=e.cause[1:], notes=[*e.notes, "a note of its own"]),
        dataclasses.replace(e, cause=[dataclasses.replace(c0, role="other role"), *e.cause[1:]]),
        dataclasses.replace(e, nat=[dataclasses.replace(e.nat[0], new="10.9.9.9:1")], warnings=["w"]),
        e,
    ]
    for width in (120, 50):
        assert _plain(variants, width) == _rich(variants, width)
