"""Capture paths for TRACE output: /dev/kmsg, NFLOG via tcpdump, ulogd2 JSON, nf_tables monitors.

Facts (checked on kernel 6.18 in the lab):
- TRACE from a non-initial namespace reaches the kernel log only with
  ``net.netfilter.nf_log_all_netns=1`` (root namespace; the one root setting the lab changes).
- ``net.netfilter.nf_log.2`` / ``.10`` are per namespace; set to ``nfnetlink_log`` they send TRACE
  to NFLOG group 0, which ``tcpdump -i nflog`` or ulogd2 (not both: one listener per group) read.
- ulogd2's NFLOG input binds itself for families 2, 10 and 7 and leaves those bindings behind.
- With iptables-nft, ``-j TRACE`` is ``meta nftrace set 1``: events come only as nf_tables trace
  messages (``xtables-monitor --trace``, ``nft monitor trace``), never through nf_log.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .netns import Host, Lab, run

NF_LOG_SYSCTL = {"ipv4": "net.netfilter.nf_log.2", "ipv6": "net.netfilter.nf_log.10"}  # NFPROTO_IPV4/6
NF_LOG_BRIDGE = "net.netfilter.nf_log.7"  # NFPROTO_BRIDGE: ulogd binds it too


def _ulogd_plugins() -> Path:
    """Where the distribution put ulogd2's plugins (Debian: the multiarch lib folder)."""
    for d in sorted(Path("/usr/lib").glob("*/ulogd")) + [Path("/usr/lib/ulogd"), Path("/usr/local/lib/ulogd")]:
        if (d / "ulogd_output_JSON.so").exists():
            return d
    return Path("/usr/lib/x86_64-linux-gnu/ulogd")


ULOGD_PLUGINS = _ulogd_plugins()
_KMSG_RE = re.compile(r"^(\d+),(\d+),(\d+),[^;]*;(.*)$")


def enable_all_netns_logging() -> None:
    """Let nf_log write for every namespace (the only root-namespace change the lab makes)."""
    run(["sysctl", "-qw", "net.netfilter.nf_log_all_netns=1"])


