"""Shared inputs of the parallel JSON and tree fast-path tests (test_parallel.py has its own, larger):
a generated kube log (300 packets), the same damaged, the same against a stale ruleset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    out = tmp_path_factory.mktemp("kube")
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_kube.py"), "--small", "--packets", "300",
                    "--out", str(out)], check=True, capture_output=True)
    return out / "kube.rules", out / "kube.log"


@pytest.fixture(scope="module")
def damaged(kube, tmp_path_factory):
    """The same log with lines cut short and lines of other programs in between: skipped lines."""
    rules, log = kube
    out = []
    for i, line in enumerate(log.read_bytes().splitlines(keepends=True)):
        out.append(line[: line.find(b"TRACE: ") + 20] + b"\n" if i % 301 == 5 else line)
        if i % 397 == 3:
            out.append(b"Nov 23 03:49:00 node1 systemd[1]: Started something.\n")
    p = tmp_path_factory.mktemp("damaged") / "kube.log"
    p.write_bytes(b"".join(out))
    return rules, p


@pytest.fixture(scope="module")
def stale(kube, tmp_path_factory):
    """The log against a ruleset that lacks some of its rules: misfit warnings."""
    rules, log = kube
    lines = rules.read_text().splitlines(keepends=True)
    p = tmp_path_factory.mktemp("stale") / "kube.rules"
    p.write_text("".join(x for i, x in enumerate(lines) if not (x.startswith("-A KUBE-SEP-") and i % 3 == 0)))
    return p, log
