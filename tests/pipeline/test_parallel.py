"""The multi-process summary equals the sequential one, whatever the cut points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ruletrace.analyze.summary import Summary
from ruletrace.errors import RuletraceError
from ruletrace.fastpath import parallel
from ruletrace.pipeline import Run, load_rulesets, pick_ruleset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    out = tmp_path_factory.mktemp("kube")
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_kube.py"), "--small", "--packets", "600",
                    "--out", str(out)], check=True, capture_output=True)
    return out / "kube.rules", out / "kube.log"


@pytest.fixture(scope="module")
def damaged(kube, tmp_path_factory):
    """The same log with every 701st line cut short and garbage lines in between."""
    rules, log = kube
    lines = log.read_bytes().splitlines(keepends=True)
    out = []
    for i, line in enumerate(lines):
        if i % 701 == 5:
            out.append(line[: line.find(b"TRACE: ") + 20] + b"\n")
        else:
            out.append(line)
        if i % 997 == 3:
            out.append(b"Nov 23 03:49:00 node1 systemd[1]: Started something.\n")
    p = tmp_path_factory.mktemp("damaged") / "kube.log"
    p.write_bytes(b"".join(out))
    return rules, p


@pytest.fixture(scope="module")
def stale(kube, tmp_path_factory):
    """The same log against a ruleset that lacks some rules (older than the log): misfits."""
    rules, log = kube
    lines = rules.read_text().splitlines(keepends=True)
    p = tmp_path_factory.mktemp("stale") / "kube.rules"
    p.write_text("".join(x for i, x in enumerate(lines) if not (x.startswith("-A KUBE-SEP-") and i % 3 == 0)))
    return p, log


def _sequential(rules, log):
    rs = load_rulesets([str(rules)])
    summ = Summary()
    run = Run(rs, [str(log)], detail=False)
    for e in run.explanations():
        summ.add(e)
    return summ, run


@pytest.mark.parametrize("workers,slices", [(2, 2), (2, 16), (3, 3), (3, 24), (7, 7)])
@pytest.mark.parametrize("which", ["kube", "damaged", "stale"])
def test_parallel_summary_equals_sequential(request, which, workers, slices, monkeypatch):
    rules, log = request.getfixturevalue(which)
    seq, run = _sequential(rules, log)
    monkeypatch.setattr(parallel, "OVERFLOW_BYTES", 400 * 300)
    size = log.stat().st_size
    monkeypatch.setattr(parallel, "SLICE_MIN", size // slices)
    cuts = parallel._slices(size, workers)
    assert cuts[0] == 0 and cuts[-1] == size and cuts == sorted(set(cuts))
    assert slices // 2 <= len(cuts) - 1 <= slices + 1
    rs = load_rulesets([str(rules)])
    par, skipped, _events, misfits = parallel.summarize(str(log), lambda: rs, pick_ruleset, workers=workers)
    seq_misfits = sum(ex.misfit_packets for ex in run._explainers.values())
    if which == "damaged":
        assert run.skipped > 5 and seq.packets >= 590
    elif which == "stale":
        assert 0 < seq_misfits < seq.packets
    else:
        assert run.skipped == 0 and seq.packets == 600
    assert par.to_json() == seq.to_json()
    assert skipped == run.skipped
    assert misfits == seq_misfits


def test_usable_only_for_large_plain_kernel_logs(kube, tmp_path, monkeypatch):
    rules, log = kube
    assert not parallel.usable(str(log), None)  # small
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    assert parallel.usable(str(log), None)
    gz = tmp_path / "k.gz"
    import gzip

    gz.write_bytes(gzip.compress(log.read_bytes()[:100000]))
    assert not parallel.usable(str(gz), None)
    assert not parallel.usable(str(rules), None)


def test_read_failures_are_reported_with_the_file(kube, monkeypatch):
    rules, log = kube
    rs = load_rulesets([str(rules)])
    real = parallel._work
    parent = os.getpid()
    monkeypatch.setattr(parallel, "SLICE_MIN", log.stat().st_size // 8)  # both processes read

    def fails_in_worker(args, progress=None):
        if os.getpid() != parent:
            raise ValueError("bad slice")
        return real(args, progress)

    def fails_in_parent(args, progress=None):
        if os.getpid() == parent:
            raise OSError(5, "Input/output error")
        return real(args, progress)

    for broken, message in ((fails_in_worker, "reading in a worker process failed: ValueError: bad slice"),
                            (fails_in_parent, "cannot read: Input/output error")):
        monkeypatch.setattr(parallel, "_work", broken)
        with pytest.raises(RuletraceError) as e:
            parallel.summarize(str(log), lambda: rs, pick_ruleset, workers=2)
        assert str(e.value) == f"{log}: {message}"


def test_progress_counts_every_byte_once(kube, monkeypatch):
    """The bar gets the parent's reading as it happens and the workers' through a shared
    counter: together exactly the file, whichever process read which slice."""
    rules, log = kube
    rs = load_rulesets([str(rules)])
    size = log.stat().st_size
    monkeypatch.setattr(parallel, "SLICE_MIN", size // 16)
    got: list[int] = []
    parallel.summarize(str(log), lambda: rs, pick_ruleset, workers=3, progress=got.append)
    assert sum(got) == size and len(got) > 2 and min(got) >= 0


def test_run_summary_takes_the_parallel_pass_only_where_it_applies(kube, monkeypatch):
    """``Run.summary()`` is the one place that picks the fast path: it does for a large plain kernel
    log read for a summary, with the sequential result; not with a packet filter or detail wanted."""
    from ruletrace.pipeline import PacketFilter

    rules, log = kube
    seq, run = _sequential(rules, log)
    seq.add_skipped(run.skipped)
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    calls: list[str] = []
    real = parallel.summarize
    monkeypatch.setattr(parallel, "summarize", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    rs = load_rulesets([str(rules)])
    got = Run(rs, [str(log)], detail=False).summary()
    assert calls == [str(log)]
    assert got.to_json() == seq.to_json()
    calls.clear()
    assert Run(rs, [str(log)], detail=True).summary().packets == 600
    assert Run(rs, [str(log)], detail=False, packet_filter=PacketFilter(ids={1, 2})).summary().packets == 2
    assert calls == []


def test_parallel_summary_tells_iptables_from_ip6tables_as_the_sequential_does(tmp_path, monkeypatch):
    """iptables-save + ip6tables-save and a log of IPv4 and IPv6 packets ending at filter:OUTPUT's
    policy: two tables, two deciders, on every core as in one process (the fast path's path steps now
    carry their packet's family)."""
    from tests.render.test_shared_table_names import _TAIL4, _TAIL6, V4, V6

    (tmp_path / "v4.save").write_text(V4)
    (tmp_path / "v6.save").write_text(V6)
    lines = []
    for i in range(1, 1500):
        if i % 3:
            lines += [f"[  100.{i:06d}] TRACE: filter:OUTPUT:rule:1 {_TAIL4.format(id=i)}",
                      f"[  100.{i:06d}] TRACE: filter:OUTPUT:policy:2 {_TAIL4.format(id=i)}"]
        else:
            lines.append(f"[  100.{i:06d}] TRACE: filter:OUTPUT:policy:3 {_TAIL6.format(id=i)}")
    log = tmp_path / "t.log"
    log.write_text("\n".join(lines) + "\n")
    rules = [str(tmp_path / "v4.save"), str(tmp_path / "v6.save")]
    seq = Summary()
    for e in Run(load_rulesets(rules), [str(log)], detail=False).explanations():
        seq.add(e)
    monkeypatch.setattr(parallel, "SLICE_MIN", log.stat().st_size // 6)
    rs = load_rulesets(rules)
    par, *_ = parallel.summarize(str(log), lambda: rs, pick_ruleset, workers=2)
    assert par.to_json() == seq.to_json()
    assert [(d["family"], d["count"]) for d in seq.to_json()["deciding"]] == [("ipv4", 1000), ("ipv6", 499)]
