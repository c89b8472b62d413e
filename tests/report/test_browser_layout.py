"""The report's layout measured in headless Chromium (DevTools protocol, tests/report/devtools.py).

Issue 16 item 5: the fate word coloured by fate from one colour table (accepted is never red),
no badge overlapping the tuple or a table's count, a usable page at 800 px, the deciding rule
labelled at the diagram's cross, and bridged packets (PHYSIN and PHYSOUT) drawn as bridged.
Boxes are read with getBoundingClientRect / getBBox after the page's script ran.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from devtools import CHROMIUM, DevTools
from report_cases import LOG, RULES

from ruletrace.cli import main
from ruletrace.render.html import EDGES, FATE_COLORS, compact_count

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="headless browser tests need Debian's chromium package (/usr/bin/chromium)"
)
ACCEPTED = ("delivered", "forwarded", "sent")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("layout")
    seed, docker = tmp / "seed003.html", tmp / "docker.html"
    assert main(["report", "-r", RULES, LOG, "-o", str(seed), "--diff", "1,2"]) == 0
    assert main(["report", "--example", "docker-portmap", "-o", str(docker)]) == 0
    return {"seed": seed, "docker": docker}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    dt = DevTools(tmp_path_factory.mktemp("chromium-profile"))
    yield dt
    dt.close()


def look(dt: DevTools, url: str, width: int, script: str):
    """Open ``url`` at ``width`` px and return ``script``'s JSON value."""
    dt.open(url, width)
    state = dt.evaluate("document.body.getAttribute('data-state') + '|' + (document.body.getAttribute('data-errors') || '')")
    assert state == "ready|"
    return json.loads(dt.evaluate(f"JSON.stringify((function () {{ {script} }})())"))


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def reddish(hex_colour: str) -> bool:
    r, g, b = (int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))
    return r > 1.6 * g and r > 1.6 * b


def test_colour_table_covers_every_fate_and_accepted_is_not_red():
    from ruletrace.model import Fate

    assert set(FATE_COLORS) == {f.value for f in Fate}
    for fate in ACCEPTED:
        assert not reddish(FATE_COLORS[fate][0]), fate
    assert reddish(FATE_COLORS["dropped"][0]) and reddish(FATE_COLORS["rejected"][0])
    inks = [ink for ink, _bg in FATE_COLORS.values()]
    assert len(set(inks)) == len(inks)


def test_compact_counts_fit_four_characters():
    assert [compact_count(n) for n in (0, 7, 999, 1000, 1234, 9949, 9950, 12_345, 100_000, 999_499, 999_500,
                                      1_500_000)] == ["0", "7", "999", "1.0k", "1.2k", "9.9k", "10k", "12k", "100k",
                                                      "999k", "1.0M", "1.5M"]
    assert all(len(compact_count(n)) <= 4 for n in range(0, 3_000_000, 997))


FATE_WORDS = """
  var out = [];
  document.querySelectorAll('.fate, .fate-word, .fatebox b').forEach(function (e) {
    var re = /(?:^| )fate-(?!word)(\\w+)/;
    var f = (e.className.match(re) || e.parentNode.className.match(re) || [])[1];
    out.push([f, e.className, getComputedStyle(e).color, e.textContent]);
  });
  return out;"""


@pytest.mark.parametrize("which, fragment", [("seed", "#packet=2"), ("docker", "#packet=13"), ("docker", "#packet=10")])
def test_fate_words_take_their_colour_from_the_table(pages, browser, which, fragment):
    words = look(browser, pages[which].as_uri() + fragment, 1280, FATE_WORDS)
    seen = set()
    for fate, cls, colour, _text in words:
        assert colour == rgb(FATE_COLORS[fate][0]), (fate, cls, colour)
        seen.add((fate, cls.split()[0] if cls else "fatebox"))
    fates = {f for f, _c in seen}
    # the packet list badges, the summary boxes, the legend of A/B and the opened packet's why line
    assert {c for _f, c in seen} >= {"fate", "fate-word", "fatebox"}
    assert fates >= ({"dropped", "delivered"} if which == "seed" else {"forwarded", "delivered", "sent"})


