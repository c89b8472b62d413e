"""kernel_log_paths (reading and grouping fused, for summaries) gives the packets that
read_events + group_packets give, on every kernel-log form we have and on a mixed-up big log."""

from __future__ import annotations

import io
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ruletrace.correlate.group import group_packets
from ruletrace.fastpath.kernel_log_paths import PathReader, read_paths
from ruletrace.sources import kernel_log
from ruletrace.sources.stats import ReadStats

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
LOGS = sorted((FIXTURES / "kernel_log").glob("*.log")) + [
    FIXTURES / "kernel_log" / "journal.json",
    FIXTURES / "explain" / "seed003.log",
    FIXTURES / "nflog" / "kernel.log",
    *sorted((ROOT / "src" / "ruletrace" / "examples").glob("*/kernel.log")),
]


def _reference(data: bytes, window: int = 50_000) -> tuple[list, ReadStats]:
    st = ReadStats()
    events = kernel_log.read_events(io.BytesIO(data), name="t.log", stats=st)
    out = []
    for p in group_packets(events, window=window):
        e = p.events
        out.append((e[0].family, [(x.table, x.chain, x.kind, x.num) for x in e], e[0].origin.line,
                    e[-1].origin.line))
    return out, st


def _fused(data: bytes, window: int = 50_000) -> tuple[list, ReadStats]:
    st = ReadStats()
    out = []
    read_paths(io.BytesIO(data), name="t.log", stats=st, window=window,
               emit=lambda fam, steps, key, first, last: out.append((fam, list(steps), first, last)))
    return out, st


def _same(data: bytes, window: int = 50_000) -> tuple[list, ReadStats]:
    ref, rst = _reference(data, window)
    got, gst = _fused(data, window)
    assert sorted(got, key=lambda p: p[2:]) == sorted(ref, key=lambda p: p[2:])
    assert (gst.events, gst.skipped, gst.lines) == (rst.events, rst.skipped, rst.lines)
    assert gst.skipped_lines == rst.skipped_lines
    assert gst.log_lines == rst.log_lines
    return ref, rst


@pytest.mark.parametrize("path", LOGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_same_packets_as_read_events_and_group_packets(path: Path) -> None:
    ref, _ = _same(path.read_bytes())
    assert ref  # every fixture holds packets


def test_mixed_log_with_damage_and_a_small_window() -> None:
    """All fixtures interleaved line by line, some lines cut short, garbage and LOG lines between:
    restarts, expiry and the slow path all happen, and still the same packets come out."""
    rng = random.Random(5)
    streams = [p.read_bytes().splitlines(keepends=True) for p in LOGS]
    lines: list[bytes] = []
    while any(streams):
        s = rng.choice([s for s in streams if s])
        line = s.pop(0)
        r = rng.random()
        if r < 0.02:
            line = line[: rng.randrange(len(line))] + b"\n"
        elif r < 0.04:
            lines.append(b"Nov 23 03:49:00 node1 kernel: [1.0] DROP: IN=eth0 OUT= SRC=1.2.3.4 DST=5.6.7.8 LEN=40\n")
        elif r < 0.05:
            lines.append(b"\x00\xff garbage TRACE: nonsense\n")
        elif r < 0.07 and s:  # glued to the next record (after MARK=, too: kube lines have it)
            line = line.rstrip(b"\n") + s.pop(0)
        lines.append(line)
    ref, st = _same(b"".join(lines) + _kube(300), window=64)
    assert len(ref) > 200 and st.skipped > 5


def _kube(packets: int, glue: int = 0) -> bytes:
    """A generated kube-proxy NodePort log (MARK set and cleared mid-path, DNAT, forwarding);
    with ``glue``, every glue-th line is glued to the next one."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_kube.py"), "--small", "--packets",
                        str(packets), "--out", d], check=True, capture_output=True)
        data = (Path(d) / "kube.log").read_bytes()
    if glue:
        lines = data.splitlines(keepends=True)
        data = b"".join(x.rstrip(b"\n") if i % glue == glue - 1 else x for i, x in enumerate(lines))
    return data


def test_generated_kube_log() -> None:
    kube = _kube(400)
    ref, _ = _same(kube, window=300)
    assert len(ref) == 400
    # a packet whose halves are further apart than the window is two packets (expiry)
    one = (FIXTURES / "kernel_log" / "seed-003-80.log").read_bytes().splitlines(keepends=True)
    ref, _ = _same(b"".join(one[:3]) + kube + b"".join(one[3:]), window=300)
    assert len(ref) == 400 + len(_reference(b"".join(one))[0]) + 1
    # records glued after MARK= (and elsewhere) go the slow way, as in read_events
    ref, _st = _same(_kube(200, glue=7), window=300)
    assert len(ref) >= 200


def test_feeds_continue_line_numbers_and_admit_stops_new_packets() -> None:
    data = (FIXTURES / "kernel_log" / "seed-003-52000.log").read_bytes()
    lines = data.splitlines(keepends=True)
    cut = len(lines) // 2
    whole, _ = _fused(data)
    out = []
    reader = PathReader("t.log", lambda fam, steps, key, first, last: out.append((fam, list(steps), first, last)))
    reader.feed(io.BytesIO(b"".join(lines[:cut])), ReadStats())
    assert reader.lines == cut
    reader.feed(io.BytesIO(b"".join(lines[cut:])), ReadStats(), admit=lambda line: False)
    reader.finish()
    # the packets that started in the first part come out whole; none starts in the second
    assert out == [p for p in whole if p[2] <= cut]
    assert any(p[3] > cut for p in out) or all(p[3] <= cut for p in whole)


def test_lines_cut_inside_proto() -> None:
    """Lines ending inside PROTO= ("PROTO=T", "DF P") are cut short on both paths: the same
    packets, as many as in the whole log, and the same count of cut lines."""
    data = (ROOT / "src" / "ruletrace" / "examples" / "k8s-nodeport" / "kernel.log").read_bytes()
    lines = data.splitlines(keepends=True)
    ends = (rb"(ID=[0-9]+ (DF )?P).*", rb"(ID=[0-9]+ (DF )?PROTO=T).*")
    cut = [re.sub(ends[i % 2], rb"\1", x) if i % 3 == 1 else x for i, x in enumerate(lines)]
    ref, st = _same(b"".join(cut))
    whole, _ = _reference(data)
    assert [p[1] for p in ref] == [p[1] for p in whole]
    _, fst = _fused(b"".join(cut))
    assert st.cut == fst.cut == sum(a != b for a, b in zip(cut, lines, strict=True)) > 15
