from ruletrace.correlate.group import group_packets
from tests.helpers import ev, path

FWD = "raw:PREROUTING:policy:1 mangle:PREROUTING:policy:1 nat:PREROUTING:policy:1 mangle:FORWARD:policy:1 filter:FORWARD:policy:1 mangle:POSTROUTING:policy:1 nat:POSTROUTING:policy:1"


def tags(p):
    return [e.tag for e in p.events]


def test_interleaved_packets_are_separated_by_ident():
    a = path(FWD, ident=("a",))
    b = path(FWD, ident=("b",))
    mixed = [x for pair in zip(a, b) for x in pair]
    packets = list(group_packets(mixed))
    assert len(packets) == 2
    assert [tags(p) for p in packets] == [FWD.split(), FWD.split()]
    assert {p.events[0].ident for p in packets} == {("a",), ("b",)}


def test_same_ident_restarting_at_raw_prerouting_is_a_new_packet():
    # retransmission with the same identity (e.g. IPv6 without IP ID): position decides
    events = path(FWD) + path(FWD)
    packets = list(group_packets(events))
    assert [len(p.events) for p in packets] == [7, 7]
    assert [p.id for p in packets] == [1, 2]


def test_policy_repeated_in_same_chain_starts_new_packet():
    events = [ev("raw:PREROUTING:policy:3"), ev("raw:PREROUTING:policy:3")]
    assert len(list(group_packets(events))) == 2


def test_user_chain_steps_and_returns_stay_in_one_packet():
    tags_ = ("nat:PREROUTING:rule:2 nat:KUBE-SERVICES:rule:59 nat:KUBE-NODEPORTS:return:37 "
             "nat:KUBE-SERVICES:return:60 nat:PREROUTING:rule:5 nat:DOCKER:return:8 nat:PREROUTING:policy:9 "
             "mangle:INPUT:policy:1 filter:INPUT:rule:1")
    packets = list(group_packets(path(tags_)))
    assert len(packets) == 1 and len(packets[0].events) == 9


def test_input_after_forward_is_another_traversal():
    events = [ev("filter:FORWARD:policy:1"), ev("filter:INPUT:policy:1")]
    assert len(list(group_packets(events))) == 2


def test_exact_packet_id_groups_events_without_ident():
    a = [ev("filter:INPUT:rule:1", ident=None, packet_id=7), ev("filter:INPUT:policy:2", ident=None, packet_id=7),
         ev("filter:INPUT:rule:1", ident=("", ""), packet_id=8)]
    assert [len(p.events) for p in group_packets(a)] == [2, 1]


def test_new_trace_id_mid_path_is_the_same_bridged_packet():
    # nf_tables gives a bridged packet a new trace id at FORWARD (seen in the kernel lab)
    a = path("raw:PREROUTING:policy:1 mangle:PREROUTING:policy:1", ident=("s",))
    for e in a:
        e.packet_id = 1
    b = path("filter:FORWARD:policy:1 nat:POSTROUTING:policy:1", ident=("s",))
    for e in b:
        e.packet_id = 2
    assert [len(p.events) for p in group_packets(a + b)] == [4]


def test_new_trace_id_where_a_traversal_starts_is_a_new_packet():
    # by position alone raw:PREROUTING rule 3 could follow rule 1 of the same packet
    a = [ev("raw:PREROUTING:rule:1", ident=("s",), packet_id=1)]
    b = [ev("raw:PREROUTING:rule:3", ident=("s",), packet_id=2), ev("filter:INPUT:policy:1", ident=("s",), packet_id=2)]
    assert [len(p.events) for p in group_packets(a + b)] == [1, 2]
    for e in b:
        e.packet_id = 1
    assert [len(p.events) for p in group_packets(a + b)] == [3]


def test_output_order_follows_first_event_and_window_flushes():
    events = []
    for i in range(300):
        events += path("raw:PREROUTING:policy:1 filter:INPUT:policy:1", ident=(i,))
    packets = list(group_packets(events, window=10))
    assert [p.id for p in packets] == list(range(1, 301))
    assert all(len(p.events) == 2 for p in packets)
