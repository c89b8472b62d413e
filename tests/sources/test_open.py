"""open_input: paths, stdin, FIFOs, compression by magic bytes, and the content checks."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
import threading
from pathlib import Path

import pytest

from ruletrace import inputs as opener
from ruletrace.errors import RuletraceError
from ruletrace.inputs import (
    check_not_ruleset,
    check_text,
    is_binary,
    looks_like_ruleset,
    open_input,
    sniff,
)
from ruletrace.model import Origin
from ruletrace.sources.kernel_log import read_events

KERN_LOG = Path(__file__).parents[1] / "fixtures" / "kernel_log" / "kern.log"
CORPUS_SAVE = Path(__file__).parents[1] / "fixtures" / "corpus" / "legacy-v4.save"


def lines_of(path: str) -> list[bytes]:
    stream, _ = open_input(path)
    with stream:
        return list(stream)


def test_plain_file(tmp_path: Path) -> None:
    stream, name = open_input(str(KERN_LOG))
    with stream:
        assert name == str(KERN_LOG)
        head = sniff(stream)
        assert head == KERN_LOG.read_bytes()[: len(head)] and len(head) == KERN_LOG.stat().st_size
        assert stream.read() == KERN_LOG.read_bytes()  # sniffing consumed nothing


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress],
                         ids=["gzip", "bzip2", "xz"])
def test_compressed_by_magic_not_name(tmp_path: Path, compress) -> None:
    p = tmp_path / "kern.log.1"  # no .gz suffix
    p.write_bytes(compress(KERN_LOG.read_bytes()))
    stream, _ = open_input(str(p))
    with stream:
        assert sniff(stream).startswith(b"Nov 23 03:49:10 rtkl-r kernel:")
        assert stream.read() == KERN_LOG.read_bytes()


def test_gzip_concatenated_members(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(gzip.compress(b"a\n") + gzip.compress(b"b\n"))
    assert lines_of(str(p)) == [b"a\n", b"b\n"]


def test_truncated_gzip_ends_the_stream(tmp_path: Path) -> None:
    data = KERN_LOG.read_bytes() * 20
    p = tmp_path / "cut.gz"
    p.write_bytes(gzip.compress(data)[:-200])
    stream, _name = open_input(str(p))
    with stream:
        got = stream.read()
        assert data.startswith(got) and 0 < len(got) < len(data)
        assert stream.raw.truncated  # type: ignore[attr-defined]


def test_corrupt_gzip_is_a_user_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.gz"
    bad = bytearray(gzip.compress(KERN_LOG.read_bytes()))
    for i in range(len(bad) // 2, len(bad) // 2 + 8):
        bad[i] ^= 0x55  # the CRC32 in the trailer no longer matches, if inflate gets that far
    p.write_bytes(bad)
    with pytest.raises(RuletraceError) as ei:
        stream, _ = open_input(str(p))
        stream.read()
    assert "corrupt gzip data" in str(ei.value) and ei.value.origin == Origin(str(p))


def test_missing_directory_and_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuletraceError, match="no such file") as ei:
        open_input(str(tmp_path / "nope.log"))
    assert str(ei.value) == f"{tmp_path / 'nope.log'}: no such file"
    with pytest.raises(RuletraceError, match="is a directory"):
        open_input(str(tmp_path))
    p = tmp_path / "secret.log"
    p.write_bytes(b"x\n")

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(opener, "open", deny, raising=False)  # we run as root: fake the EACCES
    with pytest.raises(RuletraceError, match="permission denied"):
        open_input(str(p))


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = gzip.compress(KERN_LOG.read_bytes())

    class Stdin:
        buffer = io.BufferedReader(io.BytesIO(data))

    monkeypatch.setattr(sys, "stdin", Stdin)
    stream, name = open_input("-")
    assert name == "-"
    with stream:
        evs = list(read_events(stream, name=name))
    assert len(evs) == 34 and evs[0].origin == Origin("-", 1)


def test_fifo_head_is_peekable(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = KERN_LOG.read_bytes() * 10  # more than one pipe buffer

    def writer() -> None:
        with open(fifo, "wb") as fh:
            for i in range(0, len(data), 1000):  # small writes: the reader sees short reads
                fh.write(data[i : i + 1000])
                fh.flush()

    t = threading.Thread(target=writer)
    t.start()
    try:
        stream, _ = open_input(str(fifo))
        with stream:
            assert len(sniff(stream)) == min(len(data), opener.SNIFF_SIZE)
            assert stream.read() == data
    finally:
        t.join(10)


def test_empty_file_and_no_trailing_newline(tmp_path: Path) -> None:
    p = tmp_path / "empty.log"
    p.write_bytes(b"")
    stream, _ = open_input(str(p))
    with stream:
        assert sniff(stream) == b"" and list(stream) == []
    p.write_bytes(b"a\nlast line")
    assert lines_of(str(p)) == [b"a\n", b"last line"]


def test_50_mb_line(tmp_path: Path) -> None:
    p = tmp_path / "huge.log"
    record = KERN_LOG.read_bytes().splitlines(keepends=True)[0]
    with open(p, "wb") as fh:
        fh.write(b"x" * (50 * 1024 * 1024) + b"\n")
        fh.write(record)
    stream, name = open_input(str(p))
    with stream:
        evs = list(read_events(stream, name=name))
    assert len(evs) == 1 and evs[0].origin.line == 2


def test_binary_check() -> None:
    assert is_binary(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00\x00\x00")  # a pcap header
    assert not is_binary(KERN_LOG.read_bytes())
    with pytest.raises(RuletraceError) as ei:
        check_text(b"ELF\x02\x01\x01\x00\x00", "a.out")
    assert str(ei.value) == "a.out: binary file, not a text log"
    check_text(b"plain text\n", "t.log")


def test_ruleset_instead_of_a_log() -> None:
    save = CORPUS_SAVE.read_bytes()
    assert looks_like_ruleset(save) == "iptables-save"
    with pytest.raises(RuletraceError) as ei:
        check_not_ruleset(save, "rules.v4")
    assert str(ei.value) == "rules.v4: looks like an iptables-save ruleset, not a trace log"
    assert looks_like_ruleset(b"table inet filter {\n\tchain input {\n") == "nft"
    assert looks_like_ruleset(KERN_LOG.read_bytes()) is None
    # a log that quotes a ruleset is still a log
    assert looks_like_ruleset(save + KERN_LOG.read_bytes()) is None
    check_not_ruleset(KERN_LOG.read_bytes(), "kern.log")
