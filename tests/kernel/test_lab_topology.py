"""Lab topologies are torn down on success, error and SIGKILL (via the sweeper)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.lab.netns import STATE_DIR, Lab, list_links, list_netns, run, sweep

pytestmark = pytest.mark.kernel


def _leftovers(prefix: str) -> list[str]:
    return [n for n in list_netns() if n.startswith(prefix + "-")] + [
        n for n in list_links() if n.startswith(prefix)
    ]


def test_lab_builds_and_removes_everything_on_error(kernel_lab):
    with pytest.raises(ZeroDivisionError):
        with Lab() as lab:
            a, b = lab.host("a"), lab.host("b")
            ia, ib = lab.veth(a, "a0", b, "b0")
            lab.addr(a, ia, "10.77.0.1/24", "fd00:77::1/64")
            lab.addr(b, ib, "10.77.0.2/24")
            lab.spawn(b, ["sleep", "30"])
            assert ia in list_links(a.ns) and ib in list_links(b.ns)
            assert ia not in list_links()  # nothing in the root namespace
            prefix = lab.prefix
            1 / 0
    assert _leftovers(prefix) == []
    assert not (STATE_DIR / prefix).exists()


def test_interface_names_longer_than_ifnamsiz_are_refused(kernel_lab):
    with Lab() as lab:
        with pytest.raises(RuletraceError, match="longer than 15"):
            lab.ifname("x" * (16 - len(lab.prefix)))
        assert len(lab.ifname("x" * (15 - len(lab.prefix)))) == 15


def test_sysctls_are_set_inside_the_namespace_only(kernel_lab):
    root_before = run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout
    with Lab() as lab:
        h = lab.host("r", {"net.ipv4.ip_forward": "1"})
        assert run(["sysctl", "-n", "net.ipv4.ip_forward"], ns=h.ns).stdout.strip() == "1"
        assert run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout == root_before


def test_sweep_spares_a_live_run(kernel_lab):
    with Lab() as lab:
        h = lab.host("live")
        sweep()
        assert h.ns in list_netns()


_KILLED = """
import sys, time
from ruletrace.lab.netns import Lab
lab = Lab()
a, b = lab.host("a"), lab.host("b")
lab.veth(a, "a0", b, "b0")
lab.bridge(b, "br", [])
lab.spawn(b, ["sleep", "120"])
print(lab.prefix, flush=True)
time.sleep(120)
"""


def test_sweep_removes_what_a_killed_run_left(kernel_lab):
    p = subprocess.Popen([sys.executable, "-c", _KILLED], stdout=subprocess.PIPE, text=True)
    try:
        prefix = p.stdout.readline().strip()
        assert prefix.startswith("rtl"), prefix
        os.kill(p.pid, signal.SIGKILL)  # no finally, no __exit__: the namespaces stay
        p.wait(timeout=10)
        left = _leftovers(prefix)
        assert f"{prefix}-a" in left and f"{prefix}-b" in left
        orphans = run(["ip", "netns", "pids", f"{prefix}-b"]).stdout.split()
        assert orphans  # the `sleep` started inside survived its parent
        out = subprocess.run([sys.executable, "-m", "ruletrace", "lab", "sweep"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"netns {prefix}-a" in out.stdout
        deadline = time.monotonic() + 5
        while _leftovers(prefix) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _leftovers(prefix) == []
        assert not (STATE_DIR / prefix).exists()
        for pid in orphans:
            stat = Path(f"/proc/{pid}/stat")
            assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
