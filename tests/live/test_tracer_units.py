"""Live tracer logic without a kernel: version pruning, exact --count, ownership, loss accounting."""

from __future__ import annotations

import struct

import pytest

from ruletrace.fields import packet_ident
from ruletrace.live import accounting as acc
from ruletrace.live import backend as be
from ruletrace.live import nflog
from ruletrace.live import session as ss
from ruletrace.live.ownpackets import judge, spec_fits
from ruletrace.live.tracer import LiveGrouper, Tracer, Version
from ruletrace.model import Packet, StepKind, TraceEvent
from ruletrace.rulesets import load_ruleset

SID, OTHER = "aaaa1111" * 4, "bbbb2222" * 4  # session ids are 128-bit hex (session.SID_BYTES)


def save_text(extra_input: int = 0, sessions: tuple[str, ...] = (SID,)) -> str:
    raw = []
    for sid in sessions:  # each session inserts TRACE then its counter rule at position 1
        raw = [f"-A PREROUTING -p icmp -m comment --comment ruletrace:{sid}:seen",
               f"-A PREROUTING -p icmp -m limit --limit 50/sec -m comment --comment ruletrace:{sid} -j TRACE"] + raw
    return "\n".join([
        "*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", *raw, "COMMIT",
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        *[f"-A INPUT -p udp --dport {9000 + i} -j ACCEPT" for i in range(extra_input)],
        "-A INPUT -p icmp -j ACCEPT", "COMMIT", ""])


def version(n: int, text: str) -> Version:
    rs = load_ruleset("t.save", text=text)
    rs.family = "ipv4"
    return Version(n, float(n), {"ipv4": rs}, {"ipv4": text})


FIELDS = {"SRC": "10.0.0.1", "DST": "10.0.0.2", "PROTO": "ICMP", "TYPE": "8", "CODE": "0", "ID": "1",
          "IN": "eth0", "OUT": ""}


def ev(tag: str, seq: int = 1, **kw) -> TraceEvent:
    t, c, k, n = tag.split(":")
    f = dict(FIELDS, SEQ=str(seq), **kw)
    return TraceEvent(t, c, StepKind(k), int(n), family="ipv4", fields=f, ident=packet_ident(f))


class FakeSource:
    """A legacy NFLOG listener that hands out prepared batches of steps."""

    def __init__(self, batches: list[list[TraceEvent]]) -> None:
        self.batches = batches
        self.overruns = 0

    def poll(self, timeout):
        return self.batches.pop(0) if self.batches else []

    def close(self):
        pass



@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    # a unit test's session state never goes to the host's /run/ruletrace (it would be listed
    # as a leftover by every later `ruletrace trace` there)
    monkeypatch.setattr(ss, "STATE_DIR", tmp_path / "state")

def tracer(batches, text: str | None = None, **kw) -> Tracer:
    spec = ss.TraceSpec(proto="icmp", direction="in", families=("ipv4",))
    spec.validate()
    t = Tracer(spec, backend="legacy", idle=0.0, churn_interval=0, **kw)
    t.sid = SID
    t.backend, t.mode = be.LEGACY, "nflog"
    t.state = ss.State(SID, 1, None, {}, be.LEGACY, ss.plan_rules(spec, SID))
    t.source = FakeSource(batches)
    v0 = version(0, text or save_text())
    t.versions.add(v0) if hasattr(t.versions, "add") else t.versions.append(v0)
    t._count = lambda: None  # no kernel counters here
    return t


def own_path(seq: int) -> list[TraceEvent]:
    # legacy: the session's rules are raw PREROUTING 1 (counter) and 2 (TRACE); the trace starts after
    return [ev("raw:PREROUTING:policy:3", seq), ev("filter:INPUT:rule:1", seq)]


