"""Any input: bounded memory and time, one line (a RuletraceError) instead of a traceback.

Regression tests for issue 10 ("never worse than found"). Hang guards run the reader in a
subprocess with a generous timeout: they catch quadratic time, they do not measure speed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.sources import detect, nflog_pcap
from ruletrace.sources.stats import ReadStats

FIXTURES = Path(__file__).parents[1] / "fixtures"
KERN = (FIXTURES / "kernel_log" / "kern.log").read_bytes().splitlines(keepends=True)[0]
PCAP = (FIXTURES / "nflog" / "nflog.pcap").read_bytes()
PCAPNG = (FIXTURES / "nflog" / "nflog.pcapng").read_bytes()
ULOGD = (FIXTURES / "ulogd" / "ulogd.json").read_bytes().splitlines()[0]


def run_limited(code: str, timeout: float = 20, mem: int = 1 << 30, env: dict | None = None):
    """Run ``code`` in a fresh interpreter under an address-space limit; fail on timeout."""
    prog = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))\n" + textwrap.dedent(code)
    e = dict(os.environ, **(env or {}))
    try:
        return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=timeout, env=e)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s (quadratic time?)")


# --- 4. memory -------------------------------------------------------------------------


def test_gzip_bomb_is_read_in_bounded_memory(tmp_path: Path) -> None:
    # 3 GB of zeros without a newline compress to ~3 MB; the whole used to end up in memory
    p = tmp_path / "bomb.gz"
    z = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    p.write_bytes(z * 48)  # 48 members: 3 GiB decompressed
    r = run_limited(f"""
        from ruletrace.inputs import open_input
        s, _ = open_input({str(p)!r})
        n = sum(len(line) for line in s)
        print(n, s.raw.cut_lines)
    """, timeout=120, mem=600 << 20)
    assert r.returncode == 0, r.stderr[-2000:]
    n, cut = map(int, r.stdout.split())
    assert n == 16 << 20 and cut == 1  # one line, cut to RULETRACE_MAX_LINE


def test_long_line_is_cut_with_a_warning_and_later_lines_read(tmp_path: Path) -> None:
    p = tmp_path / "long.log"
    p.write_bytes(b"x" * (3 << 20) + b"\n" + KERN)
    st = ReadStats()
    os.environ["RULETRACE_MAX_LINE"] = "1M"
    try:
        evs = list(detect.read_any([str(p)], "kernel-log", stats=lambda *_: st))
    finally:
        del os.environ["RULETRACE_MAX_LINE"]
    assert len(evs) == 1 and evs[0].origin.line == 2
    assert len(st.warnings) == 1 and "1 line(s) longer than 1 MiB" in st.warnings[0] and "byte 0" in st.warnings[0]


@pytest.mark.parametrize("reader", ["ruleset", "ifmap", "report"])
def test_dev_zero_ends_with_one_line(reader: str) -> None:
    code = {
        "ruleset": "from ruletrace.rulesets import load_ruleset as f; f('/dev/zero')",
        "ifmap": "from ruletrace.sources.nflog_pcap import load_ifmap as f; f('/dev/zero')",
        "report": "from ruletrace.cli.report import JsonPackets as J; list(J('/dev/zero'))",
    }[reader]
    r = run_limited(f"""
        from ruletrace.errors import RuletraceError
        try:
            {code}
        except RuletraceError as e:
            print("ERR", e)
    """, timeout=60, mem=1 << 30, env={"RULETRACE_MAX_INPUT": "32M"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ERR /dev/zero: ") and "larger than 32 MiB" in r.stdout
    assert "RULETRACE_MAX_INPUT" in r.stdout


def test_read_limited_refuses_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ruletrace.inputs import read_limited

    p = tmp_path / "f"
    p.write_bytes(b"a" * 5000)
    monkeypatch.setenv("RULETRACE_MAX_INPUT", "4K")
    with pytest.raises(RuletraceError, match="larger than 4,096 bytes"):
        read_limited(str(p), "ruleset")
    monkeypatch.setenv("RULETRACE_MAX_INPUT", "5000")
    assert read_limited(str(p), "ruleset") == b"a" * 5000
    monkeypatch.setenv("RULETRACE_MAX_INPUT", "lots")
    with pytest.raises(RuletraceError, match="RULETRACE_MAX_INPUT='lots'"):
        read_limited(str(p), "ruleset")


def test_journal_message_as_a_huge_integer_is_not_allocated() -> None:
    from ruletrace.sources import kernel_log

    # the JSON is parsed only when '"MESSAGE":[' is on the line: here a duplicate key, the last wins
    line = b'{"MESSAGE":[1],"MESSAGE":1099511627776}\n'  # 1 TiB
    r = run_limited(f"""
        from ruletrace.sources import kernel_log
        print(kernel_log.looks_like({line!r}))
    """, mem=1 << 30)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-1000:]
    assert kernel_log.looks_like(line) is False


# --- 5. time ---------------------------------------------------------------------------

ADVERSARIAL = {
    # the pattern each one broke: logtext._KV, kernel_log_records._KMSG_RE, nft_monitor rule tail,
    # xtables_monitor._TRACE, detect._XT_TRACE, wireshark_csv._INFO_PORTS
    "kernel-log": [b"Jan  1 00:00:00 h kernel: TRACE: filter:INPUT:rule:1 IN=x PROTO=TCP " + b"A" * 300_000,
                   b"TRACE: " + b"1," * 150_000, b"1,1," * 75_000 + b" TRACE: filter:INPUT:rule:1 IN=x"],
    "nft-monitor": [b"trace id 12345678 ip filter INPUT rule x" + b" (verdict " * 30_000],
    "xtables-monitor": [b" TRACE: 2 ead7b103 filter:INPUT:rule:0x6:JUMP:WEB x" + b" " * 300_000 + b"y",
                        b" TRACE: 1 a " + b"a:a:rule" * 37_000],
    "wireshark-csv": [b'No.,Prefix,Info\n1,"TRACE: filter:INPUT:rule:1","' + b"1" * 300_000 + b'"'],
    "ulogd-json": [b'{"oob.prefix":"TRACE: filter:INPUT:rule:1","x":"' + b"A" * 300_000 + b'"}'],
}


@pytest.mark.parametrize("fmt,i", [(f, i) for f, v in ADVERSARIAL.items() for i in range(len(v))])
def test_300_kb_adversarial_line_finishes(tmp_path: Path, fmt: str, i: int) -> None:
    p = tmp_path / "adv"
    p.write_bytes(ADVERSARIAL[fmt][i] + b"\n")
    r = run_limited(f"""
        from ruletrace.errors import RuletraceError
        from ruletrace.sources import detect
        from ruletrace.sources.stats import ReadStats
        try:
            detect.detect(open({str(p)!r}, "rb").read(), "adv")
        except RuletraceError:
            pass
        for ev in detect.read_any([{str(p)!r}], {fmt!r}, stats=lambda *a: ReadStats()):
            ev.fields
        print("done")
    """, timeout=20)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]


# --- 6. one line, not a traceback ------------------------------------------------------


def read(fmt: str, data: bytes, stats=None) -> list:
    return list(detect.reader(fmt)(io.BufferedReader(io.BytesIO(data)), name="in", stats=stats))


def test_wireshark_csv_under_64_bytes(tmp_path: Path) -> None:
    p = tmp_path / "small.csv"
    p.write_bytes(b'No.,Prefix\n1,"TRACE: filter:INPUT:rule:1"\n')
    evs = list(detect.read_any([str(p)]))
    assert [(e.table, e.chain, e.num) for e in evs] == [("filter", "INPUT", 1)]


def test_wireshark_csv_field_over_128_kib_is_a_broken_row() -> None:
    data = b'No.,Prefix\n1,"' + b"x" * (200 << 10) + b'"\n2,"TRACE: filter:INPUT:rule:1"\n'
    st = ReadStats()
    evs = read("wireshark-csv", data, st)
    assert len(evs) == 1 and st.skipped == 1
    with pytest.raises(RuletraceError, match="unreadable CSV row"):
        read("wireshark-csv", data)


@pytest.mark.parametrize("value", ["[1]", '"x"', "Infinity", "1e999"])
def test_ulogd_non_numbers_where_numbers_belong(value: str) -> None:
    obj = json.loads(ULOGD)
    bad = []
    for key in ("ip.tos", "ip6.payloadlen", "oob.time.usec", "oob.time.sec", "oob.family", "ip.fragoff"):
        line = json.dumps(obj)[:-1] + f', "{key}": {value}}}'
        st = ReadStats()
        try:
            evs = read("ulogd-json", line.encode() + b"\n", st)
        except RuletraceError:
            continue
        for e in evs:
            assert e.ts is None or 0 <= e.ts < 2**35
        bad.append(key)
    assert bad  # at least some are read (with the odd value dropped or the record counted)


def test_ulogd_inf_tos_is_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from ruletrace.sources import ulogd_json

    monkeypatch.setattr(ulogd_json, "_loads", json.loads)  # without orjson "Infinity" parses
    obj = json.loads(ULOGD)
    obj["ip.tos"] = 1e308 * 10
    st = ReadStats()
    assert read("ulogd-json", json.dumps(obj).encode(), st) == [] and st.skipped == 1


def test_nft_monitor_meta_mark_without_value() -> None:
    data = (b"trace id 12345678 ip filter INPUT packet: iif \"lo\" ip saddr 1.1.1.1 tcp dport 1\n"
            b"trace id 12345678 ip filter INPUT policy accept meta mark\n")
    st = ReadStats()
    evs = read("nft-monitor", data, st)
    assert [e.verdict for e in evs] == ["accept"] and st.skipped == 1


@pytest.mark.parametrize("line", [
    b"Jan  1 00:00:00 h kernel: TRACE: filter:INPUT:rule:" + b"9" * 5000 + b" IN=x",
    b"\xe2\x91\xa0 TRACE: filter:INPUT:rule:1 IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 LEN=1 TOS=0x00 PREC=0x00 TTL=1 ID=1 PROTO=UDP",
    b"[" + b"9" * 400 + b".0] TRACE: filter:INPUT:rule:1 IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 LEN=1 TOS=0x00 PREC=0x00 TTL=1 ID=1 PROTO=UDP SPT=1 DPT=2 LEN=9",
    b'{"MESSAGE":"TRACE: filter:INPUT:rule:1 IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 LEN=1 TOS=0x00 PREC=0x00 TTL=1 ID=1 PROTO=UDP SPT=1 DPT=2 LEN=9","__REALTIME_TIMESTAMP":"' + b"9" * 5000 + b'"}',
])
def test_kernel_log_huge_numbers(line: bytes) -> None:
    st = ReadStats()
    for e in read("kernel-log", line + b"\n", st):
        assert e.ts is None or 0 <= e.ts < 2**35
        e.fields


def test_nft_monitor_huge_handle() -> None:
    line = b"trace id 12345678 ip filter INPUT rule accept # handle " + b"9" * 5000 + b" (verdict accept)\n"
    st = ReadStats()
    evs = read("nft-monitor", line, st)
    assert len(evs) + st.skipped == 1


def test_ifmap_unicode_digit() -> None:
    with pytest.raises(RuletraceError, match="INDEX NAME"):
        nflog_pcap.parse_ifmap("\u00b2 eth0\n")
    with pytest.raises(RuletraceError, match="ip -j link"):
        nflog_pcap.parse_ifmap('[{"ifindex": "' + "9" * 5000 + '", "ifname": "x"}]')


def test_pcapng_block_announcing_4_gb() -> None:
    # the block after the interface description claims 0xFFFFFFFC bytes
    shb_len = struct.unpack_from("<I", PCAPNG, 4)[0]
    idb_len = struct.unpack_from("<I", PCAPNG, shb_len + 4)[0]
    at = shb_len + idb_len
    data = PCAPNG[: at + 4] + struct.pack("<I", 0xFFFFFFFC) + PCAPNG[at + 8 :]
    r = run_limited(f"""
        import io
        from ruletrace.errors import RuletraceError
        from ruletrace.sources import nflog_pcap
        try:
            list(nflog_pcap.read_events(io.BytesIO({data!r}), name="big.pcapng"))
        except RuletraceError as e:
            print("ERR", e)
    """, mem=1 << 30)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ERR big.pcapng:3: block 3: bad block length 4294967292")


# --- 11. a capture cut off at the end ---------------------------------------------------


@pytest.mark.parametrize("data,records", [(PCAP, 25), (PCAPNG, None)])
def test_cut_capture_keeps_every_good_record_and_warns(data: bytes, records) -> None:
    whole = list(nflog_pcap.read_events(io.BytesIO(data), name="c"))
    st = ReadStats()
    evs = list(nflog_pcap.read_events(io.BytesIO(data[:-30]), name="c", stats=st))
    assert len(evs) == len(whole) - 1 and (records is None or len(evs) == records)
    assert len(st.warnings) == 1 and "truncated" in st.warnings[0] and " at byte " in st.warnings[0]
    assert st.skipped == 0


def test_cli_cut_capture_exits_normally(tmp_path: Path) -> None:
    p = tmp_path / "cut.pcap"
    p.write_bytes(PCAP[:-30])
    r = subprocess.run([sys.executable, "-m", "ruletrace", "explain", "--summary", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    err = " ".join(r.stderr.split())  # the console wraps long lines
    assert "warning: c" not in err and "record 26: truncated" in err and "at byte" in err
