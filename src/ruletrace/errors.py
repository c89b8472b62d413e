"""The one error type for input the user can fix."""

from __future__ import annotations

from .model import Origin


class RuletraceError(Exception):
    """Input the user can fix: unparsable file, unknown format, missing privilege.

    Rendered as one line, ``path:line: message``; the CLI turns it into exit status 2.
    """

    def __init__(self, message: str, *, origin: Origin | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.origin = origin

    def __str__(self) -> str:
        o = self.origin
        if o is None:
            return self.message
        where = f"{o}: "  # path:line[:col]
        return where + self.message
