"""Network-namespace test hosts: veth pairs, bridges, addresses, routes, and their teardown.

Every name the lab creates starts with a run prefix ``rtl<digits>``: namespaces are
``<prefix>-<host>``, interfaces ``<prefix><suffix>`` (at most IFNAMSIZ-1 = 15 characters).
A run registers itself in ``STATE_DIR/<prefix>/pid`` so that :func:`sweep` can tell the
leftovers of a killed run from the namespaces of a run that is still going.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import RuletraceError
from ..live.session import proc_start

PREFIX = "rtl"
PREFIX_RE = re.compile(r"^(rtl\d+)")
IFNAMSIZ = 16  # include/uapi/linux/if.h: names are at most 15 characters plus NUL
STATE_DIR = Path(os.environ.get("RULETRACE_LAB_STATE", "/run/ruletrace-lab"))
CMD_TIMEOUT = 20.0  # seconds for one ip/iptables/sysctl call


def run(argv: Sequence[str], *, ns: str | None = None, input: str | None = None,
        check: bool = True, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a command (inside namespace ``ns`` when given) and return its completed process."""
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    try:
        p = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise RuletraceError(f"lab: {full[0]} not found (install it: see src/ruletrace/lab/README.md)") from e
    except subprocess.TimeoutExpired as e:
        raise RuletraceError(f"lab: timed out after {timeout:.0f}s: {' '.join(full)}") from e
    if check and p.returncode != 0:
        raise RuletraceError(f"lab: {' '.join(full)} failed ({p.returncode}): {p.stderr.strip()[:500]}")
    return p


def _run_alive(prefix: str) -> bool:
    try:
        pid_s, start = (STATE_DIR / prefix / "pid").read_text().split()
    except (OSError, ValueError):
        return False
    return proc_start(int(pid_s)) == start


def new_prefix() -> str:
    """A run prefix ``rtl<pid % 10000>`` not used by a live run."""
    base = os.getpid() % 10000
    for n in range(base, base + 10000):
        prefix = f"{PREFIX}{n % 10000}"
        if not _run_alive(prefix) and not (STATE_DIR / prefix).exists():
            return prefix
    raise RuletraceError("lab: no free run prefix")


def list_netns() -> list[str]:
    """Names of all network namespaces (``ip netns list``)."""
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def list_links(ns: str | None = None) -> list[str]:
    """Interface names in a namespace (root when ``ns`` is None), without the ``@peer`` part."""
    out = run(["ip", "-o", "link", "show"], ns=ns, check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _kill_ns_pids(ns: str) -> None:
    """SIGKILL the processes left inside a lab namespace (only lab processes live there)."""
    pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def sweep(*, force: bool = False, keep: str | None = None) -> list[str]:
    """Remove namespaces, root-namespace links and state of dead lab runs; return what went.

    A run counts as dead when its pid file is missing or names a process that no longer exists
    (pid plus start time). ``force`` also removes live runs' leftovers; ``keep`` spares one prefix.
    """
    removed: list[str] = []

    def doomed(name: str) -> str | None:
        m = PREFIX_RE.match(name)
        if not m or m.group(1) == keep:
            return None
        return m.group(1) if force or not _run_alive(m.group(1)) else None

    for ns in list_netns():
        if doomed(ns):
            _kill_ns_pids(ns)
            run(["ip", "netns", "delete", ns], check=False)
            removed.append(f"netns {ns}")
    for link in list_links():
        if doomed(link):
            run(["ip", "link", "delete", link], check=False)
            removed.append(f"link {link}")
    if STATE_DIR.is_dir():
        for d in STATE_DIR.iterdir():
            if doomed(d.name):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"state {d}")
    return removed


@dataclass(slots=True)
class Host:
    """One test host: a network namespace."""

    name: str  # short role name: "client", "node", …
    ns: str  # full namespace name


