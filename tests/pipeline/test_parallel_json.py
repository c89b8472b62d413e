"""``explain --json`` / ``--jsonl`` on every core (fastpath/parallel_json.py) write byte for byte
what one process writes: the packets in order with their ids, the reply lookup across the blocks
the processes share, each table line before the packet that first uses an entry, the document's
tables, summary, sources and warnings; on clean, damaged and stale-ruleset logs, with filters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ruletrace.cli import main
from ruletrace.cli.options import example_paths
from ruletrace.fastpath import parallel, parallel_json
from ruletrace.pipeline import Run, load_rulesets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    out = tmp_path_factory.mktemp("kube")
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_kube.py"), "--small", "--packets", "300",
                    "--out", str(out)], check=True, capture_output=True)
    return out / "kube.rules", out / "kube.log"


@pytest.fixture(scope="module")
def damaged(kube, tmp_path_factory):
    """The same log with lines cut short and lines of other programs in between: skipped lines."""
    rules, log = kube
    out = []
    for i, line in enumerate(log.read_bytes().splitlines(keepends=True)):
        out.append(line[: line.find(b"TRACE: ") + 20] + b"\n" if i % 301 == 5 else line)
        if i % 397 == 3:
            out.append(b"Nov 23 03:49:00 node1 systemd[1]: Started something.\n")
    p = tmp_path_factory.mktemp("damaged") / "kube.log"
    p.write_bytes(b"".join(out))
    return rules, p


@pytest.fixture(scope="module")
def stale(kube, tmp_path_factory):
    """The log against a ruleset that lacks some of its rules: misfit warnings."""
    rules, log = kube
    lines = rules.read_text().splitlines(keepends=True)
    p = tmp_path_factory.mktemp("stale") / "kube.rules"
    p.write_text("".join(x for i, x in enumerate(lines) if not (x.startswith("-A KUBE-SEP-") and i % 3 == 0)))
    return p, log


def _example(name: str):
    rules, logs = example_paths(name)
    return rules[0], logs[0]


def _cli(capsys, monkeypatch, parallel_on: bool, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(parallel, "MIN_BYTES", 1 if parallel_on else 1 << 62)
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("form", ["--json", "--jsonl"])
@pytest.mark.parametrize("which,block,extra", [
    ("kube", 7, ()), ("kube", 200, ()), ("damaged", 5, ()), ("stale", 3, ()),
    ("kube", 4, ("--fate", "rejected")), ("kube", 9, ("--match", "dport=5432")),
    # UNKNOWN packets answered by later packets, whose blocks other processes explain
    ("docker-portmap", 1, ()), ("k8s-nodeport", 1, ()), ("k8s-nodeport", 2, ("--fate", "delivered")),
])
def test_parallel_output_equals_sequential(request, capsys, monkeypatch, form, which, block, extra):
    rules, log = request.getfixturevalue(which) if which in ("kube", "damaged", "stale") else _example(which)
    args = ("explain", "-r", str(rules), str(log), form, *extra)
    code, seq, seq_err = _cli(capsys, monkeypatch, False, *args)
    monkeypatch.setattr(parallel_json, "BLOCK", block)
    used: list[int] = []
    real = parallel_json.write

    def spy(*a, **kw):
        used.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(parallel_json, "write", spy)
    code2, par, par_err = _cli(capsys, monkeypatch, True, *args)
    assert used, "the parallel path did not run"
    assert (code2, par, par_err) == (code, seq, seq_err)
    assert seq.count("\n") > 3
    if which == "damaged":  # the run-wide counts and warnings come from the processes too
        assert "damaged line(s) were skipped" in seq_err
    if which == "stale":
        assert "the ruleset does not fit" in seq_err


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_any_number_of_workers(kube, workers, monkeypatch):
    import io

    from ruletrace.render.json import write_jsonl

    rules, log = kube
    rs = load_rulesets([str(rules)])
    seq = io.StringIO()
    write_jsonl(Run(rs, [str(log)]).explanations(), seq)
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    monkeypatch.setattr(parallel_json, "BLOCK", 11)
    par = io.StringIO()
    run = Run(rs, [str(log)])
    assert run.write_json_parallel(par, jsonl=True, workers=workers) == 300
    assert par.getvalue() == seq.getvalue() and run.packets_total == 300


def test_where_it_does_not_apply(kube, tmp_path):
    import gzip
    import io

    rules, log = kube
    rs = load_rulesets([str(rules)])
    assert Run(rs, [str(log)]).write_json_parallel(io.StringIO(), jsonl=True) is None  # small: one process
    gz = tmp_path / "kube.log.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    for run in (Run(rs, [str(log)], detail=False), Run(rs, [str(log), str(log)]), Run(rs, [str(gz)])):
        assert run.write_json_parallel(io.StringIO(), jsonl=True) is None


def test_a_worker_error_is_one_line(kube, monkeypatch):
    import io

    from ruletrace.errors import RuletraceError

    rules, log = kube
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    run = Run(load_rulesets([str(rules)]), [str(log)])

    def broken(e):
        raise ValueError("boom")

    with pytest.raises(RuletraceError, match="worker process failed: ValueError: boom"):
        run.write_json_parallel(io.StringIO(), jsonl=False, annotate=broken)