class Kmsg:
    """Reader of /dev/kmsg from a position taken when opened (new records only).

    A thread drains the ring buffer while the traffic runs: the buffer is small (128 KiB here)
    and a pass can log more than that, or other kernel messages can push ours out. Records
    overwritten before they were read are counted in ``lost`` (the kernel says so with EPIPE).
    """

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.records: list[bytes] = []
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="kmsg", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                self.records.append(os.read(self.fd, 8192))
                continue
            except BlockingIOError:
                if self._stop.is_set():
                    return
                time.sleep(0.005)
            except OSError as e:
                if e.errno != errno.EPIPE:
                    raise
                self.lost += 1  # records were overwritten before we read them

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        os.close(self.fd)

    def read(self, names: Sequence[str]) -> list[str]:
        """Records so far, dmesg-style (``[secs.usecs] text``), that mention one of the interface names."""
        self._stop.set()
        self._thread.join()
        want = re.compile(r"=(?:{})(?=\s|$)".format("|".join(re.escape(n) for n in names)))
        lines = []
        for rec in self.records:
            m = _KMSG_RE.match(rec.decode("utf-8", "replace").split("\n", 1)[0])
            if m and want.search(m.group(4)):
                usec = int(m.group(3))
                lines.append(f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {m.group(4)}")
        return lines


def _wait_for(path: Path, text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in path.read_text(errors="replace"):
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


@contextmanager
def _running(lab: Lab, p: subprocess.Popen[bytes], started: Path, line: str, failed: str, *,
             linger: float, sig: int = signal.SIGTERM) -> Iterator[None]:
    """A background capture ``p`` while the body runs: it has started once ``started`` holds
    ``line`` (else RuntimeError ``failed`` with the file's last words); stopped with ``sig``
    ``linger`` seconds after the body, so what is still on its way is written."""
    if not _wait_for(started, line):
        lab.stop(p)
        raise RuntimeError(f"{failed}: {started.read_text()[-300:] if started.exists() else ''}")
    try:
        yield
    finally:
        time.sleep(linger)
        lab.stop(p, sig)


def get_sysctl(lab: Lab, h: Host, key: str) -> str:
    return run(["sysctl", "-n", key], ns=h.ns).stdout.strip()


@contextmanager
def nflog_binding(lab: Lab, h: Host, families: Sequence[str]) -> Iterator[None]:
    """Bind TRACE to nfnetlink_log inside a namespace; restore the previous loggers after."""
    keys = [NF_LOG_SYSCTL[f] for f in families] + [NF_LOG_BRIDGE]
    old = {k: get_sysctl(lab, h, k) for k in keys}
    lab.sysctl(h, {NF_LOG_SYSCTL[f]: "nfnetlink_log" for f in families})
    try:
        yield
    finally:
        for k, v in old.items():
            run(["sysctl", "-qw", f"{k}={v}"], ns=h.ns, check=False)


@contextmanager
def tcpdump_nflog(lab: Lab, h: Host, out: Path, errfile: Path) -> Iterator[None]:
    """``tcpdump -i nflog -w out`` inside a namespace (NFLOG group 0, packet-buffered)."""
    with open(errfile, "w") as err:
        p = lab.spawn(h, ["tcpdump", "-i", "nflog", "-U", "-Z", "root", "-w", str(out)], stderr=err)
    with _running(lab, p, errfile, "listening on", "tcpdump -i nflog did not start", linger=0.2,
                  sig=signal.SIGINT):
        yield


ULOGD_CONF = """\
[global]
logfile="{log}"
loglevel=3
plugin="{plugins}/ulogd_inppkt_NFLOG.so"
plugin="{plugins}/ulogd_filter_IFINDEX.so"
plugin="{plugins}/ulogd_filter_IP2STR.so"
plugin="{plugins}/ulogd_filter_HWHDR.so"
plugin="{plugins}/ulogd_raw2packet_BASE.so"
plugin="{plugins}/ulogd_output_JSON.so"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,mac2str1:HWHDR,json1:JSON

[log1]
group=0
netlink_qthreshold=1

[json1]
sync=1
file="{out}"
"""


@contextmanager
def ulogd_json(lab: Lab, h: Host, out: Path, workdir: Path) -> Iterator[None]:
    """ulogd2 with an own config (NFLOG group 0 -> JSON lines) inside a namespace."""
    conf, log = workdir / "ulogd.conf", workdir / "ulogd.log"
    conf.write_text(ULOGD_CONF.format(log=log, plugins=ULOGD_PLUGINS, out=out))
    out.touch()
    p = lab.spawn(h, ["ulogd", "-c", str(conf)])
    with _running(lab, p, log, "entering main loop", "ulogd did not start", linger=0.3):
        yield


@contextmanager
def nft_monitors(lab: Lab, h: Host, xtables_out: Path, nft_out: Path,
                 problems: dict[str, str]) -> Iterator[None]:
    """``xtables-monitor --trace`` and ``nft monitor trace`` side by side (both are multicast readers).

    A monitor that exits early (xtables-monitor 1.8.9 does on rules it cannot translate back, e.g.
    ``-m icmp6``: "match extension not found") is reported in ``problems`` under its file name.
    """
    procs = []
    for argv, out in ((["xtables-monitor", "--trace"], xtables_out),
                      (["nft", "-a", "monitor", "trace"], nft_out)):
        err = lab.state / f"{out.name}.err"
        with open(out, "w") as f, open(err, "w") as e:
            # line-buffered stdout: the monitors use stdio and are stopped by a signal
            procs.append((lab.spawn(h, ["stdbuf", "-oL", *argv], stdout=f, stderr=e), out, err))
    time.sleep(0.5)  # no readiness message; joining the multicast group is immediate after start-up
    try:
        yield
    finally:
        time.sleep(0.3)
        for p, out, err in procs:
            early = p.poll()
            lab.stop(p)
            if early is not None:
                msg = " ".join(err.read_text(errors="replace").split())[:300]
                argv = p.args if isinstance(p.args, list) else [str(p.args)]  # spawn() passes a list
                problems[out.name] = f"{' '.join(map(str, argv[4:]))} exited early (status {early}): {msg}"
