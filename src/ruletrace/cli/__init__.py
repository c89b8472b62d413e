"""The ``ruletrace`` command line: a click group whose subcommands live one per module."""

from __future__ import annotations

import importlib
import os
import sys
from typing import IO, Any

import click

from ..errors import RuletraceError
from .console import OutputClosed
from .status import ExitStatus

# name -> "module:attribute"; modules are imported only when their command runs
COMMANDS: dict[str, str] = {
    "explain": "ruletrace.cli.explain:explain",
    "examples": "ruletrace.cli.explain:examples",
    "lab": "ruletrace.cli.lab:lab",
    "simulate": "ruletrace.cli.simulate:simulate",
    "trace": "ruletrace.cli.trace:trace",
    "cleanup": "ruletrace.cli.trace:cleanup",
    "doctor": "ruletrace.cli.trace:doctor",
    "report": "ruletrace.cli.report:report",
    "diff": "ruletrace.cli.report:diff",
    "man": "ruletrace.cli.manpage:man",
}


class _UserError(click.ClickException):
    exit_code = ExitStatus.ERROR

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"ruletrace: error: {self.format_message()}", err=True)


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n in COMMANDS if self.get_command(ctx, n) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        mod, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise  # the command's module is there but broken: show it, never "No such command"
            return None  # a command module left out of this build
        cmd: click.Command = getattr(module, attr)  # a missing attribute is a bug too: let it show
        return cmd

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RuletraceError as e:
            if ctx.params.get("debug"):
                raise
            from ..render.theme import clean  # the message carries text from the user's files

            raise _UserError(clean(str(e))) from e
        except BrokenPipeError as e:  # click would make it exit status 1
            raise OutputClosed() from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(None, "-V", "--version", package_name="ruletrace")
def cli(debug: bool) -> None:
    """Where did my packet go, and which rule did that?

    Reads netfilter TRACE output (kernel log, NFLOG, nft monitor trace, …) and a ruleset
    (iptables-save, iptables -L, nft -j list ruleset), groups the events into packets and
    explains each packet's path rule by rule.
    """


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="ruletrace", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("ruletrace: interrupted", err=True)
        return ExitStatus.CTRL_C
    except click.UsageError as e:  # one "ruletrace: error:" line, as every message (docs/cli.md), then the hint
        cmd = e.ctx.command_path if e.ctx is not None else "ruletrace"
        words = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")]
        if cmd == "ruletrace" and words and words[0] in COMMANDS:  # an option's value missing: no sub-context
            cmd = f"ruletrace {words[0]}"
        click.echo(f"ruletrace: error: {e.format_message()}", err=True)
        click.echo(f"ruletrace: try '{cmd} --help'", err=True)
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("ruletrace: interrupted", err=True)
        return ExitStatus.CTRL_C
    except (BrokenPipeError, OutputClosed):
        # `ruletrace explain … | head`: the reader went away; not an error. Whatever is still
        # buffered for stdout goes to /dev/null, so the flush at exit cannot fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            sys.stdout = None
        return ExitStatus.OK
    return int(rv) if isinstance(rv, int) else ExitStatus.OK


def run() -> None:
    """The console script: ``main()``, then exit without tearing the heap down.

    A big run leaves millions of objects (ruleset, caches, paths); freeing them one by one at
    interpreter exit took 0.12-0.15 s of a 3 s ``explain --summary``. Everything the commands
    write is closed by then (files are written in ``with`` blocks; child processes joined), so
    only the standard streams need flushing.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the reader went away (`| head`): nothing left to say
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
