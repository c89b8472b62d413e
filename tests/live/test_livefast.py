"""Fast paths of the live tracer's receiving (no kernel): each equal to the reference it names."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from ruletrace.live import netlink as nl
from ruletrace.live import reader as rd


def _msg(mtype: int, body: bytes, *, length: int | None = None) -> bytes:
    n = 16 + len(body) if length is None else length
    return nl.NLMSG_HDR.pack(n, mtype, 0, 1, 0) + body + b"\0" * (nl.align4(len(body)) - len(body))


def _reference(data: bytes, mtype: int) -> list[bytes]:
    return [body for t, _f, _s, body in nl.split_messages(data) if t == mtype]


def test_bodies_of_equals_split_messages_on_whole_cut_and_damaged_datagrams():
    rnd = random.Random(7)
    cases = [b"", b"\0" * 15, _msg(0x400, b""), _msg(0x400, b"abc") + _msg(3, b"") + _msg(0x400, b"x" * 9)]
    for _ in range(400):
        parts = [_msg(rnd.choice((0x400, 0x401, 3)), rnd.randbytes(rnd.randrange(0, 40))) for _ in range(rnd.randrange(1, 9))]
        data = b"".join(parts)
        cases.append(data)
        cases.append(data[: rnd.randrange(len(data) + 1)])  # cut short anywhere
        bad = bytearray(data)
        at = rnd.randrange(len(parts))
        off = sum(len(p) for p in parts[:at])
        bad[off:off + 4] = rnd.choice((0, 5, 15, 10**6)).to_bytes(4, "little" if nl.HOST_ORDER == "<" else "big")
        cases.append(bytes(bad))  # a length below the header or past the end stops both walks
    for data in cases:
        assert nl.bodies_of(data, 0x400) == _reference(data, 0x400)
    assert nl.bodies_of(_msg(0x400, b"ab") + _msg(0x400, b"cdefg"), 0x400) == [b"ab", b"cdefg"]  # by hand


# --- the reader process (live/reader.py) --------------------------------------------------------

TRACE, OTHER = 0x400, 0x401


def _plain(sock: socket.socket) -> nl.NetlinkSocket:
    """A NetlinkSocket over one end of a datagram socketpair (no kernel netlink needed)."""
    s = nl.NetlinkSocket.__new__(nl.NetlinkSocket)
    s.sock, s._pending, s.overruns = sock, [], 0
    s._buf = bytearray(1 << 18)
    s._view = memoryview(s._buf)
    return s


def _datagrams(n: int, rnd: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        k = rnd.randrange(1, 5)
        out.append(b"".join(_msg(TRACE if (i + j) % 7 else OTHER, rnd.randbytes(rnd.randrange(0, 60)) + bytes([i % 251]))
                            for j in range(k)))
    return out


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    yield a, b
    a.close()
    b.close()


def _send_all(b: socket.socket, grams: list[bytes]) -> None:
    for g in grams:
        b.send(g)


def _take(r: rd.ReaderSocket, want: int, how) -> list:
    got: list = []
    deadline = time.monotonic() + 10
    while len(got) < want and time.monotonic() < deadline:
        got += how(r)
    return got


def test_reader_packet_bodies_and_messages_equal_the_plain_socket(pair):
    a, b = pair
    grams = _datagrams(300, random.Random(3))
    want_bodies = [x for g in grams for x in _reference(g, TRACE)]
    want_msgs = [m for g in grams for m in nl.split_messages(g)]
    r = rd.ReaderSocket(_plain(a), TRACE)
    r.start()
    try:
        _send_all(b, grams)
        got = _take(r, len(want_bodies), lambda r: r.packet_bodies(0.5, TRACE))
        assert got == want_bodies
        assert r.overruns == 0 and r.dropped == 0
        _send_all(b, grams)
        assert _take(r, len(want_msgs), lambda r: r.messages(0.5)) == want_msgs
        # the reference itself, on the same datagrams: the reader hands out what it would
        c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with c, d:
            plain = _plain(c)
            for g in grams[:5]:
                d.send(g)
            assert plain.packet_bodies(1.0, TRACE) == [x for g in grams[:5] for x in _reference(g, TRACE)]
        assert r.discard(time.monotonic() + 5, TRACE) == (0, False)
    finally:
        r.close()
    assert r.pid == 0


def test_reader_counts_what_it_never_handed_out(pair):
    """Nothing read by the parent: the end counts every trace message (pipe + buffer + socket)."""
    a, b = pair
    grams = _datagrams(400, random.Random(5))
    r = rd.ReaderSocket(_plain(a), TRACE)
    r.start()
    try:
        _send_all(b, grams)
        time.sleep(0.3)
        n, more = r.discard(time.monotonic() + 5, TRACE)
    finally:
        r.close()
    assert (n, more) == (sum(len(_reference(g, TRACE)) for g in grams), False)


def test_a_full_reader_buffer_drops_only_trace_datagrams_and_counts_them(pair):
    a, b = pair
    big = [_msg(TRACE, i.to_bytes(2, "big") * 1000) for i in range(2500)]  # ~5 MB: more than pipe + limit
    newgen = _msg(OTHER, b"generation")
    r = rd.ReaderSocket(_plain(a), TRACE, limit=64 << 10)
    r.start()
    try:
        _send_all(b, big[:1500] + [newgen] + big[1500:])
        time.sleep(0.5)
        got = _take(r, 1, lambda r: r.messages(0.5))
        while True:
            more = r.messages(0.3)
            if not more:
                break
            got += more
        unread, _more = r.discard(time.monotonic() + 5, TRACE)
    finally:
        r.close()
    traces = [m for m in got if m[0] == TRACE]
    assert r.dropped > 0  # the buffer was full
    assert len(traces) + r.dropped + unread == len(big)  # every step: handed out, dropped or unread
    assert (OTHER, 0, 1, b"generation") in got  # a ruleset generation is never dropped
    idx = [int.from_bytes(m[3][:2], "big") for m in traces]
    assert idx == sorted(set(idx))  # in the order sent, each once, gaps where dropped
    assert all(m[3] == m[3][:2] * 1000 for m in traces)  # whole


def test_the_reader_dies_with_a_killed_trace_and_holds_none_of_its_files(tmp_path):
    script = f"""
