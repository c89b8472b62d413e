"""`ruletrace trace --raw-match` on a native nftables host (issue 13), against the real kernel.

The raw match is an nft expression there: it goes into the session table's rules, so only the
packets it selects are traced; a bad one is refused (one line, exit 2) before anything is made.
Namespaces of our own (prefix rtnp), the firewalld-style layout of test_native_kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import BackgroundTrace
from tests.live.test_native_kernel import C_ADDR, CLOSED, FIREWALLD, PORT, SRC, pair, send_syn, sh, snapshot

pytestmark = pytest.mark.kernel
SKIP = ("needs root (network namespaces, nft)" if os.geteuid() != 0
        else "nft or ip missing" if not (shutil.which("nft") and shutil.which("ip")) else None)
if SKIP:
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=SKIP)]

PREFIX = f"rtnp{os.getpid() % 1000}"
CLIENT, SERVER = PREFIX + "c", PREFIX + "s"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    with pair(CLIENT, SERVER, PREFIX + "v"):
        sh("nft -f -", SERVER, stdin=FIREWALLD)  # (its iifname names another veth: the zone's fallback goto applies)
        yield {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "RULETRACE_NO_DROP_REASONS": "1", "RULETRACE_STATE_DIR": str(state)}, Path(state)


def test_raw_match_selects_only_its_packets(host):
    env, _state = host
    before = snapshot(SERVER)
    t = BackgroundTrace("--netns", SERVER, "--raw-match", f"ip saddr {C_ADDR} tcp dport {PORT}", "--direction", "in",
                        "--duration", "4", "--json", env=env, timeout=20)
    for port in (CLOSED, PORT, CLOSED):
        send_syn(port, CLIENT)
    rc, out, err = t.communicate(20)
    assert rc == 0, err
    pkts = [json.loads(line) for line in out.splitlines()]
    assert pkts and {(p["src"], p["dport"]) for p in pkts} == {(C_ADDR, PORT)}, pkts
    assert pkts[0]["fate"] == "delivered" and pkts[0]["verdict"]["chain"] == "filter_IN_public_allow", pkts[0]
    assert snapshot(SERVER) == before, err  # byte-identical (counters aside) after exit


@pytest.mark.parametrize(("raw", "says"), [
    ("tcp dprt 443", "nft refuses it"),
    ("tcp dport 443 accept", "'accept' is a statement"),
    ("tcp dport 443; flush ruleset", "would end the rule"),
    ("tcp dport 443 } chain x {", "without its"),
    ("-m mark --mark 0x10", "nft match expression"),
])
def test_bad_raw_match_refused_before_any_change(host, raw, says):
    env, state = host
    before = snapshot(SERVER)
    p = ruletrace(env, "trace", "--netns", SERVER, "--raw-match", raw, "--duration", "2")
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert snapshot(SERVER) == before
    assert "ruletrace_" not in sh("nft list tables", SERVER)
    assert not [f for f in state.iterdir() if f.suffix == ".json"], list(state.iterdir())


def ruletrace(env, *args):
    return subprocess.run([sys.executable, "-m", "ruletrace", *args], capture_output=True, text=True, env=env,
                          timeout=60)