ROWS = """
  var out = [];
  document.querySelectorAll('.pkt .row').forEach(function (r) {
    function box(sel) { var b = r.querySelector(sel).getBoundingClientRect(); return [b.left, b.right, b.top, b.bottom]; }
    var badge = r.querySelector('.fate');
    out.push({row: box('.row > .fcell').length && [r.getBoundingClientRect().left, r.getBoundingClientRect().right],
              badge: box('.fate'), tuple: box('.tuple'), iface: box('.iface'), dec: box('.dec'), ab: box('.ab'),
              clipped: badge.scrollWidth > badge.clientWidth, tupleClipped: r.querySelector('.tuple').scrollWidth >
              r.querySelector('.tuple').clientWidth});
  });
  return {rows: out, scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
          svg: document.getElementById('diagram').getBoundingClientRect().width,
          wrap: document.querySelector('.diagram-wrap').clientWidth};"""


def overlaps(a, b) -> bool:
    """Two [left, right, top, bottom] boxes share area (a pixel of rounding allowed)."""
    return min(a[1], b[1]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[2], b[2]) > 1


@pytest.mark.parametrize("width", [800, 1100, 1400])
@pytest.mark.parametrize("which", ["seed", "docker"])
def test_packet_rows_fit_and_no_badge_overlaps_the_tuple(pages, browser, width, which):
    got = look(browser, pages[which].as_uri(), width, ROWS)
    assert got["scroll"] <= got["client"], "the page scrolls sideways"
    assert got["svg"] <= got["wrap"] + 1, "the diagram is wider than its card"
    assert got["rows"]
    for r in got["rows"]:
        left, right = r["row"]
        cells = [r[k] for k in ("badge", "tuple", "iface", "dec", "ab")]
        for c in cells:
            assert left - 1 <= c[0] and c[1] <= right + 1, (r, "a cell sticks out of its row")
        for i, a in enumerate(cells):
            for b in cells[i + 1:]:
                assert not overlaps(a, b), r
        assert not r["clipped"], "the fate word is cut"
        assert not r["tupleClipped"], "the tuple is cut"


DIAGRAM = """
  var out = {tables: [], x: [], labels: []};
  document.querySelectorAll('#diagram .tbl').forEach(function (g) {
    g.querySelector('.tcount').textContent = %r;  // the widest count the diagram prints
    function bb(e) { var b = e.getBBox(); return [b.x, b.x + b.width, b.y, b.y + b.height]; }
    out.tables.push({name: bb(g.querySelector('.tname')), count: bb(g.querySelector('.tcount')),
                     box: bb(g.querySelector('.tblbox')),
                     badges: Array.prototype.map.call(g.querySelectorAll('.badge circle'), bb)});
  });
  document.querySelectorAll('#overlay .xmark').forEach(function (e) { var b = e.getBBox(); out.x.push([b.x, b.y]); });
  document.querySelectorAll('#labels .xlabel').forEach(function (e) {
    var b = e.getBBox(); out.labels.push({text: e.textContent, box: [b.x, b.x + b.width, b.y, b.y + b.height]});
  });
  out.width = document.getElementById('diagram').viewBox.baseVal.width;
  return out;"""


def test_diagram_badges_clear_of_names_and_counts_and_the_cross_labelled(pages, browser):
    got = look(browser, pages["seed"].as_uri() + "#a=1&b=2", 800, DIAGRAM % compact_count(888_000))
    assert sum(len(t["badges"]) for t in got["tables"]) == 11  # 5 tables for packet 1, 6 for packet 2
    for t in got["tables"]:
        for b in t["badges"]:
            assert not overlaps(b, t["name"]) and not overlaps(b, t["count"]), t
            assert t["box"][0] <= b[0] and b[1] <= t["box"][1]
        assert t["count"][0] >= t["name"][1] and t["count"][1] <= t["box"][1] + 1
    # packet 1 is dropped by filter:KUBE-FIREWALL rule 1 (INPUT): the cross says so, next to it
    assert len(got["x"]) == 1
    [label] = got["labels"]
    assert label["text"].startswith("A: KUBE-FIREWALL rule 1")
    (xx, xy), box = got["x"][0], label["box"]
    assert 0 <= box[0] - xx <= 30 and abs(box[2] - xy) <= 20 and box[1] <= got["width"]


