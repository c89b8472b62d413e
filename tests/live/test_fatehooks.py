"""The conntrack lookup budget of live/fatehooks.py (no kernel needed)."""

from __future__ import annotations

from ruletrace.live.fatehooks import Budget


def test_budget_allows_n_a_second_and_counts_the_rest():
    t = [100.0]
    b = Budget(3, clock=lambda: t[0])
    assert [b.take() for _ in range(5)] == [True, True, True, False, False]
    t[0] += 0.99
    assert not b.take()
    t[0] += 0.02  # a new window: 1.01 s after the first take
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    assert b.refused == 4


def test_no_conntrack_lookup_for_a_packet_explained_long_after_it_passed(monkeypatch):
    import time

    from ruletrace.live import fatehooks, routing
    from ruletrace.live import session as ss
    from ruletrace.model import Explanation, Packet, StepKind, TraceEvent

    looked: list[object] = []
    monkeypatch.setattr(routing, "decisions", lambda expl: [])
    monkeypatch.setattr(routing, "sysctl", lambda name: None)
    monkeypatch.setattr(fatehooks.ct, "entry", lambda expl, when: looked.append(expl))
    spec = ss.TraceSpec(proto="icmp", families=("ipv4",))
    warned: list[str] = []
    fate = fatehooks.Fate(spec, say=lambda s: None, warn=warned.append)
    fate.conntrack = True

    def expl(age: float) -> Explanation:
        ev = TraceEvent("filter", "INPUT", StepKind.POLICY, 1, ts=time.time() - age, fields={"PROTO": "ICMP"})
        return Explanation(Packet(1, [ev]))

    late, recent = expl(5.0), expl(0.0)
    fate.attach(late)
    fate.attach(recent)
    assert looked == [recent] and fate.ct_behind == 1
    assert any("explained 5.0 s after it" in n for n in late.notes)
    fate.stop()
    assert any("1 packet(s) explained over 1 s after they passed" in w for w in warned)


def test_sysctls_are_read_at_most_once_a_second(monkeypatch):
    from ruletrace.live import routing

    reads: list[str] = []
    clock = [100.0]
    monkeypatch.setattr(routing, "_sysctls", {})
    monkeypatch.setattr(routing, "_sysctl_uncached", lambda name: reads.append(name) or "1")
    monkeypatch.setattr(routing.time, "monotonic", lambda: clock[0])
    assert [routing.sysctl("net.ipv4.ip_forward") for _ in range(3)] == ["1"] * 3
    clock[0] += routing.MEMO_SECONDS
    assert routing.sysctl("net.ipv4.ip_forward") == "1" and reads == ["net.ipv4.ip_forward"] * 2
