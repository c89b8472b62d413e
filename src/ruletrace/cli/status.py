"""Exit statuses of the ruletrace command: the one home of the numbers (docs/cli.md shows ``TABLE``).

Every command returns a member of ``ExitStatus`` (or ``signal_status``); tests compare against
the names, and a test checks that docs/cli.md's table is ``TABLE``.
"""

from __future__ import annotations

from enum import IntEnum

from ..model import Fate


class ExitStatus(IntEnum):
    OK = 0
    FOUND_NOTHING = 1  # ran, but no packet matched / nothing to explain
    DIFFERENT = 1  # diff: the two paths differ; simulate --compare: a prediction parts ways (as diff(1))
    ERROR = 2  # input the user can fix, or trouble; the same code click uses for usage errors
    DROPPED = 3  # simulate: the packet would be dropped
    REJECTED = 4  # simulate: the packet would be rejected
    UNKNOWN = 5  # simulate: the fate cannot be told
    NO_SOCKET = 6  # simulate: delivered, but no socket takes it (answered with a TCP reset / ICMP port unreachable)
    CTRL_C = 130  # 128 + SIGINT


SIGNAL_BASE = 128  # a command ended by signal N exits with 128 + N, as a shell reports it

# simulate: exit status per predicted fate
FATE_STATUS: dict[Fate, ExitStatus] = {
    Fate.DELIVERED: ExitStatus.OK, Fate.FORWARDED: ExitStatus.OK, Fate.SENT: ExitStatus.OK,
    Fate.DROPPED: ExitStatus.DROPPED, Fate.REJECTED: ExitStatus.REJECTED, Fate.UNKNOWN: ExitStatus.UNKNOWN,
}


def simulate_status(fate: Fate, kernel_drop: str | None = None) -> ExitStatus:
    """simulate's exit status: the fate's (FATE_STATUS), or NO_SOCKET when the packet reaches the host
    but no socket takes it (``kernel_drop``: the predicted drop reason)."""
    if fate is Fate.DELIVERED and kernel_drop == "NO_SOCKET":
        return ExitStatus.NO_SOCKET
    return FATE_STATUS[fate]


def signal_status(signum: int) -> int:
    """The exit status of a command that a signal ended (after its cleanup): 128 + N."""
    return SIGNAL_BASE + int(signum)


# (status, commands, meaning): what docs/cli.md's table says, row by row
TABLE: list[tuple[str, str, str]] = [
    ("0", "all", "success: packets explained, paths the same (`diff`), the packet gets through (`simulate`)"),
    ("1", "explain, report, trace", "ran, but no packet matched the filters / none was traced"),
    ("1", "diff", "the two paths differ (as diff(1))"),
    ("1", "simulate --compare", "a traced packet and its prediction part ways"),
    ("2", "all", "trouble: bad input (one line naming file:line), a usage error, a failed cleanup"),
    ("3", "simulate", "the packet would be DROPPED"),
    ("4", "simulate", "the packet would be REJECTED"),
    ("5", "simulate", "the fate is UNKNOWN (the ruleset does not tell)"),
    ("6", "simulate", "DELIVERED, but no socket listens on the port (answered with a TCP reset / ICMP port unreachable)"),
    ("128+N", "trace", "ended by signal N after cleaning up: 130 SIGINT (Ctrl-C), 143 SIGTERM, 129 SIGHUP"),
]

__all__ = ["FATE_STATUS", "SIGNAL_BASE", "TABLE", "ExitStatus", "signal_status", "simulate_status"]