def test_a_cross_at_the_right_edge_keeps_its_label_inside(pages, browser, tmp_path):
    from report_cases import packet, step

    from ruletrace.render.html import to_html

    dropped = packet(1, [step("mangle", "POSTROUTING", "rule", 1, "-A POSTROUTING -j KUBE-POSTROUTING-LONGNAME"),
                         step("mangle", "KUBE-POSTROUTING-LONGNAME", "rule", 3,
                              "-A KUBE-POSTROUTING-LONGNAME -j DROP")],
                     fate="dropped", verdict={"action": "drop", "table": "mangle", "chain": "KUBE-POSTROUTING-LONGNAME",
                                              "num": 3, "rule": None, "reason": "dropped"})
    out = tmp_path / "edge.html"
    out.write_text(to_html([dropped]))
    got = look(browser, out.as_uri(), 800, DIAGRAM % "1")
    [label] = got["labels"]
    assert label["text"].startswith("A: KUBE-POSTROUTING-LONGNAME rule 3")
    assert 0 <= label["box"][0] and label["box"][1] <= got["width"]


BRIDGE = """
  var out = {a: [], b: [], text: []};
  ['a', 'b'].forEach(function (w) {
    document.querySelectorAll('#overlay .path-' + w).forEach(function (e) {
      out[w].push([e.getAttribute('d'), e.classList.contains('bridged')]);
    });
  });
  document.querySelectorAll('#labels .lbl-bridge').forEach(function (e) { out.text.push(e.textContent); });
  out.notes = document.getElementById('flow-notes').textContent;
  out.outA = document.getElementById('node-out').classList.contains('on-a');
  out.row = document.querySelector('.pkt[data-id="13"] .iface').textContent;
  return out;"""


def test_bridged_packet_is_drawn_port_to_port(pages, browser):
    # docker-portmap packet 13: container to container over docker0 (PHYSIN v1, PHYSOUT v2);
    # packet 2: a container's reply that came in on a bridge port (PHYSIN only) and was routed
    got = look(browser, pages["docker"].as_uri() + "#a=13&b=2", 1280, BRIDGE)
    a = dict(got["a"])
    assert a.get(EDGES["e-bridge-pre"]) is True, got["a"]
    assert EDGES["e-route-fwd"] not in a and EDGES["e-pre-route"] not in a  # not through routing
    assert a.get(EDGES["e-fwd-post"]) is False and a.get(EDGES["e-post-out"]) is False
    assert got["outA"]
    assert [t for t in got["text"] if t.startswith("A:")] == ["A: bridged rtl1440v1 → rtl1440v2 on rtl1440d0"]
    assert "A: bridged from port rtl1440v1 to port rtl1440v2" in got["notes"]
    b = dict(got["b"])
    assert EDGES["e-route-fwd"] in b and not any(bridged for bridged in b.values())
    assert not [t for t in got["text"] if t.startswith("B:")]
    assert re.match(r"bridged rtl1440v1 → rtl1440v2", got["row"])


BRIDGE_BOXES = """
  var box = document.querySelector('#labels').ownerSVGElement.getBoundingClientRect();
  var out = [];
  document.querySelectorAll('#labels .lbl-bridge').forEach(function (e) {
    var r = e.getBoundingClientRect();
    out.push([e.textContent, r.top - box.top, r.bottom - box.top, r.left - box.left, r.right - box.left]);
  });
  return {labels: out, width: box.width};"""


def test_two_bridged_packets_labels_are_whole_and_apart(pages, browser):
    # review: docker-portmap 13 and 14 compared (both bridged): B's label was drawn above A's at y=1,
    # on it and cut off by the diagram's top edge
    got = look(browser, pages["docker"].as_uri() + "#a=13&b=14", 1280, BRIDGE_BOXES)
    labels = sorted(got["labels"], key=lambda t: t[0])
    assert [t[0][:2] for t in labels] == ["A:", "B:"], got
    (_, a_top, a_bottom, _, a_right), (_, b_top, b_bottom, _, b_right) = labels
    assert a_top >= 0 and b_top >= 0  # inside the diagram
    assert a_bottom <= b_top or b_bottom <= a_top  # one above the other, not on it
    assert max(a_right, b_right) <= got["width"]
