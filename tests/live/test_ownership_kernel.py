"""Issue 10, "never worse than found": what `ruletrace trace`/`cleanup` may delete, against the kernel.

Everything runs in a namespace of our own (prefix rtow) with state folders of our own; the root
namespace is never touched. The xtables lock is a private file (XTABLES_LOCKFILE), so holding
it blocks only the commands of the test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import BackgroundTrace

pytestmark = pytest.mark.kernel

NS = f"rtow{os.getpid() % 1000}"
SRC = str(Path(__file__).resolve().parents[2] / "src")
TOOLS = ("ip", "iptables-legacy", "iptables-nft", "ip6tables-legacy", "ip6tables-nft", "nft", "flock", "setpriv")
BACKENDS = ["legacy", "nft"]
STOPPED = (128 + signal.SIGTERM,)  # exit status after SIGTERM, cleanup done (cli/status.signal_status)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


if _skip_reason():
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=_skip_reason())]


def sh(cmd: str, check: bool = True) -> str:
    p = subprocess.run(["ip", "netns", "exec", NS, "sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    if check and p.returncode:
        raise AssertionError(f"{cmd}: {p.stderr}")
    return p.stdout


def snapshot() -> str:
    """Both backends' rulesets, the nft ruleset and the nf_log bindings, counters aside."""
    text = sh("iptables-legacy-save; ip6tables-legacy-save; iptables-nft-save; ip6tables-nft-save; "
              "nft list ruleset; cat /proc/net/netfilter/nf_log")
    lines = [x for x in text.splitlines() if not x.startswith("#")]
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[]", re.sub(r"counter packets \d+ bytes \d+", "counter", x))
                     for x in lines)


def nf_log(pf: int = 2) -> str:
    for line in sh("cat /proc/net/netfilter/nf_log").splitlines():
        f = line.split()
        if f and f[0] == str(pf):
            return f[1]
    raise AssertionError("no nf_log line")


def saved(backend: str) -> str:
    return sh(f"iptables-{backend}-save")


@pytest.fixture
def ns():
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        sh("ip link set lo up")
        # a legacy table once used stays instantiated (empty): touch raw up front
        sh("iptables-legacy -t raw -S >/dev/null; ip6tables-legacy -t raw -S >/dev/null")
        # nf_log_syslog binds itself in every new namespace: unbind, so that a session's binding shows
        sh("echo NONE > /proc/sys/net/netfilter/nf_log/2; echo NONE > /proc/sys/net/netfilter/nf_log/10")
        assert nf_log(2) == "NONE"
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def env(state: Path, **extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "RULETRACE_STATE_DIR": str(state), "RULETRACE_NO_DROP_REASONS": "1", **extra}


def ruletrace(state: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruletrace", *args], capture_output=True, text=True,
                          env=env(state, **extra), timeout=120, stdin=subprocess.DEVNULL)


class Session(BackgroundTrace):
    """`ruletrace trace --netns NS` in the background; ``sid`` read from its stderr."""

    def __init__(self, state: Path, *args: str, **extra: str) -> None:
        self.sid = ""
        super().__init__("--netns", NS, *args, env=env(state, **extra), timeout=30, stdin=subprocess.DEVNULL)

    def on_line(self, line: str) -> None:
        m = re.search(r"session ([0-9a-f]+)\b", line)  # "tracing (…, session ID…)"; with -v also "session ID: backend"
        if m:
            self.sid = m[1]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> tuple[int, str]:
        self.p.send_signal(sig)
        _out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, "".join(self.err) + err


TRACE_ARGS = ("-4", "--direction", "in", "-p", "tcp", "--dport", "9", "--duration", "120")


def start(state: Path, backend: str, *extra: str, **environ: str) -> Session:
    via = ("--via", "kmsg") if backend == "legacy" else ()
    return Session(state, "--backend", backend, *via, *TRACE_ARGS, *extra, **environ)


