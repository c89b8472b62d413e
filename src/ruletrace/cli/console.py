"""The two consoles (stdout for results, stderr for messages) and the progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn


class OutputClosed(Exception):
    """The reader of standard output went away (``ruletrace … | head``): not an error.

    Not an OSError: click turns EPIPE into exit status 1 before ``cli.main`` returns."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich would exit with status 1 here; stop the command instead (see cli.main)."""
        self.quiet = True
        raise OutputClosed()


def make_consoles(*, no_color: bool = False, width: int | None = None) -> tuple[Console, Console]:
    """stdout and stderr consoles; colour only on a terminal and never with --no-color / NO_COLOR."""
    from ..render.theme import THEME

    no_color = no_color or bool(os.environ.get("NO_COLOR"))
    kw: dict[str, Any] = {"no_color": no_color, "width": width, "highlight": False, "emoji": False, "theme": THEME}
    out = _Console(**kw)
    err = _Console(stderr=True, **kw)
    if no_color:
        out = _Console(color_system=None, **kw)
        err = _Console(stderr=True, color_system=None, **kw)
    return out, err


@contextmanager
def progress_for(err: Console, total: int) -> Iterator[Callable[[int], None] | None]:
    """A bytes-read progress bar on stderr when it is a terminal and the input is large."""
    if not err.is_terminal or total < 20_000_000:
        yield None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as prog:
        task = prog.add_task("reading", total=total)
        done = 0
        step = max(total // 200, 1 << 20)
        pending = 0

        def advance(n: int) -> None:
            nonlocal done, pending
            pending += n
            if pending >= step:
                done += pending
                pending = 0
                prog.update(task, completed=done)

        yield advance


def say_read(err: Console, path: str, fmt: str | None) -> None:
    """"read FILE as FORMAT" (explain, report, diff, simulate --compare), as soon as the format is
    known: before the results it is about; one line, never wrapped."""
    from ..render.theme import clean  # file names carry text from the user

    err.print(f"ruletrace: read {clean(path)} as {clean(fmt or '?')}", style="dim", markup=False, highlight=False,
              soft_wrap=True)
    err.file.flush()
