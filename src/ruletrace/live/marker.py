"""Liveness markers: abstract unix sockets a live session holds in its network namespace.

Abstract unix socket names belong to a network namespace (not to a mount namespace or a
folder), so every ruletrace in the namespace sees them, whatever ``RULETRACE_STATE_DIR`` or
``/run`` it uses. A session binds ``@ruletrace-<sid>`` (listening) before it changes anything
and keeps it until it has undone everything; the kernel releases it when the process dies,
SIGKILL included. Next to it the session binds one *claim* per shared thing it relies on:

* ``@ruletrace-<sid>/nf_log/<pf>/<logger>`` — it uses the family's logger binding; ``logger``
  is the binding to restore when the last session using it leaves;
* ``@ruletrace-<sid>/nft/<family>/<table>/<chain>`` — it uses an nf_tables table (chain empty)
  or chain that a ruletrace session created; the last one out deletes it when it is empty.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import RuletraceError

PREFIX = "ruletrace-"
LOCK = "\0ruletrace-lock"  # one per network namespace: sharing decisions are made under it
LOCK_TIMEOUT = 60.0
UNIX_PROC = "/proc/thread-self/net/unix"  # the unix sockets of the calling thread's namespace
_CLAIM_RE = re.compile(r"@ruletrace-([0-9a-f]+)/(\S+)$")


def _name(sid: str, claim: str = "") -> str:
    return "\0" + PREFIX + sid + ("/" + claim if claim else "")


class Marker:
    """The sockets one session holds (nothing in a dry run)."""

    def __init__(self, sid: str, *, dry_run: bool = False) -> None:
        self.sid = sid
        self.dry_run = dry_run
        self.held: dict[str, socket.socket] = {}

    def hold(self, claim: str = "") -> None:
        """Bind the liveness marker (``claim`` empty) or one claim, in the current namespace."""
        if self.dry_run or claim in self.held:
            return
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(_name(self.sid, claim))
            if not claim:
                s.listen(16)  # so that others can ask the kernel who holds it (SO_PEERCRED)
        except OSError as e:
            s.close()
            raise RuletraceError(f"cannot bind the session marker @{_name(self.sid, claim)[1:]}: "
                                 f"{e.strerror}") from e
        self.held[claim] = s

    def close(self) -> None:
        for s in self.held.values():
            s.close()
        self.held.clear()


@contextmanager
def netns_lock(*, dry_run: bool = False, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the namespace's ruletrace lock (``@ruletrace-lock``; the kernel drops it when we die).

    Reading the claims and acting on them (binding a logger, restoring it, deleting a shared
    chain) happen under it, so that two sessions leaving at once cannot both leave the
    restore to the other.
    """
    if dry_run:
        yield
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                s.bind(LOCK)
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise RuletraceError(f"cannot take the ruletrace lock @{LOCK[1:]}: {e.strerror}") from e
                if time.monotonic() >= deadline:
                    raise RuletraceError(f"another ruletrace held the lock @{LOCK[1:]} of this namespace "
                                         f"for {timeout:g} s") from e
                time.sleep(0.05)
        yield
    finally:
        s.close()


def alive(sid: str) -> bool:
    """True when a process in this network namespace holds ``@ruletrace-<sid>``.

    Tested by binding the name: only EADDRINUSE proves it is held, and any other failure
    counts as alive too (we cannot tell, so nothing of that session may be touched).
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(_name(sid))
    except OSError:
        return True
    finally:
        s.close()
    return False


def holder_uid(sid: str) -> int | None:
    """uid of the process listening on ``@ruletrace-<sid>`` (SO_PEERCRED), None when unknown."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(_name(sid))
        uid: int
        _pid, uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return uid
    except OSError:
        return None
    finally:
        s.close()


def claims(*, exclude: str = "", path: str = UNIX_PROC) -> dict[str, set[str]]:
    """claim -> sids of the live sessions in this namespace that hold it (not ``exclude``).

    A claim counts only when its session's marker is held by root or by our own user: any
    user can bind abstract names, and a claim changes what the last session restores.
    """
    out: dict[str, set[str]] = {}
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return out
    trusted: dict[str, bool] = {}
    for line in text.splitlines():
        m = _CLAIM_RE.search(line)
        if not m or m[1] == exclude:
            continue
        sid = m[1]
        if sid not in trusted:
            trusted[sid] = holder_uid(sid) in (0, os.geteuid())
        if trusted[sid]:
            out.setdefault(m[2], set()).add(sid)
    return out


def nf_log_claim(pf: int, logger: str) -> str:
    return f"nf_log/{pf}/{logger}"


def nft_claim(fam: str, table: str, chain: str) -> str:
    return f"nft/{fam}/{table}/{chain}"


def claimed_nf_log(held: dict[str, set[str]], pf: int) -> str | None:
    """The logger to restore that live sessions recorded for ``pf`` (None when none uses it)."""
    for claim in sorted(held):
        parts = claim.split("/")
        if len(parts) == 3 and parts[0] == "nf_log" and parts[1] == str(pf):
            return parts[2]
    return None


def claimed_nft(held: dict[str, set[str]]) -> list[list[str]]:
    """The nf_tables objects live sessions recorded as created by ruletrace: ``[fam, table, chain]``."""
    out = []
    for claim in sorted(held):
        parts = claim.split("/")
        if len(parts) == 4 and parts[0] == "nft":
            out.append(parts[1:])
    return out

