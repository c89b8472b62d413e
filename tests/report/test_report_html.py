"""HTML report: escaping of untrusted text, the embedded data, the diagram, --from-json round trip."""

from __future__ import annotations

import html as htmllib
import json
import re

from report_cases import LOG, RULES, embedded, packet, seed003_json, step

from ruletrace.analyze.diff import diff_packets
from ruletrace.cli import main
from ruletrace.render.html import ReportBuilder, script_json, to_html, unpack
from ruletrace.rulesets import load_ruleset

EVIL = '</script><img src=x onerror="alert(1)"><!--'


def _evil_packet() -> dict:
    rule = f'-A INPUT -m comment --comment "{EVIL}" -j DROP'
    return packet(7, [step("filter", "INPUT", "rule", 1, rule)], fate="dropped", **{"in": "<b>eth0</b>"},
                  verdict={"action": "drop", "table": "filter", "chain": "INPUT", "num": 1, "rule": rule,
                           "reason": f"dropped: {EVIL}"},
                  warnings=[EVIL])


def test_untrusted_text_is_escaped_everywhere():
    b = ReportBuilder(keep=[7])
    b.add(_evil_packet())
    page = b.render(title=f"t {EVIL}", sources=[f"/tmp/{EVIL}.log"], warnings=[EVIL],
                    diff=diff_packets(b.kept[7], b.kept[7]))
    assert "<img" not in page
    assert page.count("<script") == 3 and page.count("</script>") == 3  # data, rule text, code
    assert "<!--" not in page
    assert "&lt;/script&gt;&lt;img" in page  # title, sources, warnings, diff: autoescaped
    data = embedded(page)
    # the JSON still carries the exact text
    [p] = unpack(data)
    assert EVIL in p["steps"][0]["rule"] and p["warnings"] == [EVIL]
    assert EVIL in data["strings"]
    assert p["in"] == "<b>eth0</b>"


def test_script_json_escapes_markup_and_line_separators():
    s = script_json({"a": "</script><!-- \u2028 \u2029"})
    assert "<" not in s and "\u2028" not in s and "\u2029" not in s
    assert json.loads(s) == {"a": "</script><!-- \u2028 \u2029"}


def _doc_element_reference(ident, obj, gzip_over):
    # doc_element as it was written before its bytes fast path: from the text of script_json
    import base64
    import gzip

    text = script_json(obj)
    if len(text) <= gzip_over:
        return f'<script type="application/json" id="{ident}">{text}</script>'
    packed = base64.b64encode(gzip.compress(text.encode(), compresslevel=1, mtime=0)).decode()
    return f'<script type="application/octet-stream" id="{ident}" data-encoding="gzip+base64">{packed}</script>'


def test_doc_element_equals_the_text_reference():
    # made from the encoder's UTF-8 bytes: the same element as from script_json's text, around the
    # gzip threshold (counted in characters, not bytes), with "<", non-ASCII, escaped controls, DEL
    from ruletrace.render import json as rjson
    from ruletrace.render.html import doc_element

    objs = [{"a": "plain"}, {"a": "</script><!--"}, {"a": "→ ü 中 😀 <x>"}, ["\u202e", "\x7f", "\x85", "\u2028"],
            {"a": "x" * 50, "b": "é" * 30}, [EVIL, "DST 1.2.3.4:80 → 10.0.0.1:8080"] * 5, {"\u061c": 1}]
    for obj in objs:
        n = len(script_json(obj))
        for over in (0, n - 1, n, n + 1, len(script_json(obj).encode()), 1 << 20):
            assert str(doc_element("d", obj, over)) == _doc_element_reference("d", obj, over), (obj, over)
        assert rjson.dumps_utf8(obj) == rjson.dumps(obj).encode()


def test_page_is_self_contained():
    page = to_html(seed003_json(), [load_ruleset(RULES)])
    assert "Content-Security-Policy" in page
    # no external resource of any kind
    assert not re.search(r'\b(src|href)="(https?:)?//', page)
    assert "@import" not in page and "url(http" not in page
    assert re.search(r"https?://(?!www\.w3\.org/2000/svg)", page) is None


def test_diagram_has_every_hook_with_tables_in_kernel_order_and_counts():
    page = to_html(seed003_json(), [load_ruleset(RULES)])
    order = re.findall(r'id="tbl-(\w+)-(\w+)" data-hook="\w+" data-table="\w+" data-packets="(\d+)"', page)
    by_hook: dict[str, list[str]] = {}
    for hook, table, _n in order:
        by_hook.setdefault(hook, []).append(table)
    assert by_hook == {
        "PREROUTING": ["raw", "mangle", "nat"],
        "INPUT": ["mangle", "filter", "security", "nat"],
        "FORWARD": ["mangle", "filter", "security"],
        "OUTPUT": ["raw", "mangle", "nat", "filter", "security"],
        "POSTROUTING": ["mangle", "nat"],
    }
    counts = {(h, t): int(n) for h, t, n in order}
    assert counts[("PREROUTING", "nat")] == 2 and counts[("INPUT", "nat")] == 1 and counts[("FORWARD", "filter")] == 0
    for node in ("node-in", "node-out", "node-local", "node-route-in", "node-route-out"):
        assert f'id="{node}"' in page