@pytest.mark.parametrize("backend", BACKENDS)
def test_foreign_look_alikes_survive_cleanup_and_trace(ns, backend, tmp_path):
    """Regression: any rule commented `ruletrace:<letters>` was deleted as a leftover, and a live
    session whose state file was elsewhere lost its rules to the next `cleanup`/`trace`."""
    ipt = f"iptables-{backend}"
    sh(f'{ipt} -A INPUT -s 10.67.0.0/16 -m comment --comment "ruletrace:blocklist incident 42" -j DROP')
    sh(f"{ipt} -A INPUT -p tcp --dport 22 -m comment --comment ruletrace:ssh -j ACCEPT")
    live = start(tmp_path / "elsewhere", backend)
    try:
        # the exact shape of a TRACE rule, with the id of that live session
        copy = (f"-p udp -m limit --limit 50/second --limit-burst 50 -m comment --comment ruletrace:{live.sid} "
                "-j TRACE")
        sh(f"{ipt} -t raw -A PREROUTING {copy}")
        before = snapshot()
        assert saved(backend).count(live.sid) == 3
        mine = tmp_path / "mine"
        for args in (["cleanup"], ["cleanup", "--force"], ["cleanup", "--netns", NS, "--force"],
                     ["trace", "--netns", NS, "--backend", backend, "-p", "udp", "--dport", "7", "--duration", "0.3"]):
            if args[0] == "cleanup" and "--netns" not in args:
                p = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-m", "ruletrace", *args],
                                   capture_output=True, text=True, env=env(mine), timeout=120,
                                   stdin=subprocess.DEVNULL)
            else:
                p = ruletrace(mine, *args)
            assert "Traceback" not in p.stderr, p.stderr
            assert snapshot() == before, (args, p.stderr)
        rc, err = live.stop()
        assert rc in STOPPED, err
    finally:
        if live.p.poll() is None:
            live.stop()
    rules = saved(backend)
    assert "ruletrace:blocklist incident 42" in rules and "ruletrace:ssh" in rules
    assert rules.count(live.sid) == 1  # the session took its own two rules, by their full spec
    # the copy has the exact shape and its session is provably gone now: only --force takes it
    p = ruletrace(tmp_path / "mine", "cleanup", "--netns", NS)
    assert live.sid in saved(backend) and "--force" in p.stderr, p.stderr
    p = ruletrace(tmp_path / "mine", "cleanup", "--netns", NS, "--force")
    assert p.returncode == 0, p.stderr
    rules = saved(backend)
    assert live.sid not in rules and "ruletrace:blocklist incident 42" in rules and "ruletrace:ssh" in rules


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_sessions_in_other_state_dirs_share_and_keep_each_others(ns, backend, tmp_path):
    """Neither deletes the other's rules; the nf_log binding (legacy) and the raw table/chains
    iptables-nft created (nft) stay until the last one leaves, then all is as before."""
    before = snapshot()
    a = start(tmp_path / "a", backend)
    b = None
    try:
        during_a = snapshot()
        b = start(tmp_path / "b", backend)
        assert saved(backend).count(a.sid) == 2 and saved(backend).count(b.sid) == 2
        p = ruletrace(tmp_path / "b", "cleanup", "--netns", NS, "--force")
        assert p.returncode == 0, p.stderr
        assert saved(backend).count(a.sid) == 2 and saved(backend).count(b.sid) == 2
        if backend == "legacy":
            assert nf_log() == "nf_log_ipv4"
        rc, err = a.stop()  # the first one (which bound the logger / made the chains) leaves first
        assert rc in STOPPED, err
        assert "cleanup problem" not in err, err
        assert saved(backend).count(b.sid) == 2 and a.sid not in saved(backend)
        if backend == "legacy":
            assert nf_log() == "nf_log_ipv4"  # b still uses it
        else:
            assert "chain PREROUTING" in sh("nft list table ip raw")
        rc, err = b.stop()
        assert rc in STOPPED, err
    finally:
        for s in (a, b):
            if s is not None and s.p.poll() is None:
                s.stop(signal.SIGKILL)
    assert snapshot() == before
    assert during_a != before


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_of_both_then_cleanup_restores_exactly(ns, backend, tmp_path):
    before = snapshot()
    state = tmp_path / "state"
    a = start(state, backend)
    b = start(state, backend)
    for s in (a, b):
        rc, _err = s.stop(signal.SIGKILL)
        assert rc == -signal.SIGKILL
    assert snapshot() != before
    p = ruletrace(state, "cleanup", "--netns", NS)
    assert p.returncode == 0, p.stderr
    assert snapshot() == before, p.stderr
    assert list(state.iterdir()) == []


