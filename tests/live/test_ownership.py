"""Ownership by proof (issue 10), without a kernel: which rules ruletrace may call its own, the
proof a session is gone, undo step by step past a busy xtables lock, state files, messages."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from ruletrace.errors import RuletraceError
from ruletrace.live import backend as be
from ruletrace.live import marker as mk
from ruletrace.live import ownership as own
from ruletrace.live import session as ss
from ruletrace.live import undo as ud

SID = "0123456789abcdef" * 2
TRACE = ["-p", "udp", "-m", "udp", "--dport", "53", "-m", "limit", "--limit", "50/sec", "--limit-burst", "50",
         "-m", "comment", "--comment", f"ruletrace:{SID}", "-j", "TRACE"]
SEEN = ["-p", "udp", "-m", "udp", "--dport", "53", "-m", "comment", "--comment", f"ruletrace:{SID}:seen"]


def test_exact_shapes_are_recognised():
    assert own.orphan_sid("raw", "PREROUTING", TRACE) == SID
    assert own.orphan_sid("raw", "OUTPUT", SEEN) == SID
    assert own.orphan_sid("raw", "OUTPUT", TRACE[6:]) == SID  # --all: no match options


@pytest.mark.parametrize("table, chain, args", [
    # the rules of issue 10 that vanished
    ("filter", "INPUT", ["-s", "10.67.0.0/16", "-m", "comment", "--comment", "ruletrace:blocklist incident 42",
                         "-j", "DROP"]),
    ("filter", "INPUT", ["-p", "tcp", "--dport", "22", "-m", "comment", "--comment", "ruletrace:ssh", "-j", "ACCEPT"]),
    ("raw", "PREROUTING", ["-m", "comment", "--comment", "ruletrace:ssh"]),  # a short id: not ours
    ("raw", "PREROUTING", TRACE[:-3] + ["ruletrace:deadbeef", "-j", "TRACE"]),  # the old 32-bit ids
    ("raw", "PREROUTING", TRACE[:-3] + [f"ruletrace:{SID.upper()}", "-j", "TRACE"]),
    ("raw", "PREROUTING", TRACE[:-1] + ["DROP"]),  # another target
    ("raw", "PREROUTING", ["-j", "CT", "--notrack"] + SEEN),  # a target hidden before
    ("raw", "PREROUTING", ["-m", "comment", "--comment", "keep"] + SEEN),  # a second comment
    ("raw", "FORWARD", TRACE),  # ruletrace never writes there
    ("mangle", "PREROUTING", TRACE),
    ("raw", "PREROUTING", TRACE[:7] + ["--limit-burst", "50", "--limit", "50/sec"] + TRACE[11:]),  # layout
])
def test_look_alikes_are_not_ours(table, chain, args):
    assert own.orphan_sid(table, chain, args) is None


def _save_text(*lines: str) -> str:
    return "\n".join(["*raw", ":PREROUTING ACCEPT [0:0]", *lines, "COMMIT", "*filter", ":INPUT ACCEPT [0:0]",
                      '-A INPUT -s 10.67.0.0/16 -m comment --comment "ruletrace:blocklist incident 42" -j DROP',
                      "-A INPUT -p tcp -m tcp --dport 22 -m comment --comment ruletrace:ssh -j ACCEPT",
                      "COMMIT", ""])


def test_scan_sorts_rules_by_proof(tmp_path, monkeypatch):
    """Foreign tags are not listed at all; a live session's rules (marker held) are never
    orphans; a dead one's exact-shape rules are orphans (deleted only with --force)."""
    monkeypatch.setattr(ss, "STATE_DIR", tmp_path)
    live = ss.new_session_id()
    dead = ss.new_session_id()
    text = _save_text(f'-A PREROUTING -p udp -m limit --limit 50/sec --limit-burst 50 -m comment --comment '
                      f'"ruletrace:{live}" -j TRACE',
                      f'-A PREROUTING -p udp -m comment --comment "ruletrace:{dead}:seen"')
    monkeypatch.setattr(be, "save", lambda b, fam, counters=False: text if (b, fam) == ("nft", "ipv4") else "")
    marker = mk.Marker(live)
    marker.hold()
    try:
        lo = own.scan()
        assert [o.sid for o in lo.live_orphans] == [live]
        assert [(o.sid, o.chain, o.args[-1]) for o in lo.orphans] == [
            (dead, "PREROUTING", f"ruletrace:{dead}:seen")]
        assert not (lo.dead or lo.unproven or lo.live)
        actions = ss.Actions(dry_run=True)
        problems, left = own.clean(actions)  # without --force: listed, not deleted
        assert not problems and actions.done == 0
        assert any(dead in x and "--force" in x for x in left), left
        assert any(live in x and "running" in x for x in left), left
        lines: list[str] = []
        problems, left = own.clean(ss.Actions(dry_run=True, say=lines.append), force=True)
        assert [x for x in lines if x.startswith("would run")] == [
            f"would run: iptables-nft -w 2 -t raw -D PREROUTING -p udp -m comment --comment ruletrace:{dead}:seen"]
    finally:
        marker.close()


