"""logtext.address_ok: the table-driven check equals the plain rule (dotted IPv4 of four 1-3 digit
ASCII octets below 256; IPv6 of hex digits, ':' and '.', 2-7 colons, at most 45 characters)."""

from __future__ import annotations

import itertools
import random

from ruletrace.logtext import address_ok

_HEX6 = frozenset("0123456789abcdefABCDEF:.")


def _spec(v: str) -> bool:
    """The rule written the slow, obvious way (the implementation before the octet table)."""
    if ":" in v:
        return 2 <= v.count(":") <= 7 and len(v) <= 45 and all(c in _HEX6 for c in v)
    parts = v.split(".")
    return len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts)


def test_hand_written_cases():
    for good in ("10.0.0.1", "0.0.0.0", "255.255.255.255", "010.001.0.00", "fe80::1", "::1",
                 "2001:db8::1", "::ffff:10.0.0.1", "1:2:3:4:5:6:7:8"):
        assert address_ok(good), good
    for bad in ("", "10.0.0", "10.0.0.1.2", "256.0.0.1", "10.0.0.x", "10.0.0.", "1000.0.0.1", "0100.0.0.1",
                "10.0.0.①", "1²7.0.0.1", " 10.0.0.1", "10.0.0.1 ", "+1.0.0.1", "<ip>", ":", "1:2",
                "1:2:3:4:5:6:7:8:9", "fe80::g", "fe80::1%eth0", "a" * 40 + "::1234"):
        assert not address_ok(bad), bad


def test_every_short_octet_text_agrees_with_the_rule():
    alphabet = "0123456789x²①"
    texts = ["".join(p) for w in range(5) for p in itertools.product(alphabet, repeat=w)]
    for t in texts:
        for v in (f"{t}.1.2.3", f"1.2.3.{t}", f"9.{t}.8.7"):
            assert address_ok(v) == _spec(v), v


def test_random_texts_agree_with_the_rule():
    rng = random.Random(16)
    alphabet = "0123456789abcdefABCDEFxX:.. 5²①%"
    for _ in range(50_000):
        v = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 48)))
        assert address_ok(v) == _spec(v), v
    for _ in range(20_000):  # near-misses of real addresses
        v = ".".join(str(rng.randrange(0, 300)).zfill(rng.choice((0, 1, 2, 3))) for _ in range(rng.choice((3, 4, 4, 5))))
        assert address_ok(v) == _spec(v), v
