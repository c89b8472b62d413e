"""What the bench scripts share: best-of timing, a scratch network namespace, cached inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SRC = REPO / "src"
OUT = BENCH / "out"  # git-ignored
NETNS_PREFIX = "rtb5"  # every namespace these scripts create starts with this

if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))  # measure the working tree, not an installed copy

import gen_kube  # noqa: E402


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Smallest wall time of ``repeat`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def src_env() -> dict[str, str]:
    """Environment for a child Python that imports ruletrace from this working tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    return env


@contextmanager
def scratch_netns() -> Iterator[str]:
    """A network namespace named ``rtb5…`` that is deleted on the way out, also on errors."""
    name = f"{NETNS_PREFIX}b{os.getpid()}{uuid.uuid4().hex[:4]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ensure_inputs(out: Path = OUT, *, services: int = gen_kube.DEFAULT_SERVICES,
                  packets: int = gen_kube.DEFAULT_PACKETS, seed: int = 1, force: bool = False) -> dict:
    """Generate OUT/kube.rules and OUT/kube.log unless the same arguments made them already."""
    stamp = out / "params.json"
    want = {"services": services, "packets": packets, "seed": seed, "version": gen_kube.GEN_VERSION}
    if not force and stamp.is_file() and (out / "kube.rules").is_file() and (out / "kube.log").is_file():
        info = json.loads(stamp.read_text())
        if {k: info.get(k) for k in want} == want:
            info["cached"] = True
            return info
    print(f"generating {services} services, {packets} packets into {out} …", file=sys.stderr, flush=True)
    info = gen_kube.generate(out, services, packets, seed)
    stamp.write_text(json.dumps(info, indent=1) + "\n")
    info["cached"] = False
    return info


def verdict(ratio: float, bar: float) -> str:
    return "PASS" if ratio <= bar else "FAIL"
