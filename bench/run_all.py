"""All benchmarks of issue 2 in one run: generate (cached in bench/out/), measure, print one table.

    python3 bench/run_all.py                 # 10,000 services, 100,000 NodePort SYNs
    python3 bench/run_all.py --force         # regenerate the inputs first
    python3 bench/run_all.py --services 2000 --packets 20000   # a quicker look
    python3 bench/run_all.py --outputs       # also every output at full scale (bench_outputs.py: long)

Exit status 0 when every bar is met. The figures also go to OUT/results.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

import bench_explain
import bench_outputs
import bench_ruleset
import timing


def _simulate() -> tuple[str, str, str] | None:
    """Run bench/bench_simulate.py (owned elsewhere) when present: (measured, bar, result)."""
    script = timing.BENCH / "bench_simulate.py"
    if not script.is_file():
        return None
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=timing.src_env())
    print(f"--- bench_simulate.py (exit {r.returncode})\n{r.stdout.rstrip()}\n{r.stderr.rstrip()}".rstrip())
    verdicts = [line for line in r.stdout.splitlines() if "PASS" in line or "FAIL" in line]
    result = "PASS" if r.returncode == 0 and not any("FAIL" in v for v in verdicts) else "FAIL"
    return (f"exit {r.returncode}", "its own bars", result)


def table(rows: list[tuple[str, str, str, str]]) -> str:
    """Rows of (check, measured, bar, result) as an aligned text table."""
    head = ("check", "measured", "bar", "result")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    return "\n".join(lines + [fmt.format(*r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--services", type=int, default=timing.gen_kube.DEFAULT_SERVICES)
    ap.add_argument("--packets", type=int, default=timing.gen_kube.DEFAULT_PACKETS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="regenerate the inputs even when cached")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=timing.OUT,
                    help="where the inputs are cached (default bench/out)")
    ap.add_argument("--no-simulate", action="store_true", help="skip bench/bench_simulate.py")
    ap.add_argument("--outputs", action="store_true",
                    help="also bench_outputs.py: explain --json/--jsonl/tree and the report stage (slow)")
    a = ap.parse_args(argv)

    gen = timing.ensure_inputs(a.out, services=a.services, packets=a.packets, seed=a.seed, force=a.force)
    rules, log = a.out / "kube.rules", a.out / "kube.log"
    print(f"inputs: {gen['services']:,} services -> {gen['rules']:,} rules "
          f"({gen['rules_bytes'] / 1e6:.1f} MB); {gen['packets']:,} NodePort SYNs -> "
          f"{gen['log_lines']:,} TRACE lines ({gen['log_bytes'] / 1e6:.0f} MB)"
          f"{' (cached)' if gen.get('cached') else ''}", flush=True)

    rs = bench_ruleset.measure(rules, a.repeat)
    print(bench_ruleset.report(rs), flush=True)
    ex = bench_explain.measure(rules, log, a.repeat)
    print(bench_explain.report(ex), flush=True)
    rows = [
        ("ruleset parse / iptables-legacy-restore --test",
         f"{rs['ratio']:.2f} ({rs['parse_s']:.2f} s / {rs['restore_s']:.2f} s)", f"<= {rs['bar']}",
         rs["result"]),
        ("explain --summary / grep -c TRACE",
         f"{ex['ratio']:.1f} ({ex['explain_s']:.2f} s / {ex['grep_s']:.3f} s)", f"<= {ex['ratio_bar']:.0f}",
         ex["ratio_result"]),
        ("explain --summary peak RSS (all processes)",
         f"{ex['rss_mb']:.0f} MB (PSS {ex['pss_mb']:.0f}, largest {ex['max_process_rss_mb']:.0f})",
         f"<= {ex['rss_bar']:.0f} MB", ex["rss_result"]),
        ("explain --summary events/s", f"{ex['events_per_s']:,.0f}", "-", "-"),
    ]
    if a.outputs:
        print("--- bench_outputs.py", flush=True)
        rc = bench_outputs.main(["--packets", str(a.packets), "--services", str(a.services)])
        rows.append(("bench_outputs.py (json, jsonl, tree, report stage)", f"exit {rc}", "its own bars",
                     "PASS" if rc == 0 else "FAIL"))
    sim = None if a.no_simulate else _simulate()
    if sim:
        rows.append(("bench_simulate.py", *sim))
    print()
    print(table(rows))
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
               "python": platform.python_version(), "inputs": gen, "ruleset": rs,
               "explain": {k: v for k, v in ex.items() if k != "output"},
               "simulate": sim}
    (a.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0 if all(r[3] in ("PASS", "-") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
