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
