"""Shared test helpers: fixture paths, and turning kernel-test skips into failures in CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "corpus"  # copy of shared/corpus/iptables-extensions

REQUIRE_KERNEL = os.environ.get("RULETRACE_REQUIRE_KERNEL") == "1"


def fixture(name: str) -> Path:
    """Path of a committed fixture file under tests/fixtures."""
    p = FIXTURES / name
    assert p.exists(), f"missing fixture {p}"
    return p


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if REQUIRE_KERNEL and rep.skipped and item.get_closest_marker("kernel") is not None:
        rep.outcome = "failed"
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.longrepr = f"kernel test skipped but RULETRACE_REQUIRE_KERNEL=1: {reason}"
