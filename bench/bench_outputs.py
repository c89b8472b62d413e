"""Every output of ``ruletrace explain`` / ``report`` at full scale (issue 16 item 6), as ratios to grep.

Each figure is a wall time divided by ``grep -c TRACE`` on the same log, measured in the same
run (warm page cache, best of 3), so the ratios hold on a busy machine too. Peak memory is the
summed RSS of the child's process tree (sampled every 50 ms, as bench_explain.py does).

| output | how | bar |
|---|---|---|
| ``explain --json`` | child process, stdout to a file | <= 20 x grep, bounded memory |
| ``explain --jsonl`` | child process, stdout to a file | (streaming form; memory bounded) |
| tree of all packets | ``explain`` (terminal view) child, stdout to a file | <= 60 s |
| report stage | in one child streaming the explanations: the time spent in ``ReportBuilder.add`` plus writing the page (the explain pipeline before it is shown apart) | <= 5 s |

    python3 bench/bench_outputs.py                   # bench/out/kube.{rules,log} (100,000 packets)
    python3 bench/bench_outputs.py --packets 10000   # a generated 10,000-packet log in bench/out-10000/
    python3 bench/bench_outputs.py --only json,report --runs 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_explain
import timing

JSON_RATIO_BAR = 20.0
TREE_BAR_S = 60.0
REPORT_BAR_S = 5.0
OUTPUTS = ("json", "jsonl", "tree", "report")

# the report stage in a child: explanations made first (not timed), then aggregated and written
REPORT_STAGE = r"""
import gc, json, sys, time
gc.disable()
from ruletrace.pipeline import Run, load_rulesets
from ruletrace.render.html import ReportBuilder
rs = load_rulesets([sys.argv[1]])
run = Run(rs, [sys.argv[2]])
b = ReportBuilder(rs)
add, clock, cpu, spent, spent_cpu, n = b.add, time.perf_counter, time.process_time, 0.0, 0.0, 0
t0 = clock()
for e in run.explanations():  # streamed, as `ruletrace report` does; only the add is timed
    t, c = clock(), cpu()
    add(e)
    spent += clock() - t
    spent_cpu += cpu() - c
    n += 1
t1, c1 = clock(), cpu()
page = b.render(title="bench", sources=run.sources, warnings=run.warnings)
t2, c2 = clock(), cpu()
print(json.dumps({"packets": n, "explain_s": t1 - t0 - spent, "add_s": spent, "render_s": t2 - t1,
                  "add_cpu_s": spent_cpu, "render_cpu_s": c2 - c1, "page_bytes": len(page.encode())}))
"""


def cli(rules: Path, log: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "ruletrace", "explain", "--ruleset", str(rules), *flags, str(log)]


def timed_child(cmd: list[str], runs: int) -> dict[str, float]:
    """Best wall time of ``runs`` runs of ``cmd`` (stdout to a file), and the peak summed RSS of one."""
    best = float("inf")
    size = 0
    for _ in range(runs):
        with tempfile.TemporaryFile() as out:
            t0 = time.perf_counter()
            rss, pss, single, rc, err = bench_explain.run_sampled(cmd, out)
            wall = time.perf_counter() - t0
            if rc != 0:
                raise SystemExit(f"failed (exit {rc}): {' '.join(cmd)}\n{err}")
            size = out.seek(0, 2)
        best = min(best, wall)
    return {"s": best, "rss_mb": rss, "pss_mb": pss, "largest_mb": single, "out_bytes": size}


def report_stage(rules: Path, log: Path) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-c", REPORT_STAGE, str(rules), str(log)], env=timing.src_env(),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"report stage failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--packets", type=int, default=timing.gen_kube.DEFAULT_PACKETS)
    ap.add_argument("--services", type=int, default=timing.gen_kube.DEFAULT_SERVICES)
    ap.add_argument("--runs", type=int, default=1, help="runs of each output (best of); grep is best of 3")
    ap.add_argument("--only", default=",".join(OUTPUTS), help=f"comma-separated subset of {','.join(OUTPUTS)}")
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    out = timing.OUT if a.packets == timing.gen_kube.DEFAULT_PACKETS else timing.BENCH / f"out-{a.packets}"
    out.mkdir(exist_ok=True)
    gen = timing.ensure_inputs(out, services=a.services, packets=a.packets)
    rules, log = out / "kube.rules", out / "kube.log"
    lines, t_grep = bench_explain.grep_count(log)
    print(f"log: {gen['packets']:,} packets, {lines:,} TRACE lines, {log.stat().st_size / 1e6:.0f} MB; "
          f"grep -c TRACE {t_grep:.3f} s (best of 3)", flush=True)
    results: dict[str, object] = {"packets": gen["packets"], "lines": lines, "grep_s": t_grep}
    ok = True
    for name, flags in (("json", ("--json",)), ("jsonl", ("--jsonl",)), ("tree", ("--no-color", "--width", "120"))):
        if name not in only:
            continue
        m = timed_child(cli(rules, log, *flags), a.runs)
        ratio = m["s"] / t_grep
        results[name] = {**m, "ratio": ratio}
        line = (f"{name:6} {m['s']:7.1f} s = {ratio:6.1f} x grep; peak RSS {m['rss_mb']:.0f} MB "
                f"(largest process {m['largest_mb']:.0f} MB); output {m['out_bytes'] / 1e6:.0f} MB")
        if name == "json":
            passed = ratio <= JSON_RATIO_BAR
            line += f"  bar <= {JSON_RATIO_BAR:.0f} x: {'PASS' if passed else 'FAIL'}"
            ok &= passed
        if name == "tree":
            passed = m["s"] <= TREE_BAR_S
            line += f"  bar <= {TREE_BAR_S:.0f} s: {'PASS' if passed else 'FAIL'}"
            ok &= passed
        print(line, flush=True)
    if "report" in only:
        r = report_stage(rules, log)
        stage = r["add_s"] + r["render_s"]
        results["report"] = {**r, "stage_s": stage, "ratio": stage / t_grep}
        passed = stage <= REPORT_BAR_S
        ok &= passed
        print(f"report stage {stage:.2f} s = {stage / t_grep:.1f} x grep (aggregate {r['add_s']:.2f} s, "
              f"page {r['render_s']:.2f} s, {r['page_bytes'] / 1e6:.1f} MB; CPU {r['add_cpu_s']:.2f} + "
              f"{r['render_cpu_s']:.2f} s; explain pipeline before it {r['explain_s']:.1f} s)  "
              f"bar <= {REPORT_BAR_S:.0f} s: {'PASS' if passed else 'FAIL'}", flush=True)
    print(json.dumps(results, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
