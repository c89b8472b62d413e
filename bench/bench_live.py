"""Live tracing at full rate (issue 16 item 6): does `ruletrace trace` keep up with 50,000 steps/s?

Two lab namespaces joined by a veth (prefix ``rtlf-``, deleted in ``finally``); the server
gets ``--rules`` matching rules in filter INPUT (``-p icmp -m comment``, no target: every
traced packet makes one step per rule), the client sends ``--rate`` ICMP echo requests a
second for ``--seconds`` (a bounded burst), while ``ruletrace trace`` runs in the server
namespace, in the default one-line view and with ``--json`` (``--view``), with one backend: ``legacy`` (TRACE steps through NFLOG / netlink) or ``nft``
(iptables-nft, nftrace events). Printed per backend, as ratios:

- steps offered: what the kernel produced, from its own counters after the run (every rule
  and built-in policy counter of PREROUTING and INPUT in every table; only traced packets go
  there) plus the session's own rule steps (the TRACE counter × the steps its rules make);
- steps received (the tool's "trace step(s)") as a fraction of offered, packets explained
  (shown) as a fraction of the kernel's count, and the rate the tool sustained: received steps ÷ (last output − first
  packet sent);
- packets: sent, counted by the kernel (filter INPUT rule 1), traced (the tool's TRACE counter),
  shown, lost: and whether every loss was counted and shown (the summary's loss figures add up
  to the kernel's counters, and a step shortfall comes with an overrun / gap / incomplete count).

Needs root, ``ip``, ``iptables-legacy``/``iptables-nft``. ``--profile`` runs the trace under
cProfile and prints the top functions by internal time.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))  # measure the working tree, not an installed copy

from ruletrace.lab.netns import Lab  # noqa: E402

BAR = 50_000  # trace steps a second the tracer must keep up with
C_ADDR, S_ADDR = "10.89.0.1", "10.89.0.2"
OWN_STEPS = {"legacy": 1, "nft": 2}  # steps of the session's own rules per traced packet (see _own_steps)
SENDER = (
    "import socket, struct, sys, time\n"
    "def ck(b):\n s=sum(struct.unpack('!%dH' % (len(b)//2), b)); s=(s>>16)+(s&0xffff); return ~(s+(s>>16))&0xffff\n"
    "s=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
    "n, rate = int(sys.argv[2]), float(sys.argv[3])\n"
    "t0 = time.monotonic()\n"
    "for i in range(n):\n"
    " h=struct.pack('!BBHHH',8,0,0,0x5254,i & 0xffff)+b'rtls'*4\n"
    " s.sendto(h[:2]+struct.pack('!H',ck(h))+h[4:], (sys.argv[1], 0))\n"
    " d = t0 + (i + 1) / rate - time.monotonic()\n"
    " if d > 0: time.sleep(d)\n"
    "print(time.monotonic() - t0)\n"
)
# the trace under cProfile (the console script ends with os._exit, which would skip writing the profile)
PROFILE = ("import cProfile, sys\nfrom ruletrace.cli import main\nprof = sys.argv.pop(1)\n"
           "cProfile.run('main(sys.argv[1:])', prof)\n")
SUMMARY = re.compile(r"(\d+) packet\(s\) shown, (\d+) trace step\(s\)")


def src_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["NO_COLOR"] = "1"
    env["RULETRACE_NO_DROP_REASONS"] = "1"
    return env


def ruleset(n: int) -> str:
    return ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            + "".join(f"-A INPUT -p icmp -m comment --comment rtls{i}\n" for i in range(n)) + "COMMIT\n")


def kernel_counters(lab: Lab, ns: str, backend: str) -> tuple[int, int]:
    """(steps the kernel's counters account for in PREROUTING/INPUT, packets of filter INPUT rule 1)."""
    text = lab_run(lab, [f"iptables-{backend}-save", "-c"], ns)
    steps = first = 0
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
            continue
        m = re.match(r":(PREROUTING|INPUT) \S+ \[(\d+):\d+\]", line)  # built-in policy counter
        if m:
            steps += int(m[2])
            continue
        m = re.match(r"\[(\d+):\d+\] -A (PREROUTING|INPUT) ", line)
        if m and "ruletrace:" not in line:
            steps += int(m[1])
            if table == "filter" and m[2] == "INPUT" and "--comment rtls0" in line:
                first = int(m[1])
    return steps, first


def lab_run(lab: Lab, argv: list[str], ns: str, stdin: str | None = None) -> str:
    from ruletrace.lab.netns import run

    return run(argv, ns=ns, input=stdin).stdout


def measure(backend: str, view: str, args: argparse.Namespace) -> dict:
    with Lab(prefix=f"rtlf-{os.getpid() % 10000}") as lab:
        c, s = lab.host("c"), lab.host("s")
        ca, sb = lab.veth(c, "a", s, "b")
        lab.addr(c, ca, f"{C_ADDR}/24")
        lab.addr(s, sb, f"{S_ADDR}/24")
        lab_run(lab, [f"iptables-{backend}-restore"], s.ns, ruleset(args.rules))
        packets = int(args.rate * args.seconds)
        duration = args.seconds + args.drain
        prof = tempfile.NamedTemporaryFile(prefix="rtlf-", suffix=".prof", delete=False).name
        py = [sys.executable] + (["-c", PROFILE, prof] if args.profile else ["-m", "ruletrace"])
        argv = py + ["trace", "--netns", s.ns, "--backend", backend, *(["--json"] if view == "json" else []), "-p", "icmp",
                     "-4", "--direction", "in", "-s", C_ADDR, "--rate-limit", str(args.rate_limit),
                     "--duration", str(duration)] + (["--via", "netlink"] if backend == "legacy" else [])
        trace = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=src_env())
        try:
            err: list[str] = []
            while True:
                line = trace.stderr.readline()
                if not line:
                    raise SystemExit("bench_live: the trace did not start:\n" + "".join(err))
                err.append(line)
                if "tracing (" in line:
                    break
            out: list[tuple[float, str]] = []
            reader = threading.Thread(target=lambda: out.extend((time.monotonic(), x) for x in trace.stdout))
            reader.start()
            t0 = time.monotonic()
            sent = subprocess.run(["ip", "netns", "exec", c.ns, sys.executable, "-c", SENDER, S_ADDR, str(packets),
                                   str(args.rate)], capture_output=True, text=True, timeout=args.seconds * 3 + 30)
            if sent.returncode:
                raise SystemExit(f"bench_live: sender failed: {sent.stderr}")
            send_time = float(sent.stdout)
            rest = trace.stderr.read()
            _pid, status, usage = os.wait4(trace.pid, 0)  # the trace's CPU time (it ends by --duration)
            trace.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
            reader.join()
        finally:
            if trace.poll() is None:
                trace.kill()
                trace.wait()
        err_text = "".join(err) + rest
        offered_counters, kernel_packets = kernel_counters(lab, s.ns, backend)
    pkts = [json.loads(x) for _t, x in out] if view == "json" else []
    line = next((x for x in err_text.splitlines() if SUMMARY.search(x)), "")
    if not line:
        raise SystemExit(f"bench_live: no summary line from the trace:\n{err_text}")

    def num(pattern: str) -> int:
        m = re.search(pattern, line)
        return int(m[1]) if m else 0

    shown, received = map(int, SUMMARY.search(line).groups())
    traced = num(r"the kernel traced (\d+) packet")
    r = {
        "backend": backend, "view": view, "rules": args.rules, "packets_sent": packets, "send_s": round(send_time, 3),
        "kernel_packets": kernel_packets, "traced": traced, "shown": shown,
        "arrived": num(r"(\d+) arrived,"), "lost": num(r"(\d+) lost entirely"),
        "not_shown": num(r"(\d+) arrived but not shown"), "incomplete": num(r"(\d+) arrived possibly incomplete"),
        "over_cap": num(r"(\d+) packet\(s\) of the flow not traced"), "overruns": num(r"(\d+) netlink overrun"),
        "lost_steps": num(r"(\d+) step\(s\) lost"), "empty": num(r"(\d+) arrived with no step past"),
        "unread": num(r"(\d+) step\(s\) still queued"), "ended": num(r"(\d+) still arriving when the trace ended"),
        "steps_offered": offered_counters + traced * OWN_STEPS[backend],
        "steps_received": received, "steps_explained": sum(len(p["steps"]) for p in pkts) if view == "json" else None,
        "summary": line,
    }
    last = out[-1][0] if out else t0
    r["offered_per_s"] = round(r["steps_offered"] / send_time)
    r["received_per_s"] = round(received / max(last - t0, send_time))
    r["lag_s"] = round(max(last - t0 - send_time, 0.0), 2)
    # what one core of this machine can take: steps received per CPU second of the trace process
    # (start-up, snapshots and cleanup included, so a lower bound)
    r["cpu_s"] = round(cpu, 2)
    r["capacity_per_s"] = round(received / cpu) if cpu else 0
    r["received_ratio"] = round(received / r["steps_offered"], 4) if r["steps_offered"] else 0.0
    # explained: packets shown ÷ the kernel's count (every packet takes the same path, so the steps'
    # ratio is the same; --json also has the steps of its packets, checked against it)
    r["explained_ratio"] = round(shown / kernel_packets, 4) if kernel_packets else 0.0
    missing_pkts = kernel_packets - shown
    packets_add_up = (traced + r["over_cap"] == kernel_packets
                      and r["lost"] == max(traced - r["arrived"], 0) and r["arrived"] == shown + r["not_shown"] + r["empty"])
    step_loss_shown = received >= r["steps_offered"] or bool(r["overruns"] or r["lost_steps"] or r["incomplete"]
                                                              or r["unread"])
    r["losses_counted"] = packets_add_up and step_loss_shown and (missing_pkts == 0 or bool(
        r["lost"] or r["not_shown"] or r["over_cap"]))
    if args.profile:
        r["profile"] = prof
    else:
        os.unlink(prof)
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="legacy,nft", help="legacy, nft or both, comma-separated")
    ap.add_argument("--rules", type=int, default=100, help="matching rules in filter INPUT (default 100)")
    ap.add_argument("--rate", type=float, default=600, help="packets a second the client sends (default 600)")
    ap.add_argument("--seconds", type=float, default=4, help="how long it sends (default 4)")
    ap.add_argument("--drain", type=float, default=4, help="the trace runs this much longer than the sending (default 4)")
    ap.add_argument("--rate-limit", type=int, default=10000, help="trace --rate-limit (default 10000, the most)")
    ap.add_argument("--view", default="line,json",
                    help="line (the default one-line view), json (trace --json) or both, comma-separated")
    ap.add_argument("--profile", action="store_true", help="cProfile the trace process; print the top 25")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_live: needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    results = []
    ok = True
    for backend, view in ((b, v) for b in a.backend.split(",") for v in a.view.split(",")):
        r = measure(backend, view, a)
        results.append(r)
        keeps_up = r["offered_per_s"] >= BAR and r["received_ratio"] >= 1.0 and r["lost"] == 0
        ok = ok and keeps_up and r["losses_counted"]
        print(f"{backend:6} {view:4}  offered {r['offered_per_s']:>7,} steps/s ({r['steps_offered']:,} steps, "
              f"{r['packets_sent']} packets × ~{r['steps_offered'] // max(r['traced'], 1)} steps in {r['send_s']} s)  "
              f"received {r['received_ratio']:.4f}  explained {r['explained_ratio']:.4f}  "
              f"sustained {r['received_per_s']:,}/s  lag {r['lag_s']} s  "
              f"capacity {r['capacity_per_s']:,} steps per CPU s ({r['capacity_per_s'] / BAR:.2f} of the bar)")
        print(f"             packets: kernel {r['kernel_packets']}, traced {r['traced']}, shown {r['shown']}, "
              f"lost {r['lost']}, not shown {r['not_shown']} (at the end {r['ended']}), "
              f"no steps {r['empty']}, incomplete {r['incomplete']}, overruns {r['overruns']}, "
              f"lost steps {r['lost_steps']}, unread steps {r['unread']}; every loss counted and shown: "
              f"{'yes' if r['losses_counted'] else 'NO'}  "
              f"{'PASS' if keeps_up and r['losses_counted'] else 'FAIL'} (bar {BAR:,} steps/s, nothing lost)")
        if a.profile:
            pstats.Stats(r["profile"]).sort_stats(a.sort).print_stats(25)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