@dataclass
class Lab:
    """A topology under construction: everything it makes is removed by :meth:`close`.

    Use as a context manager; ``close`` runs on success, exceptions and Ctrl-C alike.
    """

    prefix: str = field(default_factory=new_prefix)
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ifnames: list[str] = field(default_factory=list)
    _closed: bool = False

    def __post_init__(self) -> None:
        self.state = STATE_DIR / self.prefix
        self.state.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        (self.state / "pid").write_text(f"{pid} {proc_start(pid)}\n")

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- building -------------------------------------------------------------------------------
    def ifname(self, suffix: str) -> str:
        """The run's name for an interface, checked against IFNAMSIZ."""
        name = self.prefix + suffix
        if len(name) >= IFNAMSIZ:
            raise RuletraceError(f"lab: interface name {name!r} longer than {IFNAMSIZ - 1} characters")
        return name

    def host(self, name: str, sysctls: dict[str, str] | None = None) -> Host:
        """Create a namespace with loopback up and the given sysctls set inside it."""
        h = Host(name, f"{self.prefix}-{name}")
        run(["ip", "netns", "add", h.ns])
        self.hosts[name] = h
        run(["ip", "link", "set", "lo", "up"], ns=h.ns)
        # no IPv6 duplicate address detection delay, no router solicitations
        base = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}
        self.sysctl(h, {**base, **(sysctls or {})})
        return h

    def sysctl(self, h: Host, values: dict[str, str]) -> None:
        """Set sysctls inside a host's namespace (never in the root namespace)."""
        for k, v in values.items():
            run(["sysctl", "-qw", f"{k}={v}"], ns=h.ns)

    def veth(self, a: Host, a_if: str, b: Host, b_if: str) -> tuple[str, str]:
        """Join two hosts by a veth pair; interface names get the run prefix; both ends up."""
        na, nb = self.ifname(a_if), self.ifname(b_if)
        self.ifnames += [na, nb]
        # created directly inside the namespaces: nothing is ever left in the root namespace
        run(["ip", "link", "add", na, "netns", a.ns, "type", "veth", "peer", "name", nb, "netns", b.ns])
        run(["ip", "link", "set", na, "up"], ns=a.ns)
        run(["ip", "link", "set", nb, "up"], ns=b.ns)
        return na, nb

    def bridge(self, h: Host, suffix: str, ports: Sequence[str] = ()) -> str:
        """A Linux bridge inside a host, with the given interfaces as ports."""
        br = self.ifname(suffix)
        self.ifnames.append(br)
        run(["ip", "link", "add", br, "type", "bridge"], ns=h.ns)
        for p in ports:
            run(["ip", "link", "set", p, "master", br], ns=h.ns)
        run(["ip", "link", "set", br, "up"], ns=h.ns)
        return br

    def spare_device(self, h: Host, suffix: str) -> str:
        """An interface inside a host that carries no traffic (a name that rules can refer to)."""
        name = self.ifname(suffix)
        self.ifnames.append(name)
        # a port-less bridge: kernels without CONFIG_DUMMY (like the lab's) still have bridges
        run(["ip", "link", "add", name, "type", "bridge"], ns=h.ns)
        run(["ip", "link", "set", name, "up"], ns=h.ns)
        return name

    def addr(self, h: Host, dev: str, *cidrs: str) -> None:
        """Add addresses (IPv6 ones without DAD) to an interface."""
        for c in cidrs:
            extra = ["nodad"] if ":" in c else []
            run(["ip", "addr", "add", c, "dev", dev, *extra], ns=h.ns)

    def route(self, h: Host, dest: str, via: str) -> None:
        """Add a route inside a host."""
        run(["ip", "-6" if ":" in via else "-4", "route", "add", dest, "via", via], ns=h.ns)

    def spawn(self, h: Host, argv: Sequence[str], *, stdout: int | IO[Any] = subprocess.DEVNULL,
              stderr: int | IO[Any] = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """Start a background process inside a host; it is killed by :meth:`close`."""
        p = subprocess.Popen(["ip", "netns", "exec", h.ns, *argv], stdout=stdout, stderr=stderr,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 3.0) -> int | None:
        """Stop one background process started by :meth:`spawn` (its own process group)."""
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=wait)
        return p.returncode

    # --- teardown -------------------------------------------------------------------------------
    def close(self) -> None:
        """Kill background processes, delete every namespace, forget the run's state."""
        if self._closed:
            return
        self._closed = True
        try:
            for p in self.procs:
                try:
                    self.stop(p, signal.SIGKILL, wait=2.0)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            for h in self.hosts.values():
                _kill_ns_pids(h.ns)
                run(["ip", "netns", "delete", h.ns], check=False)
            # interfaces die with their namespace; wait until the kernel has let go of them
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and any(
                n.startswith(self.prefix + "-") for n in list_netns()
            ):
                time.sleep(0.05)
        finally:
            shutil.rmtree(self.state, ignore_errors=True)
