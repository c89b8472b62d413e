"""Fast paths of the live tracer's receiving (no kernel): each equal to the reference it names."""

from __future__ import annotations

import random

from ruletrace.live import netlink as nl


def _msg(mtype: int, body: bytes, *, length: int | None = None) -> bytes:
    n = 16 + len(body) if length is None else length
    return nl.NLMSG_HDR.pack(n, mtype, 0, 1, 0) + body + b"\0" * (nl.align4(len(body)) - len(body))


def _reference(data: bytes, mtype: int) -> list[bytes]:
    return [body for t, _f, _s, body in nl.split_messages(data) if t == mtype]


def test_bodies_of_equals_split_messages_on_whole_cut_and_damaged_datagrams():
    rnd = random.Random(7)
    cases = [b"", b"\0" * 15, _msg(0x400, b""), _msg(0x400, b"abc") + _msg(3, b"") + _msg(0x400, b"x" * 9)]
    for _ in range(400):
        parts = [_msg(rnd.choice((0x400, 0x401, 3)), rnd.randbytes(rnd.randrange(0, 40))) for _ in range(rnd.randrange(1, 9))]
        data = b"".join(parts)
        cases.append(data)
        cases.append(data[: rnd.randrange(len(data) + 1)])  # cut short anywhere
        bad = bytearray(data)
        at = rnd.randrange(len(parts))
        off = sum(len(p) for p in parts[:at])
        bad[off:off + 4] = rnd.choice((0, 5, 15, 10**6)).to_bytes(4, "little" if nl.HOST_ORDER == "<" else "big")
        cases.append(bytes(bad))  # a length below the header or past the end stops both walks
    for data in cases:
        assert nl.bodies_of(data, 0x400) == _reference(data, 0x400)
    assert nl.bodies_of(_msg(0x400, b"ab") + _msg(0x400, b"cdefg"), 0x400) == [b"ab", b"cdefg"]  # by hand
