"""Exit statuses of the ruletrace command."""

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    FOUND_NOTHING = 1  # ran, but no packet matched / nothing to explain
    ERROR = 2  # input the user can fix; the same code click uses for usage errors
    CTRL_C = 130  # 128 + SIGINT
