"""nf_tables traces (iptables-nft captures of the bundled examples) explained against every ruleset form.

Expected values come from outside the code under test: rule positions from the raw
``nft -j list ruleset`` JSON (json.load, handle order per chain), fates from outcome.json (what
the kernel did to each flow), rule texts copied from the capture files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ruletrace.model import Fate, StepKind
from ruletrace.pipeline import explain_files, load_rulesets

EX = Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "examples"
LISTINGS = Path(__file__).resolve().parents[1] / "fixtures" / "nft_listings"
SCENARIOS = ["docker-portmap", "filter-basics", "ipv6", "k8s-nodeport", "openstack-router"]


def _save(sc: str) -> str:
    return str(EX / sc / ("ruleset6-nft.rules" if sc == "ipv6" else "ruleset-nft.rules"))


def _forms(sc: str) -> dict[str, list[str]]:
    return {
        "iptables-nft-save": [_save(sc)],
        "nft -j": [str(EX / sc / "ruleset-nft.json")],
        "nft -j + save": [str(EX / sc / "ruleset-nft.json"), _save(sc)],
        "nft list": [str(LISTINGS / f"{sc}.nft")],
        "nft -a list": [str(LISTINGS / f"{sc}-a.nft")],
    }


def _positions(sc: str) -> dict[tuple[str, str, int], int]:
    """(table, chain, handle) -> 1-based position, straight from the JSON listing."""
    doc = json.loads((EX / sc / "ruleset-nft.json").read_text())
    count: dict[tuple[str, str], int] = {}
    out = {}
    for item in doc["nftables"]:
        r = item.get("rule")
        if r is None:
            continue
        k = (r["table"], r["chain"])
        count[k] = count.get(k, 0) + 1
        out[(r["table"], r["chain"], r["handle"])] = count[k]
    return out


def _expected_fate(flow: dict) -> Fate:
    p = flow["passes"]["nft-trace"]
    if flow["arrived"]:
        return {"local": Fate.DELIVERED, "forward": Fate.FORWARDED, "output": Fate.SENT}[flow["via"]]
    return Fate.REJECTED if p["result"] in ("refused", "unreachable") else Fate.DROPPED


def _first(expls, p: dict, by_tid: dict):
    for e in expls:
        f = dict(e.first)
        f.update({k: v for k, v in by_tid.get(e.packet.events[0].packet_id, {}).items() if k not in f})
        if p["sport"] is not None and f.get("SPT") == str(p["sport"]):
            return e
        if p["icmp_id"] is not None and f.get("ICMPID") == str(p["icmp_id"]):
            return e
    return None


CASES = [pytest.param(sc, cap, form, id=f"{sc}-{cap}-{form}") for sc in SCENARIOS
         for cap in ("nft-monitor.txt", "xtables-monitor.txt") for form in _forms(sc)
         if (sc, cap) != ("ipv6", "xtables-monitor.txt")]  # xtables-monitor 1.8.9 exits on -m icmp6


@pytest.mark.parametrize("sc,cap,form", CASES)
def test_every_rule_step_gets_its_position_and_every_flow_its_fate(sc, cap, form):
    from ruletrace.lab import oracle

    result = explain_files(_forms(sc)[form], [str(EX / sc / cap)])
    pos = _positions(sc)
    wrong = []
    for e in result.explanations:
        for s in e.steps:
            if s.kind is StepKind.RULE:
                want = pos.get((s.table, s.chain, s.event.handle))
                if s.num is None or s.num != want or s.rule is None:
                    wrong.append((s.table, s.chain, s.event.handle, s.num, want))
            elif s.kind is StepKind.POLICY:
                assert s.policy in ("ACCEPT", "DROP") and s.policy.lower() == s.event.verdict
    assert not wrong
    by_tid = oracle.nft_packet_fields(EX / sc / "nft-monitor.txt")
    outcome = json.loads((EX / sc / "outcome.json").read_text())
    fates = []
    for flow in outcome["flows"]:
        e = _first(result.explanations, flow["passes"]["nft-trace"], by_tid)
        fates.append((flow["name"], e and e.fate))
        assert e is not None and e.fate is _expected_fate(flow), fates


@pytest.mark.parametrize("sc", SCENARIOS)
def test_deciding_rule_equals_the_legacy_twin(sc):
    """Same flow, legacy kernel.log + ruleset.rules vs nft monitor + iptables-nft-save: same decider."""
    outcome = json.loads((EX / sc / "outcome.json").read_text())
    six = "6" if sc == "ipv6" else ""
    legacy = explain_files(str(EX / sc / f"ruleset{six}.rules"), [str(EX / sc / "kernel.log")]).explanations
    nft = explain_files(_save(sc), [str(EX / sc / "nft-monitor.txt")]).explanations
    from ruletrace.lab import oracle

    by_tid = oracle.nft_packet_fields(EX / sc / "nft-monitor.txt")
    for flow in outcome["flows"]:
        a = _first(legacy, flow["passes"]["kernel-log"], {})
        b = _first(nft, flow["passes"]["nft-trace"], by_tid)
        assert a is not None and b is not None
        va, vb = a.verdict, b.verdict
        assert a.fate == b.fate, flow["name"]
        assert (va and (va.table, va.chain, va.num)) == (vb and (vb.table, vb.chain, vb.num)), flow["name"]


def _by_dport(expls, dport: str):
    return next(e for e in expls if e.first.get("DPT") == dport)


def test_nft_monitor_without_ruleset_uses_the_trace_words():
    ex = explain_files(None, [str(EX / "filter-basics" / "nft-monitor.txt")])
    e23 = _by_dport(ex.explanations, "23")  # printed "(verdict drop)" after a reject statement
    assert e23.fate is Fate.REJECTED
    assert e23.verdict.rule.text == "tcp dport 23 counter reject with tcp reset"
    assert (e23.verdict.table, e23.verdict.chain) == ("filter", "INPUT")
    e25 = _by_dport(ex.explanations, "25")  # a user chain's rule dropped it, not a policy
    assert e25.fate is Fate.DROPPED and e25.verdict.rule.text == "counter drop"
    assert e25.verdict.chain == "LOGDROP" and "policy" not in e25.verdict.reason
    e3306 = _by_dport(ex.explanations, "3306")  # the base chain's policy, as the kernel said
    assert e3306.fate is Fate.DROPPED and e3306.verdict.rule is None and e3306.steps[-1].policy == "DROP"
    assert any("rule text the trace printed" in w for w in ex.warnings)


def test_nat_statements_are_nat_actions_without_ruleset():
    for cap, dnat, masq in (
        ("nft-monitor.txt", "iifname != \"rtl1440d0\" tcp dport 10000 counter dnat to 172.17.0.2:80",
         "oifname != \"rtl1440d0\" ip saddr 172.17.0.0/16 counter masquerade"),
        ("xtables-monitor.txt", "-A DOCKER ! -i rtl1440d0 -p tcp -m tcp --dport 10000 -j DNAT --to-destination "
         "172.17.0.2:80", "-A POSTROUTING -s 172.17.0.0/16 ! -o rtl1440d0 -j MASQUERADE"),
    ):
        ex = explain_files(None, [str(EX / "docker-portmap" / cap)]).explanations
        actions = {s.rule.text: s.action for e in ex for s in e.steps if s.rule is not None}
        assert actions[dnat] == "dnat" and actions[masq] == "masquerade", cap
        assert not any("ends the nat table" in n for e in ex for n in e.notes)


def test_xtables_monitor_without_ruleset_names_the_rule_and_reads_numeric_return():
    ex = explain_files(None, [str(EX / "filter-basics" / "xtables-monitor.txt")]).explanations
    e23 = _by_dport(ex, "23")
    assert e23.fate is Fate.REJECTED
    assert e23.verdict.rule.text == "-A INPUT -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset"
    assert "rule None" not in e23.verdict.reason and "rule ?" not in e23.verdict.reason
    dk = explain_files(None, [str(EX / "docker-portmap" / "xtables-monitor.txt")]).explanations
    rets = [s for e in dk for s in e.steps if s.rule is not None and s.rule.text == "-A DOCKER-USER -j RETURN"]
    assert rets and all(s.event.verdict == "return" and s.action == "return" for s in rets)


def test_json_and_save_given_together_are_paired():
    sc = EX / "k8s-nodeport"
    rulesets = load_rulesets([str(sc / "ruleset-nft.json"), str(sc / "ruleset-nft.rules")])
    assert len(rulesets) == 1 and rulesets[0].format == "nft-json"
    texts = [r.text for t in rulesets[0].tables.values() for c in t.values() for r in c.rules]
    assert not any("xt match" in t or "xt target" in t for t in texts)
    assert "-A KUBE-NODEPORTS -p tcp -m comment --comment \"ns/ingress-nginx:http\" -m tcp --dport 52000 " \
           "-j KUBE-XLB-VETHOZVMBYUVK3NB" in texts
