"""The HTML report in a real browser: headless Chromium renders the seed-003 report.

Needs Debian's ``chromium`` package (/usr/bin/chromium); skipped without it. Not a kernel test.
The checks read the DOM after the page's script ran (``--dump-dom``) and the browser's console
log (``--enable-logging=stderr``: every console message, error or CSP violation is a CONSOLE line).
A screenshot is saved under artifacts/ (git-ignored) for a look by eye.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_cases import LOG, RULES

from ruletrace.cli import main

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="headless browser tests need Debian's chromium package (/usr/bin/chromium)"
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


class _Elements(HTMLParser):
    """Every element's tag and attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def by_id(self, ident: str) -> dict[str, str]:
        return next(a for _t, a in self.elements if a.get("id") == ident)

    def with_class(self, cls: str) -> list[dict[str, str]]:
        return [a for _t, a in self.elements if cls in a.get("class", "").split()]


def chromium(tmp: Path, url: str, *extra: str) -> tuple[str, str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def dom(tmp: Path, url: str) -> tuple[_Elements, str]:
    out, err = chromium(tmp, url, "--dump-dom")
    assert console_messages(err) == []
    p = _Elements()
    p.feed(out)
    body = next(a for t, a in p.elements if t == "body")
    assert body.get("data-state") == "ready"
    assert "data-errors" not in body
    return p, out


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "report.html"
    assert main(["report", "-r", RULES, LOG, "-o", str(out), "--diff", "1,2", "--title", "seed 003"]) == 0
    return out


def test_path_of_packet_1_is_drawn(page, tmp_path):
    d, _ = dom(tmp_path, page.as_uri())
    visited_a = {(a["data-hook"], a["data-table"]) for a in d.with_class("visited-a")}
    assert visited_a == {("PREROUTING", "raw"), ("PREROUTING", "mangle"), ("PREROUTING", "nat"),
                         ("INPUT", "mangle"), ("INPUT", "filter")}
    visited_b = {(a["data-hook"], a["data-table"]) for a in d.with_class("visited-b")}
    assert ("INPUT", "nat") in visited_b and ("INPUT", "nat") not in visited_a
    # dropped in filter INPUT (KUBE-FIREWALL): that table is marked as deciding
    assert {(a["data-hook"], a["data-table"]) for a in d.with_class("decided")} == {("INPUT", "filter")}
    # arrows along the path: PREROUTING -> routing -> INPUT for both, INPUT -> local process for packet 2 only
    paths_a = [a for a in d.with_class("path-a")]
    paths_b = [a for a in d.with_class("path-b")]
    assert len(paths_a) == 3 and len(paths_b) == 4
    assert "on-b" in d.by_id("node-local")["class"] and "on-a" not in d.by_id("node-local")["class"]
    assert d.by_id("diagram")["data-a"] == "1"


def test_nat_and_mark_changes_are_labelled(page, tmp_path):
    _, html = dom(tmp_path, page.as_uri())
    labels = re.search(r'<g id="labels">(.*?)</g>', html, re.S).group(1)
    assert "A: MARK 0x0 → 0x8000 @nat" in labels
    assert "B: DPT 80 → 52000 @nat" in labels
    notes = re.search(r'<ol id="flow-notes"[^>]*>(.*?)</ol>', html, re.S).group(1)
    assert "B: DST 172.28.129.4:80 → 172.28.129.4:52000  (nat:PREROUTING rule 3)" in notes


def test_fate_filter_from_url_hash(page, tmp_path):
    d, _ = dom(tmp_path, page.as_uri() + "#fate=dropped")
    rows = [a for t, a in d.elements if t == "li" and "pkt" in a.get("class", "").split()]
    assert [(r["data-id"], r["data-fate"]) for r in rows] == [("1", "dropped")]
    assert d.by_id("packet-list")["data-count"] == "1"


def test_fate_filter_from_query_and_rule_filter(page, tmp_path):
    d, _ = dom(tmp_path, page.as_uri() + "?fate=delivered")
    rows = [a for t, a in d.elements if t == "li" and "pkt" in a.get("class", "").split()]
    assert [(r["data-id"], r["data-fate"]) for r in rows] == [("2", "delivered")]
    d, html = dom(tmp_path, page.as_uri() + "#rule=nat:KUBE-NODEPORTS:16")
    rows = [a for t, a in d.elements if t == "li" and "pkt" in a.get("class", "").split()]
    assert [r["data-id"] for r in rows] == ["1"]
    assert "KUBE-NODEPORTS rule 16" in html


def test_expanded_packet_and_ruleset_render_text_not_markup(page, tmp_path):
    d, html = dom(tmp_path, page.as_uri() + "#packet=1")
    assert "KUBE-FIREWALL" in html and "⇒ DROP" in html
    # the hit map lists every chain and the ruleset shows rule 16 with its count
    rules = [a for a in d.with_class("r") if a.get("id", "").startswith("rule-")]
    assert len(rules) > 100
    assert 'title="list the packets that matched this rule"' in html


def test_screenshot(page, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-seed003.png"
    shot.unlink(missing_ok=True)
    _, err = chromium(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1400,1800",
                      "--hide-scrollbars")
    assert console_messages(err) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    shutil.copy(page, ARTIFACTS / "report-seed003.html")


def test_gzipped_documents_are_decoded(tmp_path, monkeypatch):
    from report_cases import seed003_json

    from ruletrace.render import html as rhtml
    from ruletrace.rulesets import load_ruleset

    monkeypatch.setattr(rhtml, "TEXT_GZIP_OVER", 0)  # what a large ruleset and 100k packets get
    monkeypatch.setattr(rhtml, "DATA_GZIP_OVER", 0)
    out = tmp_path / "gz.html"
    out.write_text(rhtml.to_html(seed003_json(), [load_ruleset(RULES)]))
    assert out.read_text().count('data-encoding="gzip+base64"') == 2
    # the decoding is asynchronous: let the page's pending work run before the DOM is dumped
    html, err = chromium(tmp_path, out.as_uri() + "#rule=nat:KUBE-NODEPORTS:16&packet=1", "--dump-dom",
                         "--virtual-time-budget=5000")
    assert console_messages(err) == []
    d = _Elements()
    d.feed(html)
    body = next(a for t, a in d.elements if t == "body")
    assert body.get("data-state") == "ready" and body.get("data-text") == "ready" and "data-errors" not in body
    # the path is drawn, and the rule filter, the opened packet and the ruleset show the text
    assert ("INPUT", "filter") in {(a["data-hook"], a["data-table"]) for a in d.with_class("visited-a")}
    assert [a["data-id"] for t, a in d.elements if t == "li" and "pkt" in a.get("class", "").split()] == ["1"]
    chip = re.search(r'<span id="rule-filter-text">(.*?)</span>', html).group(1)
    assert chip.startswith("hit nat:KUBE-NODEPORTS rule 16: ") and "--dport 52000" in chip
    assert "-A KUBE-NODEPORTS -p tcp" in html and "rule text loading" not in html.replace("rule text loading\\u2026", "")


@pytest.mark.slow
def test_100k_packets_open_quickly_one_page_in_the_dom(tmp_path):
    import time

    from report_cases import seed003_json

    from ruletrace.render.html import ReportBuilder
    from ruletrace.rulesets import load_ruleset

    a, b = seed003_json()
    builder = ReportBuilder([load_ruleset(RULES)])
    t0 = time.perf_counter()
    for k in range(50_000):
        for p, base in ((a, 0), (b, 1)):
            q = dict(p)
            q["id"] = 2 * k + base + 1
            q["sport"] = 1024 + k % 60000
            q["src"] = f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}"
            builder.add(q)
    html = builder.render(title="100k")
    build_s = time.perf_counter() - t0
    out = tmp_path / "big.html"
    out.write_text(html)
    assert len(html) < 4_000_000, f"{len(html)} bytes"  # 2 paths: ~20 bytes a packet
    t0 = time.perf_counter()
    d, _ = dom(tmp_path, out.as_uri() + "#fate=dropped&page=3")
    open_s = time.perf_counter() - t0
    rows = [x for t, x in d.elements if t == "li" and "pkt" in x.get("class", "").split()]
    assert len(rows) == 200 and {r["data-fate"] for r in rows} == {"dropped"}
    assert rows[0]["data-id"] == str(2 * 400 + 1)  # page 3 of the dropped packets starts at the 401st
    assert d.by_id("packet-list")["data-count"] == "50000"
    print(f"100k packets: build+render {build_s:.1f} s, {len(html) / 1e6:.1f} MB, browser open+dump {open_s:.1f} s")
    assert open_s < 10


def test_a_native_path_through_several_families_tables(tmp_path):
    """The lab's layered capture: an IPv4 packet passes ip early/late, inet same and ip same. Each
    step is counted in its own family's ruleset (they all went to the packet's first family's, so
    the ip tables' chains showed no hits and their steps came from 'extra' chains), and a table
    name three families share is shown with its family, as the tree says it."""
    caps = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures" / "layered"
    out = tmp_path / "layered.html"
    assert main(["report", "-r", str(caps / "ruleset-a.nft"), str(caps / "nft-monitor-a.txt"), "-o", str(out)]) == 0
    _d, html = dom(tmp_path, out.as_uri() + "#packet=1")
    assert "inet same:in" in html and "ip same:in" in html
    assert not re.search(r">same:in", html)  # never the bare name of a shared table
    # a rule link names the family's table (review: `#rule=same:in:2` opened ip same's, and dropped the filter)
    d, html = dom(tmp_path, out.as_uri() + "#rule=ip6%20same:in:2")
    rows = [a for t, a in d.elements if t == "li" and "pkt" in a.get("class", "").split()]
    assert [r["data-id"] for r in rows] == ["6"] and "hit ip6 same:in rule 2" in html


NFT_CAPS = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures"


def test_a_native_path_is_drawn_by_hook_and_the_reject_crossed(tmp_path):
    """Native nf_tables steps are drawn by their base chain's hook, in rows of the nft tables with a
    base chain there (in priority order): the zones capture's packet 1 (accepted) and packet 11
    (rejected by zonefw:in_main rule 6). The diagram showed only iptables' tables, nothing visited."""
    caps = NFT_CAPS / "zones"
    out = tmp_path / "zones.html"
    assert main(["report", "-r", str(caps / "ruleset-a.nft"), str(caps / "nft-monitor-a.txt"), "-o", str(out)]) == 0
    d, html = dom(tmp_path, out.as_uri() + "#a=1&b=11")
    rows = [(a["data-hook"], a["data-table"]) for a in d.with_class("tbl")]
    assert rows == [("PREROUTING", "rttrace"), ("PREROUTING", "zonefw"), ("INPUT", "zonefw"), ("FORWARD", "zonefw")]
    for w in ("a", "b"):
        assert {(a["data-hook"], a["data-table"]) for a in d.with_class(f"visited-{w}")} == {
            ("PREROUTING", "rttrace"), ("PREROUTING", "zonefw"), ("INPUT", "zonefw")}
    assert {(a["data-hook"], a["data-table"]) for a in d.with_class("decided")} == {("INPUT", "zonefw")}
    # network in -> PREROUTING -> routing -> INPUT for both; on to the local process for A only
    assert len(d.with_class("path-a")) == 4 and len(d.with_class("path-b")) == 3
    assert len(d.with_class("xmark")) == 1
    labels = re.search(r'<g id="labels">(.*?)</g>', html, re.S).group(1)
    assert "B: in_main rule 6" in labels


def test_native_tables_of_one_hook_in_priority_order(tmp_path):
    """The layered capture: INPUT has ip early (mangle - 5), inet same (filter - 10), ip late and
    ip6 same (filter), ip same (security); packet 1 passes them in that order (not ip6 same)."""
    caps = NFT_CAPS / "layered"
    out = tmp_path / "layered.html"
    assert main(["report", "-r", str(caps / "ruleset-a.nft"), str(caps / "nft-monitor-a.txt"), "-o", str(out)]) == 0
    d, html = dom(tmp_path, out.as_uri() + "#a=1")
    rows = [a["data-table"] for a in d.with_class("tbl") if a["data-hook"] == "INPUT"]
    assert rows == ["early", "inet same", "late", "ip6 same", "ip same"]
    visited = [a["data-table"] for a in d.with_class("visited-a") if a["data-hook"] == "INPUT"]
    assert visited == ["early", "inet same", "late", "ip same"]
    badges = re.findall(r'data-table="([^"]*)"[^>]*>(?:(?!</g>\s*</g>).)*?class="badge badge-a".*?<text[^>]*>(\d+)</text>',
                        html, re.S)
    assert len(badges) == 7 and [n for _t, n in badges] == [str(k) for k in range(1, 8)]


def test_a_user_chains_deciding_rule_is_no_policy(tmp_path):
    """filter-basics packet 13 is dropped by LOGDROP's `-j DROP`, which legacy ip_tables logs as
    `return:2`: the cross, legend and packet rows say `LOGDROP rule 2` as the summary does, never
    `LOGDROP policy` (a user chain has no policy); ALLOWED's `-j ACCEPT` likewise."""
    out = tmp_path / "fb.html"
    assert main(["report", "--example", "filter-basics", "--diff", "13,11", "-o", str(out)]) == 0
    _d, html = dom(tmp_path, out.as_uri())
    labels = re.search(r'<g id="labels">(.*?)</g>', html, re.S).group(1)
    assert re.search(r">A: LOGDROP rule 2<title>filter:LOGDROP rule 2 \(drop\)</title>", labels)
    legend = re.search(r'<span id="legend-a">(.*?)</span>\s*</span>', html, re.S).group(1)
    assert "filter:LOGDROP rule 2 (drop)" in legend
    decs = re.findall(r'<span class="dec">([^<]*)</span>', html)
    assert "filter:LOGDROP rule 2 (drop)" in decs and "filter:ALLOWED rule 1 (accept)" in decs
    assert not [t for t in decs if t.startswith(("filter:LOGDROP policy", "filter:ALLOWED policy"))]
    assert "policy" not in labels