def test_session_ids_are_128_bits():
    sid = ss.new_session_id()
    assert ss.SID_RE.fullmatch(sid) and len(sid) == 32


def _state(tmp_path: Path, **kw) -> ss.State:
    st = ss.new_state(ss.new_session_id(), {"id": "1:2"}, "legacy")
    for k, v in kw.items():
        setattr(st, k, v)
    return st


def test_proof_that_the_owner_is_gone(tmp_path):
    me = _state(tmp_path)
    assert me.owner_gone() is False  # this very process
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    start = ss.proc_start(p.pid)
    p.wait()
    assert _state(tmp_path, pid=p.pid, start=start or "1").owner_gone() is True
    assert _state(tmp_path, boot_id="another-boot").owner_gone() is True
    assert _state(tmp_path, pidns="0:1").owner_gone() is None  # another pid namespace: cannot tell
    assert _state(tmp_path, pidns=None, boot_id=None).owner_gone() is None  # an older record


def test_marker_alive_only_while_held():
    sid = ss.new_session_id()
    assert not mk.alive(sid)
    m = mk.Marker(sid)
    m.hold()
    m.hold(mk.nf_log_claim(2, "NONE"))
    assert mk.alive(sid)
    assert mk.claims().get("nf_log/2/NONE") == {sid}
    assert mk.claims(exclude=sid).get("nf_log/2/NONE") is None
    m.close()
    assert not mk.alive(sid) and "nf_log/2/NONE" not in mk.claims()


def _fake_tools(tmp_path: Path, monkeypatch, script: str) -> Path:
    """iptables-legacy replaced by ``script`` (sh); every call is logged to ``calls``."""
    fake = tmp_path / "fake-iptables"
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/calls\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setitem(be.TOOLS, "legacy", {"ipv4": (str(fake), str(fake)), "ipv6": (str(fake), str(fake))})
    monkeypatch.setattr(ss, "LOCK_PAUSE", 0)
    return tmp_path / "calls"


def test_undo_retries_a_hanging_lock_and_does_every_step(tmp_path, monkeypatch):
    """Regression: teardown gave up at the first command that waited for the xtables lock too
    long, leaving every rule and the nf_log binding."""
    calls = _fake_tools(tmp_path, monkeypatch,  # the first two calls hang (lock held), then it works
                        f'n=$(wc -l < {tmp_path}/calls); [ "$n" -le 2 ] && exec sleep 5; exit 0')
    monkeypatch.setattr(ss, "CMD_TIMEOUT", 0.3)
    written: list[tuple[int, str]] = []
    monkeypatch.setattr(ss, "set_nf_log", lambda pf, logger: written.append((pf, logger)))
    monkeypatch.setattr(ss, "nf_log_bindings", lambda path=None: {2: ("nf_log_ipv4", [])})
    st = _state(tmp_path, rules=ss.plan_rules(ss.TraceSpec(proto="udp", families=("ipv4",), direction="in"), SID),
                nf_log={2: "NONE"})
    actions = ss.Actions()
    assert ud.undo(st, actions) == []
    assert len(calls.read_text().splitlines()) == 4  # two hung, then both rules deleted
    assert written == [(2, "NONE")]
    assert actions.done == 3


def test_undo_keeps_going_and_reports_when_the_lock_stays_busy(tmp_path, monkeypatch):
    calls = _fake_tools(tmp_path, monkeypatch, 'echo "Another app is currently holding the xtables lock. '
                                               'Stopped waiting after 2s." >&2; exit 4')
    written: list[tuple[int, str]] = []
    monkeypatch.setattr(ss, "set_nf_log", lambda pf, logger: written.append((pf, logger)))
    monkeypatch.setattr(ss, "nf_log_bindings", lambda path=None: {2: ("nf_log_ipv4", [])})
    st = _state(tmp_path, rules=ss.plan_rules(ss.TraceSpec(proto="udp", families=("ipv4",), direction="in"), SID),
                nf_log={2: "NONE"})
    problems = ud.undo(st, ss.Actions())
    assert len(problems) == 2 and all("xtables lock" in p for p in problems)
    assert len(calls.read_text().splitlines()) == 2 * ss.LOCK_TRIES  # each rule tried on its own
    assert written == [(2, "NONE")]  # the binding is restored even so


