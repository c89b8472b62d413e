"""The packet tree of ``explain`` on every core (fastpath/parallel_tree.py) writes byte for byte
what one process writes: the packets in order with their ids, a blank line between two, the reply
lookup across the blocks the processes share, the summary after them, the messages, warnings and
exit status; on clean, damaged and stale-ruleset logs, with filters, ``-v`` and other widths."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ruletrace.cli import main
from ruletrace.fastpath import parallel, parallel_tree
from ruletrace.pipeline import Run, load_rulesets
from tests.helpers import cli, example

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def answered(kube, tmp_path_factory):
    """Every tenth packet's trace cut after raw and mangle PREROUTING (UNKNOWN), its SYN-ACK logged
    25 packets later (raw OUTPUT): the reply lookup makes most of them delivered, across blocks."""
    import re

    rules, log = kube
    lines = log.read_bytes().splitlines(keepends=True)
    seqs = [re.search(rb" SEQ=(\d+)", line).group(1) for line in lines]
    order: dict[bytes, int] = {}
    for seq in seqs:
        order.setdefault(seq, len(order))
    seen: dict[bytes, int] = {}
    replies: dict[int, list[bytes]] = {}
    out = []
    for line, seq in zip(lines, seqs):
        i = order[seq]
        if i % 10 == 3:
            seen[seq] = seen.get(seq, 0) + 1
            if seen[seq] > 2:
                continue
            if seen[seq] == 1:
                f = dict(re.findall(rb" (SRC|DST|SPT|DPT)=(\S+)", line))
                replies.setdefault(i + 25, []).append(
                    line[: line.index(b"TRACE: ")]
                    + b"TRACE: raw:OUTPUT:policy:1 IN= OUT=eth0 SRC=%s DST=%s LEN=60 TOS=0x00 PREC=0x00 TTL=64 "
                      b"ID=0 DF PROTO=TCP SPT=%s DPT=%s SEQ=1 ACK=2 WINDOW=65160 RES=0x00 ACK SYN URGP=0 \n"
                    % (f[b"DST"], f[b"SRC"], f[b"DPT"], f[b"SPT"]))
        out.append(line)
        if b"raw:PREROUTING" in line and i in replies:
            out += replies.pop(i)
    p = tmp_path_factory.mktemp("answered") / "kube.log"
    p.write_bytes(b"".join(out))
    return rules, p


# (batch: packets a worker sends at once; slack: how far a worker's load may run ahead before a
# path moves: 0 and 1 move paths between the workers all the time)
@pytest.mark.parametrize("which,batch,slack,extra", [
    ("kube", 7, 400, ()), ("kube", 200, 0, ()), ("kube", 13, 1, ("-v",)), ("kube", 6, 5, ("--width", "61")),
    ("damaged", 5, 400, ()), ("damaged", 3, 1, ("-v",)), ("stale", 3, 2, ()),
    ("kube", 4, 3, ("--fate", "rejected")), ("kube", 9, 0, ("--match", "dport=5432")),
    ("kube", 2, 1, ("--packet", "5", "--packet", "77")), ("kube", 1, 400, ("--packet", "9")),
    ("kube", 8, 1, ("--match", "dport=1")),  # nothing kept: no output, exit status 1
    # UNKNOWN packets answered by later packets, which other processes lay out
    ("answered", 1, 0, ()), ("answered", 7, 400, ()), ("answered", 4, 1, ("--fate", "delivered")),
    ("answered", 3, 2, ("--fate", "unknown", "-v")), ("answered", 5, 0, ("--match", "proto=tcp", "--width", "200")),
    ("docker-portmap", 1, 0, ()), ("k8s-nodeport", 2, 1, ("-v",)),
])
def test_parallel_output_equals_sequential(request, capsys, monkeypatch, which, batch, slack, extra):
    rules, log = request.getfixturevalue(which) if which in ("kube", "damaged", "stale", "answered") else example(which)
    args = ("explain", "-r", str(rules), str(log), "--no-color", "--width", "120", *extra)
    code, seq, seq_err = cli(capsys, monkeypatch, False, *args)
    monkeypatch.setattr(parallel_tree, "BATCH", batch)
    monkeypatch.setattr(parallel_tree, "SLACK", slack)
    used: list[int] = []
    real = parallel_tree.write

    def spy(*a, **kw):
        used.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(parallel_tree, "write", spy)
    code2, par, par_err = cli(capsys, monkeypatch, True, *args)
    assert used, "the parallel path did not run"
    assert (code2, par, par_err) == (code, seq, seq_err)
    if "dport=1" in extra:
        assert code == 1 and seq == ""
    else:
        assert seq.startswith("packet ")
        if "--packet" not in extra or extra.count("--packet") > 1:  # several packets: the summary after them
            assert "\n\npacket " in seq and " packets" in seq.rsplit("\n\npacket ", 1)[1]
    if which == "damaged":  # the run-wide counts and warnings come from the processes too
        assert "damaged line(s) were skipped" in seq_err and "lines skipped" in seq
    if which == "stale":
        assert "the ruleset does not fit" in seq_err
    if which == "answered" and "unknown" not in extra:  # answered by other workers' packets too
        assert seq.count("proves that it got through") == 28


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_any_number_of_workers(kube, workers, monkeypatch):
    from rich.console import Console

    from ruletrace.render.tree import render_explanations
    from ruletrace.render.tree_plain import PlainTree

    rules, log = kube
    rs = load_rulesets([str(rules)])
    seq = io.StringIO()
    n = render_explanations(Run(rs, [str(log)]).explanations(), Console(file=seq, width=100, color_system=None))
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    monkeypatch.setattr(parallel_tree, "BATCH", 11)
    par = io.StringIO()
    run = Run(rs, [str(log)])
    plain = PlainTree(100)
    got = run.write_tree_parallel(par, plain.render, workers=workers)
    assert got is not None and got[0] == n == 300 and got[1].packets == 300
    assert par.getvalue() == seq.getvalue() and run.packets_total == 300


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_dealing_by_path(workers):
    """Each packet goes to exactly one worker, the same in every process; a path stays with its
    worker while the loads are close, and one path that most packets take is shared out."""
    import random

    from ruletrace.fastpath.parallel_tree import Dealer

    rnd = random.Random(workers)
    paths = [("big",) if rnd.random() < 0.8 else (rnd.randrange(50),) for _ in range(5000)]
    dealers = [Dealer(k, workers, slack=30) for k in range(workers)]
    taken: list[list[int]] = [[] for _ in range(workers)]
    for n, path in enumerate(paths):
        mine = [d(path) for d in dealers]
        assert mine.count(True) == 1
        taken[mine.index(True)].append(n)
    sizes = [len(t) for t in taken]
    assert max(sizes) - min(sizes) <= 31
    from ruletrace.fastpath import parallel_tree as pt

    few = [Dealer(k, workers, slack=30) for k in range(workers)]
    old = pt.OWNERS_MAX
    pt.OWNERS_MAX = 7  # forgetting the paths' workers: still each packet to exactly one worker
    try:
        assert all([d(p) for d in few].count(True) == 1 for p in paths)
    finally:
        pt.OWNERS_MAX = old
    loose = [Dealer(k, workers, slack=10**9) for k in range(workers)]
    owner = {}
    for path in paths:
        k = [d(path) for d in loose].index(True)
        assert owner.setdefault(path, k) == k  # never moved


def test_where_it_does_not_apply(kube, tmp_path):
    import gzip

    rules, log = kube
    rs = load_rulesets([str(rules)])
    assert Run(rs, [str(log)]).write_tree_parallel(io.StringIO(), str) is None  # small: one process
    gz = tmp_path / "kube.log.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    for run in (Run(rs, [str(log)], detail=False), Run(rs, [str(log), str(log)]), Run(rs, [str(gz)])):
        assert run.write_tree_parallel(io.StringIO(), str) is None


def test_colour_is_laid_out_by_rich_in_one_process(kube, capsys, monkeypatch):
    """With colour the tree is rich's (render/tree.py): the parallel path, plain text only, stays out."""
    rules, log = kube
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(parallel_tree, "write", lambda *a, **kw: pytest.fail("the parallel tree ran with colour"))
    assert main(["explain", "-r", str(rules), str(log), "--packet", "3"]) == 0
    assert "\x1b[" in capsys.readouterr().out


def test_a_worker_error_is_one_line(kube, monkeypatch):
    from ruletrace.errors import RuletraceError

    rules, log = kube
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    run = Run(load_rulesets([str(rules)]), [str(log)])

    def broken(e):
        raise ValueError("boom")

    with pytest.raises(RuletraceError, match="worker process failed: ValueError: boom"):
        run.write_tree_parallel(io.StringIO(), broken)