import os, socket, sys, time
sys.path.insert(0, {str(os.path.join(os.path.dirname(__file__), "..", "..", "src"))!r})
from ruletrace.live import netlink as nl, reader as rd
keep = open({str(tmp_path / "lock")!r}, "w")  # stands for the session's lock file
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
s = nl.NetlinkSocket.__new__(nl.NetlinkSocket)
s.sock, s._pending, s.overruns = a, [], 0
r = rd.ReaderSocket(s, 0x400)
r.start()
print(r.pid, flush=True)
time.sleep(60)
"""
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(p.stdout.readline())
        time.sleep(0.3)
        fds = [os.readlink(f"/proc/{child}/fd/{x}") for x in os.listdir(f"/proc/{child}/fd")]
        assert not any(x.endswith("/lock") for x in fds), fds
        assert sum(x.startswith("pipe:") for x in fds) == 2, fds  # its own two, not the trace's stdout
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_steps_dropped_by_the_reader_are_said_with_their_cause():
    from ruletrace.live import accounting as acc

    st = acc.new_stats()
    st.update(traced=10, arrived=7, dropped=250)
    line = acc.summary(st, 7, 10000)
    assert "3 lost entirely (steps were dropped: the reader's buffer was full)" in line
    assert "250 step(s) dropped (the reader process's buffer was full)" in line
    st.update(overruns=1, unread=5)
    assert "buffer was full; the kernel dropped steps too; steps were still queued" in acc.summary(st, 7, 10000)


def test_the_reader_clock_is_the_sockets_time_not_the_parents(pair):
    """Packets go idle by the time up to which everything queued was handed out: a backlog does
    not age while it waits in the pipe, and an idle socket's time still advances (heartbeats)."""
    a, b = pair
    r = rd.ReaderSocket(_plain(a), TRACE)
    r.start()
    try:
        b.send(_msg(TRACE, b"one"))
        time.sleep(0.3)  # read by the child long ago; waiting here does not make it older
        t_before = time.monotonic()
        assert r.packet_bodies(0, TRACE, batch=1) == [b"one"]
        assert r.clock < t_before - 0.2  # the time the child read it, ~0.3 s ago
        time.sleep(0.2)
        for _ in range(3):  # the heartbeats since: the socket was empty until about now
            assert r.packet_bodies(0.1, TRACE) == []
        assert r.clock > t_before + 0.1
    finally:
        r.close()