def test_count_stops_exactly_and_counts_the_rest():
    t = tracer([[e for s in range(5) for e in own_path(s)]])
    got = list(t.explanations(limit=3))
    assert len(got) == 3
    assert (t.stats["arrived"], t.stats["not_shown"], t.stats["packets"]) == (5, 2, 3)


def test_packets_left_at_the_end_are_counted_by_why():
    """--count reached, still arriving at the end, only the session's own rule, steps never read:
    each packet of this session lands in exactly one count, and the summary says which is which."""
    only_own = [ev("raw:PREROUTING:rule:2", 9)]  # the TRACE rule's own step: nothing to explain
    t = tracer([[e for s in range(3) for e in own_path(s)] + only_own])
    t.source.discard = lambda deadline: (7, False)  # steps still queued after the drain
    got = list(t.explanations(limit=2))
    st = t.stats
    assert len(got) == 2 and (st["arrived"], st["not_shown"], st["ended"], st["empty"]) == (4, 1, 0, 1)
    assert st["unread"] == 7
    st["traced"] = 6
    line = acc.summary(st, len(got), 50)
    assert "6 packet(s): 4 arrived, 2 lost entirely (their steps were still queued when the trace ended)" in line
    assert "1 arrived but not shown (1 after --count, 0 still arriving when the trace ended" in line
    assert "1 arrived with no step past this session's own rules" in line
    assert "7 step(s) still queued when the trace ended, not read" in line
    assert st["arrived"] == st["packets"] + st["not_shown"] + st["empty"]


def test_packets_of_the_end_drain_count_as_still_arriving():
    t = tracer([own_path(0), [e for s in (1, 2) for e in own_path(s)]])
    t.idle = 0.05  # the drain at the end polls until 0.05 s pass without a step
    calls = []
    assert len(list(t.explanations(stop=lambda: calls.append(1) or len(calls) > 1))) == 1
    assert (t.stats["arrived"], t.stats["not_shown"], t.stats["ended"]) == (3, 2, 2)
    assert "2 arrived but not shown (0 after --count, 2 still arriving when the trace ended" in acc.summary(
        t.stats, 1, 50)


def test_a_packet_open_at_the_end_with_steps_still_queued_is_counted_once():
    """The trace ends while the reader is behind: the packet open then is not shown cut at the end
    and counted again for the steps the drain takes in (a 1,000-rule flood under load: 401 packets
    arrived for 400 traced); the drain continues it and it is counted once, not shown."""
    t = tracer([[own_path(0)[0]], [own_path(0)[1]]])
    t.idle = 0.5  # longer than a loop turn: only the end decides
    t.source.behind = lambda: bool(t.source.batches)
    calls = []
    got = list(t.explanations(stop=lambda: calls.append(1) or len(calls) > 1))
    st = t.stats
    assert got == [] and st["events"] == 2
    assert (st["arrived"], st["not_shown"], st["ended"], st["incomplete"]) == (1, 1, 1, 0)


def test_a_packet_open_at_the_end_with_nothing_queued_is_shown():
    t = tracer([own_path(0)])
    t.idle = 0.5
    t.source.behind = lambda: False
    calls = []
    got = list(t.explanations(stop=lambda: calls.append(1) or len(calls) > 1))
    assert len(got) == 1 and len(got[0].packet.events) == 2
    assert (t.stats["arrived"], t.stats["not_shown"], t.stats["packets"]) == (1, 0, 1)


def test_loss_causes_are_said_as_far_as_known():
    st = acc.new_stats()
    st.update(traced=10, arrived=4)
    assert "6 lost entirely (no step of theirs was received; the kernel reported no overflow)" in acc.summary(st, 4, 50)
    st.update(overruns=2)
    assert "6 lost entirely (the kernel dropped their steps: the receive queue overflowed)" in acc.summary(st, 4, 50)
    st.update(unread=300, unread_more=True)
    line = acc.summary(st, 4, 50)
    assert "the kernel dropped steps, and steps were still queued when the trace ended" in line
    assert "at least 300 step(s) still queued" in line


