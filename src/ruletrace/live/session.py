"""A live tracing session's changes to the kernel: scoped TRACE rules, nf_log bindings, state files.

Every change is written to a state file under /run/ruletrace/ *before* it is made, so that
``ruletrace cleanup`` can undo a session that was killed (SIGKILL, crash); an insert iptables
refuses is taken out of the record again (it added nothing), and every rule is first parsed by
``iptables -C`` (``Actions.check_rule``) so that a value iptables cannot take fails before any
change. Rules carry the
comment ``ruletrace:<session-id>`` (and ``ruletrace:<session-id>:seen`` for the counter rule),
the id being 128 random bits in hex; undo deletes a rule by its full recorded spec, so it never
touches a rule it did not add. What may be deleted without a state file is decided in
``ownership.py``; the liveness markers and shared-resource claims are in ``marker.py``; undoing
a session's changes in ``undo.py``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RuletraceError
from . import backend as be

STATE_DIR = Path(os.environ.get("RULETRACE_STATE_DIR", "/run/ruletrace"))
TAG = "ruletrace:"
SEEN_SUFFIX = ":seen"
NF_LOG_PROC = "/proc/thread-self/net/netfilter/nf_log"  # the calling thread's namespace
NF_LOG_SYSCTL = "/proc/sys/net/netfilter/nf_log/{pf}"
NF_LOG_ALL_NETNS = "/proc/sys/net/netfilter/nf_log_all_netns"
NFPROTO = {"ipv4": 2, "ipv6": 10}  # include/uapi/linux/netfilter.h NFPROTO_IPV4 / NFPROTO_IPV6
SYSLOG_LOGGER = {"ipv4": "nf_log_ipv4", "ipv6": "nf_log_ipv6"}
MAX_RATE = 10_000  # XT_LIMIT_SCALE: -m limit --limit N/second accepts N <= 10000
DEFAULT_RATE = 50  # traced packets per second at most (-m limit), so a mistake cannot flood the host
CMD_TIMEOUT = be.CMD_TIMEOUT
SID_BYTES = 16  # 128 random bits: nobody guesses another session's id
SID_RE = re.compile(f"[0-9a-f]{{{2 * SID_BYTES}}}")
LOCK_WAIT = 2  # seconds iptables waits for the xtables lock (-w) per attempt
LOCK_TRIES = 10  # attempts per command while the lock is busy: at most ~25 s per command
LOCK_PAUSE = 0.5
BOOT_ID = "/proc/sys/kernel/random/boot_id"
# a session's comment as iptables-save prints it: ruletrace:<sid> or ruletrace:<sid>:seen
_RULE_TAG = re.compile(r'--comment "?ruletrace:([0-9a-f]{' + str(2 * SID_BYTES) + r'})(:seen)?"?(?:\s|$)')
MAX_PORT = 65535
IFNAMSIZ = 16  # include/uapi/linux/if.h: an interface name and its NUL
_PROTO_PORTS = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})


@dataclass
class TraceSpec:
    """What to trace: the flow filter and where to put the TRACE rules."""

    proto: str | None = None
    dport: str | None = None
    sport: str | None = None
    src: str | None = None
    dst: str | None = None
    iface: str | None = None
    direction: str = "both"  # in: raw PREROUTING, out: raw OUTPUT, both
    raw_match: list[str] = field(default_factory=list)  # --raw-match as iptables options (shell words)
    raw_text: str = ""  # --raw-match as given: an nft match expression on native hosts (live/nftraw.py)
    families: tuple[str, ...] = ("ipv4", "ipv6")
    rate: int = DEFAULT_RATE
    all: bool = False

    def is_filterless(self) -> bool:
        return not (self.proto or self.dport or self.sport or self.src or self.dst or self.iface
                    or self.raw_match)

    def validate(self) -> None:
        if self.is_filterless() and not self.all:
            raise RuletraceError("a trace without a filter traces every packet: give a filter "
                                 "(-p tcp --dport 80, -s ADDR, -i IF, --raw-match '…') or --all")
        if (self.dport or self.sport) and (self.proto or "").lower() not in _PROTO_PORTS:
            raise RuletraceError("--dport/--sport need -p tcp, udp, udplite, sctp or dccp")
        if self.direction not in ("in", "out", "both"):
            raise RuletraceError(f"--direction {self.direction!r}: expected in, out or both")
        if self.rate < 1:
            raise RuletraceError("--rate-limit must be at least 1 packet per second")
        if self.rate > MAX_RATE:
            # iptables refuses it ("Rate too fast") only after the session has started recording
            raise RuletraceError(f"--rate-limit is at most {MAX_RATE} packets per second "
                                 "(the most the limit match can count)")
        for opt, value in (("--sport", self.sport), ("--dport", self.dport)):
            if value:
                check_ports(opt, value)
        if self.iface:
            name = self.iface.strip().lstrip("!").strip()
            if len(name) >= IFNAMSIZ:
                raise RuletraceError(f"-i {self.iface!r}: an interface name has at most {IFNAMSIZ - 1} characters")
        fams = [f for f in self.families if self._fits(f)]
        if not fams:
            raise RuletraceError("the addresses given do not fit the chosen family (-4/-6)")
        self.families = tuple(fams)

    def _fits(self, family: str) -> bool:
        for addr in (self.src, self.dst):
            if addr:
                try:
                    net = ipaddress.ip_network(addr.lstrip("!").strip(), strict=False)
                except ValueError as e:
                    raise RuletraceError(f"{addr!r} is not an address or network") from e
                if (net.version == 4) != (family == "ipv4"):
                    return False
        proto = (self.proto or "").lower()
        if proto in ("icmpv6", "ipv6-icmp") and family == "ipv4":
            return False
        return True

    def chains(self) -> list[str]:
        return {"in": ["PREROUTING"], "out": ["OUTPUT"], "both": ["PREROUTING", "OUTPUT"]}[self.direction]

    def match_args(self, family: str, chain: str) -> list[str]:
        """iptables match options for one family and chain (without comment, limit and target)."""
        a: list[str] = []
        if self.proto:
            p = self.proto.lower()
            if family == "ipv6" and p == "icmp":
                p = "ipv6-icmp"
            a += ["-p", p]
        if self.src:
            a += _neg("-s", self.src)
        if self.dst:
            a += _neg("-d", self.dst)
        if self.iface:
            a += _neg("-i" if chain == "PREROUTING" else "-o", self.iface)
        if self.sport:
            a += _neg("--sport", self.sport)
        if self.dport:
            a += _neg("--dport", self.dport)
        return a + list(self.raw_match)


def check_ports(opt: str, value: str) -> None:
    """A port or range PORT:PORT in numbers is within 0-65535, its first port not above its last
    (names, e.g. ``http``, are left to iptables and nft)."""
    parts = value.strip().lstrip("!").strip().split(":")
    nums = [int(x) for x in parts if x.isdigit()]
    if len(parts) > 2 or len(nums) != len([x for x in parts if x]):
        return  # not numbers: iptables (-C) or nft (--check) judges it before any change
    if any(n > MAX_PORT for n in nums):
        raise RuletraceError(f"{opt} {value!r}: a port is at most {MAX_PORT}")
    if len(parts) == 2 and len(nums) == 2 and nums[0] > nums[1]:
        raise RuletraceError(f"{opt} {value!r}: the range's first port is above its last (give LOW:HIGH)")


def _neg(opt: str, value: str) -> list[str]:
    value = value.strip()
    return ["!", opt, value[1:].strip()] if value.startswith("!") else [opt, value]


@dataclass
class PlannedRule:
    """One rule a session adds: ``args`` is the spec after ``-I CHAIN 1`` / ``-D CHAIN``."""

    family: str
    table: str
    chain: str
    args: list[str]

    def insert_cmd(self, backend: str) -> list[str]:
        return [be.tool(backend, self.family), "-w", str(LOCK_WAIT), "-t", self.table, "-I", self.chain, "1",
                *self.args]

    def delete_cmd(self, backend: str) -> list[str]:
        return [be.tool(backend, self.family), "-w", str(LOCK_WAIT), "-t", self.table, "-D", self.chain, *self.args]

    def check_cmd(self, backend: str) -> list[str]:
        """``iptables -C``: parses the rule as an insert would and changes nothing."""
        return [be.tool(backend, self.family), "-w", str(LOCK_WAIT), "-t", self.table, "-C", self.chain, *self.args]

    def comment(self) -> str | None:
        """The rule's ``--comment`` (``ruletrace:<sid>`` or ``ruletrace:<sid>:seen``), None without one."""
        for i, a in enumerate(self.args[:-1]):
            if a == "--comment":
                return self.args[i + 1]
        return None

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "table": self.table, "chain": self.chain, "args": self.args}


