"""Kernel-lab fixtures: skip reasons (root, ip netns, tools) and one recording per scenario per session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ruletrace.lab import record as lab_record
from ruletrace.lab.scenarios import SCENARIOS


def kernel_skip_reason() -> str | None:
    """Why the kernel lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "kernel lab needs root (network namespaces, iptables, /dev/kmsg)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` does not work here"
    if missing := lab_record.missing_tools():
        return f"missing tools: {', '.join(missing)} (apt-get install iptables nftables tcpdump ulogd2 " \
               "ulogd2-json conntrack iproute2)"
    if not os.access("/dev/kmsg", os.R_OK):
        return "/dev/kmsg is not readable"
    return None


@pytest.fixture(scope="session")
def kernel_lab() -> None:
    """Skip (a failure under RULETRACE_REQUIRE_KERNEL=1) when the lab cannot run."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(reason)


class Recordings:
    """Lazily records each scenario (both backends) once per session into a temp folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        if name not in self.done:
            out = self.root / name
            lab_record.record(SCENARIOS[name], out)
            self.done[name] = out
        return self.done[name]

    def again(self, name: str) -> Path:
        """Record the scenario once more (a fresh capture) and use that from now on."""
        out = self.root / f"{name}-again"
        shutil.rmtree(out, ignore_errors=True)
        lab_record.record(SCENARIOS[name], out)
        self.done[name] = out
        return out

    def outcome(self, name: str) -> dict:
        return json.loads((self(name) / "outcome.json").read_text())


@pytest.fixture(scope="session")
def recordings(kernel_lab, tmp_path_factory) -> Recordings:
    return Recordings(tmp_path_factory.mktemp("lab"))
