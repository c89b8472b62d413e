"""`ruletrace trace` on every native lab scenario, against the kernel's own `nft monitor trace` (issue 13).

Each scenario of ``tests/nft/native_record.SCENARIOS`` (the lab's kube-nft, hooks, maps, inet6 and
the tests' zones, router, layered) is built by the lab (namespaces with this helper's prefix
rtnl), its layout loaded *without* the lab's tracing table: one live session switches tracing on
instead (``--all --direction in``: every incoming packet, its netdev ingress and bridge hooks
included). The lab sends the scenario's flows while ``nft -a monitor trace`` runs beside the
session; then for every flow's first packet the session's steps (table, chain, kind, position,
rule text or policy) must be the monitor's, and its fate the one the flow's sender saw. The
ruleset must be byte-identical (counters aside) after the session ends (Ctrl-C), and after a
second session is SIGKILLed and `ruletrace cleanup` runs.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ruletrace.lab.netns import Host, run
from ruletrace.lab.record_nft import record
from ruletrace.model import nft_rule_key
from tests.helpers import BackgroundTrace
from tests.live.test_native_kernel import _skip_reason
from tests.nft import native_record
from tests.nft.test_native_captures import expected_fate, positions, set_order

pytestmark = pytest.mark.kernel
if _skip_reason():
    pytestmark = [pytest.mark.kernel, pytest.mark.skip(reason=_skip_reason())]

SRC = str(Path(__file__).resolve().parents[2] / "src")
_LINE = re.compile(r"^trace id ([0-9a-f]+) (\S+) (\S+) (\S+) (packet:|rule|policy) ?(.*)$")
_FAM = {"ip": "ipv4", "ip6": "ipv6"}
QUIET = 3.0  # seconds without a new packet shown after which the session is stopped
ADDR = re.compile(r"\bip6? saddr (\S+) ip6? daddr (\S+)")


def snapshot(ns: str) -> str:
    """The nft ruleset, both iptables backends and the nf_log bindings, counters aside."""
    text = run(["sh", "-c", "nft list ruleset; iptables-legacy-save; iptables-nft-save; "
                "cat /proc/net/netfilter/nf_log"], ns=ns).stdout
    lines = [x for x in text.splitlines() if not x.startswith("#")]
    # counters aside: rules' and named counters' values, iptables' [packets:bytes], what a quota
    # used, and the time a set element has left (the kernel's state, not the ruleset)
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[]", re.sub(r"packets \d+ bytes \d+| used \d+ [a-z]*bytes| expires \w+",
                                                           "", x)) for x in lines)


def _diff(before: str, after: str) -> str:
    return "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=1))


def kernel_packets(monitor: str, pos: dict[tuple, int]) -> list[dict]:
    """Packets of ``nft -a monitor trace`` when a session switched tracing on: each starts at the
    one rule of a session's table that set nftrace (its chains leave a packet to the first one it
    meets, so there is exactly one per packet); its later events carry its trace id, or a new one
    where a bridge passed the frame up to the IP stack (flows are sent one at a time)."""
    out: list[dict] = []
    cur: dict | None = None
    for line in monitor.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        tid, fam, table, chain, kind, rest = m.groups()
        own = table.startswith("ruletrace_")
        if own and kind == "rule" and "meta nftrace set 1" in rest:
            cur = {"tid": tid, "steps": [], "last_fam": fam, "first": None, "starts": 1}
            out.append(cur)
            continue
        if cur is None:
            continue
        if tid != cur["tid"]:
            if cur["last_fam"] == "bridge" and fam != "bridge":
                cur["tid"] = tid  # passed up by the bridge: a new trace id, the same packet
            else:
                continue  # another packet's (not traced by the session)
        cur["last_fam"] = fam
        if kind == "packet:":
            cur["first"] = cur["first"] or rest
            continue
        if own:
            continue
        if kind == "rule":
            text, _, h = rest.partition(" # handle ")
            cur["steps"].append((_FAM.get(fam, fam), table, chain, "rule", pos[(fam, table, chain, int(h.split()[0]))],
                                 set_order(nft_rule_key(text))))
        else:
            cur["steps"].append((_FAM.get(fam, fam), table, chain, "policy", pos[(fam, table, chain, 0)],
                                 rest.split()[0].upper()))
    return out


def _flow_of_kernel(pkt: dict, flow: dict) -> bool:
    first = (pkt["first"] or "") + " "
    a = ADDR.search(first)
    if a is None or a[2] != flow["dst"]:
        return False
    if flow["kind"] == "ping":
        # nft prints an ICMPv6 echo's id and sequence as `parameter-problem <id << 16 | seq>`
        v6 = re.search(r"parameter-problem (\d+)", first)
        ident = f"id {flow['port']} " in first or (v6 is not None and int(v6[1]) >> 16 == flow["port"])
        return ident and "echo-request" in first
    return f"sport {flow['sport']} " in first and (flow["kind"] != "tcp" or "tcp flags == syn " in first)


def _same_addr(a: str | None, b: str) -> bool:
    return a is not None and ipaddress.ip_address(a) == ipaddress.ip_address(b)


def _flow_of_live(pkt: dict, flow: dict, src: str) -> bool:
    """The flow's first packet (a SYN, an echo request, the first datagram: the session may show a
    flow's packets out of order when the kernel gave two of them the same trace id)."""
    f = pkt["steps"][0]["fields"] if pkt["steps"] else {}
    if not _same_addr(pkt["src"], src) or not _same_addr(pkt["dst"], flow["dst"]):
        return False
    if flow["kind"] == "ping":
        return f.get("ICMPID") == str(flow["port"]) and f.get("TYPE") in ("8", "128")
    return pkt["sport"] == flow["sport"] and (flow["kind"] != "tcp" or f.get("TCPFLAGS") == "SYN")


