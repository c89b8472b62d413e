"""The bundled examples are lab recordings, complete and small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ruletrace
from ruletrace.lab.scenarios import SCENARIOS

pytestmark = pytest.mark.kernel

EXAMPLES = Path(ruletrace.__file__).parent / "examples"


@pytest.mark.parametrize("name", ["k8s-nodeport", "docker-portmap", "openstack-router", "filter-basics", "ipv6"])
def test_bundled_example_is_a_small_complete_lab_recording(name):
    d = EXAMPLES / name
    meta = json.loads((d / "example.json").read_text())
    assert meta["title"] == SCENARIOS[name].title
    for key in ("ruleset", "log", "nft_ruleset", "outcome"):
        assert (d / meta[key]).is_file(), key
    for capture in meta["captures"]:
        assert (d / capture).stat().st_size > 0
    assert "TRACE: " in (d / "kernel.log").read_text()
    assert "Recorded by `ruletrace lab record" in (d / "README.md").read_text()
    outcome = json.loads((d / "outcome.json").read_text())
    assert [f["name"] for f in outcome["flows"]] == [f.name for f in SCENARIOS[name].flows]
    assert sum(f.stat().st_size for f in d.iterdir()) < 200_000
