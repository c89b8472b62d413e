"""``ruletrace explain --summary`` over the generated NodePort log: time ÷ ``grep -c TRACE``, and peak RSS.

Bars (issue 2): explain time <= 20 x grep time on the same file (warm page cache, best of 3 each);
peak RSS of the explain run <= 400 MB. The explain run is a child process (the real CLI, from this
working tree). explain may fork workers, so memory is measured in one more run that samples the
whole process tree every 50 ms (/proc/PID/smaps_rollup): the bar applies to the peak of the summed
RSS of all its processes (pages shared after fork count once per process, so this over-counts;
the summed PSS is shown too). wait4()'s ru_maxrss (the largest single process) is shown as well.

    python3 bench/bench_explain.py                  # bench/out/kube.{rules,log}, generated when missing
    python3 bench/bench_explain.py --rules R --log L
    python3 bench/bench_explain.py --profile        # cProfile of the same run in-process, top 25 functions
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import timing

RATIO_BAR = 20.0
RSS_BAR_MB = 400.0


def explain_cmd(rules: Path, log: Path) -> list[str]:
    """The command line under test: the CLI when it exists, else the pipeline called directly."""
    probe = subprocess.run([sys.executable, "-m", "ruletrace", "explain", "--help"], env=timing.src_env(),
                           capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "ruletrace", "explain", "--ruleset", str(rules), "--summary", str(log)]
    code = ("import sys; from ruletrace.pipeline import Run, load_rulesets; "
            "r = Run(load_rulesets([sys.argv[1]]), [sys.argv[2]], detail=False); "
            "print(sum(1 for _ in r.explanations()), 'packets')")
    return [sys.executable, "-c", code, str(rules), str(log)]


def run_child(cmd: list[str], stdout) -> tuple[float, float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB, exit status, stderr tail)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=stdout, stderr=err, env=timing.src_env())
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it: tell Popen
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
    return wall, ru.ru_maxrss / 1024, p.returncode, tail  # ru_maxrss is in KiB on Linux


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (/proc/PID/task/TID/children)."""
    out, i = [pid], 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
        except OSError:
            pass  # exited meanwhile
    return out


def _tree_memory(pid: int) -> tuple[int, int]:
    """Summed (RSS, PSS) in KiB of ``pid``'s process tree right now."""
    rss = pss = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return rss, pss


