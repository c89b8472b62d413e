"""Small builders for tests: trace events from TRACE tags and field dicts."""

from __future__ import annotations

from ruletrace.model import Origin, StepKind, TraceEvent


def ev(tag: str, ident=("p1",), *, line: int | None = None, packet_id=None, verdict=None, **fields: str) -> TraceEvent:
    """TraceEvent from 'table:chain:kind:num' plus kernel-log fields."""
    table, chain, kind, num = tag.split(":")
    return TraceEvent(
        table, chain, StepKind(kind), int(num),
        ident=ident, packet_id=packet_id, verdict=verdict,
        origin=Origin("test.log", line), source="test", fields=dict(fields), family="ipv4",
    )


def path(tags: str, ident=("p1",), **fields: str) -> list[TraceEvent]:
    """Events for a whitespace-separated list of tags, all with the same fields."""
    return [ev(t, ident, **fields) for t in tags.split()]


class BackgroundTrace:
    """``python -m ruletrace trace ARGS`` in the background, stderr read until it says it is tracing.

    ``on_line`` sees every stderr line read while starting (e.g. to pick up the session id).
    """

    def __init__(self, *args: str, env: dict | None = None, timeout: float = 30.0, stdin=None) -> None:
        import subprocess
        import sys
        import time

        self.p = subprocess.Popen([sys.executable, "-m", "ruletrace", "trace", *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, stdin=stdin)
        self.err: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.p.stderr.readline()
            if not line:
                break
            self.err.append(line)
            self.on_line(line)
            if "tracing (" in line:
                return
        self.p.kill()
        _out, rest = self.p.communicate()
        raise AssertionError("the trace did not start:\n" + "".join(self.err) + (rest or ""))

    def on_line(self, line: str) -> None:
        pass

    def communicate(self, timeout: float) -> tuple[int, str, str]:
        """Wait for the end: (exit status, stdout, all of stderr); a trace that does not end is killed."""
        import subprocess

        try:
            out, err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            _out, err = self.p.communicate()
            raise AssertionError("the trace did not end:\n" + "".join(self.err) + err) from None
        return self.p.returncode, out, "".join(self.err) + err


def example(name: str):
    """The first ruleset and trace of a bundled example."""
    from ruletrace.cli.options import example_paths

    rules, logs = example_paths(name)
    return rules[0], logs[0]


def cli(capsys, monkeypatch, parallel_on: bool, *args: str) -> tuple[int, str, str]:
    """``ruletrace ARGS`` in this process, the parallel fast paths allowed at any size or never."""
    from ruletrace.cli import main
    from ruletrace.fastpath import parallel

    monkeypatch.setattr(parallel, "MIN_BYTES", 1 if parallel_on else 1 << 62)
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err
