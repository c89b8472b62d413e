"""Each registered match module turns a typical rule into conditions that decide a packet."""

from __future__ import annotations

import pytest

from ruletrace.model import Origin
from ruletrace.rulesets.iptables_save import parse
from ruletrace.simulate.engine import simulate, step_tags
from ruletrace.simulate.hostfacts import HostFacts
from ruletrace.simulate.probe import Probe

# (match, matches the probe: TCP 10.0.0.2:1000 -> 10.0.0.3:80, eth0, mark 0x5, TTL 64, LEN 60, NEW)
CASES = [
    ("-p tcp -m tcp --dport 80", True), ("-p tcp -m tcp --sport 1001:2000", False),
    ("-p tcp --dport 80", True), ("-m multiport --dports 22,80", True), ("-m multiport --ports 79", False),
    ("-p icmp -m icmp --icmp-type echo-request", False), ("-m conntrack --ctstate NEW", True),
    ("-m state --state ESTABLISHED", False), ("-m mark --mark 0x4/0x4", True), ("-m connmark --mark 0x1", False),
    ("-m addrtype --dst-type LOCAL", True), ("-m physdev --physdev-in veth0", False),
    ("-m iprange --src-range 10.0.0.1-10.0.0.9", True), ("-m iprange --dst-range 10.0.1.1-10.0.1.9", False),
    ("-m length --length 0:100", True), ("-m length --length 61:", False), ("-m ttl --ttl-gt 10", True),
    ("-m ttl --ttl-lt 10", False), ("-m pkttype --pkt-type unicast", True), ("-m dscp --dscp 0x2", False),
    ("-m tos --tos 0x0/0xff", True), ("-m comment --comment x", True), ("-m statistic --mode random "
    "--probability 0.5", True), ("-m limit --limit 1/sec", True), ("-m hashlimit --hashlimit-above 1/sec "
    "--hashlimit-name x", False), ("-m connlimit --connlimit-above 5", False), ("-m set --match-set S src", False),
    ("-m owner --uid-owner 0", False), ("-m mac --mac-source 00:11:22:33:44:55", False),
    ("-m recent --rcheck", False), ("-s 10.0.0.0/24", True), ("! -d 10.0.0.3/32", False), ("-i eth+", True),
    ("-o eth0", False), ("-p all", True), ("! -p all", False), ("-f", False), ("! -f", True),
]


@pytest.mark.parametrize(("match", "want"), CASES)
def test_module_decides(match: str, want: bool) -> None:
    text = "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                      f"-A INPUT {match} -j DROP", "COMMIT", ""])
    rs = parse(text, origin=Origin("t"))
    f = HostFacts()
    f.add_local("eth0=10.0.0.3/24")
    p = Probe(proto=6, src="10.0.0.2", dst="10.0.0.3", sport=1000, dport=80, iif="eth0", mark=5, length=60)
    f.assume["conntrack"] = True
    for index in (True, False):
        r = simulate(rs, p, f, index=index)
        assert (("filter", "INPUT", "rule", 1) in step_tags(r.events)) is want


def test_diff_reads_rule_options_as_the_simulator_does() -> None:
    # render/diff.py parses with rulesets.options too: the old "-s ! ADDR" spelling is a negated
    # source, and the words after a target are not match options
    from ruletrace.analyze.rule_check import check_rule, rule_options

    opts = rule_options("-A INPUT -s ! 10.1.0.0/16 -p tcp --dport 80 -j MARK --set-mark 1")
    assert [(o[0], o[2], o[3]) for o in opts] == [("src", ["10.1.0.0/16"], True), ("proto", ["tcp"], False),
                                                  ("dport", ["80"], False)]
    [src] = [c for c in check_rule("-A INPUT -s ! 10.1.0.0/16 -j DROP", {"SRC": "10.2.0.1"}, {"SRC": "10.1.0.1"})]
    assert (src.left_ok, src.right_ok) == (True, False)
