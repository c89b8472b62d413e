"""A native nf_tables path meets tables of several families (iptables-nft's ``ip filter`` beside
``inet host``; ``inet same`` and ``ip same``): the report counts each step in its own family's
ruleset, and names a table two families share with its family."""

from __future__ import annotations

from pathlib import Path

from ruletrace.pipeline import Run, load_rulesets
from ruletrace.render.report_data import ReportData

CAPS = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures"


def _data(name: str, *, fast: bool = True, via_json: bool = False) -> tuple[dict, list]:
    from ruletrace.render.json import to_json
    from ruletrace.render.json_model import from_json

    rss = load_rulesets([str(CAPS / name / "ruleset-a.nft")])
    b = ReportData(rss, fast=fast)
    for e in Run(rss, [str(CAPS / name / "nft-monitor-a.txt")]).explanations():
        if via_json:  # `report --from-json`: the packets as explain --json wrote them
            j = to_json(e)
            e = from_json(j, j["tables"])
        b.add(e)
    return b.data(), rss


def test_each_step_is_counted_in_its_own_familys_ruleset():
    for fast, via_json in ((True, False), (False, False), (True, True)):
        d, rss = _data("mixed", fast=fast, via_json=via_json)
        fam = [r.family for r in rss]
        assert d["xchains"] == []  # every step's chain is in its ruleset (ip filter's were "extra" in inet's)
        entered = {(fam[c[0]], d["tables"][c[1]], c[2]): c[5] if len(c) > 5 else 0 for c in d["chains"]}
        assert entered[("ipv4", "filter", "INPUT")] > 0 and entered[("inet", "host", "input")] > 0


def test_a_shared_table_name_is_labelled_with_its_family():
    d, _rss = _data("layered")
    labels = set(d["table_labels"].values())
    assert {"inet same", "ip same", "ip6 same"} <= labels
    assert not any(v.endswith((" early", " late")) for v in labels)  # names only one family has: as they are