def run_sampled(cmd: list[str], stdout, every: float = 0.05) -> tuple[float, float, float, int, str]:
    """Run ``cmd`` sampling its process tree; return (peak summed RSS MB, peak summed PSS MB,
    largest single-process RSS MB from wait4, exit status, stderr tail)."""
    peak = [0, 0]
    stop = threading.Event()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=stdout, stderr=err, env=timing.src_env())

        def sample() -> None:
            while not stop.is_set():
                rss, pss = _tree_memory(p.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                stop.wait(every)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        _, status, ru = os.wait4(p.pid, 0)
        stop.set()
        t.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
    return peak[0] / 1024, peak[1] / 1024, ru.ru_maxrss / 1024, p.returncode, tail


def grep_count(log: Path) -> tuple[int, float]:
    """``grep -c TRACE`` on the log: (count, best of 3 seconds) after one run to warm the page cache."""
    counts: list[int] = []

    def grep() -> None:
        # stdout must be a pipe: GNU grep stops at the first match when it writes to /dev/null
        r = subprocess.run(["grep", "-c", "TRACE", str(log)], stdout=subprocess.PIPE, check=True)
        counts.append(int(r.stdout))

    grep()
    t = timing.best_of(grep)
    if len(set(counts)) != 1:
        raise SystemExit(f"grep -c TRACE counted differently between runs: {counts}")
    return counts[0], t


def measure(rules: Path, log: Path, repeat: int = 3, show: int = 0) -> dict[str, object]:
    """Time the explain run and grep on the same files; return figures and verdicts."""
    lines, t_grep = grep_count(log)
    cmd = explain_cmd(rules, log)
    best, peak, first_out = float("inf"), 0.0, ""
    for i in range(repeat):
        with tempfile.TemporaryFile("w+") as out:
            wall, rss, rc, err = run_child(cmd, out)
            if rc != 0:
                raise SystemExit(f"explain failed (exit {rc}): {' '.join(cmd)}\n{err}")
            if i == 0:
                out.seek(0)
                first_out = out.read()
        best, peak = min(best, wall), max(peak, rss)
    with tempfile.TemporaryFile("w+") as out:
        tree_rss, tree_pss, single, rc, err = run_sampled(cmd, out)
    if rc != 0:
        raise SystemExit(f"explain failed (exit {rc}): {' '.join(cmd)}\n{err}")
    ratio = best / t_grep
    m = {"lines": lines, "bytes": log.stat().st_size, "cmd": cmd, "explain_s": best, "grep_s": t_grep,
         "ratio": ratio, "ratio_bar": RATIO_BAR, "ratio_result": timing.verdict(ratio, RATIO_BAR),
         "rss_mb": tree_rss, "pss_mb": tree_pss, "max_process_rss_mb": max(peak, single),
         "rss_bar": RSS_BAR_MB, "rss_result": timing.verdict(tree_rss, RSS_BAR_MB),
         "events_per_s": lines / best}
    if show:
        m["output"] = "\n".join(first_out.splitlines()[:show])
    return m


def report(m: dict[str, object]) -> str:
    """The figures as a few lines of text."""
    cmd = " ".join(Path(c).name if "/" in c else c for c in m["cmd"])  # type: ignore[union-attr]
    out = (f"log: {m['lines']:,} TRACE lines, {m['bytes'] / 1e6:.0f} MB\n"
           f"  {cmd}\n"
           f"  explain --summary   {m['explain_s']:.2f} s (best of 3), {m['events_per_s']:,.0f} events/s\n"
           f"  grep -c TRACE       {m['grep_s']:.3f} s (best of 3, warm cache)\n"
           f"  ratio {m['ratio']:.1f}  (bar <= {m['ratio_bar']:.0f})  {m['ratio_result']}\n"
           f"  peak RSS {m['rss_mb']:.0f} MB, all processes  (bar <= {m['rss_bar']:.0f} MB)  "
           f"{m['rss_result']}\n"
           f"    (PSS {m['pss_mb']:.0f} MB; largest process {m['max_process_rss_mb']:.0f} MB)")
    if m.get("output"):
        out += "\n  output:\n" + "\n".join("    " + line for line in str(m["output"]).splitlines())
    return out


def profile(rules: Path, log: Path, top: int = 25, sort: str = "tottime") -> str:
    """cProfile of the same explain run in this process; the ``top`` functions by ``sort``.

    Runs sequentially (forked workers would hide the work from the profiler); each worker runs
    the same per-line code on its byte range.
    """
    from ruletrace.cli import main as cli_main

    try:
        from ruletrace.fastpath import parallel

        parallel.usable = lambda *a, **k: False  # type: ignore[assignment]
    except ImportError:
        pass

    prof = cProfile.Profile()
    sink = io.StringIO()
    os.environ.setdefault("NO_COLOR", "1")
    with contextlib.redirect_stdout(sink):
        prof.enable()
        try:
            rc = cli_main(["explain", "--ruleset", str(rules), "--summary", str(log)])
        finally:
            prof.disable()
    text = io.StringIO()
    st = pstats.Stats(prof, stream=text)
    st.sort_stats(sort).print_stats(top)
    return f"exit status {rc}\n" + text.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rules", type=Path, help="ruleset (default: generated bench/out/kube.rules)")
    ap.add_argument("--log", type=Path, help="TRACE log (default: generated bench/out/kube.log)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--show", type=int, default=0, metavar="N",
                    help="print the first N lines of explain's output")
    ap.add_argument("--profile", action="store_true", help="profile one in-process run instead of timing")
    ap.add_argument("--sort", default="tottime", help="pstats sort key for --profile (tottime, cumulative)")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args(argv)
    if a.rules is None or a.log is None:
        timing.ensure_inputs()
    rules = a.rules or timing.OUT / "kube.rules"
    log = a.log or timing.OUT / "kube.log"
    if a.profile:
        print(profile(rules, log, a.top, a.sort))
        return 0
    # an installed package carries byte code (pip compiles it); a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile every module on every start: compile once first
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "src" / "ruletrace"), quiet=1)
    m = measure(rules, log, a.repeat, a.show)
    print(report(m))
    return 0 if m["ratio_result"] == m["rss_result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
