"""KernelHost with native nftables: load ``nft -f`` text in the server namespace, record ``nft monitor trace``.

One ``nft -a monitor trace`` runs in the server namespace for the host's life; a reader thread
queues its lines; ``send`` returns the steps of the first traced packet after the send, from the
step after the rule that set ``nftrace`` (what the simulation's ``trace_start`` marks).
"""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
import time

from .kernel_host import KernelHost
from .kernel_host import unavailable as _base_unavailable

# a monitor started before the rules were loaded prints "unknown rule handle N" instead of the text
_LINE = re.compile(r"^trace id ([0-9a-f]+) (\S+) (\S+) (\S+) (?:unknown )?(rule|policy|verdict|return) (.*)$")
_HANDLE = re.compile(r"(?:# handle|^handle) (\d+) \(verdict")


def unavailable() -> str | None:
    why = _base_unavailable()
    if why:
        return why
    if shutil.which("nft") is None:
        return "nft not installed"
    return None


def trace_prefix(client: str) -> str:
    """A table that switches tracing on for the client's packets (runs before everything else)."""
    return ("table ip rtstrace {\n chain pre { type filter hook prerouting priority -1000; policy accept;\n"
            f"  ip saddr {client} meta nftrace set 1\n }}\n}}\n")


class NftHost(KernelHost):
    def __enter__(self) -> NftHost:
        super().__enter__()
        try:
            self.sh(self.srv, "nft", "flush", "ruleset")
            self._lines: queue.Queue[str] = queue.Queue()
            self._mon = subprocess.Popen(["ip", "netns", "exec", self.srv, "nft", "-a", "monitor", "trace"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._pump, daemon=True).start()
            time.sleep(0.3)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _pump(self) -> None:
        assert self._mon.stdout is not None
        for line in self._mon.stdout:
            self._lines.put(line.rstrip("\n"))

    def __exit__(self, *exc: object) -> None:
        mon = getattr(self, "_mon", None)
        if mon is not None:
            mon.terminate()
            try:
                mon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                mon.kill()
                mon.wait(timeout=5)
            if mon.stdout is not None:
                mon.stdout.close()
        super().__exit__(*exc)

    def load_nft(self, text: str) -> str:
        """Replace the server's ruleset; return ``nft -a list ruleset`` (handles as the kernel has them)."""
        self.sh(self.srv, "nft", "-f", "-", input="flush ruleset\n" + text)
        self.sh(self.srv, "conntrack", "-F", check=False)
        return self.sh(self.srv, "nft", "-a", "list", "ruleset")

    def send_nft(self, proto: str, src_ns: str, dst: str, *, sport: int, dport: int, src: str
                 ) -> list[tuple[str, str, str, int | None]]:
        while not self._lines.empty():
            self._lines.get_nowait()
        self.send(proto, src_ns, dst, sport=sport, dport=dport, src=src)
        lines: list[str] = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                lines.append(self._lines.get(timeout=0.25))
            except queue.Empty:
                if lines:
                    break
        return steps(lines)


def steps(lines: list[str]) -> list[tuple[str, str, str, int | None]]:
    """(table, chain, rule|policy, handle) of the first trace id's steps after the nftrace rule."""
    out: list[tuple[str, str, str, int | None]] = []
    tid = None
    started = False
    for line in lines:
        m = _LINE.match(line)
        if m is None:
            continue
        if tid is None:
            tid = m[1]
        if m[1] != tid:
            continue
        kind, rest = m[5], m[6]
        h = _HANDLE.search(rest)
        if not started:
            if kind == "rule" and m[3] == "rtstrace":  # trace_prefix's rule
                started = True
            continue
        out.append((m[3], m[4], "rule" if kind == "rule" else kind, int(h[1]) if h else None))
    return out
