"""``explain --json`` / ``--jsonl`` on every core (fastpath/parallel_json.py) write byte for byte
what one process writes: the packets in order with their ids, the reply lookup across the slices
the processes read, each table line before the packet that first uses an entry, the document's
tables, summary, sources and warnings; on clean, damaged and stale-ruleset logs, with filters.
fastpath/slice_packets.py gives each slice the packets one pass over the whole file groups there."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruletrace.fastpath import parallel, parallel_json, slice_packets
from ruletrace.pipeline import Run, load_rulesets
from tests.helpers import cli, example

ROOT = Path(__file__).resolve().parents[2]


def _small_slices(monkeypatch, slice_bytes: int, around: int = 100_000, block: int = 7) -> None:
    """Slices of ``slice_bytes``; ``around`` bytes read before and after each (the kube log's packets
    span up to ~25 KB: 60 lines of 3 packets in flight)."""
    monkeypatch.setattr(parallel_json, "SLICE_BYTES", slice_bytes)
    monkeypatch.setattr(parallel_json, "BLOCK", block)
    monkeypatch.setattr(slice_packets, "WARM_BYTES", around)
    monkeypatch.setattr(slice_packets, "OVERFLOW_BYTES", around)


@pytest.mark.parametrize("form", ["--json", "--jsonl"])
@pytest.mark.parametrize("which,slice_bytes,extra", [
    ("kube", 20_000, ()), ("kube", 300_000, ()), ("kube", 1 << 30, ()), ("damaged", 15_000, ()),
    ("stale", 50_000, ()), ("kube", 40_000, ("--fate", "rejected")), ("kube", 30_000, ("--match", "dport=5432")),
    # UNKNOWN packets answered by later packets, in slices after theirs
    ("docker-portmap", 600, ()), ("docker-portmap", 2000, ()), ("k8s-nodeport", 500, ()),
    ("k8s-nodeport", 1500, ("--fate", "delivered")),
])
def test_parallel_output_equals_sequential(request, capsys, monkeypatch, form, which, slice_bytes, extra):
    rules, log = request.getfixturevalue(which) if which in ("kube", "damaged", "stale") else example(which)
    args = ("explain", "-r", str(rules), str(log), form, *extra)
    code, seq, seq_err = cli(capsys, monkeypatch, False, *args)
    _small_slices(monkeypatch, slice_bytes, block=5 if slice_bytes < 1 << 30 else 200)
    used: list[int] = []
    real = parallel_json.write

    def spy(*a, **kw):
        used.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(parallel_json, "write", spy)
    code2, par, par_err = cli(capsys, monkeypatch, True, *args)
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
    _small_slices(monkeypatch, 25_000, block=11)
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


@pytest.fixture(scope="module")
def replies(kube, tmp_path_factory):
    """The kube log with every 7th packet's trace cut after its first 3 lines (UNKNOWN) and, ~40
    packets later (~250 KB: in a later slice), a SYN-ACK back from the client's destination."""
    import re

    rules, log = kube
    lines = log.read_bytes().splitlines(keepends=True)
    by_port: dict[bytes, list[int]] = {}
    for i, line in enumerate(lines):
        m = re.search(rb" SPT=(\d+) ", line)
        if m:
            by_port.setdefault(m.group(1), []).append(i)
    drop, add = set(), {}
    for n, (_port, idx) in enumerate(sorted(by_port.items(), key=lambda kv: kv[1][0])):
        if n % 7 == 3 and len(idx) > 3:
            drop.update(idx[3:])
            first = lines[idx[0]].decode()
            f = dict(re.findall(r" (SRC|DST|SPT|DPT|ID)=(\S+)", first))
            reply = (first.replace(f"SRC={f['SRC']} DST={f['DST']}", f"SRC={f['DST']} DST={f['SRC']}")
                     .replace(f"SPT={f['SPT']} DPT={f['DPT']}", f"SPT={f['DPT']} DPT={f['SPT']}")
                     .replace(f"ID={f['ID']} ", "ID=4242 ").replace(" SYN URGP", " ACK SYN URGP"))
            add.setdefault(min(idx[0] + 700, len(lines) - 1), []).append(reply.encode())
    out = []
    for i, line in enumerate(lines):
        if i not in drop:
            out.append(line)
        out.extend(add.get(i, ()))
    p = tmp_path_factory.mktemp("replies") / "kube.log"
    p.write_bytes(b"".join(out))
    return rules, p


@pytest.mark.parametrize("slice_bytes,extra", [(20_000, ()), (90_000, ()), (20_000, ("--fate", "forwarded"))])
def test_replies_from_later_slices_are_found(replies, capsys, monkeypatch, slice_bytes, extra):
    """UNKNOWN packets answered by packets in later slices: the notes name the answering packet
    by its file-wide id, and the fate is what the reply proves, as one process says."""
    rules, log = replies
    args = ("explain", "-r", str(rules), str(log), "--jsonl", *extra)
    code, seq, seq_err = cli(capsys, monkeypatch, False, *args)
    assert seq.count("proves that it got through") > 20
    _small_slices(monkeypatch, slice_bytes)
    code2, par, par_err = cli(capsys, monkeypatch, True, *args)
    assert (code2, par, par_err) == (code, seq, seq_err)


@pytest.mark.parametrize("slice_bytes,shrink", [(9_000, 0), (33_333, 0), (250_000, 0), (200_000, 4)])
def test_slices_hold_the_sequential_packets(kube, damaged, monkeypatch, slice_bytes, shrink):
    """fastpath/slice_packets.py: the slices' packets, in order, are group_packets' over the whole file
    (same events, lines and fields); each slice's counts add up to one reader's."""
    from ruletrace.correlate.group import group_packets
    from ruletrace.sources.kernel_log import read_events
    from ruletrace.sources.stats import ReadStats

    monkeypatch.setattr(slice_packets, "WARM_BYTES", 100_000)
    monkeypatch.setattr(slice_packets, "OVERFLOW_BYTES", 100_000)
    for _rules, log in (kube, damaged):
        whole = ReadStats()
        with open(log, "rb") as f:
            want = [[(str(ev.origin), ev.table, ev.chain, ev.num, ev.raw) for ev in p.events]
                    for p in group_packets(read_events(f, name=str(log), stats=whole))]
        cuts, lines = slice_packets.cut(str(log), slice_bytes, shrink)
        assert len(cuts) > 2 and cuts[-1] == log.stat().st_size
        got, parts = [], []
        for i in range(len(cuts) - 1):
            st = slice_packets.SliceStats(lines[i] + 1, lines[i + 1] + 1)
            ids = []
            for p in slice_packets.packets(str(log), cuts, lines, i, st):
                ids.append(p.id)
                got.append([(str(ev.origin), ev.table, ev.chain, ev.num, ev.raw) for ev in p.events])
            assert ids == list(range(1, len(ids) + 1))
            parts.append(st)
        assert got == want
        total = slice_packets.merge(parts)
        assert (total.events, total.skipped, total.skipped_lines, total.warnings) == (
            whole.events, whole.skipped, whole.skipped_lines, whole.warnings)