def _live_steps(pkt: dict) -> list[tuple]:
    return [(s["table"], s["chain"], s["kind"], s["num"],
             set_order(nft_rule_key(s["rule"])) if s["kind"] == "rule" else s["policy"])
            for s in pkt["steps"] if s["kind"] != "return"]  # the kernel prints no event for a chain's end


@pytest.mark.parametrize("name", list(native_record.SCENARIOS))
def test_live_session_on_native_scenario_is_the_kernels_trace(name, tmp_path):
    sc = native_record.SCENARIOS[name]
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RULETRACE_NO_DROP_REASONS": "1", "RULETRACE_STATE_DIR": str(state)}
    got: dict = {}

    def ruletrace(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ruletrace", *args], capture_output=True, text=True, env=env,
                              timeout=60)

    @contextlib.contextmanager
    def session(target: Host):
        before = snapshot(target.ns)
        args = ("--netns", target.ns, "--all", "--direction", "in", "--rate-limit", "1000", "--json")
        t = BackgroundTrace(*args, env=env, timeout=30)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(t.p.stdout.readline, "")), daemon=True)
        reader.start()
        try:
            yield
            # each packet's routing and conntrack lookups run commands: on a loaded machine the
            # session may lag behind the traffic; stop it once it has been quiet for a while
            quiet_since, n, deadline = time.monotonic(), -1, time.monotonic() + 60
            while time.monotonic() < deadline and time.monotonic() - quiet_since < QUIET:
                if len(lines) != n:
                    n, quiet_since = len(lines), time.monotonic()
                time.sleep(0.1)
        finally:
            t.p.send_signal(signal.SIGINT)
            got["rc"] = t.p.wait(30)
            reader.join(10)
            got["out"], got["err"] = "".join(lines), "".join(t.err) + t.p.stderr.read()
            t.p.stdout.close()
            t.p.stderr.close()
        got["after_exit"] = _diff(before, snapshot(target.ns))
        # a second session, SIGKILLed: `ruletrace cleanup` restores the ruleset exactly
        k = BackgroundTrace(*args[:-1], env=env, timeout=30)
        got["killed_left"] = snapshot(target.ns) != before
        k.p.kill()
        k.communicate(10)
        p = ruletrace("cleanup", "--netns", target.ns)
        got["cleanup"] = (p.returncode, p.stderr)
        got["after_cleanup"] = _diff(before, snapshot(target.ns))

    outcome = record(sc, tmp_path, prefix=f"rtnl{os.getpid() % 1000}", session=session)
    (tmp_path / "live.json").write_text(got["out"])
    (tmp_path / "live.err").write_text(got["err"])
    assert got["rc"] == 128 + signal.SIGINT, got["err"]  # Ctrl-C: the usual end of a trace
    assert not got["after_exit"], got["after_exit"]
    assert got["killed_left"] and got["cleanup"][0] == 0, got["cleanup"]
    assert not got["after_cleanup"], (got["cleanup"], got["after_cleanup"])
    live = [json.loads(line) for line in got["out"].splitlines()]
    kernel = kernel_packets((tmp_path / "nft-monitor-a.txt").read_text(), positions(tmp_path))
    compared = []
    for flow in outcome["flows"]:
        k = next((p for p in kernel if _flow_of_kernel(p, flow)), None)
        assert k is not None, (flow, "not in the kernel's trace")
        src = ADDR.search(k["first"])[1]
        lv = next((p for p in live if _flow_of_live(p, flow, src)), None)
        assert lv is not None, (flow, "not in the live session's output", got["err"])
        want = [s[1:] for s in k["steps"]]
        assert _live_steps(lv) == want, (flow["name"], lv["steps"])
        assert lv["fate"] == str(expected_fate(flow, k["steps"])), (flow["name"], lv["fate"], lv["verdict"])
        compared.append(flow["name"])
    assert compared == [f.name for f in sc.flows]
