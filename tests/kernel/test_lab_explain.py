"""``explain_files`` against the real kernel: same step sequence per packet, fate = observed outcome.

For every scenario x capture format, the packets the lab's oracle reads from the capture (the
kernel's own step sequence) must be exactly the explanations' steps, and each flow's first packet
must get the fate that what really happened implies. nf_tables captures carry no end-of-chain
events (the readers add them back as RETURN steps), so for them RETURN steps are left out of the
comparison; the TRACE rule's own nf_tables event is a step of nft monitor's explanations (checked, then left
out: the oracle leaves it out).
"""

from __future__ import annotations

from collections import Counter

import pytest

from ruletrace.lab import oracle
from ruletrace.model import Fate, StepKind

pytestmark = pytest.mark.kernel

SCENARIOS = ["k8s-nodeport", "docker-portmap", "openstack-router", "filter-basics", "ipv6"]
# capture file -> (pass name in outcome.json, ruleset file; "6" is inserted for IPv6)
CAPTURES = {
    "kernel.log": ("kernel-log", "ruleset{six}.rules"),
    "nflog.pcap": ("nflog", "ruleset{six}.rules"),
    "ulogd.json": ("ulogd", "ruleset{six}.rules"),
    "nft-monitor.txt": ("nft-trace", "ruleset-nft.json"),
    "xtables-monitor.txt": ("nft-trace", "ruleset-nft.json"),
}
NFT_CAPTURES = {"nft-monitor.txt", "xtables-monitor.txt"}
# (scenario, capture) pairs the tools cannot produce; outcome.json "missing" says why
UNAVAILABLE = {("ipv6", "xtables-monitor.txt")}  # xtables-monitor 1.8.9 exits on -m icmp6 rules

CASES = [pytest.param(s, c, id=f"{s}-{c}") for s in SCENARIOS for c in CAPTURES if (s, c) not in UNAVAILABLE]


def _explain(recordings, scenario, capture):
    from ruletrace.pipeline import explain_files

    d = recordings(scenario)
    ruleset = d / CAPTURES[capture][1].format(six="6" if scenario == "ipv6" else "")
    return explain_files(str(ruleset), [str(d / capture)]), d


def _steps(expl, capture):
    nft = capture in NFT_CAPTURES
    if capture == "nft-monitor.txt":
        # the rule that turned tracing on is a real step of an nft monitor trace (the oracle, like
        # legacy TRACE, leaves it out): it opens the packet's trace, then the kernel's sequence follows
        first = expl.steps[0]
        assert first.kind is StepKind.RULE and "nftrace set 1" in (first.event.text or "")
        assert first.action == "continue"
        steps = expl.steps[1:]
    else:
        steps = expl.steps
    return tuple((s.table, s.chain, str(s.kind), s.num) for s in steps
                 if not (nft and s.kind is StepKind.RETURN))


@pytest.mark.parametrize("scenario,capture", CASES)
def test_explain_reproduces_the_kernel_step_sequence(recordings, scenario, capture):
    result, d = _explain(recordings, scenario, capture)
    want = Counter(tuple(p.tags) for p in oracle.read(d / capture))
    got = Counter(_steps(e, capture) for e in result.explanations)
    if got != want:
        # Once in ~15 full CI-like runs a kernel-log capture held packets that neither the
        # traffic nor a re-run shows (kernel log shared with the rest of the machine). Keep
        # the evidence, record afresh once, and require the fresh capture to agree.
        first = _diagnosis(d, capture, result, want)
        _keep(d, scenario, capture, first)
        d = recordings.again(scenario)
        result, _ = _explain(recordings, scenario, capture)
        want = Counter(tuple(p.tags) for p in oracle.read(d / capture))
        got = Counter(_steps(e, capture) for e in result.explanations)
        print(f"first capture disagreed, re-recorded: {first[:2000]}")
    assert sum(got.values()) == sum(want.values()), _diagnosis(d, capture, result, want)
    assert got == want, {"missing": list((want - got).elements()), "extra": list((got - want).elements())}


def _keep(d, scenario: str, capture: str, diagnosis: str) -> None:
    """Copy a capture that disagreed to artifacts/ (git-ignored) with its diagnosis."""
    import shutil
    from pathlib import Path

    dest = Path(__file__).resolve().parents[2] / "artifacts" / f"lab-{scenario}-{capture}"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(d, dest)
    (dest / "DIAGNOSIS.txt").write_text(diagnosis + "\n")


def _diagnosis(d, capture, result, want) -> str:
    """What CI needs to show to tell a lab capture problem from a grouping bug."""
    lines = (d / capture).read_text(errors="replace").splitlines() if capture.endswith((".log", ".txt")) else []
    outcome = (d / "outcome.json").read_text() if (d / "outcome.json").exists() else ""
    firsts = [(e.steps[0].event.origin.line if e.steps and e.steps[0].event.origin else None, len(e.steps))
              for e in result.explanations]
    return (f"packet count differs: explain {len(result.explanations)} (first line, steps: {firsts}), "
            f"kernel {sum(want.values())}; capture has {len(lines)} lines; first lines: {lines[:6]!r}; "
            f"outcome: {outcome[:1500]}")


def _expected_fate(flow: dict, result: str) -> set[Fate]:
    if flow["arrived"]:
        return {{"local": Fate.DELIVERED, "forward": Fate.FORWARDED, "output": Fate.SENT}[flow["via"]]}
    if result in ("refused", "unreachable"):
        return {Fate.REJECTED}
    return {Fate.DROPPED}


def _first_packet(expls, p: dict, by_trace_id: dict[str, dict[str, str]]):
    for e in expls:
        f = dict(e.first)
        # xtables-monitor prints no ICMP id: take the packet's fields from nft monitor (same trace ids)
        tid = e.packet.events[0].packet_id if e.packet.events else None
        for k, v in by_trace_id.get(tid, {}).items():
            f.setdefault(k, v)
        if p["sport"] is not None and f.get("SPT") == str(p["sport"]):
            return e
        if p["icmp_id"] is not None and f.get("ICMPID") == str(p["icmp_id"]):
            return e
    return None


@pytest.mark.parametrize("scenario,capture", CASES)
def test_fate_agrees_with_what_really_happened(recordings, scenario, capture):
    result, d = _explain(recordings, scenario, capture)
    pass_name = CAPTURES[capture][0]
    by_trace_id = oracle.nft_packet_fields(d / "nft-monitor.txt") if capture in NFT_CAPTURES else {}
    wrong = []
    for flow in recordings.outcome(scenario)["flows"]:
        p = flow["passes"][pass_name]
        e = _first_packet(result.explanations, p, by_trace_id)
        if e is None:
            wrong.append((flow["name"], "no explanation for its first packet"))
            continue
        want = _expected_fate(flow, p["result"])
        if e.fate not in want:
            wrong.append((flow["name"], str(e.fate), sorted(map(str, want))))
    assert not wrong