def test_a_reader_killed_unasked_counts_as_an_overrun_and_the_socket_is_read_directly(pair):
    a, b = pair
    r = rd.ReaderSocket(_plain(a), TRACE)
    r.start()
    try:
        b.send(_msg(TRACE, b"before"))
        assert _take(r, 1, lambda r: r.packet_bodies(0.5, TRACE)) == [b"before"]
        os.kill(r.pid, signal.SIGKILL)
        time.sleep(0.2)
        b.send(_msg(TRACE, b"after"))
        assert _take(r, 1, lambda r: r.packet_bodies(0.5, TRACE)) == [b"after"]
        assert r.direct and r.overruns == 1 and r.pid == 0
        b.send(_msg(TRACE, b"left"))
        assert r.discard(time.monotonic() + 2, TRACE) == (1, False)
    finally:
        r.close()


def test_packets_still_open_when_the_trace_ends_behind_its_queue_are_counted_not_shown(tmp_path, monkeypatch):
    """The packets still open at the end, while steps are still queued (a reader's backlog), may
    lack steps: they are not shown (their further steps would have been counted as another
    packet), but counted as still arriving, and as possibly incomplete while the queue is still
    not empty after the drain; caught up, they are shown and none is incomplete."""
    from ruletrace.live import session as ss
    from tests.live.test_tracer_units import own_path, tracer

    monkeypatch.setattr(ss, "STATE_DIR", tmp_path / "state")
    for behind in (True, False):
        t = tracer([[e for s in range(3) for e in own_path(s)]])
        t.idle = 10.0  # nothing completes before the end: every packet is flushed by it
        t.source.behind = lambda behind=behind: behind
        calls = iter([False, True])
        got = list(t.explanations(stop=lambda calls=calls: next(calls, True)))
        assert len(got) == (0 if behind else 3)
        assert not any("steps were still queued" in w for e in got for w in e.warnings)
        st = t.stats
        assert (st["arrived"], st["not_shown"], st["ended"]) == ((3, 3, 3) if behind else (3, 0, 0))
        assert st["incomplete"] == (3 if behind else 0)


# --- review: losses at the end, fork failure, one CPU -------------------------------------------


def test_losses_still_buffered_in_the_child_at_the_end_are_counted(pair):
    """The child's end with frames it could not yet write (the pipe was full): the overruns and
    drops among them reach the parent with its count, not only the unread steps."""
    a, _b = pair
    r_fd, w_fd = os.pipe()
    ctl_r, ctl_w = os.pipe()
    try:
        child = rd._Child(a, w_fd, ctl_r, TRACE, 1 << 20)
        child.push(rd.DATAGRAM, rd.STAMP.pack(1.0) + _msg(TRACE, b"a") + _msg(TRACE, b"b"))
        child.push(rd.OVERRUN, rd.struct.pack("=I", 1))
        child.push(rd.DROPPED, rd.struct.pack("=I", 3))
        child.push(rd.DATAGRAM, rd.STAMP.pack(2.0) + _msg(OTHER, b"generation"))
        child.push(rd.DROPPED, rd.struct.pack("=I", 2))
        child.end(a)
        parent = rd.ReaderSocket(_plain(a), TRACE)
        parent._data += os.read(r_fd, 1 << 16)
        parent._cut()
    finally:
        for fd in (r_fd, w_fd, ctl_r, ctl_w):
            os.close(fd)
    assert parent._end == (2, False)  # the two trace steps never written
    assert (parent.overruns, parent.dropped) == (1, 5)