def test_count_zero_stops_at_once():
    t = tracer([own_path(1)])
    assert list(t.explanations(limit=0)) == []


def test_versions_are_dropped_when_no_open_packet_refers_to_them():
    t = tracer([[] for _ in range(3)])
    for n in range(1, 21):
        t._snapshot = lambda n, k=n: version(n, save_text(extra_input=k))
        t.refresh()
    list(t.explanations(stop=lambda: len(t.source.batches) == 0))
    assert len(t.versions) == 1 and t.versions.latest.n == 20
    assert t.versions.dropped == 20


def test_versions_referenced_by_open_packets_are_kept_and_bounded():
    t = tracer([], max_versions=4)
    g = LiveGrouper(idle=10)
    for n in range(1, 10):
        t.versions.add(version(n, save_text(extra_input=n)))
        g.add(ev("raw:PREROUTING:policy:3", seq=n), n, 0.0)  # one open packet per version
    t.versions.prune(g.referenced())
    assert t.versions.kept() == [6, 7, 8, 9]
    # a packet that saw a dropped version is explained against the oldest kept one, and says so
    pkt = Packet(1, [ev("raw:PREROUTING:policy:3", 1)])
    expl = t._explain(pkt, [2])
    assert any("version this packet saw (2) was already dropped" in w for w in expl.warnings), expl.warnings
    # only the newest version keeps its iptables-save text
    assert [bool(t.versions.get(n)[0].texts) for n in t.versions.kept()] == [False, False, False, True]


def test_legacy_packet_is_explained_against_the_version_it_fits():
    # version 1 inserts a UDP rule at INPUT 1, so the ICMP ACCEPT becomes rule 2. A packet taken
    # for version 0 (its steps arrived before the re-read) shows "INPUT rule 2": no such rule in
    # version 0, the ICMP ACCEPT of version 1
    t = tracer([])
    t.versions.add(version(1, save_text(extra_input=1)))
    pkt = Packet(1, [ev("raw:PREROUTING:policy:3"), ev("filter:INPUT:rule:2")])
    expl = t._explain(pkt, [0])
    assert any("explained against version 1" in n for n in expl.notes), (expl.notes, expl.warnings)
    assert expl.verdict.num == 2 and "-p icmp -j ACCEPT" in expl.steps[-1].rule.text
    assert not any("does not fit" in w for w in expl.warnings), expl.warnings


def test_ownership_nft_two_sessions():
    text = save_text(sessions=(SID, OTHER))  # OTHER's rules are above ours (inserted later)
    rs = load_ruleset("t.save", text=text)
    rs.family = "ipv4"
    spec = ss.TraceSpec(proto="icmp", direction="in")

    def e(tag, verdict=None, pid=7):
        x = ev(tag)
        x.packet_id, x.verdict = pid, verdict
        return x

    def j(events):
        return judge(Packet(1, events), [0] * len(events), lambda v, f: rs, SID, spec, nft=True, others=True)

    mine = j([e("raw:PREROUTING:rule:4", "continue"), e("raw:PREROUTING:policy:5", "accept")])
    assert mine.own and not mine.incomplete and [x.tag for x in mine.events] == ["raw:PREROUTING:policy:5"]
    # started by the other session's TRACE rule; our counter rule matched but our rate cap said no
    theirs = j([e("raw:PREROUTING:rule:2", "continue"), e("raw:PREROUTING:rule:3", "continue"),
                e("raw:PREROUTING:policy:5", "accept")])
    assert not theirs.own
    # started by theirs, but ours matched too: shown by both
    both = j([e("raw:PREROUTING:rule:2", "continue"), e("raw:PREROUTING:rule:3", "continue"),
              e("raw:PREROUTING:rule:4", "continue"), e("raw:PREROUTING:policy:5", "accept")])
    assert both.own and [x.tag for x in both.events] == ["raw:PREROUTING:policy:5"]
    # the start was lost: decided by the fields, and marked incomplete
    tcp = j([e("filter:INPUT:policy:2", "accept")])
    tcp.events[0].fields["PROTO"] = "TCP"
    lost_start = judge(Packet(1, [ev("filter:INPUT:policy:2")]), [0], lambda v, f: rs, SID, spec, nft=True,
                       others=True)
    assert lost_start.own and lost_start.incomplete


