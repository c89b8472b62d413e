"""Native nftables layouts traced by the kernel (tests/fixtures/nft_captures/, see native_record.py),
explained against every ruleset form.

Expected values come from the kernel, not from the code under test: each packet's steps are the
`nft -a monitor trace` lines (family, table, chain, rule handle -> position in the raw
`nft -j list ruleset` JSON, policy = rules + 1), the rule text is what the monitor printed, and the
fate is what the flow's client observed (outcome.json).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from ruletrace.model import Fate, StepKind, nft_rule_key
from ruletrace.pipeline import explain_files

CAPS = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures"
SCENARIOS = ["zones", "router", "layered", "kube-nft", "hooks", "maps", "inet6", "mixed"]
FORMS = {"nft list": ["ruleset.nft"], "nft -a list": ["ruleset-a.nft"], "nft -j": ["ruleset.json"]}
TRACES = ["nft-monitor.txt", "nft-monitor-a.txt", "xtables-monitor.txt"]
SAVE = "iptables-nft-save.txt"  # scenarios with iptables-nft tables beside the native ones (mixed)
_FAM = {"ip": "ipv4", "ip6": "ipv6"}
_LINE = re.compile(r"^trace id ([0-9a-f]+) (\S+) (\S+) (\S+) (rule|policy) (.*)$")


def positions(d: Path) -> dict[tuple, int]:
    """(family, table, chain, handle) -> 1-based position; (family, table, chain, 0) -> rules + 1."""
    count: dict[tuple, int] = defaultdict(int)
    pos = {}
    for item in json.loads((d / "ruleset.json").read_text())["nftables"]:
        if r := item.get("rule"):
            k = (r["family"], r["table"], r["chain"])
            count[k] += 1
            pos[(*k, r["handle"])] = count[k]
        elif c := item.get("chain"):
            count[(c["family"], c["table"], c["name"])] += 0
    for k, n in count.items():
        pos[(*k, 0)] = n + 1
    return pos


def save_lines(d: Path) -> dict[tuple[str, str], list[str]]:
    """(table, chain) -> its ``-A`` lines in iptables-nft-save.txt (none when the scenario has no save)."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    table = ""
    for line in (d / SAVE).read_text().splitlines() if (d / SAVE).exists() else ():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A "):
            out[(table, line.split()[1])].append(line)
    return out


def kernel_steps(d: Path) -> list[tuple[str, list[tuple]]]:
    """Every traced packet: (trace id, [(family, table, chain, kind, num, rule text or policy)]) from
    `nft -a monitor trace`. The kernel may give a later packet the same trace id (it hashes the
    socket buffer's address): a packet starts at the tracing rule (our own table, the first hook).
    A frame a bridge passes up to its host's IP stack gets a new trace id there: an id first seen
    at an IP-family hook, right after a packet whose last step was a bridge-family one, goes on
    with that packet (the flows are sent one at a time). A rule of a table iptables-nft made is
    its iptables-nft-save line at the same position (iptables-nft keeps them in order)."""
    pos = positions(d)
    saved = save_lines(d)
    out: list[tuple[str, list[tuple]]] = []
    cur: dict[str, list[tuple]] = {}
    for line in (d / "nft-monitor-a.txt").read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        tid, fam, table, chain, kind, rest = m.groups()
        if kind == "rule" and table == "rttrace" and "nftrace set 1" in rest:
            cur[tid] = []
            out.append((tid, cur[tid]))
        elif fam != "bridge" and out and out[-1][1] and out[-1][1][-1][0] == "bridge":
            cur[tid] = out[-1][1]  # passed up from the bridge (the id may be an earlier packet's)
        if kind == "rule":
            text, _, h = rest.partition(" # handle ")
            num = pos[(fam, table, chain, int(h.split()[0]))]
            if fam == "ip" and (table, chain) in saved:
                text = saved[(table, chain)][num - 1]
            cur[tid].append((_FAM.get(fam, fam), table, chain, "rule", num, set_order(nft_rule_key(text))))
        else:
            cur[tid].append((_FAM.get(fam, fam), table, chain, "policy", pos[(fam, table, chain, 0)],
                             rest.split()[0].upper()))
    return out


