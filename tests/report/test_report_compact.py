"""The report's compact document round-trips: ``unpack(data())`` gives back what the report keeps of each packet."""

from __future__ import annotations

import copy

import pytest
from report_cases import RULES, embedded, packet, seed003_json, step

from ruletrace.render import html as rhtml
from ruletrace.render.html import ReportBuilder, unpack
from ruletrace.rulesets import load_ruleset

KEPT = ("id", "proto", "src", "dst", "sport", "dport", "in", "out", "fate", "warnings", "notes")
STEP_KEPT = ("table", "chain", "kind", "num", "depth", "action", "returned_to", "policy", "warning", "note", "rule")


def _packets() -> list[dict]:
    a, b = seed003_json()
    out = []
    # the seed-003 pair many times over, with other ids and client addresses (same paths)
    for k in range(6):
        for p in (a, b):
            q = copy.deepcopy(p)
            q["id"] = 10 + 3 * k + (p is b)  # not consecutive
            src, sport = q["src"], str(q["sport"])
            q["src"], q["sport"] = f"10.1.0.{k}", 40000 + k
            for s in q["steps"]:  # the fields the top level is read from (to_json)
                if s["fields"].get("SRC") == src and s["fields"].get("SPT") == sport:
                    s["fields"].update(SRC=q["src"], SPT=str(q["sport"]))
            for c in q["nat"]:  # a DNAT's old value is the packet's own destination
                if c["what"] == "DST" and c["old"]:
                    c["old"] = f"{q['dst']}:{q['dport']}"
            out.append(q)
    # a NAT rewrite whose old value is not the packet's own address, a step warning and note,
    # packet-level warnings and notes, an IPv6 packet, no ports
    odd = packet(99, [step("nat", "RT-TEST", "rule", 1, "-A RT-TEST -j DNAT --to-destination [fd00::2]:80"),
                      step("filter", "INPUT", "policy", 2)], fate="delivered", src="fd00::1", dst="fd00::9",
                 family="ipv6", sport=None, dport=None, proto="UDP",
                 nat=[{"what": "DST", "old": "[fd00::5]:80", "new": "[fd00::2]:80", "step": 0}],
                 warnings=["rule numbers past the end"], notes=["a note"],
                 verdict={"action": "accept", "table": "filter", "chain": "INPUT", "num": 2, "rule": None,
                          "reason": "accepted by the INPUT policy"})
    odd["steps"][0].update(warning="chain missing", note="from the simulator", action="dnat")
    odd["steps"][1].update(policy="ACCEPT", action="accept")
    out.append(odd)
    # a trace that ends without a decision
    out.append(packet(7, [step("raw", "PREROUTING", "policy", 3)], fate="unknown", last_seen="raw:PREROUTING",
                      tcpflags="SYN"))
    return out


def _expected(p: dict, with_text: bool) -> dict:
    want = {k: p.get(k) for k in KEPT}
    # TCP flags: as the first step showed them (to_json keeps them there)
    want["tcpflags"] = (p["steps"][0].get("fields") or {}).get("TCPFLAGS")
    for k in ("nat", "marks"):
        want[k] = [{f: c[f] for f in ("what", "old", "new", "step")} for c in p[k]]
    want["steps"] = [{k: s.get(k) if k != "rule" or with_text else None for k in STEP_KEPT} for s in p["steps"]]
    want["cause"] = [{"role": c["role"], "text": c["text"], "step": c["step"]} for c in p["cause"]
                     if c["role"] != "decided"]
    v = p.get("verdict")
    want["reason"] = v.get("reason") or None if v else None
    want["last_seen"] = None if v else p.get("last_seen")
    return want


def _got(p: dict) -> dict:
    got = {k: p[k] for k in (*KEPT, "tcpflags", "nat", "marks", "cause", "reason", "last_seen")}
    got["steps"] = [{k: s[k] for k in STEP_KEPT} for s in p["steps"]]
    return got