def test_sigkill_of_the_second_after_the_first_left_restores_nft_chains(ns, tmp_path):
    """The first session made the raw table; the second relied on it: the second's record must
    carry it, or nobody removes it."""
    before = snapshot()
    state = tmp_path / "state"
    a = start(state, "nft")
    b = start(state, "nft")
    assert a.stop()[0] in STOPPED
    assert b.stop(signal.SIGKILL)[0] == -signal.SIGKILL
    p = ruletrace(state, "cleanup", "--netns", NS)
    assert p.returncode == 0, p.stderr
    assert snapshot() == before, p.stderr


def test_second_legacy_session_does_not_rebind_the_logger(ns, tmp_path):
    """Regression: a second legacy session found NFLOG group 0 taken, fell back to the kernel
    log and rebound the family's logger under the first one."""
    before = snapshot()
    a = Session(tmp_path / "a", "--backend", "legacy", "--via", "netlink", *TRACE_ARGS)
    try:
        assert nf_log() == "nfnetlink_log"
        p = ruletrace(tmp_path / "b", "trace", "--netns", NS, "--backend", "legacy", *TRACE_ARGS[:-2],
                      "--duration", "1")
        assert p.returncode == 2 and "another ruletrace session" in p.stderr, p.stderr
        assert nf_log() == "nfnetlink_log"
        assert saved("legacy").count(a.sid) == 2
        assert a.stop()[0] in STOPPED
    finally:
        if a.p.poll() is None:
            a.stop(signal.SIGKILL)
    assert snapshot() == before


def _hold_lock(lock: Path, seconds: float) -> subprocess.Popen:
    lock.touch()
    holder = subprocess.Popen(["flock", str(lock), "sh", "-c", f"echo held; sleep {seconds}"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_teardown_retries_past_a_busy_xtables_lock(ns, tmp_path):
    lock = tmp_path / "xtables.lock"
    before = snapshot()
    a = start(tmp_path / "state", "legacy", XTABLES_LOCKFILE=str(lock))
    holder = _hold_lock(lock, 4)
    try:
        rc, err = a.stop()
    finally:
        holder.communicate(timeout=30)
    assert rc in STOPPED, err
    assert "xtables lock is held by another program: retrying" in err, err
    assert snapshot() == before, err


def test_teardown_past_the_retry_budget_says_to_run_cleanup(ns, tmp_path):
    """Regression: the first command that could not get the lock ended the teardown without a
    word about `ruletrace cleanup`. The lock is held longer than the retry budget (and longer
    than the 30 s a command may take)."""
    lock = tmp_path / "xtables.lock"
    before = snapshot()
    state = tmp_path / "state"
    a = start(state, "legacy", XTABLES_LOCKFILE=str(lock))
    holder = _hold_lock(lock, 33)
    try:
        _rc, err = a.stop(timeout=120)
        assert "ruletrace cleanup --netns" in err and "Traceback" not in err, err
        assert a.sid in saved("legacy")  # left: the lock was held past the retries
        assert nf_log() == "NONE", err  # the binding does not wait for the rules
    finally:
        holder.communicate(timeout=60)
    p = ruletrace(state, "cleanup", "--netns", NS, XTABLES_LOCKFILE=str(lock))
    assert p.returncode == 0, p.stderr
    assert snapshot() == before


def test_capability_it_has_is_not_named_as_missing(ns, tmp_path):
    """Regression: with CAP_NET_ADMIN but not CAP_NET_RAW, legacy tracing failed with "run as
    root / with CAP_NET_ADMIN"."""
    caps = "+net_admin,+sys_admin,+dac_read_search,+dac_override"  # no net_raw
    p = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps", caps,
                        "--ambient-caps", caps, sys.executable, "-m", "ruletrace", "trace", "--netns", NS,
                        "--backend", "legacy", "-p", "tcp", "--dport", "9", "--duration", "1"],
                       capture_output=True, text=True, env=env(tmp_path / "state"), timeout=60)
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "CAP_NET_RAW" in last and "has CAP_NET_ADMIN" in last and "Traceback" not in p.stderr, p.stderr
    assert "ruletrace:" not in saved("legacy")


def test_unwritable_state_dir_is_one_line(ns):
    before = snapshot()
    p = ruletrace(Path("/proc/ruletrace-cannot-exist"), "trace", "--netns", NS, "-p", "tcp", "--dport", "9",
                  "--duration", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "RULETRACE_STATE_DIR" in p.stderr.strip().splitlines()[-1]
    assert snapshot() == before
