"""``ruletrace man``: the manual page, generated from the command line itself (roff, man(7) macros).

Generated, never written by hand: every visible command with its usage, help and options,
the exit status table (status.TABLE) and the environment. So it cannot fall behind the CLI.
``ruletrace man | man -l -`` reads it; docs/cli.md says how to install it.
"""

from __future__ import annotations

import inspect
import sys

import click

from .status import TABLE

ENVIRONMENT = [
    ("NO_COLOR", "when set (to anything), no colours."),
    ("RULETRACE_MAX_INPUT", "the largest input read, in bytes (a bigger file is refused, naming it)."),
    ("RULETRACE_MAX_LINE", "the longest input line, in bytes."),
    ("RULETRACE_STATE_DIR", "where trace keeps its session state files (default /run/ruletrace)."),
    ("RULETRACE_NO_DROP_REASONS", "when 1, trace does not start bpftrace for kernel drop reasons."),
]


def roff(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, non-ASCII as ``\\[uXXXX]`` (groff
    without preconv reads bytes), no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(ch if ord(ch) < 128 else f"\\[u{ord(ch):04X}]" for ch in text)
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def _paragraphs(help_text: str) -> list[str]:
    """click help text as roff paragraphs: a "\\b" block (an example, a list) line by line as
    written (``.nf``: no filling), any other block filled."""
    out = []
    for block in inspect.cleandoc(help_text or "").split("\n\n"):
        raw = [ln.rstrip() for ln in block.splitlines() if ln.strip()]
        if raw and raw[0].strip() == "\b":
            if raw[1:]:
                out.append(".nf\n" + roff("\n".join(raw[1:])) + "\n.fi")
        elif raw:
            out.append(roff(" ".join(ln.strip() for ln in raw)))
    return out


def _command(ctx: click.Context, name: str, cmd: click.Command, lines: list[str]) -> None:
    sub = click.Context(cmd, info_name=name, parent=ctx)
    pieces = " ".join(cmd.collect_usage_pieces(sub))
    lines += [f'.SS "{roff(sub.command_path)} {roff(pieces)}"']
    for para in _paragraphs(cmd.help or ""):
        lines += [para, ".PP"]
    for param in cmd.get_params(sub):
        rec = param.get_help_record(sub)
        if rec is None:
            continue
        lines += [".TP", f"\\fB{roff(rec[0])}\\fR", roff(rec[1] or "")]
    if isinstance(cmd, click.Group):
        for sub_name in cmd.list_commands(sub):
            child = cmd.get_command(sub, sub_name)
            if child is not None and not child.hidden:
                _command(sub, sub_name, child, lines)


def manpage(cli: click.Group, version: str) -> str:
    """The whole page for ``cli`` (the ruletrace group)."""
    ctx = click.Context(cli, info_name="ruletrace")
    paras = _paragraphs(cli.help or "")
    lines = [
        f'.TH RULETRACE 1 "" "ruletrace {roff(version)}" "User Commands"',
        ".SH NAME",
        "ruletrace \\- " + (paras[0] if paras else "explain netfilter TRACE output"),
        ".SH SYNOPSIS",
        ".B ruletrace",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
    ]
    for para in paras[1:]:
        lines += [para, ".PP"]
    lines += [".SH OPTIONS"]
    for param in cli.get_params(ctx):
        rec = param.get_help_record(ctx)
        if rec is not None:
            lines += [".TP", f"\\fB{roff(rec[0])}\\fR", roff(rec[1] or "")]
    lines += [".SH COMMANDS"]
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        if cmd is not None and not cmd.hidden:
            _command(ctx, name, cmd, lines)
    lines += [".SH EXIT STATUS"]
    for status, commands, meaning in TABLE:
        lines += [".TP", f"\\fB{roff(status)}\\fR ({roff(commands)})", roff(meaning.replace("`", ""))]
    lines += [".SH ENVIRONMENT"]
    for var, meaning in ENVIRONMENT:
        lines += [".TP", f"\\fB{var}\\fR", roff(meaning)]
    lines += [".SH SEE ALSO", "iptables(8), iptables\\-save(8), nft(8), ip\\-netns(8)",
              ".PP", "The documentation in the project's docs/ folder: cli.md, trace.md, sources.md, report.md."]
    return "\n".join(lines) + "\n"


@click.command("man")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write the page to FILE (e.g. /usr/local/share/man/man1/ruletrace.1) instead of stdout.")
def man(output) -> int:
    """Print ruletrace's manual page (roff): `ruletrace man | man -l -` reads it."""
    from .. import __version__
    from . import cli

    text = manpage(cli, __version__)
    if output:  # the report's safe write: no symlink followed, renamed into place, one line on failure
        from .safe_write import write_output

        write_output(output, text, what="the manual page")
    else:
        sys.stdout.write(text)
    return 0