def test_ownership_legacy_first_step():
    rs = load_ruleset("t.save", text=save_text(sessions=(SID, OTHER)))
    rs.family = "ipv4"
    spec = ss.TraceSpec(raw_match=["-m", "mark", "--mark", "1"], all=True)  # fields cannot decide

    def j(tags):
        return judge(Packet(1, [ev(t) for t in tags]), [0] * len(tags), lambda v, f: rs, SID, spec, nft=False,
                     others=True)

    assert j(["raw:PREROUTING:policy:5", "filter:INPUT:rule:1"]).own  # starts right after our TRACE (4)
    assert not j(["raw:PREROUTING:rule:3", "raw:PREROUTING:policy:5"]).own  # our counter, not our TRACE
    assert j(["raw:PREROUTING:rule:3", "raw:PREROUTING:rule:4", "raw:PREROUTING:policy:5"]).own


@pytest.mark.parametrize("spec, fields, want", [
    (dict(proto="tcp", dport="80"), {"PROTO": "TCP", "DPT": "80"}, True),
    (dict(proto="tcp", dport="!80"), {"PROTO": "TCP", "DPT": "80"}, False),
    (dict(proto="tcp", dport="1000:2000"), {"PROTO": "TCP", "DPT": "1500"}, True),
    (dict(proto="udp"), {"PROTO": "TCP"}, False),
    (dict(src="10.0.0.0/8"), {"SRC": "192.168.1.1"}, False),
    (dict(src="!10.0.0.0/8"), {"SRC": "192.168.1.1"}, True),
    (dict(iface="eth+"), {"IN": "eth3"}, True),
    (dict(proto="icmp", raw_match=["-m", "mark", "--mark", "1"]), {"PROTO": "ICMP"}, None),
    (dict(proto="icmp"), {}, None),
])
def test_spec_fits(spec, fields, want):
    assert spec_fits(ss.TraceSpec(**spec), fields, "PREROUTING") is want


def test_grouper_marks_packets_open_during_a_loss():
    g = LiveGrouper(idle=0.1)
    g.add(ev("raw:PREROUTING:policy:3", 1), 0, 0.0)
    assert g.mark_open("overrun") == 1
    g.add(ev("raw:PREROUTING:policy:3", 2), 0, 0.05)
    out = g.flush(1.0)
    assert [f for _p, _v, f in out] == [{"overrun"}, set()]


def test_overrun_marks_open_packets_incomplete():
    t = tracer([own_path(1)[:1], own_path(1)[1:] + own_path(2)])
    src = t.source
    orig = src.poll

    def poll(timeout):  # an overrun is reported together with the second batch
        out = orig(timeout)
        if not src.batches:
            src.overruns = 1
        return out

    src.poll = poll
    t.idle = 10
    got = list(t.explanations(stop=lambda: not src.batches and t.stats["events"] >= 4))
    assert len(got) == 2 and t.stats["incomplete"] == 2
    assert all(any("possibly incomplete" in w for w in x.warnings) for x in got)


def test_nflog_sequence_gaps_count_lost_steps():
    lst = nflog.NflogListener([2])
    for seq in (5, 6, 9, 10, 14):
        lst._sequence(struct.pack("!I", seq))
    assert (lst.gaps, lst.lost_steps) == (2, 5)