def plan_rules(spec: TraceSpec, sid: str, *, counters_only: bool = False) -> list[PlannedRule]:
    """The rules of a session, in insertion order (each goes to position 1).

    Per chain: the TRACE rule (``-m limit``) and, inserted before it, a counter rule without a
    target that sees every packet of the flow, so that the packets the cap skipped can be counted.
    ``counters_only``: the counter rules alone (both backends: nf_tables switches tracing on).
    """
    out: list[PlannedRule] = []
    for fam in spec.families:
        for chain in spec.chains():
            m = spec.match_args(fam, chain)
            if not counters_only:
                out.append(PlannedRule(fam, "raw", chain, [
                    *m, "-m", "limit", "--limit", f"{spec.rate}/second", "--limit-burst", str(spec.rate),
                    "-m", "comment", "--comment", TAG + sid, "-j", "TRACE"]))
            out.append(PlannedRule(fam, "raw", chain, [*m, "-m", "comment", "--comment", TAG + sid + SEEN_SUFFIX]))
    return out


def rule_present(rule: PlannedRule, save_text: str) -> bool:
    """Whether ``iptables-save`` output (every table of the rule's family) holds ``rule``'s own
    rule: one in its table and chain with its exact comment (a session's id is in no other rule).
    A rule without a comment is taken as present (nothing proves otherwise)."""
    comment = rule.comment()
    tag = rule_tag(f"--comment {comment}") if comment else None
    if tag is None:
        return True
    table = ""
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table == rule.table and line.startswith(f"-A {rule.chain} ") and rule_tag(line) == tag:
            return True
    return False


