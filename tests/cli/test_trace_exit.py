"""`trace` exits 2 when its cleanup left something behind (docs/cli.md: a failed cleanup is
trouble), whatever else happened; a clean session keeps its status. No kernel: a stand-in tracer."""

from __future__ import annotations

from typing import ClassVar

import pytest

from ruletrace.cli import main
from ruletrace.cli import trace as cli_trace
from ruletrace.cli.status import ExitStatus


class StandInTracer:
    problems: ClassVar[list[str]] = []

    def __init__(self, *_a, **_k) -> None:
        self.fate = None
        self.native = False
        self.mode = "stand-in"
        self.sid = "0" * 32
        self.leftovers: list[object] = []  # packets explained at a signal's teardown
        self.stats = {"events": 0, "traced": 0, "arrived": 0, "overruns": 0, "gaps": 0, "not_shown": 0,
                      "over_cap": 0, "lost_steps": 0}

    def setup(self) -> None:
        pass

    def explanations(self, stop, limit):
        return iter(())

    def defer_signal(self, exc: BaseException) -> bool:
        return False

    def teardown(self, *, explain_open: bool = False) -> list[str]:
        return list(self.problems)


@pytest.fixture
def stand_in(monkeypatch):
    import ruletrace.live.tracer as lt

    monkeypatch.setattr(lt, "Tracer", StandInTracer)
    monkeypatch.setattr(cli_trace, "_enter_netns", lambda netns, pid: {})
    monkeypatch.setattr(cli_trace, "_offer_cleanup", lambda say, *, dry_run, clean: None)
    monkeypatch.setattr("ruletrace.live.accounting.summary", lambda stats, n, rate: "0 packet(s) shown")
    return StandInTracer


@pytest.mark.parametrize(("problems", "status"), [([], ExitStatus.FOUND_NOTHING),
                                                  (["nft delete table inet ruletrace_x: busy"], ExitStatus.ERROR)])
def test_a_failed_cleanup_exits_2(stand_in, monkeypatch, capsys, problems, status):
    monkeypatch.setattr(stand_in, "problems", problems)
    code = main(["trace", "-p", "tcp", "--dport", "80", "--count", "1"])
    err = capsys.readouterr().err
    assert code == status, err
    if problems:
        assert "cleanup problem: nft delete table inet ruletrace_x: busy" in err
        assert "run `ruletrace cleanup" in err
