"""Ruleset parse time: ruletrace's ``iptables_save.parse`` ÷ ``iptables-legacy-restore --test``.

Both read the same generated kube-proxy ruleset (bench/gen_kube.py). iptables-legacy-restore runs
inside a scratch network namespace (``rtb5…``, created and deleted here), so nothing touches the
host's tables. The bar (issue 2): ratio <= 1.0. Best of 3 each; the parse time includes reading the
file, as restore's does.

    python3 bench/bench_ruleset.py                # bench/out/kube.rules, generated when missing
    python3 bench/bench_ruleset.py --rules FILE
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import timing

BAR = 1.0


def measure(rules: Path, repeat: int = 3) -> dict[str, object]:
    """Time both parsers on ``rules``; return the figures (seconds) and the verdict."""
    from ruletrace.model import Origin
    from ruletrace.rulesets.iptables_save import parse

    expected = sum(1 for line in rules.open() if line.startswith("-A "))
    counted: list[int] = []

    def ours() -> None:
        rs = parse(rules.read_text(), origin=Origin(str(rules)))
        counted.append(rs.rule_count())

    t_ours = timing.best_of(ours, repeat)
    if counted[-1] != expected:
        raise SystemExit(f"parse() found {counted[-1]} rules, the file has {expected} -A lines")

    tool = shutil.which("iptables-legacy-restore")
    if tool is None:
        raise SystemExit("iptables-legacy-restore is not installed")
    with timing.scratch_netns() as ns:

        def kernel() -> None:
            with rules.open("rb") as f:
                r = subprocess.run(["ip", "netns", "exec", ns, tool, "--test"], stdin=f, capture_output=True)
            if r.returncode:
                why = r.stderr.decode().strip()
                raise SystemExit(f"iptables-legacy-restore --test rejected {rules}: {why}")

        t_restore = timing.best_of(kernel, repeat)
    ratio = t_ours / t_restore
    return {"rules": expected, "bytes": rules.stat().st_size, "parse_s": t_ours, "restore_s": t_restore,
            "ratio": ratio, "bar": BAR, "result": timing.verdict(ratio, BAR)}


def report(m: dict[str, object]) -> str:
    """The figures as a few lines of text."""
    return (f"ruleset: {m['rules']:,} rules, {m['bytes'] / 1e6:.1f} MB\n"
            f"  ruletrace iptables_save.parse      {m['parse_s']:.3f} s (best of 3)\n"
            f"  iptables-legacy-restore --test     {m['restore_s']:.3f} s (best of 3, scratch netns)\n"
            f"  ratio {m['ratio']:.2f}  (bar <= {m['bar']})  {m['result']}")


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rules", type=Path, help="iptables-save file (default: generated bench/out/kube.rules)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    rules = a.rules
    if rules is None:
        timing.ensure_inputs()
        rules = timing.OUT / "kube.rules"
    m = measure(rules, a.repeat)
    print(report(m))
    return 0 if m["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