def test_loss_summary():
    st = acc.new_stats()
    st.update(traced=1000, arrived=958, incomplete=17, overruns=3, events=120000)
    assert acc.lost_packets(st) == 42
    line = acc.summary(st, 958, 50)
    assert "the kernel traced 1000 packet(s): 958 arrived, 42 lost entirely" in line
    assert "17 arrived possibly incomplete" in line and "3 netlink overrun(s)" in line
    st["traced"] = None
    assert acc.lost_packets(st) is None and "could not be read" in acc.summary(st, 0, 50)


def test_both_backends_summary_says_each_backends_count_only_when_they_differ():
    st = acc.new_stats()
    st.update(traced=4, arrived=4, events=40)
    assert "per backend" not in acc.summary(st, 4, 50)
    st["seen_by"] = {"nf_tables": 5, "legacy xtables": 4}
    line = acc.summary(st, 4, 50)
    assert "the kernel traced 4 packet(s): 4 arrived, 0 lost entirely" in line
    assert "the filter's packets seen per backend: nf_tables 5, legacy xtables 4" in line


def test_missing_rules_after_a_raw_restore():
    spec = ss.TraceSpec(proto="icmp", direction="in", families=("ipv4",))
    rules = ss.plan_rules(spec, SID)
    with_ours = version(0, save_text()).rulesets
    flushed = version(1, save_text(sessions=())).rulesets
    assert acc.missing_rules(rules, with_ours, SID) == []
    assert acc.missing_rules(rules, flushed, SID) == rules
    assert acc.missing_rules(rules, {}, SID) == []  # nothing read: never add a duplicate


def test_a_failing_end_count_never_keeps_the_undo_from_running(monkeypatch):
    """Review: the bookkeeping at teardown (counters, flush, closing) ran in the same try as the undo,
    so one exception there left the session's rules on the host. Now each step is on its own."""
    import ruletrace.live.tracer as lt

    warned: list[str] = []
    t = tracer([own_path(1)], warn=warned.append)
    undone: list[object] = []
    monkeypatch.setattr(lt.ud, "undo", lambda state, actions, marker=None: undone.append(state) or [])

    def broken_count() -> None:
        raise RuntimeError("nft list failed")

    t._count = broken_count
    assert t.teardown() == []
    assert undone == [t.state]
    assert any("reading the TRACE counters at the end failed (RuntimeError: nft list failed)" in w for w in warned)


def test_explain_miss_live_packet_block_line_and_json():
    # trace --explain-miss INPUT: the live packet (ICMP, INPUT rule 2 accepts it) gets the block
    # explain --explain-miss gives, its line a hint naming rule 1's failed condition, JSON the key
    from ruletrace.analyze.live import line_of
    from ruletrace.render.json import to_json
    from ruletrace.render.live import to_text

    t = tracer([[ev("raw:PREROUTING:policy:3", 1), ev("filter:INPUT:rule:2", 1)]], save_text(extra_input=1),
               explain_miss="INPUT")
    t.miss_key = t._miss_chain(t.explain_miss)
    assert t.miss_key == ("filter", "INPUT")
    (expl,) = list(t.explanations(limit=1))
    assert [(m.num, m.result) for m in expl.misses] == [(1, "failed"), (2, "matched")]
    assert "`-p udp` did not match: the packet's protocol is ICMP" in expl.misses[0].reason
    line = line_of(expl)
    assert line.miss == "miss INPUT rule 1: `-p udp` did not match"
    assert "miss INPUT rule 1" in to_text(line).plain
    assert [m["result"] for m in to_json(expl)["explain_miss"]] == ["failed", "matched"]
    import io

    from rich.console import Console

    from ruletrace.render.live import LiveView

    buf = io.StringIO()
    LiveView(Console(file=buf, width=200, color_system=None), tree=True).show(expl)  # --tree: the whole block
    shown = buf.getvalue()
    assert "rules of filter:INPUT, checked against the packet's logged fields" in shown, shown
    assert "`-p udp` did not match: the packet's protocol is ICMP" in shown, shown