@pytest.mark.parametrize("with_ruleset", [True, False], ids=["ruleset", "trace-only"])
def test_compact_form_round_trips(with_ruleset):
    packets = _packets()
    b = ReportBuilder([load_ruleset(RULES)] if with_ruleset else [])
    b.add_all(packets)
    data = b.data()
    # aggregated: 14 packets, 4 paths (seed-003 a and b, odd, unknown), one variant per path
    assert len(data["packets"]["v"]) == 14 and len(data["paths"]) == 4 and len(data["variants"]) == 4
    back = unpack(data)
    # with the ruleset, text comes from it: RT-TEST and raw:PREROUTING policy steps have none
    for p, got in zip(packets, back):
        assert _got(got) == _expected(p, with_text=not with_ruleset or (p["id"] >= 10 and p["id"] < 99)), p["id"]
    # the deciding step survives too: packet 10 (seed-003 packet 1) was dropped by KUBE-FIREWALL rule 1
    d = back[0]["steps"][back[0]["decisive"]]
    assert (d["chain"], d["num"], d["action"]) == ("KUBE-FIREWALL", 1, "drop")


def test_page_round_trips_gzipped(monkeypatch):
    packets = _packets()
    b = ReportBuilder([load_ruleset(RULES)])
    b.add_all(packets)
    plain = b.render(title="t")
    monkeypatch.setattr(rhtml, "TEXT_GZIP_OVER", 0)
    monkeypatch.setattr(rhtml, "DATA_GZIP_OVER", 0)
    packed = b.render(title="t")
    assert 'id="report-text" data-encoding="gzip+base64"' in packed
    assert 'id="report-data" data-encoding="gzip+base64"' in packed
    assert '<script type="application/json" id="report-text">' in plain
    assert embedded(packed) == embedded(plain)
    assert [p["id"] for p in unpack(embedded(packed))] == [p["id"] for p in packets]


def test_idle_chains_carry_no_text_and_no_counts():
    a, b = seed003_json()
    rs = load_ruleset(RULES)
    builder = ReportBuilder([rs])
    builder.add_all([a, b])
    data = builder.data()
    texts = dict(data["texts"])
    entered = [i for i, c in enumerate(data["chains"]) if len(c) > 5 and c[5]]
    assert sorted(texts) == entered
    assert len(data["chains"]) == sum(len(t) for t in rs.tables.values())
    for i, c in enumerate(data["chains"]):
        if i not in texts:
            assert len(c) <= 5  # ruleset, table, name, rules, policy: nothing per rule


def test_bridge_ports_are_kept_per_variant():
    # docker-portmap: packet 13 is bridged between two container ports (PHYSIN and PHYSOUT),
    # packet 2 came in on a bridge port and was routed (PHYSIN only), packet 1 came from outside
    from ruletrace.cli.options import example_paths
    from ruletrace.pipeline import explain_files

    rules, logs = example_paths("docker-portmap")
    r = explain_files(rules, logs)
    b = ReportBuilder([load_ruleset(x) for x in rules])
    b.add_all(r.explanations)
    got = {p["id"]: (p["physin"], p["physout"]) for p in unpack(b.data())}
    assert got[13] == ("rtl1440v1", "rtl1440v2")
    assert got[2] == ("rtl1440v1", None)
    assert got[1] == (None, None)


def test_paths_grouped_by_the_explainers_key_give_the_same_document(tmp_path):
    # Explanation.path_key (set by the Explainer) lets the report skip reading every step of a
    # path it has seen; the JSON form has no key and is read step by step: both documents are equal.
    # A generated kube-proxy log: 400 packets over fewer distinct paths, DNAT, marks, rejects, drops.
    import importlib.util
    import sys
    from pathlib import Path

    from ruletrace.pipeline import Run, load_rulesets
    from ruletrace.render.json import to_json

    bench = Path(__file__).resolve().parents[2] / "bench" / "gen_kube.py"
    spec = importlib.util.spec_from_file_location("gen_kube", bench)
    gen = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_kube", gen)
    spec.loader.exec_module(gen)
    gen.generate(tmp_path, 60, 400, 7)
    rs = load_rulesets([str(tmp_path / "kube.rules")])
    expls = list(Run(rs, [str(tmp_path / "kube.log")]).explanations())
    assert all(e.path_key is not None for e in expls)
    assert len({e.path_key for e in expls}) < len(expls) / 2  # paths repeat: the key is used
    keyed, read = ReportBuilder(rs), ReportBuilder(rs)
    keyed.add_all(expls)
    read.add_all([to_json(e) for e in expls])
    assert keyed.data() == read.data()
    assert keyed.paths == read.paths
