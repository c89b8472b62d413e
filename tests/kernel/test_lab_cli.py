"""``ruletrace lab`` command line: list, unknown scenario, sweep."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ruletrace.cli import cli
from ruletrace.cli.status import ExitStatus
from ruletrace.lab.scenarios import SCENARIOS

pytestmark = pytest.mark.kernel


def test_lab_list_names_every_scenario():
    r = CliRunner().invoke(cli, ["lab", "list"])
    assert r.exit_code == 0
    assert [line.split()[0] for line in r.output.splitlines()] == list(SCENARIOS)


def test_lab_record_unknown_scenario_is_a_user_error(tmp_path):
    r = CliRunner().invoke(cli, ["lab", "record", "no-such", str(tmp_path / "x")])
    assert r.exit_code == ExitStatus.ERROR
    assert "unknown lab scenario 'no-such'" in r.output


def test_lab_sweep_runs(kernel_lab):
    r = CliRunner().invoke(cli, ["lab", "sweep"])
    assert r.exit_code == 0, r.output
