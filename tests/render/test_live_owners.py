"""The one-line live view names the deciding owner and the near miss (analyze/live.py words them)."""

from __future__ import annotations

from pathlib import Path

from ruletrace.analyze.live import decider_text, line_of
from ruletrace.pipeline import PacketFilter, explain_files

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "examples"


def _first(example: str, match: str):
    d = EXAMPLES / example
    res = explain_files(str(d / "ruleset.rules"), [str(d / "kernel.log")], packet_filter=PacketFilter.parse([match]))
    return res.explanations[0]


def test_line_names_the_service_and_quotes_its_comment():
    line = line_of(_first("k8s-nodeport", "dport=52000"))
    assert (line.decider, line.owner) == ("filter:KUBE-FIREWALL rule 1", "kubernetes ns/ingress-nginx:http")
    assert line.cause.startswith("has no local endpoints; mark 0x8000 set by")  # the comment, less the name


def test_line_names_the_near_miss_of_a_policy_drop():
    e = _first("filter-basics", "dport=3306")
    line = line_of(e)
    assert (line.decider, line.cause) == ("filter:INPUT policy DROP", "no rule matched; nearly filter:SERVICES rule 1")


def test_docker_published_port_owner_and_no_owner_for_plain_rules():
    line = line_of(_first("docker-portmap", "dport=10000"))
    assert (line.decider, line.owner) == ("filter:DOCKER rule 1", "docker rtl1440d0")
    assert decider_text(_first("filter-basics", "dport=22")) == "filter:ALLOWED rule 1"
    assert line_of(_first("filter-basics", "dport=22")).owner == ""


def test_a_narrow_terminal_keeps_the_owner_longer_than_the_time():
    """The answer goes last: a narrow terminal gives up the source port and flags, the time and
    the interfaces before the cause and the owner, and cuts those short ("…", the owner's kind
    first) before leaving them out. (It used to drop the owner before the time: a 100-column
    terminal showed "03:34:01.000" and ":45789 [SYN]" but never "ns/svc:http".)"""
    from ruletrace.render.live import to_text

    line = line_of(_first("k8s-nodeport", "dport=52000"))
    full = to_text(line, 3).plain
    assert "filter:KUBE-FIREWALL rule 1  kubernetes ns/ingress-nginx:http  has no local endpoints;" in full
    at150 = to_text(line, 3, 150).plain
    assert len(at150) <= 150 and at150.endswith("×3")
    assert "kubernetes ns/ingress-nginx:http  has no local endpoints" in at150  # the cause cut, not dropped
    assert line.time not in at150 and ":40000" not in at150 and "[SYN]" not in at150 and "rtl961n0" not in at150
    at100 = to_text(line, 3, 100).plain
    assert len(at100) <= 100 and at100.endswith("×3")
    assert "rule 1  ns/ingress-nginx:" in at100 and "kubernetes" not in at100  # the name, cut
    at80 = to_text(line, 3, 80).plain
    assert len(at80) <= 80 and at80.endswith("×3") and "ns/ingress" not in at80
    assert "TCP 172.28.129.2 -> 172.28.129.4:52000  DROPPED  filter:KUBE-FIREWALL rule 1" in at80


def test_summary_words_use_the_rules_own_owner():
    from ruletrace.analyze.live import decider_words
    from ruletrace.analyze.summary import Summary

    d = Summary.entry(_first("docker-portmap", "dport=10000"))[1]
    assert decider_words(d) == "filter:DOCKER rule 1 [docker rtl1440d0]"