def test_explain_miss_chain_not_in_live_ruleset():
    from ruletrace.errors import RuletraceError

    t = tracer([])
    with pytest.raises(RuletraceError, match="no chain NOPE in table filter of the live ruleset"):
        t._miss_chain("NOPE")
    assert line_of_without_block(t) == ""


def line_of_without_block(t) -> str:
    from ruletrace.analyze.live import line_of

    t.source = FakeSource([own_path(1)])
    (expl,) = list(t.explanations(limit=1))
    return line_of(expl).miss


def _interrupt_on_poll(t: Tracer, at: int) -> list[int]:
    """The source's ``at``-th poll raises KeyboardInterrupt, as a signal's handler does when it
    finds the trace waiting for steps (nothing in hand)."""
    polls: list[int] = []
    poll = t.source.poll

    def interrupted(timeout):
        polls.append(1)
        if len(polls) == at:
            raise KeyboardInterrupt
        return poll(timeout)

    t.source.poll = interrupted
    return polls


def test_a_signal_explains_the_open_packets_at_teardown(monkeypatch):
    """Review: Ctrl-C / SIGTERM / SIGHUP counted the packets still open as not shown (a ping
    answered just before it: stdout empty). Now teardown(explain_open=True) explains them into
    ``leftovers``, through the same judge and explain as at a normal end, and the steps still
    under way are taken in first."""
    import ruletrace.live.tracer as lt

    monkeypatch.setattr(lt.ud, "undo", lambda state, actions, marker=None: [])
    t = tracer([own_path(0), [], own_path(1)])  # the second packet's steps arrive after the signal
    t.idle = 5.0  # neither is complete when the signal comes
    t.source.behind = lambda: False
    _interrupt_on_poll(t, 3)
    got = []
    with pytest.raises(KeyboardInterrupt):
        for expl in t.explanations():
            got.append(expl)
    assert got == []
    assert t.teardown(explain_open=True) == []
    assert [len(e.packet.events) for e in t.leftovers] == [2, 2]
    st = t.stats
    assert (st["arrived"], st["packets"], st["not_shown"], st["ended"]) == (2, 2, 0, 0)


def test_without_a_signal_teardown_counts_the_open_packets_as_before(monkeypatch):
    import ruletrace.live.tracer as lt

    monkeypatch.setattr(lt.ud, "undo", lambda state, actions, marker=None: [])
    t = tracer([own_path(0)])
    t.idle = 5.0
    _interrupt_on_poll(t, 2)
    with pytest.raises(KeyboardInterrupt):
        list(t.explanations())
    assert t.teardown() == []
    assert t.leftovers == [] and (t.stats["arrived"], t.stats["not_shown"], t.stats["ended"]) == (1, 1, 1)


def test_a_signal_while_a_packet_is_explained_waits_and_loses_nothing(monkeypatch):
    """A signal's handler that finds the trace explaining a packet (the first is slow: the
    explainer is built) defers its exception: the packet in hand is kept for the end, then the
    exception is raised (with nothing in hand)."""
    import ruletrace.live.tracer as lt

    monkeypatch.setattr(lt.ud, "undo", lambda state, actions, marker=None: [])
    t = tracer([[e for s in range(2) for e in own_path(s)]])
    explain = t._explain
    calls: list[int] = []

    def signal_during_explain(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            assert t.defer_signal(KeyboardInterrupt())  # what the CLI's handler asks
        return explain(*a, **kw)

    t._explain = signal_during_explain
    got = []
    with pytest.raises(KeyboardInterrupt):
        for expl in t.explanations():
            got.append(expl)
    assert got == [] and len(t.leftovers) == 1
    assert not t.defer_signal(KeyboardInterrupt())  # outside the trace's own work: raised at once
    t.teardown(explain_open=True)
    assert len(t.leftovers) == 2 and t.stats["packets"] == 2 and t.stats["not_shown"] == 0
