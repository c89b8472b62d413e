"""Runs fuzz cases in this process under a memory limit and a per-case time limit.

Usage (the tests start it): ``python -m tests.fuzz.worker CASES_DIR MODE`` where CASES_DIR holds
one file per case and MODE is ``readers`` or ``cli``. Prints one JSON line per failure:
an exception other than RuletraceError, a case over the time limit, or (CLI) an exit status
other than 0/1/2 or a traceback on stderr. Exit status 0 when it ran (failures or not).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path

MEMORY = 1 << 30  # address space for the whole worker
CASE_SECONDS = 10  # generous: a hang guard, not a benchmark


class CaseTimeout(BaseException):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def read_trace(path: str) -> None:
    from ruletrace.sources import detect
    from ruletrace.sources.stats import ReadStats

    for ev in detect.read_any([path], stats=lambda *a: ReadStats()):
        ev.fields  # fields are parsed lazily: make them
        ev.origin


def read_ruleset(path: str) -> None:
    from ruletrace.rulesets import load_ruleset

    load_ruleset(path)


def run_cli(argv: list[str]) -> tuple[int, str]:
    from ruletrace.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def cli_argvs(path: str, tmp: str) -> list[list[str]]:
    """The commands a damaged file goes through: as a trace, as a ruleset, as --from-json."""
    return [
        ["explain", path],
        ["explain", "--summary", "--json", path],
        ["simulate", "-r", path, "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.2", "--dport", "80"],
        ["report", "--from-json", path, "-o", os.path.join(tmp, "r.html")],
        ["report", path, "-o", os.path.join(tmp, "r2.html")],
    ]


def main() -> int:
    from ruletrace.errors import RuletraceError

    cases_dir, mode = Path(sys.argv[1]), sys.argv[2]
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    signal.signal(signal.SIGALRM, _alarm)
    for case in sorted(cases_dir.iterdir()):
        path = str(case)
        jobs = ([("trace", read_trace), ("ruleset", read_ruleset)] if mode == "readers"
                else [(" ".join(a[:1]), a) for a in cli_argvs(path, str(cases_dir.parent))])
        for what, job in jobs:
            signal.alarm(CASE_SECONDS)
            failure = None
            try:
                if mode == "readers":
                    try:
                        job(path)
                    except RuletraceError:
                        pass
                else:
                    code, err = run_cli(job)
                    # simulate's exit status tells the fate: 3 dropped, 4 rejected, 5 unknown
                    ok = (0, 1, 2, 3, 4, 5) if what == "simulate" else (0, 1, 2)
                    if code not in ok or "Traceback" in err:
                        failure = f"exit {code}: {err[-600:]}"
            except CaseTimeout:
                failure = f"over {CASE_SECONDS} s"
            except MemoryError:
                failure = "MemoryError"
            except BaseException:
                failure = traceback.format_exc()[-1500:]
            finally:
                signal.alarm(0)
            if failure is not None:
                print(json.dumps({"case": case.name, "as": what, "failure": failure}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
