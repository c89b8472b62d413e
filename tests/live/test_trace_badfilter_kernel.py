"""`ruletrace trace` with a filter iptables refuses, against the real kernel (namespaces fxl-*).

A value iptables cannot take (a ct state, a match, a port range, an interface name) is one
error before any change: nothing in the kernel, no state file; a record of an insert that was
never made (what an earlier version left) is dropped by `ruletrace cleanup`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

NS = f"fxl-bad{os.getpid() % 10000}"
SRC = str(Path(__file__).resolve().parents[2] / "src")
TOOLS = ("ip", "iptables-legacy", "iptables-nft", "ip6tables-legacy", "ip6tables-nft", "nft")

if os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS):
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason="needs root and " + ", ".join(TOOLS))]


def sh(cmd: str) -> str:
    p = subprocess.run(["ip", "netns", "exec", NS, "sh", "-c", cmd], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"{cmd}: {p.stderr}"
    return p.stdout


def snapshot() -> str:
    return sh("iptables-legacy-save; ip6tables-legacy-save; iptables-nft-save; ip6tables-nft-save; "
              "nft list ruleset; cat /proc/net/netfilter/nf_log").replace("\r", "")


def _clean(text: str) -> str:
    return "\n".join(x for x in text.splitlines() if not x.startswith("#"))


@pytest.fixture
def ns(tmp_path):
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    state = tmp_path / "state"
    try:
        subprocess.run(["ip", "netns", "add", NS], check=True, capture_output=True)
        # legacy tables, once used, stay (empty) in the namespace: instantiated up front, so the
        # comparison is about rules and bindings
        sh("ip link set lo up; iptables-legacy -t raw -S >/dev/null; ip6tables-legacy -t raw -S >/dev/null")
        yield {**os.environ, "PYTHONPATH": SRC, "RULETRACE_STATE_DIR": str(state),
               "RULETRACE_NO_DROP_REASONS": "1"}, state
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def ruletrace(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruletrace", *args], capture_output=True, text=True, env=env,
                          timeout=60)


BAD = [
    ("--raw-match", "-m conntrack --ctstate BOGUS", 'Bad ctstate "BOGUS"'),
    ("--raw-match", "-m nosuchmatch", "nosuchmatch"),
    ("--dport", "80:70", "first port is above its last"),
    ("-i", "veryveryverylongifname0", "at most 15 characters"),
    ("--dport", "99999", "at most 65535"),
    ("--dport", "no-such-service", "invalid port/service"),  # a name: only iptables can tell
]


@pytest.mark.parametrize("backend", ["legacy", "nft"])
@pytest.mark.parametrize(("opt", "value", "words"), BAD)
def test_a_filter_iptables_refuses_is_one_error_before_any_change(ns, backend, opt, value, words):
    env, state = ns
    before = _clean(snapshot())
    extra = [] if opt == "--dport" else ["--dport", "8080"]
    p = ruletrace(env, "trace", "--netns", NS, "--backend", backend, "-p", "tcp", *extra, opt, value, "--count", "1")
    assert p.returncode == 2, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ruletrace: error: ") and words in lines[0], p.stderr
    assert "\\n" not in p.stderr and "Try `iptables -h'" not in p.stderr
    assert _clean(snapshot()) == before
    assert not state.exists() or not list(state.glob("*"))
    # nothing left: the next trace names no leftover, and there is nothing to clean up
    p = ruletrace(env, "cleanup", "--netns", NS)
    assert p.returncode == 0 and "nothing to clean up" in p.stderr, p.stderr


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_an_insert_the_kernel_refuses_leaves_no_record(ns, backend):
    """The owner match parses, but the kernel takes it only on the way out: the insert fails
    after the session recorded it; the record goes with it (the rule was never added)."""
    env, state = ns
    before = _clean(snapshot())
    p = ruletrace(env, "trace", "--netns", NS, "--backend", backend, "-p", "tcp", "--dport", "8080",
                  "--direction", "in", "--raw-match", "-m owner --uid-owner 0", "--count", "1")
    assert p.returncode == 2, p.stderr
    errors = [x for x in p.stderr.splitlines() if "error" in x or "problem" in x]
    assert len(errors) == 1 and "Invalid argument" in errors[0], p.stderr
    assert "\\n" not in p.stderr
    assert _clean(snapshot()) == before
    assert not list(state.glob("*.json"))


def test_cleanup_drops_the_record_of_a_rule_that_was_never_added(ns):
    """What an earlier version left after `--raw-match '-m conntrack --ctstate BOGUS'`: a state
    file whose rule iptables cannot even parse; cleanup proves it absent and drops the record."""
    env, state = ns
    before = _clean(snapshot())
    code = (
        "from ruletrace.live import session as ss\n"
        "from ruletrace.live.netns import ns_id\n"
        "spec = ss.TraceSpec(proto='tcp', dport='8080', direction='in', families=('ipv4',),\n"
        "                    raw_match=['-m', 'conntrack', '--ctstate', 'BOGUS'])\n"
        "st = ss.new_state(ss.new_session_id(), {'name': '" + NS + "', 'id': ns_id()}, 'legacy')\n"
        "st.rules = ss.plan_rules(spec, st.sid)\n"
        "st.save()\n"
    )
    subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", code], check=True, env=env, timeout=30)
    assert len(list(state.glob("*.json"))) == 1  # its process is gone now
    p = ruletrace(env, "cleanup", "--netns", NS)
    assert p.returncode == 0, p.stderr
    assert "problem" not in p.stderr
    assert not list(state.glob("*.json"))
    assert _clean(snapshot()) == before
    p = ruletrace(env, "trace", "--netns", NS, "-p", "udp", "--duration", "0")
    assert "leftover" not in p.stderr and "killed session" not in p.stderr, p.stderr


def test_a_dry_run_of_a_legacy_trace_changes_nothing_even_the_raw_table(tmp_path):
    """--dry-run checks the rule too (a bad value is its one error), and instantiates no legacy
    table in a namespace that never used one (iptables-legacy -C would)."""
    name = NS + "d"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    env = {**os.environ, "PYTHONPATH": SRC, "RULETRACE_STATE_DIR": str(tmp_path / "state"),
           "RULETRACE_NO_DROP_REASONS": "1"}
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)

        def legacy_tables() -> str:
            p = subprocess.run(["ip", "netns", "exec", name, "sh", "-c",
                                "cat /proc/net/ip_tables_names /proc/net/ip6_tables_names"],
                               capture_output=True, text=True, timeout=30)
            return p.stdout

        before = legacy_tables()
        p = ruletrace(env, "trace", "--netns", name, "--backend", "legacy", "-p", "tcp", "--dport", "8080",
                      "--dry-run")
        assert p.returncode == 0, p.stderr
        assert legacy_tables() == before
        assert "check (changes nothing): iptables-nft -w 2 -t raw -C PREROUTING" in p.stderr
        p = ruletrace(env, "trace", "--netns", name, "--backend", "legacy", "-p", "tcp", "--dport", "8080",
                      "--raw-match", "-m conntrack --ctstate BOGUS", "--dry-run")
        assert p.returncode == 2 and 'Bad ctstate "BOGUS"' in p.stderr.splitlines()[-1], p.stderr
        assert legacy_tables() == before
        assert not (tmp_path / "state").exists() or not list((tmp_path / "state").glob("*.json"))
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
