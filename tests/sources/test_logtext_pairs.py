"""logtext._key_values (one quick regex over the whole field text) equals its reference, two
``_KV.findall`` calls either side of `` PROTO=`` checked against the count of "=", on every
kernel-log text the tests and examples hold, a generated kube log, the paste-mangled forms,
fuzzed bytes and random damaged lines."""

from __future__ import annotations

import random

import pytest

from ruletrace.logtext import _KV, _key_values, parse_fields
from tests.corpus_cases import kube_log
from tests.fuzz.corpus import mutants, seeds
from tests.mangle import mangler


def _reference(s: str, p: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]] | None:
    hk = _KV.findall(s[:p])
    tk = _KV.findall(s[p:])
    if len(hk) + len(tk) != s.count("="):
        return None
    return hk, tk


def _check(s: str) -> bool:
    """Compare on ``s`` and on its text from the first ``IN=``; True when _KV found pairs."""
    found = False
    for t in (s, s[s.find("IN="):] if "IN=" in s else s):
        p = t.find(" PROTO=")  # where _parse_regular cuts: s[p] is a space
        if p < 0:
            continue
        want = _reference(t, p)
        assert _key_values(t, p) == want, t
        found = found or bool(want and want[0])
    return found


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "=" in ln]


def test_every_fixture_and_example_line():
    n = 0
    for path in seeds():
        for ln in _lines(path.read_bytes().decode("utf-8", "replace")):
            n += _check(ln)
    assert n > 500  # the corpus really holds kernel-log texts


def test_a_generated_kube_log(tmp_path):
    _rules, log = kube_log(tmp_path)
    lines = _lines(log.read_text())
    assert len(lines) > 1000
    assert all(_check(ln) for ln in lines)


@pytest.mark.parametrize("mangle", [mangler.redact_mac_dots, mangler.redact_mac_xx, mangler.tabs_and_double_spaces,
                                    mangler.dmesg_T, mangler.hostname_prefix, mangler.syslog_prefix,
                                    mangler.truncate_tail, mangler.cut_mid_value, mangler.interleave_log_lines])
def test_paste_mangled_forms(tmp_path, mangle):
    _rules, log = kube_log(tmp_path, packets=60)
    n = sum(_check(ln) for ln in _lines(mangle(log.read_text())))
    assert n > 100


def test_fuzzed_files():
    for _name, data in mutants(seed=16, per_file=2):
        for ln in _lines(data.decode("utf-8", "replace")):
            _check(ln)


def test_random_damaged_lines():
    rng = random.Random(6)
    base = ("IN=eth0 OUT= MAC=52:54:00:6b:1c:0a:52:54:00:12:35:02:08:00 SRC=10.20.44.140 DST=192.168.10.11 "
            "LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=23130 DF PROTO=TCP SPT=43240 DPT=33241 SEQ=2821191553 ACK=0 "
            "WINDOW=64240 RES=0x00 SYN URGP=0 OPT (020405B40402080AD89FA1D90000000001030307) MARK=0x4000")
    pieces = [" ", "  ", "\t", "=", "==", "A", "Z", "a", "1", "SRC=", "xDST=9", "PROTO=", " PROTO=UDP", "\u00a0",
              "\u2460", "é", "[", "]", "(", ")", "...", "\n", "\x00", "MAC=", "1SPT=2"]
    agree_found = 0
    for _ in range(30_000):
        b = list(base)
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(b) + 1)
            op = rng.randrange(3)
            if op == 0:
                b.insert(i, rng.choice(pieces))
            elif op == 1 and i < len(b):
                del b[i]
            elif i < len(b):
                b[i] = rng.choice(pieces)
        s = "".join(b)
        agree_found += _check(s)
        parse_fields(s)  # and never a traceback
    assert agree_found > 1000


def test_the_quick_regex_is_taken_and_the_fallback_too():
    """Both branches run: a text where every pair follows a space, and one with a pair glued on
    after a digit (the quick regex misses it, _KV finds it: the reference decides)."""
    s = "IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=60 PROTO=TCP SPT=1 DPT=2"
    p = s.find(" PROTO=")
    assert _key_values(s, p) == ([("IN", "eth0"), ("OUT", ""), ("SRC", "10.0.0.1"), ("DST", "10.0.0.2"),
                                  ("LEN", "60")], [("PROTO", "TCP"), ("SPT", "1"), ("DPT", "2")])
    g = "IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=60 PROTO=TCP SPT=1 1DPT=2"
    assert _key_values(g, p) == _reference(g, p)
    assert _key_values(g, p) is not None and ("DPT", "2") in _key_values(g, p)[1]