def test_cleanup_keeps_the_state_file_when_undo_fails_and_counts_what_it_did(tmp_path, monkeypatch):
    monkeypatch.setattr(ss, "STATE_DIR", tmp_path / "state")
    _fake_tools(tmp_path, monkeypatch, "echo 'iptables: Bad rule (does a matching rule exist in that chain?).' >&2; "
                                       "exit 1")
    monkeypatch.setattr(be, "save", lambda *a, **k: "")
    monkeypatch.setattr(ss, "nf_log_bindings", lambda path=None: {})
    rules = ss.plan_rules(ss.TraceSpec(proto="udp", families=("ipv4",), direction="in"), SID)
    st = _state(tmp_path, boot_id="another-boot", rules=rules, netns={"id": own.ns_id()})
    st.save()
    actions = ss.Actions()
    problems, left = own.clean(actions)
    assert problems == [] and actions.done == 0  # the rules were already gone: nothing was undone
    assert not st.path.exists()
    # a failing undo keeps the record for the next try
    _fake_tools(tmp_path, monkeypatch, "echo 'iptables: Resource busy.' >&2; exit 1")
    st.save()
    problems, left = own.clean(ss.Actions())
    assert len(problems) == 2 and st.path.exists()
    assert any("kept the state file" in x for x in left)


def test_state_file_errors_are_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(ss, "STATE_DIR", blocker / "state")
    with pytest.raises(RuletraceError, match=r"cannot write the session state file .*RULETRACE_STATE_DIR"):
        _state(tmp_path).save()


def test_failed_save_leaves_no_tmp_and_stray_tmp_of_dead_sessions_go(tmp_path, monkeypatch):
    monkeypatch.setattr(ss, "STATE_DIR", tmp_path)
    st = _state(tmp_path, netns={"id": own.ns_id()})
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(RuletraceError, match="No space left"):
        st.save()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "replace", real_replace)
    dead = _state(tmp_path, boot_id="another-boot", netns={"id": own.ns_id()})
    (tmp_path / f"{dead.sid}.tmp").write_text(__import__("json").dumps({
        "sid": dead.sid, "pid": dead.pid, "start": dead.start, "netns": dead.netns, "backend": "legacy",
        "rules": [], "boot_id": "another-boot", "pidns": dead.pidns}))
    alive = tmp_path / f"{st.sid}.tmp"  # ours: the process runs
    alive.write_text((tmp_path / f"{dead.sid}.tmp").read_text().replace(dead.sid, st.sid)
                     .replace('"another-boot"', f'"{st.boot_id}"'))
    monkeypatch.setattr(be, "save", lambda *a, **k: "")
    problems, _left = own.clean(ss.Actions())
    assert not problems
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]


def test_capability_message_names_what_is_missing(tmp_path, monkeypatch):
    """Regression: a process with CAP_NET_ADMIN but without CAP_NET_RAW passed the check, and
    legacy iptables then failed with "run as root / with CAP_NET_ADMIN"."""
    from ruletrace.live.tracer import check_privileges

    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000001000\n")  # bit 12 only
    monkeypatch.setattr(be, "STATUS", str(status))
    with pytest.raises(RuletraceError) as e:
        check_privileges("legacy")
    assert "needs CAP_NET_RAW" in str(e.value) and "has CAP_NET_ADMIN" in str(e.value)
    check_privileges("nft")  # iptables-nft needs no raw socket
    assert "lacks CAP_NET_RAW (it has CAP_NET_ADMIN)" in str(be.permission_error("iptables-legacy"))


def test_printed_lines_carry_no_terminal_escapes():
    """Regression: leftover-rule lines echoed a foreign comment's ESC sequences to the terminal."""
    from ruletrace.cli.trace import _Printer

    buf = io.StringIO()
    _Printer(Console(file=buf, force_terminal=True, color_system=None, width=200))(
        "ruletrace: left alone: -m comment --comment \x1b]0;owned\x07\x1b[2J")
    assert "\x1b" not in buf.getvalue() and "\x07" not in buf.getvalue()
    assert "\\x1b]0;owned" in buf.getvalue()


def test_unbalanced_raw_match_is_one_line():
    p = subprocess.run([sys.executable, "-m", "ruletrace", "trace", "-p", "tcp", "--raw-match", "-m mark 'x",
                        "--dry-run"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})
    assert p.returncode == 2, p.stderr
    assert "--raw-match" in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
