"""The command registry: a broken command module shows its error, a missing one is left out."""

from __future__ import annotations

import sys

import click
import pytest

from ruletrace import cli as rcli


@pytest.fixture
def registry(monkeypatch):
    commands = dict(rcli.COMMANDS)
    monkeypatch.setattr(rcli, "COMMANDS", commands)
    return commands


def test_every_registered_command_loads():
    ctx = click.Context(rcli.cli)
    for name in rcli.COMMANDS:
        assert rcli.cli.get_command(ctx, name) is not None, name


def test_missing_module_is_left_out(registry):
    registry["ghost"] = "ruletrace.cli.no_such_module:ghost"
    ctx = click.Context(rcli.cli)
    assert rcli.cli.get_command(ctx, "ghost") is None
    assert "ghost" not in rcli.cli.list_commands(ctx)


def test_broken_module_raises_its_own_error(registry, tmp_path, monkeypatch):
    # a command module that exists but imports something missing: the ImportError must show,
    # not turn into "No such command"
    pkg = tmp_path / "rt_broken_cmd.py"
    pkg.write_text("import rt_definitely_missing_dependency\n\nimport click\n\n@click.command()\n"
                   "def broken():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("rt_broken_cmd", None)
    registry["broken"] = "rt_broken_cmd:broken"
    ctx = click.Context(rcli.cli)
    with pytest.raises(ModuleNotFoundError, match="rt_definitely_missing_dependency"):
        rcli.cli.get_command(ctx, "broken")


def test_missing_attribute_raises(registry):
    registry["noattr"] = "ruletrace.cli.explain:no_such_command_function"
    ctx = click.Context(rcli.cli)
    with pytest.raises(AttributeError):
        rcli.cli.get_command(ctx, "noattr")