def test_a_reader_killed_before_its_count_makes_the_unread_count_a_lower_bound(pair):
    """The child killed with steps in its buffer (the pipe full): their number is unknown, so the
    count of steps not read is "at least" (more=True), never an exact-looking undercount."""
    a, b = pair
    big = [_msg(TRACE, i.to_bytes(2, "big") * 1000) for i in range(1500)]  # ~3 MB: more than the pipe
    r = rd.ReaderSocket(_plain(a), TRACE)
    r.start()
    try:
        _send_all(b, big)
        time.sleep(0.5)
        os.kill(r.pid, signal.SIGKILL)
        time.sleep(0.1)
        unread, more = r.discard(time.monotonic() + 5, TRACE)
    finally:
        r.close()
    assert unread < len(big) and more is True


def test_no_fork_means_no_reader_and_no_leaked_pipes(pair, monkeypatch):
    """fork failing (EAGAIN, ENOMEM, a platform without it): the trace reads its socket itself,
    no traceback, no descriptor left behind."""
    from types import SimpleNamespace

    from ruletrace.live.tracer import Tracer

    a, _b = pair
    monkeypatch.delenv(rd.ENV, raising=False)
    monkeypatch.setattr(rd, "enabled", lambda: True)

    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(rd.os, "fork", no_fork)
    before = sorted(os.listdir("/proc/self/fd"))
    plain = _plain(a)
    fake = SimpleNamespace(both=False, mode="nftrace", source=plain)
    Tracer._start_reader(fake)  # type: ignore[arg-type]
    assert fake.source is plain
    nflog = SimpleNamespace(sock=plain)
    fake = SimpleNamespace(both=False, mode="nflog", source=nflog)
    Tracer._start_reader(fake)  # type: ignore[arg-type]
    assert nflog.sock is plain
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_one_cpu_by_affinity_means_no_reader(monkeypatch):
    """cpu_count() counts the machine's CPUs; a trace pinned to one (taskset, a cgroup cpuset)
    has no second core for the reader."""
    monkeypatch.delenv(rd.ENV, raising=False)
    monkeypatch.setattr(rd.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(rd.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert rd.enabled() is False
    monkeypatch.setattr(rd.os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert rd.enabled() is True


def test_messages_the_socket_read_before_the_reader_started_come_first():
    """NetlinkSocket._pending (messages read while a request waited for its ACK) are handed out
    by the reader as the socket would, before what the child reads; unread, they are counted."""
    early = [(TRACE, 0, 1, b"early-1"), (OTHER, 0, 2, b"gen"), (TRACE, 0, 3, b"early-22")]
    cases = ((lambda r: r.packet_bodies(0.5, TRACE), [b"early-1", b"early-22", b"late"]),
             (lambda r: r.messages(0.5), [*early, (TRACE, 0, 1, b"late")]),
             (None, (2, False)))
    for how, want in cases:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            plain = _plain(a)
            plain._pending = list(early)
            r = rd.ReaderSocket(plain, TRACE)
            r.start()
            try:
                if how is None:
                    assert r.discard(time.monotonic() + 5, TRACE) == want
                    continue
                b.send(_msg(TRACE, b"late"))
                assert _take(r, len(want), how) == want
            finally:
                r.close()


def test_a_child_whose_parent_is_already_gone_leaves_even_under_a_subreaper():
    """The parent dead before PR_SET_PDEATHSIG took effect: the child sees a parent that is not
    the one that forked it (init, or a subreaper whose pid is not 1) and leaves."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            rd._child_setup(keep=set(), parent=os.getppid() + 1_000_000)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1


def test_an_idle_reader_is_not_behind_however_long_the_parent_was_away(pair):
    """The child's heartbeats in the pipe say the socket is empty: a parent that read nothing
    for a while (explaining, its output blocked) is not told steps may still be queued, which
    would mark every packet open at the end "may be incomplete"; a datagram not handed out is."""
    a, b = pair
    r = rd.ReaderSocket(_plain(a), TRACE)
    r.start()
    try:
        time.sleep(0.2)
        assert r.messages(0.5) == []  # caught up
        time.sleep(10 * rd.HEARTBEAT)
        assert r.behind() is False
        b.send(_msg(TRACE, b"x"))
        time.sleep(0.2)
        assert r.behind() is True
        assert _take(r, 1, lambda r: r.packet_bodies(0.5, TRACE)) == [b"x"]
        time.sleep(0.2)
        assert r.behind() is False
        os.kill(r.pid, signal.SIGKILL)  # read directly from now on: behind means queued in the socket
        time.sleep(0.1)
        for _ in range(20):  # the pipe's last heartbeats, then its end
            assert r.packet_bodies(0.1, TRACE) == []
            if r.direct:
                break
        assert r.direct
        time.sleep(10 * rd.HEARTBEAT)
        assert r.behind() is False
        b.send(_msg(TRACE, b"y"))
        assert r.behind() is True
    finally:
        r.close()


def test_the_child_needs_no_import_after_the_fork():
    """prctl is found before the fork (an import or dlopen in the child of a threaded trace may
    wait forever on a lock another thread held): ctypes is loaded in the parent by start()."""
    code = ("import socket, sys, time\n"
            "from tests.live.test_livefast import _plain\n"
            "from ruletrace.live import reader as rd\n"
            "assert 'ctypes' not in sys.modules, 'loaded before start'\n"
            "a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            "r = rd.ReaderSocket(_plain(a), 0x400)\n"
            "r.start()\n"
            "print('ctypes' in sys.modules)\n"
            "r.close()\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(root, "src"), root])}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_the_reader_is_found_whether_it_is_the_source_or_the_listeners_socket(pair):
    """nf_tables traced alone: the source is the ReaderSocket itself (whose .sock is the netlink
    socket); NFLOG: the listener's .sock is the ReaderSocket. Either way its drops are counted
    as losses, its clock is the trace's clock and its backlog is what "behind" asks."""
    from types import SimpleNamespace

    from ruletrace.live.accounting import new_stats
    from ruletrace.live.receiving import Receiving

    a, _b = pair
    r = rd.ReaderSocket(_plain(a), TRACE)  # not started: its counts set by hand
    r.dropped, r.clock = 3, 12.5
    r._frames.append((12.5, _msg(TRACE, b"queued")))
    for source in (r, SimpleNamespace(sock=r, overruns=0)):
        t = SimpleNamespace(source=source, nft_source=None, stats=new_stats(), _losses=0)
        assert Receiving._source_losses(t) == 3 and t.stats["dropped"] == 3  # type: ignore[arg-type]
        assert Receiving.clock(t) == 12.5  # type: ignore[arg-type]
        assert Receiving._behind(t) is True  # type: ignore[arg-type]


def test_a_datagram_stamp_does_not_age_a_packet_whose_next_steps_are_still_queued(pair):
    """Only an "empty at" moves the reader's clock. Packet A's first step is read at 10.0; the
    child is then descheduled; after it, it reads packet B's step (10.9, another CPU's packet
    queued in between) and then A's second step (10.91). Were the clock the datagrams' stamps, A
    would be 0.9 s idle (IDLE is 0.25 s) when B's step is handed out, and completed without its
    second step: one packet seen as two (the 1,000-rule flood kernel test under load)."""
    from types import SimpleNamespace

    from ruletrace.live.grouper import LiveGrouper
    from ruletrace.live.receiving import Receiving
    from tests.helpers import ev

    a, _b = pair
    r = rd.ReaderSocket(_plain(a), TRACE)  # not started: its frames given by hand, as the child sends them
    r.clock = r.seen = 9.9
    r._frames.extend([(10.0, _msg(TRACE, b"A1")), (10.9, _msg(TRACE, b"B1")), (10.91, _msg(TRACE, b"A2")),
                      (11.5, None)])
    t = SimpleNamespace(source=r)
    grouper = LiveGrouper()
    steps = {b"A1": ev("filter:INPUT:rule:1", ("A",)), b"B1": ev("filter:INPUT:rule:1", ("B",)),
             b"A2": ev("filter:INPUT:rule:2", ("A",))}
    done = []
    for _ in range(4):  # one frame handed out at a time, then the packets that went idle, as the tracer does
        for body in r.packet_bodies(0, TRACE, batch=1):
            grouper.add(steps[body], 1, Receiving._seen(t))  # type: ignore[arg-type]
        done += grouper.flush(Receiving.clock(t))  # type: ignore[arg-type]
    assert sorted(len(p.events) for p, _v, _f in done) == [1, 2]  # A whole, B alone
    assert r.clock == 11.5 and r.seen == 11.5  # the "empty at" moved it, at the end
