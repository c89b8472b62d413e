"""`ruletrace trace` on a native host that has iptables-nft tables too (issue 13), against the kernel.

The lab's `mixed` layout (lab/nft/mixed.nft + mixed.iptables loaded with iptables-nft-restore) in
namespaces of our own (prefix rtnp): steps in the tables iptables-nft made show their
iptables-nft-save line and its number, like their legacy twins; the native table's steps keep
their nft text. The live packets equal `ruletrace explain` of `nft -a monitor trace` recorded beside
them against `nft -a -s list ruleset` + `iptables-nft-save`, and the ruleset is unchanged after exit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from ruletrace.lab.scenarios_nft import SCENARIOS
from tests.helpers import BackgroundTrace
from tests.live.test_native_kernel import C_ADDR, SRC, pair, send_syn, sh, shape, snapshot

pytestmark = pytest.mark.kernel
SKIP = ("needs root (network namespaces, nft)" if os.geteuid() != 0
        else "nft, ip or iptables-nft missing" if not all(map(shutil.which, ("nft", "ip", "iptables-nft-restore")))
        else None)
if SKIP:
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=SKIP)]

PREFIX = f"rtnp{os.getpid() % 1000}x"
CLIENT, SERVER = PREFIX + "c", PREFIX + "s"
MIXED = SCENARIOS["mixed"]
# port -> fate, (table, chain, num) of the decider (the layout's comments say why); nothing listens:
# a SYN that gets through is delivered and answered by a reset, so each flow is one traced packet
EXPECTED = {22: ("delivered", ("filter", "ALLOWED", 1)), 80: ("dropped", ("host", "input", 2)),
            81: ("delivered", ("filter", "INPUT", 3)), 82: ("rejected", ("filter", "INPUT", 4)),
            8081: ("rejected", ("host", "input", 3))}


def _save_lines(text: str) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            out.setdefault((table, line.split()[1]), []).append(line)
    return out


def test_iptables_nft_steps_show_their_save_lines_live(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RULETRACE_NO_DROP_REASONS": "1", "RULETRACE_STATE_DIR": str(state)}
    with pair(CLIENT, SERVER, PREFIX + "v"):
        sh("nft -f -", SERVER, stdin=MIXED.layout())
        assert MIXED.iptables is not None
        sh("iptables-nft-restore", SERVER, stdin=MIXED.iptables().replace("10.84.0.1", C_ADDR))
        before = snapshot(SERVER)
        saved = _save_lines(sh("iptables-nft-save", SERVER))
        with open(tmp_path / "monitor.txt", "w") as mon_out:
            monitor = subprocess.Popen(["ip", "netns", "exec", SERVER, "nft", "-a", "monitor", "trace"],
                                       stdout=mon_out, stderr=subprocess.DEVNULL)
        try:
            t = BackgroundTrace("--netns", SERVER, "-p", "tcp", "-s", C_ADDR, "--direction", "in", "-4",
                                "--count", str(len(EXPECTED)), "--duration", "15", "--json", env=env, timeout=20)
            (tmp_path / "rs.txt").write_text(sh("nft -a -s list ruleset", SERVER))
            (tmp_path / "save.txt").write_text(sh("iptables-nft-save", SERVER))
            for port in EXPECTED:
                send_syn(port, CLIENT)
            rc, out, err = t.communicate(20)
            time.sleep(0.2)
        finally:
            monitor.terminate()
            monitor.wait(5)
        assert rc == 0, err
        live = [json.loads(line) for line in out.splitlines()]
        got = {p["dport"]: (p["fate"], (p["verdict"]["table"], p["verdict"]["chain"], p["verdict"]["num"]))
               for p in live}
        assert got == EXPECTED, err
        for p in live:
            for s in p["steps"]:
                if s["kind"] == "rule" and (s["table"], s["chain"]) in saved:  # an iptables-nft table
                    assert s["rule"] == saved[(s["table"], s["chain"])][s["num"] - 1], s
                elif s["kind"] == "rule" and s["table"] == "host":  # the native table: nft text
                    assert not s["rule"].startswith("-A "), s
        ssh = next(p for p in live if p["dport"] == 22)
        assert [(s["table"], s["chain"], s["num"]) for s in ssh["steps"] if s["kind"] == "rule"
                and s["table"] == "filter"] == [("filter", "INPUT", 2), ("filter", "ALLOWED", 1)], ssh["steps"]
        assert snapshot(SERVER) == before, err  # as found
        p = subprocess.run([sys.executable, "-m", "ruletrace", "explain", "--json", "-r", str(tmp_path / "rs.txt"),
                            "-r", str(tmp_path / "save.txt"), str(tmp_path / "monitor.txt")],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        offline = [x for x in json.loads(p.stdout)["packets"] if x["src"] == C_ADDR and x["dport"] in EXPECTED]
        assert [shape(x) for x in offline] == [shape(x) for x in live]
