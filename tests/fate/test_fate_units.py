"""Offline parts of issue 15: reason table from a tracepoint format, words, ip rule choice, conntrack lines."""

from __future__ import annotations

import pytest

from ruletrace import kernel_facts as kf
from ruletrace import routes
from ruletrace.errors import RuletraceError
from ruletrace.live import conntrack, dropmon
from ruletrace.live import session as ss
from ruletrace.model import Explanation, Packet, StepKind, TraceEvent

# a print fmt in the kernel's shape, numbers deliberately unlike 6.18's: names come from the file
FORMAT = ('name: kfree_skb\nformat:\n\tfield:void * skbaddr;\n\n'
          'print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, '
          '{ 5, "NO_SOCKET" }, { 40, "IP_INADDRERRORS" }, { 41, "MAX" })\n')


def test_reason_names_come_from_the_format_file():
    assert kf.reason_names(FORMAT) == {5: "NO_SOCKET", 40: "IP_INADDRERRORS", 41: "MAX"}
    assert kf.reason_names("no print fmt here") == {}


def test_meaning_names_the_fact():
    assert kf.sentence("NO_SOCKET", "__udp4_lib_rcv", proto="UDP", port=9998) == \
        "no socket listens on udp/9998; the kernel answered with ICMP port unreachable: NO_SOCKET in __udp4_lib_rcv"
    assert kf.sentence("IP_INADDRERRORS", "ip_error", sysctls={"net.ipv4.ip_forward": "0"}) == \
        "forwarding is disabled on this host (net.ipv4.ip_forward=0): IP_INADDRERRORS in ip_error"
    # forwarding on: the generic words, not a claim about ip_forward
    assert "ip_forward=0" not in kf.meaning("IP_INADDRERRORS", sysctls={"net.ipv4.ip_forward": "1"})
    assert kf.meaning("SOMETHING_NEW") == "the kernel dropped it (SOMETHING_NEW)"


def test_parse_line_uses_the_table_and_fits_by_id():
    d = dropmon.parse_line("D 5 __udp4_lib_rcv 4 17 10.0.0.1 10.0.0.2 4000 9998 77", {5: "NO_SOCKET"})
    assert (d.reason, d.function, d.proto, d.dport, d.ident) == ("NO_SOCKET", "__udp4_lib_rcv", "UDP", 9998, 77)
    f = {"PROTO": "UDP", "SRC": "10.0.0.1", "DST": "10.0.0.2", "SPT": "4000", "DPT": "9998", "ID": "77"}
    assert dropmon._fits(d, f)
    assert not dropmon._fits(d, {**f, "ID": "78"})  # another datagram of the same flow
    assert dropmon.parse_line("Attaching 3 probes...", {}) is None


def test_script_filters_namespace_flow_and_rate():
    spec = ss.TraceSpec(proto="udp", dport="9998", src="10.93.0.1", families=("ipv4",), rate=7)
    text = dropmon.script(spec, 4026532310, 7)
    assert "if ($ns != 4026532310) { return; }" in text
    assert "if ($p != 17) { return; }" in text and "if ($dp != 9998) { return; }" in text
    assert "!= 16801034" in text  # 10.93.0.1 as the u32 read from the header (little-endian host)
    assert "if (@n > 7)" in text and "($v == 6)" not in text


def test_choosing_rule_for_mark_based_policy_routing():
    rules = [{"priority": 0, "src": "all", "table": "local"},
             {"priority": 100, "src": "all", "fwmark": "0x1", "table": "100"},
             {"priority": 32766, "src": "all", "table": "main"}]
    r = routes.choosing_rule(rules, "100", src="10.0.0.5", dst="8.8.8.8", mark=1, iif="eth0")
    assert routes.rule_text(r) == "100: from all fwmark 0x1 lookup 100"
    assert routes.choosing_rule(rules, None, src="10.0.0.5", dst="8.8.8.8", mark=2, iif="eth0")["priority"] == 32766
    with pytest.raises(RuletraceError, match=r"rules\.json:1"):
        routes.load_json_list("{}", "rules.json")


def test_conntrack_line():
    e = conntrack.parse("ipv4     2 udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=4000 dport=53 [UNREPLIED] "
                        "src=192.168.1.9 dst=10.0.0.1 sport=53 dport=4000 mark=16 zone=3 use=1", "after the packet")
    assert (e.proto, e.timeout, e.mark, e.zone, e.state) == ("udp", 29, "16", "3", "UNREPLIED")
    assert e.original == "src=10.0.0.1 dst=10.0.0.2 sport=4000 dport=53"
    assert e.reply.startswith("src=192.168.1.9")  # the NAT mapping shows in the reply tuple
    t = conntrack.parse("ipv4 2 tcp 6 431999 ESTABLISHED src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 "
                        "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 [ASSURED] mark=0 use=1", "x")
    assert (t.state, t.status) == ("ESTABLISHED", ["ASSURED"])


def test_take_matches_once():
    m = dropmon.DropMonitor.__new__(dropmon.DropMonitor)
    import threading
    from collections import deque
    m._lock, m.seen = threading.Lock(), 99
    m.drops = deque([dropmon.parse_line("D 5 f 4 17 10.0.0.1 10.0.0.2 4000 9998 77", {5: "NO_SOCKET"})])
    f = {"PROTO": "UDP", "SRC": "10.0.0.1", "DST": "10.0.0.2", "SPT": "4000", "DPT": "9998", "ID": "77"}
    expl = Explanation(Packet(1, [TraceEvent("raw", "PREROUTING", StepKind.POLICY, 1, fields=f)]))
    assert [d.reason for d in m.take(expl)] == ["NO_SOCKET"]
    assert m.take(expl) == []  # one packet is freed once