def set_order(text: str) -> str:
    """An anonymous set's elements sorted: `nft monitor` and `nft list` print them in different orders."""
    return re.sub(r"\{ ([^{}]*) \}", lambda m: "{ " + ", ".join(sorted(m[1].split(", "))) + " }", text)


def _explained_steps(e) -> list[tuple]:
    got = []
    for s in e.steps:
        if s.kind is StepKind.RETURN:  # implied by the reader: the kernel prints no event for them
            continue
        what = set_order(nft_rule_key(s.rule.text)) if s.kind is StepKind.RULE and s.rule is not None else s.policy
        got.append((s.event.family, s.table, s.chain, str(s.kind), s.num, what))
    return got


def expected_fate(flow: dict, kernel: list[tuple]) -> Fate:
    """The fate a flow's first packet had, from what its sender saw (and, for no answer, the kernel's rule)."""
    r = flow["result"]
    if r in ("connected", "reply"):
        return Fate.FORWARDED if flow["via"] == "forward" else Fate.DELIVERED
    last = kernel[-1]
    # the kernel's last step: a reject statement (or an iptables-nft REJECT, shown as its save line)
    rejected = last[3] == "rule" and (" reject" in f" {last[5]}" or " -j REJECT" in last[5])
    if r in ("refused", "unreachable"):
        # refused without a reject rule: the receiver's own TCP stack answered (no listener)
        if rejected:
            return Fate.REJECTED
        return Fate.FORWARDED if flow["via"] == "forward" else Fate.DELIVERED
    # no answer in time: dropped, unless the kernel's last step was a reject statement (an ICMPv6
    # admin-prohibited answer is a soft error to a connecting TCP socket: connect() times out)
    return Fate.REJECTED if rejected else Fate.DROPPED


def _first_packet(expls, flow: dict):
    for e in expls:
        f = e.first
        if flow["kind"] in ("tcp", "udp") and f.get("SPT") == str(flow["sport"]):
            return e
        if flow["kind"] == "ping" and f.get("ICMPID") == str(flow["port"]):
            return e
    return None


def usable(d: Path, form: str, trace: str) -> bool:
    """xtables-monitor prints no text for a native rule, only its handle: a listing without handles
    (`nft list ruleset`) cannot number those steps (they stay unknown), so that pair is not compared."""
    return (d / trace).exists() and not (trace == "xtables-monitor.txt" and form == "nft list")


CASES = [pytest.param(sc, form, tr, id=f"{sc}-{form}-{tr}") for sc in SCENARIOS for form in FORMS for tr in TRACES
         if usable(CAPS / sc, form, tr)]


@pytest.mark.parametrize("sc,form,trace", CASES)
def test_native_capture_steps_texts_and_fates_are_the_kernels(sc, form, trace):
    d = CAPS / sc
    check_capture(d, [str(d / f) for f in FORMS[form]], str(d / trace))


def check_capture(d: Path, ruleset: list[str], trace: str) -> None:
    """``ruleset``: one listing form; the scenario's iptables-nft-save is given beside it when it has one."""
    want = kernel_steps(d)
    if (d / SAVE).exists():
        ruleset = [*ruleset, str(d / SAVE)]
    result = explain_files(ruleset, [trace])
    got = Counter(tuple(_explained_steps(e)) for e in result.explanations)
    kernel = Counter(tuple(steps) for _, steps in want)
    assert sum(got.values()) == sum(kernel.values())
    assert got == kernel, {"missing": list((kernel - got).elements()), "extra": list((got - kernel).elements())}
    assert not [w for e in result.explanations for s in e.steps if (w := s.warning)]
    outcome = json.loads((d / "outcome.json").read_text())
    fates = []
    for flow in outcome["flows"]:
        e = _first_packet(result.explanations, flow)
        assert e is not None, flow["name"]
        steps = next(st for _, st in want if st == _explained_steps(e))
        fates.append((flow["name"], e.fate, expected_fate(flow, steps)))
    assert all(a is b for _, a, b in fates), fates
