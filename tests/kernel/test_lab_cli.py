"""``ruletrace lab`` command line: list, unknown scenario, sweep."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ruletrace.cli import cli
from ruletrace.cli.status import ExitStatus
from ruletrace.lab.scenarios import SCENARIOS
from ruletrace.lab.scenarios_nft import SCENARIOS as NATIVE

pytestmark = pytest.mark.kernel


def test_lab_list_names_every_scenario():
    r = CliRunner().invoke(cli, ["lab", "list"])
    assert r.exit_code == 0
    assert [line.split()[0] for line in r.output.splitlines()] == list(SCENARIOS) + list(NATIVE)


def test_lab_records_a_native_scenario(kernel_lab, tmp_path):
    r = CliRunner().invoke(cli, ["lab", "record", "maps", str(tmp_path / "maps")])
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "maps").iterdir()}
    assert {"nft-monitor.txt", "nft-monitor-a.txt", "ruleset.nft", "ruleset-a.nft", "ruleset.json",
            "outcome.json", "addrs.json", "routes.json"} <= names
    # what the gateway's maps decide: both virtual IPs reach their backend, the admin port does not
    assert [line.split()[:2] for line in r.output.splitlines()[:4]] == [
        ["vip-web", "connected"], ["vip-tls", "connected"], ["vip-ssh", "timeout"], ["direct", "timeout"]]


def test_lab_record_unknown_scenario_is_a_user_error(tmp_path):
    r = CliRunner().invoke(cli, ["lab", "record", "no-such", str(tmp_path / "x")])
    assert r.exit_code == ExitStatus.ERROR
    assert "unknown lab scenario 'no-such'" in r.output


def test_lab_sweep_runs(kernel_lab):
    r = CliRunner().invoke(cli, ["lab", "sweep"])
    assert r.exit_code == 0, r.output
