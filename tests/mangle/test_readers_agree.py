"""Issue 12 "Done when": the kernel-log reader (read_events + group_packets, what full explanations
use) and the --summary reader (kernel_log_paths) give the same packets on every lab capture and
every paste form of it, damaged ones included (tabs, cut lines, '...', interleaved LOG lines)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import ruletrace
from ruletrace.correlate.group import group_packets
from ruletrace.fastpath.kernel_log_paths import read_paths
from ruletrace.sources import kernel_log
from ruletrace.sources.stats import ReadStats
from tests.mangle import mangler as M

EXAMPLES = Path(ruletrace.__file__).parent / "examples"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CAPTURES = sorted(EXAMPLES.glob("*/kernel.log")) + [FIXTURES / "explain" / "seed003.log"]
FORMS = {
    "clean": lambda t: t, "mac-dots": M.redact_mac_dots, "mac-xx": M.redact_mac_xx, "dmesg-T": M.dmesg_T,
    "hostname": M.hostname_prefix, "syslog": M.syslog_prefix, "log-lines": M.interleave_log_lines,
    "tabs": M.tabs_and_double_spaces, "truncated": M.truncate_tail, "cut-mid-value": M.cut_mid_value,
    "cut-every-2nd": lambda t: M.cut_mid_value(t, every=2), "cut-at-dpt": lambda t: M.cut_mid_value(t, 3, " DPT="),
    "cut-in-id": lambda t: M.cut_mid_value(t, 3, " ID="),  # before PROTO=: kept, a partial ident
    "cut-before-id": lambda t: M.cut_mid_value(t, 4, " TTL="),  # no packet id left: skipped
}


def _reference(data: bytes) -> tuple[list, ReadStats]:
    st = ReadStats()
    out = [(p.events[0].family, [(x.table, x.chain, x.kind, x.num) for x in p.events],
            p.events[0].origin.line, p.events[-1].origin.line)
           for p in group_packets(kernel_log.read_events(io.BytesIO(data), name="t.log", stats=st))]
    return out, st


def _fused(data: bytes) -> tuple[list, ReadStats]:
    st = ReadStats()
    out: list = []
    read_paths(io.BytesIO(data), name="t.log", stats=st,
               emit=lambda fam, steps, key, first, last: out.append((fam, list(steps), first, last)))
    return out, st


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.parent.name if p.name == "kernel.log" else p.name)
def test_both_readers_give_the_same_packets(path, form):
    data = FORMS[form](path.read_text(errors="replace")).encode()
    ref, rst = _reference(data)
    got, gst = _fused(data)
    assert sorted(got, key=lambda p: p[2:]) == sorted(ref, key=lambda p: p[2:])
    assert (gst.events, gst.skipped, gst.skipped_lines, gst.log_lines, gst.cut, gst.cut_lines) == \
        (rst.events, rst.skipped, rst.skipped_lines, rst.log_lines, rst.cut, rst.cut_lines)
    assert ref and rst.events > 0
