"""The report's fast path (render/report_data.ReportData, fast=True: ``_add_fast`` with its per-path
memo) gives the same document as making every packet's part from its own explanation (fast=False),
on every fixture, example, lab capture and a generated kube-proxy log; and the page is the same
byte for byte."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from ruletrace.pipeline import Run, load_rulesets
from ruletrace.render.html import ReportBuilder
from ruletrace.render.report_data import ReportData
from tests.corpus_cases import EXAMPLES, cases, kube_log

WHEN = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)


def _explanations(rulesets, traces):
    rs = load_rulesets([str(r) for r in rulesets])
    return rs, list(Run(rs, [str(t) for t in traces]).explanations())


def _docs(rulesets, trace, cls=ReportData, *, unkeyed=lambda k: False):
    rs, expls = _explanations(rulesets, [trace] if not isinstance(trace, list) else trace)
    fast, ref = cls(rs), cls(rs, fast=False)
    for k, e in enumerate(expls):
        # the reference first: it parses what the fast path may find already parsed, not the other way
        ref.add(e)
        fast.add(dataclasses.replace(e, path_key=None) if unkeyed(k) else e)
    return fast, ref


@pytest.mark.parametrize("name,rulesets,trace", cases(), ids=[c[0] for c in cases()])
def test_fast_equals_reference(name, rulesets, trace):
    fast, ref = _docs(rulesets, trace, ReportBuilder)
    assert fast.data() == ref.data()
    assert fast.deciders() == ref.deciders()
    assert fast.render(title="t", generated=WHEN) == ref.render(title="t", generated=WHEN)


def test_fast_path_was_taken():
    # the kube example's packets carry the explainer's path key: the fast path, not the reference, ran
    fast, ref = _docs([EXAMPLES / "k8s-nodeport" / "ruleset.rules"], EXAMPLES / "k8s-nodeport" / "kernel.log")
    assert fast.packets > 1 and fast._shown and not ref._shown  # addresses numbered by _add_fast only


def test_two_rulesets_by_family():
    # an IPv4 and an IPv6 ruleset: each packet counted under its family's (not the one-ruleset shortcut)
    v4, v6 = EXAMPLES / "filter-basics", EXAMPLES / "ipv6"
    fast, ref = _docs([v4 / "ruleset.rules", v6 / "ruleset6.rules"], [v4 / "kernel.log", v6 / "kernel.log"],
                      ReportBuilder)
    doc = fast.data()
    assert {c[0] for c in doc["chains"] if len(c) > 5} == {0, 1}  # both rulesets have entered chains
    assert doc == ref.data()
    assert fast.render(title="t", generated=WHEN) == ref.render(title="t", generated=WHEN)


@pytest.mark.parametrize("name", ["k8s-nodeport", "ipv6", "docker-portmap"])
def test_keyed_and_unkeyed_packets_mixed(name):
    # packets without a path key (e.g. read back from JSON) take the reference path inside the same
    # builder: both number addresses, strings and variants in one set of tables
    d = EXAMPLES / name
    rules = sorted(d.glob("ruleset*.rules"))[:1]
    fast, ref = _docs(rules, d / "kernel.log", ReportBuilder, unkeyed=lambda k: k % 3 == 1)
    assert fast.data() == ref.data()
    assert fast.render(title="t", generated=WHEN) == ref.render(title="t", generated=WHEN)


def test_fast_equals_reference_on_a_generated_kube_log(tmp_path):
    rules, log = kube_log(tmp_path, services=40, packets=800)
    fast, ref = _docs([rules], log, ReportBuilder)
    assert fast.packets == 800 and fast.shared > 400 and ref.shared == 0
    assert fast.data() == ref.data()  # ReportBuilder.data: with the diagram's hooks and labels
    assert fast.render(title="t", generated=WHEN) == ref.render(title="t", generated=WHEN)


def test_last_fields_found_in_an_earlier_event_with_the_same_raw_text():
    # _known_fields: the last event's fields are an earlier event's parsed fields when both hold the
    # very same raw text for the same parser; otherwise they are parsed as TraceEvent.fields does
    from ruletrace.logtext import parse_fields
    from ruletrace.model import StepKind, TraceEvent
    from ruletrace.render.report_data import _known_fields

    calls = []

    def parse(raw):
        calls.append(raw)
        return parse_fields(raw)

    bridged = b"IN=br0 OUT=br0 PHYSIN=veth1 PHYSOUT=veth2 SRC=10.0.0.1 DST=10.0.0.2 PROTO=TCP "
    other = b"IN=br0 OUT=br0 PHYSIN=veth1 SRC=10.0.0.1 DST=10.0.0.2 PROTO=TCP "

    def ev(raw, p=parse):
        return TraceEvent("filter", "FORWARD", StepKind.RULE, 1, raw=raw, parse=p)

    evs = [ev(other), ev(bridged), ev(bridged), ev(bridged)]
    parsed = evs[1].fields
    calls.clear()
    got = _known_fields(evs)
    assert got is parsed and got["PHYSOUT"] == "veth2" and calls == []  # not parsed again
    # a different parser, or an equal text that is another object: parsed for the last event itself
    for last in (ev(bridged, lambda r: {**parse(r), "X": "1"}), ev(bytes(bytearray(bridged)))):
        calls.clear()
        got = _known_fields([*evs[:2], last])
        assert got == last.fields and len(calls) == 1
    # nothing parsed before: the last event's own fields
    fresh = [ev(bridged), ev(bridged)]
    calls.clear()
    assert _known_fields(fresh) == {**parse_fields(bridged)} and len(calls) == 1


def test_memo_dropping_entries_changes_nothing(tmp_path, monkeypatch):
    # the shared-part memo is a cache: with room for one entry per verdict and two in all it drops
    # entries all the time, and the document is still the reference's
    from ruletrace.render import report_data

    monkeypatch.setattr(report_data, "_BUCKET_MAX", 1)
    monkeypatch.setattr(report_data, "_CORES_MAX", 2)
    rules, log = kube_log(tmp_path, services=20, packets=300, seed=3)
    fast, ref = _docs([rules], log, ReportBuilder)
    assert fast.data() == ref.data()
    v6 = EXAMPLES / "ipv6"
    fast, ref = _docs([v6 / "ruleset6.rules"], v6 / "kernel.log", ReportBuilder)
    assert fast.data() == ref.data()


def test_counts_are_the_packets_own(tmp_path):
    # packets per fate, per path and per variant are counted from each packet's variant when asked
    # (_counts), not a packet at a time: they must equal counting the explanations directly, also
    # when asked between adds (the count is made again when packets came since)
    from collections import Counter

    from ruletrace.render.report_data import _signature

    rules, log = kube_log(tmp_path, services=20, packets=300, seed=5)
    rs, expls = _explanations([rules], [log])
    for fast in (True, False):
        b = ReportData(rs, fast=fast)
        fates: Counter[str] = Counter()
        paths: dict[tuple, int] = {}
        for k, e in enumerate(expls):
            b.add(e)
            fates[str(e.fate)] += 1
            sig = _signature(e.steps)
            paths[sig] = paths.get(sig, 0) + 1
            if k in (0, 57, 149):
                assert b.fates == fates and list(b.fates) == list(fates)  # same counts, same order
        per_variant, per_path, got = b._counts()
        assert got == fates and list(got) == list(fates) and len(fates) > 1
        assert per_path == list(paths.values())  # paths are numbered in the order first seen
        assert sum(per_variant) == len(expls) == b.hitmap.packets
        assert min(per_variant) >= 1 and max(per_path) > 1


def test_fast_chain_rows_equal_the_reference(tmp_path):
    # _chain_rows_fast against _chain_rows (HitMap.chain_counts): a table without chains is not
    # numbered, a rule number past the chain's end is not a hit row, chains entered or not, policy
    # or none, on hand-made counts and on a generated kube log
    from ruletrace.analyze.hitmap import HitMap
    from ruletrace.model import Chain, Rule, Ruleset
    from ruletrace.render.report_data import _chain_rows, _chain_rows_fast

    def rules(chain, n):
        return [Rule("filter", chain, k, f"-A {chain} -j R{k}") for k in range(1, n + 1)]

    rs = Ruleset("ipv4", {"raw": {}, "filter": {"INPUT": Chain("filter", "INPUT", "ACCEPT", rules("INPUT", 3)),
                                                "X": Chain("filter", "X", None, rules("X", 2)),
                                                "Y": Chain("filter", "Y", None, [Rule("filter", "Y", 1, "odd")])},
                          "nat": {"PREROUTING": Chain("nat", "PREROUTING", "ACCEPT", [])}})
    hm = HitMap([rs])
    hm.add([("filter", "INPUT", "rule", 1), ("filter", "X", "rule", 2), ("filter", "X", "rule", 5),
            ("filter", "INPUT", "rule", 2), ("filter", "INPUT", "rule", 3)], weight=3)
    hm.add([("filter", "INPUT", "policy", 4)])
    hm.add([("filter", "Y", "rule", 1), ("filter", "Y", "return", 2)], weight=2)
    for tables_ref, tables_fast in (({}, {}), ({"filter": 0}, {"filter": 0})):
        ref = _chain_rows(hm, [rs], tables_ref)
        assert _chain_rows_fast(hm, [rs], tables_fast) == ref and tables_fast == tables_ref
    chains, index, _sizes, texts = ref
    assert "raw" not in tables_ref
    assert texts == [[index[(0, "filter", "INPUT")], ["-j R1", "-j R2", "-j R3"]],
                     [index[(0, "filter", "X")], ["-j R1", "-j R2"]], [index[(0, "filter", "Y")], ["odd"]]]
    assert chains[index[(0, "nat", "PREROUTING")]] == [0, tables_ref["nat"], "PREROUTING", 0, "ACCEPT"]
    x = chains[index[(0, "filter", "X")]]
    assert x[5:] == [3, 0, [2, 3], [5, 3]]  # rule 5 of a 2-rule chain is no hit row (but the deepest)
    rules_, log = kube_log(tmp_path, services=30, packets=400, seed=11)
    ks, expls = _explanations([rules_], [log])
    b = ReportData(ks)
    for e in expls:
        b.add(e)
    assert _chain_rows_fast(b.hitmap, ks, {}) == _chain_rows(b.hitmap, ks, {})
