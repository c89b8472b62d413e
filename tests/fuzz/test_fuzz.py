"""Fuzzing every reader and the CLI: damaged fixtures (a fixed mutation corpus) and hypothesis.

What must hold for any input: no exception other than RuletraceError from a reader (detect +
read, the CLI's entry), the CLI exits 0, 1 or 2 (simulate also 3-5, its fates) with no traceback, and each case finishes
within a time limit and a memory limit (the worker runs under RLIMIT_AS, alarm per case).
Deterministic (fixed seeds, derandomized hypothesis) and bounded: CI runs all of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ruletrace.errors import RuletraceError
from ruletrace.rulesets import load_ruleset
from ruletrace.sources import detect
from ruletrace.sources.stats import ReadStats

from .corpus import ROOT, mutants

SEED = 20261203
READER_MUTANTS_PER_FILE = 3
CLI_CASES = 24  # of the mutants, every k-th goes through the CLI commands too
BATCH_TIMEOUT = 300  # whole batch, a last resort: the worker has its own per-case alarm


def run_worker(cases: list[tuple[str, bytes]], mode: str, tmp: Path) -> list[dict]:
    d = tmp / f"cases-{mode}"
    d.mkdir()
    names = {}
    for i, (name, data) in enumerate(cases):
        fn = f"{i:05d}"
        (d / fn).write_bytes(data)
        names[fn] = name
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), COLUMNS="100")
    r = subprocess.run([sys.executable, "-m", "tests.fuzz.worker", str(d), mode], capture_output=True,
                       text=True, timeout=BATCH_TIMEOUT, cwd=str(ROOT), env=env)
    assert r.returncode == 0, f"worker died (exit {r.returncode}): {r.stderr[-3000:]}"
    found = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    for f in found:
        f["case"] = names.get(f["case"], f["case"])
    return found


def _report(found: list[dict]) -> str:
    return "\n\n".join(f"{f['case']} (as {f['as']}):\n{f['failure']}" for f in found[:10])


def test_mutated_fixtures_through_every_reader(tmp_path: Path) -> None:
    cases = mutants(SEED, READER_MUTANTS_PER_FILE)
    assert len(cases) > 200  # the corpus is there (fixtures and examples)
    found = run_worker(cases, "readers", tmp_path)
    assert not found, _report(found)


def test_mutated_fixtures_through_the_cli(tmp_path: Path) -> None:
    cases = mutants(SEED + 1, 1)
    step = max(1, len(cases) // CLI_CASES)
    found = run_worker(cases[::step][:CLI_CASES], "cli", tmp_path)
    assert not found, _report(found)


# --- hypothesis: lines built from each format's own words ---------------------------------

_WORDS = [
    "TRACE:", "trace", "id", "12345678", "ip", "ip6", "inet", "filter", "nat", "raw", "INPUT", "FORWARD",
    "rule", "policy", "return", "packet:", "verdict", "(verdict", "accept)", "jump", "# handle", "meta",
    "mark", "PACKET:", "EVENT:", "IN=eth0", "OUT=", "SRC=10.0.0.1", "DST=10.0.0.2", "LEN=60", "TOS=0x00",
    "PREC=0x00", "TTL=64", "ID=1", "DF", "PROTO=TCP", "PROTO=UDP", "PROTO=ICMP", "SPT=1", "DPT=80",
    "SEQ=1", "ACK=0", "WINDOW=1", "RES=0x00", "SYN", "URGP=0", "TYPE=8", "CODE=0", "OPT", "(", ")", "[", "]",
    "filter:INPUT:rule:1", "raw:PREROUTING:policy:2", "Jan", " 1", "00:00:00", "kernel:", "[12.5]",
    "6,1,1,-;", "2026-01-01T00:00:00+00:00", "{", "}", '"MESSAGE":', '"oob.prefix":', ",", ":", "=",
    "Chain", "(policy", "ACCEPT)", "num", "target", "prot", "opt", "source", "destination", "--",
    "0.0.0.0/0", "*filter", "-A", "-j", "COMMIT", ":INPUT", "[0:0]", '{"nftables":', "\u00b2", "\u0663",
    "9" * 5000, "\x00", "\t", "\r", "'", '"', "\\",
]
_line = st.lists(st.sampled_from(_WORDS) | st.text(max_size=8), max_size=40).map(" ".join)
_text = st.lists(_line, min_size=1, max_size=12).map("\n".join)


def _read_all(fmt: str | None, data: bytes, tmp: Path) -> None:
    p = tmp / "h.in"
    p.write_bytes(data)
    try:
        for ev in detect.read_any([str(p)], fmt, stats=lambda *a: ReadStats()):
            ev.fields
    except RuletraceError:
        pass


@pytest.mark.property
@settings(max_examples=150, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=_text, fmt=st.sampled_from([None, *detect.FORMATS]))
def test_generated_lines_through_every_trace_reader(tmp_path: Path, text: str, fmt: str | None) -> None:
    _read_all(fmt, text.encode("utf-8", "surrogatepass"), tmp_path)


@pytest.mark.property
@settings(max_examples=150, derandomize=True, deadline=None)
@given(text=_text, head=st.sampled_from(["", "*filter\n", "Chain INPUT (policy ACCEPT)\nnum  target     prot opt source               destination\n",
                                         '{"nftables": [']))
def test_generated_text_through_every_ruleset_reader(text: str, head: str) -> None:
    try:
        load_ruleset("h", text=head + text)
    except RuletraceError:
        pass


_json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=6)
_json = st.recursive(_json_scalar, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.sampled_from(["expr", "match", "left", "right", "op", "jump", "target",
                                                         "counter", "packets", "bytes", "payload", "protocol",
                                                         "field", "meta", "key", "accept", "set", "prefix",
                                                         "addr", "len", "handle", "chain"]), inner, max_size=4),
                     max_leaves=20)


@pytest.mark.property
@settings(max_examples=200, derandomize=True, deadline=None)
@given(expr=_json, handle=_json)
def test_generated_nft_json_rules(expr, handle) -> None:
    doc = {"nftables": [{"table": {"family": "ip", "name": "t"}},
                        {"chain": {"family": "ip", "table": "t", "name": "c"}},
                        {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": handle, "expr": expr}}]}
    try:
        rs = load_ruleset("n", text=json.dumps(doc))
    except RuletraceError:
        return
    assert len(rs.tables["t"]["c"].rules) == 1  # a damaged rule is kept, not dropped


_ulogd_keys = st.sampled_from(["oob.prefix", "oob.time.sec", "oob.time.usec", "oob.family", "ip.totlen", "ip.tos",
                               "ip.fragoff", "ip.protocol", "ip6.payloadlen", "src_port", "dest_port", "oob.mark",
                               "oob.ifindex_in", "tcp.seq", "icmp.type", "src_ip"])


@pytest.mark.property
@settings(max_examples=200, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=st.dictionaries(_ulogd_keys, _json, max_size=10))
def test_generated_ulogd_records(tmp_path: Path, obj: dict) -> None:
    obj["oob.prefix"] = "TRACE: filter:INPUT:rule:1"
    _read_all("ulogd-json", json.dumps(obj).encode(), tmp_path)