def rule_tag(text: str) -> tuple[str, bool] | None:
    """``(sid, is_counter_rule)`` of a rule text carrying a session's comment, else None.

    Only the exact id grammar counts (``ruletrace:ssh`` is not a session's tag). What may be
    deleted is decided by ``ownership`` (exact shapes and proof), not by this.
    """
    if TAG not in text:
        return None
    m = _RULE_TAG.search(text)
    return (m[1], bool(m[2])) if m else None


def new_session_id() -> str:
    return secrets.token_hex(SID_BYTES)


def proc_start(pid: int) -> str | None:
    """Start time of a process (field 22 of /proc/PID/stat), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def boot_id() -> str | None:
    try:
        return Path(BOOT_ID).read_text().strip() or None
    except OSError:
        return None


def pid_ns() -> str | None:
    """Identity (``dev:inode``) of our pid namespace: pids in a record mean something only there."""
    try:
        st = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


# --- nf_log bindings ---------------------------------------------------------------------


def nf_log_bindings(path: str = NF_LOG_PROC) -> dict[int, tuple[str, list[str]]]:
    """pf -> (bound logger or NONE, available loggers) from /proc/net/netfilter/nf_log."""
    out: dict[int, tuple[str, list[str]]] = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)\s*\(([^)]*)\)", line)
        if m:
            out[int(m[1])] = (m[2], [x for x in m[3].split(",") if x])
    return out


def set_nf_log(pf: int, logger: str) -> None:
    """Bind ``logger`` (or NONE) to protocol family ``pf`` in this namespace (sysctl net.netfilter.nf_log.PF)."""
    path = NF_LOG_SYSCTL.format(pf=pf)
    try:
        with open(path, "w") as f:
            f.write(logger)
    except OSError as e:
        raise RuletraceError(f"cannot write {logger} to {path}: {e.strerror}") from e


def nf_log_all_netns() -> str | None:
    try:
        return Path(NF_LOG_ALL_NETNS).read_text().strip()
    except OSError:
        return None  # only the initial namespace has this sysctl


# --- state files -------------------------------------------------------------------------


@dataclass
class State:
    """What one session changed, as saved in ``STATE_DIR/<sid>.json``."""

    sid: str
    pid: int
    start: str | None
    netns: dict[str, Any]  # {"id": "dev:ino", "name": ..., "pid": ...}
    backend: str
    rules: list[PlannedRule] = field(default_factory=list)
    nf_log: dict[int, str] = field(default_factory=dict)  # pf -> logger to restore
    created: float = 0.0
    # nf_tables tables/chains that iptables-nft created for our rules: [nft family, table, chain|""]
    made: list[list[str]] = field(default_factory=list)
    boot_id: str | None = None  # the owner's boot, pid namespace: where pid + start mean something
    pidns: str | None = None
    # nf_tables tables the session created whole (native backend): [nft family, table]; deleted by name
    tables: list[list[str]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.sid}.json"

    def save(self) -> None:
        data = {"sid": self.sid, "pid": self.pid, "start": self.start, "netns": self.netns,
                "backend": self.backend, "rules": [r.to_json() for r in self.rules],
                "nf_log": {str(k): v for k, v in self.nf_log.items()}, "created": self.created,
                "made": self.made, "boot_id": self.boot_id, "pidns": self.pidns, "tables": self.tables}
        tmp = self.path.with_suffix(".tmp")
        try:
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)
        except OSError as e:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise RuletraceError(f"cannot write the session state file {self.path}: {e.strerror or e} "
                                 "(set RULETRACE_STATE_DIR to a writable folder)") from e

    def remove(self) -> None:
        for p in (self.path, self.path.with_suffix(".tmp")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def owner_gone(self) -> bool | None:
        """True when the owning process is provably gone, False when it runs, None when unknown.

        Proof: another boot (boot id), or, in the pid namespace the record was made in, no
        process with that pid and start time. A record without those (or from another pid
        namespace) cannot be checked.
        """
        boot = boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return True
        if not (self.start and self.boot_id and self.pidns) or self.pidns != pid_ns():
            return None
        return proc_start(self.pid) != self.start

    def alive(self) -> bool:
        """Not provably gone (by pid; the namespace's marker is checked by the caller)."""
        return self.owner_gone() is not True

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            d = json.loads(path.read_text())
            return cls(d["sid"], int(d["pid"]), d.get("start"), d.get("netns") or {}, d["backend"],
                       [PlannedRule(r["family"], r["table"], r["chain"], list(r["args"])) for r in d["rules"]],
                       {int(k): v for k, v in (d.get("nf_log") or {}).items()}, float(d.get("created", 0)),
                       [list(x) for x in d.get("made") or []], d.get("boot_id"), d.get("pidns"),
                       [[str(f), str(t)] for f, t in d.get("tables") or []])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise RuletraceError(f"{path}: unreadable session state file: {e}") from e


def new_state(sid: str, netns: dict[str, Any], backend: str) -> State:
    """The record of a session of this process (pid, start time, boot id, pid namespace)."""
    pid = os.getpid()
    return State(sid, pid, proc_start(pid), netns, backend, created=time.time(), boot_id=boot_id(),
                 pidns=pid_ns())


def all_states(*, tmp: bool = False) -> list[tuple[Path, State | None]]:
    """Every state file (``tmp``: the ``<sid>.tmp`` files a crash in the middle of a save left)."""
    if not STATE_DIR.is_dir():
        return []
    out: list[tuple[Path, State | None]] = []
    for p in sorted(STATE_DIR.glob("*.tmp" if tmp else "*.json")):
        try:
            out.append((p, State.load(p)))
        except RuletraceError:
            out.append((p, None))
    return out


# --- running commands --------------------------------------------------------------------


def _lock_busy(p: subprocess.CompletedProcess[str]) -> bool:
    """iptables gave up waiting for the xtables lock (exit status 4, RESOURCE_PROBLEM)."""
    return p.returncode == 4 and "xtables lock" in p.stderr


PARAMETER_PROBLEM = 2  # iptables' exit status for options it cannot parse (xtables.h PARAMETER_PROBLEM)
_VERSION_PREFIX = re.compile(r"^\S*tables v[\d.]+ \([^)]*\): ")


def tool_error(stderr: str) -> str:
    """An iptables complaint on one line: without its "Try `iptables -h'" hint, blank lines and
    the version prefix ("iptables v1.8.9 (legacy): ")."""
    lines = [_VERSION_PREFIX.sub("", x.strip()).strip() for x in stderr.splitlines()]
    kept = [x for x in lines if x and not x.startswith("Try `")]
    return "; ".join(kept) or "no message"


class Actions:
    """Runs (or, in dry-run, prints) every change; ``say`` receives one line per change, ``note``
    (default: ``say``) what the user must see even when the changes are not shown (a wait)."""

    def __init__(self, *, dry_run: bool = False, say: Callable[[str], None] | None = None,
                 note: Callable[[str], None] | None = None) -> None:
        self.dry_run = dry_run
        self.say = say or (lambda s: None)
        self.note = note or self.say
        self.done = 0  # changes made (commands that succeeded, bindings written)

    def run(self, argv: list[str], *, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str] | None:
        """Run ``argv`` (``stdin``: its input, e.g. an ``nft -f -`` script); while the xtables lock
        is busy (or the command hangs), retry up to LOCK_TRIES times. With ``check``, a failure
        raises; without, the caller looks at it."""
        self.say(("would run: " if self.dry_run else "run: ") + shlex.join(argv) + (" <<EOF" if stdin else ""))
        for line in (stdin or "").splitlines() + (["EOF"] if stdin else []):
            self.say("    " + line.replace("\t", "  "))
        if self.dry_run:
            return None
        for attempt in range(1, LOCK_TRIES + 1):
            try:
                p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=CMD_TIMEOUT)
            except FileNotFoundError as e:
                raise RuletraceError(f"{argv[0]} not found: install it or choose another --backend") from e
            except subprocess.TimeoutExpired:
                if attempt == LOCK_TRIES:
                    raise RuletraceError(f"timed out {LOCK_TRIES} times: {shlex.join(argv)}") from None
                self.note(f"timed out after {CMD_TIMEOUT:g} s: retrying ({attempt}/{LOCK_TRIES})")
                continue
            if not _lock_busy(p) or attempt == LOCK_TRIES:
                break
            self.note(f"the xtables lock is held by another program: retrying ({attempt}/{LOCK_TRIES})")
            time.sleep(LOCK_PAUSE)
        if p.returncode == 0:
            self.done += 1
        if check and p.returncode != 0:
            raise failed(argv, p)
        return p

    def check_rule(self, rule: PlannedRule, backend: str) -> None:
        """Before any change: ``iptables -C`` parses the rule as the insert will. Options it cannot
        parse (exit status 2: a bad port, state or interface name, a match that does not exist)
        raise; any other answer (no such rule, no permission, the lock) is left to the insert.

        A bad rule fails in the parse, before the table is opened; a good one opens it, and legacy
        ip_tables then instantiates its raw table in the namespace (the insert would next). A dry
        run changes nothing: there the rule is parsed by the nf_tables variant (the same
        extensions and words; its -C reads only), where there is one."""
        if self.dry_run and backend == be.LEGACY and be.have_tool(be.tool(be.NFT, rule.family)):
            backend = be.NFT
        argv = rule.check_cmd(backend)
        self.say("check (changes nothing): " + shlex.join(argv))
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        except FileNotFoundError as e:
            raise RuletraceError(f"{argv[0]} not found: install it or choose another --backend") from e
        except subprocess.TimeoutExpired:
            return
        if p.returncode == PARAMETER_PROBLEM:
            raise RuletraceError(f"iptables refuses the session's rule: {tool_error(p.stderr)[:400]} "
                                 f"(checked with {argv[0]} -C; nothing was changed)")

    def set_nf_log(self, pf: int, logger: str) -> None:
        self.say(("would write " if self.dry_run else "write ") + f"{logger} to {NF_LOG_SYSCTL.format(pf=pf)}")
        if not self.dry_run:
            set_nf_log(pf, logger)
            self.done += 1


def failed(argv: list[str], p: subprocess.CompletedProcess[str]) -> RuletraceError:
    """The error of a command that failed: its complaint on one line."""
    err = p.stderr.strip()
    if "Permission denied" in err or "you must be root" in err:
        return be.permission_error(argv[0])
    return RuletraceError(f"{shlex.join(argv)} failed: {tool_error(err)[:400]}")


# --- counters ----------------------------------------------------------------------------


def rule_counters(backend: str, family: str, sid: str) -> tuple[int, int]:
    """Packets counted by the session's (seen, TRACE) rules in one family."""
    seen = traced = 0
    for line in be.save(backend, family, counters=True).splitlines():
        if TAG + sid not in line:
            continue
        m = re.match(r"\[(\d+):\d+\]", line)
        if not m:
            continue
        if TAG + sid + SEEN_SUFFIX in line:
            seen += int(m[1])
        else:
            traced += int(m[1])
    return seen, traced