def test_embedded_data_interns_paths_and_links_rules():
    a, b = seed003_json()
    builder = ReportBuilder([load_ruleset(RULES)])
    for _ in range(50):
        builder.add(a)
        builder.add(b)
    data = builder.data()
    # 100 packets, two paths, two variants: per packet only its id, variant and addresses
    assert len(data["packets"]["v"]) == 100 and len(data["paths"]) == 2 and len(data["variants"]) == 2
    assert data["packets"]["v"][:4] == [0, 1, 0, 1] and data["packets"]["id"][:3] == [1, 1, -1]  # deltas of 1 2 1
    # KUBE-NODEPORTS rule 16 matched 50 packets, 100 got to it (all went down the whole chain)
    ci = next(i for i, c in enumerate(data["chains"]) if data["tables"][c[1]] == "nat" and c[2] == "KUBE-NODEPORTS")
    row = data["chains"][ci]
    assert row[3] == 36 and row[5] == 100
    assert dict(zip(row[7][::2], row[7][1::2]))[16] == 50
    assert sum(n for k, n in zip(row[8][::2], row[8][1::2]) if k >= 16) == 100
    assert "--dport 52000" in dict(data["texts"])[ci][15]
    # every rule step's place points at its chain; a chain no packet entered has no text
    place = next(p for p in data["places"] if p[0] == ci and data["kinds"][p[1]] == "rule" and p[2] == 16)
    assert place == [ci, 0, 16]
    idle = next(i for i, c in enumerate(data["chains"]) if c[2] == "KUBE-SVC-0000000000000000")
    assert len(data["chains"][idle]) <= 5 and idle not in dict(data["texts"])
    # the decisive step of packet 1 is filter:KUBE-FIREWALL rule 1
    p1 = unpack(data)[0]
    assert p1["steps"][p1["decisive"]]["chain"] == "KUBE-FIREWALL" and p1["steps"][p1["decisive"]]["num"] == 1
    assert data["defaults"] == {"a": 1, "b": 2}


def test_diff_section_points_at_kube_nodeports_rule_16():
    page = to_html(seed003_json(), [load_ruleset(RULES)], diff=(1, 2))
    section = page[page.index('<section id="diff"'):page.index('<section id="packets"')]
    first = re.search(r'<li class="first" id="div-0">(.*?)</li>', section, re.S).group(1)
    text = htmllib.unescape(re.sub(r"<[^>]+>", " ", first))
    assert "nat:KUBE-NODEPORTS rule 16 matched packet 1 but not packet 2" in text
    assert "DPT=52000" in text and "DPT=80" in text
    assert "d-first" in section


def test_from_json_round_trip(tmp_path, capsys):
    ex = tmp_path / "ex.json"
    assert main(["explain", "-r", RULES, LOG, "--json"]) == 0
    ex.write_text(capsys.readouterr().out)
    direct, via_json = tmp_path / "direct.html", tmp_path / "via.html"
    assert main(["report", "-r", RULES, LOG, "-o", str(direct)]) == 0
    assert main(["report", "-r", RULES, "--from-json", str(ex), "-o", str(via_json)]) == 0
    capsys.readouterr()
    d1, d2 = embedded(direct.read_text()), embedded(via_json.read_text())
    for key in ("packets", "variants", "paths", "steps", "places", "chains", "texts", "extras", "strings", "addrs"):
        assert d1[key] == d2[key], key
    # sources of the explain run travel through the JSON document
    assert "seed003.log (kernel-log)" in via_json.read_text()


def test_from_json_accepts_trace_json_lines_and_simulate(tmp_path, capsys):
    a, b = seed003_json()
    lines = tmp_path / "trace.jsonl"
    lines.write_text(json.dumps(a) + "\n" + json.dumps(b) + "\n")
    sim = tmp_path / "sim.json"
    sim.write_text(json.dumps({"schema": 1, "tool": "ruletrace", "command": "simulate", "packets": [a]}, indent=2))
    out = tmp_path / "r.html"
    assert main(["report", "--from-json", str(lines), "--from-json", str(sim), "-o", str(out)]) == 0
    data = embedded(out.read_text())
    assert [p["id"] for p in unpack(data)] == [1, 2, 1]
    assert data["ruleset_known"] is False
    # no ruleset: the chains come from the trace, rule text where the trace had it
    ci = next(i for i, c in enumerate(data["chains"]) if data["tables"][c[1]] == "nat" and c[2] == "KUBE-NODEPORTS")
    text = dict(data["texts"])[ci]
    assert data["chains"][ci][3] == 36 and "--dport 52000" in text[15]
    assert text[0] is None


def test_from_json_bad_input_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 1, "tool": "ruletrace", "packets": [\n{"id": 1, "steps": [}\n], "warnings": []}\n')
    code = main(["report", "--from-json", str(bad), "-o", str(tmp_path / "x.html")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}:2: bad packet object" in err
    notjson = tmp_path / "n.json"
    notjson.write_text('{"a": 1}\n')
    assert main(["report", "--from-json", str(notjson), "-o", str(tmp_path / "x.html")]) == 2
    assert "not ruletrace JSON" in capsys.readouterr().err
