"""The mutation corpus: the lab's fixtures and bundled examples, damaged in the ways real inputs are.

Deterministic: ``mutants(seed, per_file)`` gives the same cases for the same arguments, so a
failure names a case that can be made again (``python -m tests.fuzz.worker`` runs one).
"""

from __future__ import annotations

import random
from pathlib import Path

ROOT = Path(__file__).parents[2]
SEED_DIRS = (ROOT / "tests" / "fixtures", ROOT / "src" / "ruletrace" / "examples")
_SKIP_SUFFIXES = {".md", ".sh", ".py", ".conf"}
_MAX_SEED = 256 * 1024  # bytes of a seed file used (mutants stay small and fast)

# what damage looks like: numbers too long for int(), Unicode digits str.isdigit() accepts,
# control characters, and the line-level damage of pastes and cut files
HUGE = b"9" * 5000
UNICODE_DIGITS = ("\u00b2".encode(), "\u0663".encode(), "\uff11".encode(), "\u2460".encode())
CONTROL = (b"\x00", b"\x1b[2J", b"\r", b"\x0b", b"\x7f", b"\xff\xfe")


def seeds() -> list[Path]:
    """Every fixture and example file, in a fixed order."""
    out = []
    for d in SEED_DIRS:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix not in _SKIP_SUFFIXES and p.stat().st_size > 0:
                out.append(p)
    return out


def _flip(rng: random.Random, b: bytearray) -> None:
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)


def _truncate(rng: random.Random, b: bytearray) -> None:
    del b[rng.randrange(len(b)) :]


def _duplicate(rng: random.Random, b: bytearray) -> None:
    i = rng.randrange(len(b))
    j = min(len(b), i + rng.randint(1, 4096))
    b[j:j] = b[i:j] * rng.randint(1, 4)


def _digits(rng: random.Random, b: bytearray, repl: bytes) -> None:
    idx = [i for i in range(len(b)) if 48 <= b[i] <= 57]
    for i in sorted(rng.sample(idx, min(len(idx), rng.randint(1, 4))), reverse=True):
        b[i : i + 1] = repl


def _huge_number(rng: random.Random, b: bytearray) -> None:
    _digits(rng, b, HUGE)


def _unicode_digit(rng: random.Random, b: bytearray) -> None:
    _digits(rng, b, rng.choice(UNICODE_DIGITS))


def _control(rng: random.Random, b: bytearray) -> None:
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.choice(CONTROL)


def _long_line(rng: random.Random, b: bytearray) -> None:
    i = rng.randrange(len(b) + 1)
    unit = bytes(b[i : i + rng.randint(1, 12)]) or b"A"
    b[i:i] = unit * (rng.randint(50_000, 300_000) // len(unit))


def _drop_newlines(rng: random.Random, b: bytearray) -> None:
    start = rng.randrange(len(b))
    end = min(len(b), start + rng.randint(100, 20_000))
    b[start:end] = b[start:end].replace(b"\n", b" ")


MUTATORS = (_flip, _truncate, _duplicate, _huge_number, _unicode_digit, _control, _long_line, _drop_newlines)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One to three mutations of ``data``; returns their names and the result."""
    b = bytearray(data[:_MAX_SEED] or b"\n")
    names = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        m = rng.choice(MUTATORS)
        if not b:
            b = bytearray(b"\n")
        m(rng, b)
        names.append(m.__name__.lstrip("_"))
    return "+".join(names), bytes(b)


def mutants(seed: int, per_file: int) -> list[tuple[str, bytes]]:
    """``per_file`` mutants of every seed file: (case name, bytes)."""
    rng = random.Random(seed)
    out = []
    for p in seeds():
        data = p.read_bytes()
        rel = p.relative_to(ROOT)
        for k in range(per_file):
            what, got = mutate(data, rng)
            out.append((f"{rel}#{k}:{what}", got))
    return out
