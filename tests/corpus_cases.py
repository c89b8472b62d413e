"""Every (ruleset, trace) pair the repository holds, for tests that prove a fast path equal to
its reference on all of them: the bundled examples (each capture with the ruleset of its
kind), the lab's nft captures, the kernel-log fixtures (without a ruleset, and seed 003's with
its own), and a generated kube-proxy log (``kube_log``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = ROOT / "src" / "ruletrace" / "examples"


def cases() -> list[tuple[str, list[Path], Path]]:
    """(id, ruleset files, trace file) for every pair."""
    out: list[tuple[str, list[Path], Path]] = []
    for d in sorted(p for p in EXAMPLES.iterdir() if (p / "example.json").is_file()):
        info = json.loads((d / "example.json").read_text())
        for cap in info.get("captures", {}):
            rs = info["nft_ruleset"] if cap.startswith("nft-") and info.get("nft_ruleset") else info["ruleset"]
            out.append((f"{d.name}/{cap}", [d / rs], d / cap))
    for d in sorted(p for p in (FIXTURES / "nft_captures").iterdir() if p.is_dir()):
        for cap in ("nft-monitor.txt", "nft-monitor-a.txt"):
            out.append((f"nft_captures/{d.name}/{cap}", [d / "ruleset.json"], d / cap))
    seed = FIXTURES / "explain"
    out.append(("explain/seed003", [seed / "seed003.rules"], seed / "seed003.log"))
    for log in sorted((FIXTURES / "kernel_log").glob("*.log")):
        out.append((f"kernel_log/{log.name}", [], log))
        if log.name.startswith("seed-003"):
            out.append((f"kernel_log/{log.name}+rules", [seed / "seed003.rules"], log))
    return out


def kube_log(out: Path, services: int = 60, packets: int = 400, seed: int = 7) -> tuple[Path, Path]:
    """A small generated kube-proxy node (bench/gen_kube.py): (ruleset, log)."""
    spec = importlib.util.spec_from_file_location("gen_kube", ROOT / "bench" / "gen_kube.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_kube"] = mod  # dataclasses look the module up while the class is built
    spec.loader.exec_module(mod)
    out.mkdir(parents=True, exist_ok=True)
    mod.generate(out, services, packets, seed)
    return out / "kube.rules", out / "kube.log"
