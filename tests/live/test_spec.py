"""TraceSpec validation: what iptables would refuse is refused before anything is recorded."""

from __future__ import annotations

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.live.session import MAX_RATE, TraceSpec


def test_rate_above_limit_match_maximum_is_refused_up_front():
    with pytest.raises(RuletraceError, match="at most 10000"):
        TraceSpec(proto="icmp", rate=MAX_RATE + 1).validate()


def test_rate_at_maximum_is_accepted():
    TraceSpec(proto="icmp", rate=MAX_RATE).validate()


@pytest.mark.parametrize(("kw", "words"), [
    ({"dport": "80:70"}, "first port is above its last"),
    ({"dport": "99999"}, "at most 65535"),
    ({"sport": "!1:70000"}, "at most 65535"),
    ({"dport": "8080", "iface": "veryveryverylongifname0"}, "at most 15 characters"),
])
def test_ports_and_interface_names_iptables_refuses_are_refused_up_front(kw, words):
    with pytest.raises(RuletraceError, match=words):
        TraceSpec(proto="tcp", **kw).validate()


@pytest.mark.parametrize("kw", [{"dport": "70:80"}, {"dport": "80:"}, {"dport": ":80"}, {"dport": "!65535"},
                                {"dport": "http"}, {"sport": "0"}, {"dport": "1", "iface": "eth+"},
                                {"dport": "1", "iface": "!a23456789012345"}])
def test_valid_ports_and_interface_names_pass(kw):
    TraceSpec(proto="tcp", **kw).validate()
