"""A live tracing session's changes to the kernel: scoped TRACE rules, nf_log bindings, undo.

Every change is written to a state file under /run/ruletrace/ *before* it is made, so that
``ruletrace cleanup`` can undo a session that was killed (SIGKILL, crash). Rules carry the
comment ``ruletrace:<session-id>`` (and ``ruletrace:<session-id>:seen`` for the counter rule);
cleanup deletes a rule by its full spec, so it never touches a rule it did not add.
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

from ..errors import RuletraceError
from ..rulesets.iptables_save import tokenize
from . import backend as be
from .netns import ns_id

STATE_DIR = Path(os.environ.get("RULETRACE_STATE_DIR", "/run/ruletrace"))
TAG = "ruletrace:"
SEEN_SUFFIX = ":seen"
NF_LOG_PROC = "/proc/thread-self/net/netfilter/nf_log"  # the calling thread's namespace
NF_LOG_SYSCTL = "/proc/sys/net/netfilter/nf_log/{pf}"
NF_LOG_ALL_NETNS = "/proc/sys/net/netfilter/nf_log_all_netns"
NFPROTO = {"ipv4": 2, "ipv6": 10}  # include/uapi/linux/netfilter.h NFPROTO_IPV4 / NFPROTO_IPV6
SYSLOG_LOGGER = {"ipv4": "nf_log_ipv4", "ipv6": "nf_log_ipv6"}
DEFAULT_RATE = 50  # traced packets per second at most (-m limit), so a mistake cannot flood the host
CMD_TIMEOUT = 30.0
_TAG_RE = re.compile(r'--comment "?ruletrace:([A-Za-z0-9]+)(:seen)?"?')
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
    raw_match: list[str] = field(default_factory=list)
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
        return [be.tool(backend, self.family), "-w", "-t", self.table, "-I", self.chain, "1", *self.args]

    def delete_cmd(self, backend: str) -> list[str]:
        return [be.tool(backend, self.family), "-w", "-t", self.table, "-D", self.chain, *self.args]

    def to_json(self) -> dict:
        return {"family": self.family, "table": self.table, "chain": self.chain, "args": self.args}


def plan_rules(spec: TraceSpec, sid: str) -> list[PlannedRule]:
    """The rules of a session, in insertion order (each goes to position 1).

    Per chain: the TRACE rule (``-m limit``) and, inserted before it, a counter rule without a
    target that sees every packet of the flow, so that the packets the cap skipped can be counted.
    """
    out: list[PlannedRule] = []
    for fam in spec.families:
        for chain in spec.chains():
            m = spec.match_args(fam, chain)
            out.append(PlannedRule(fam, "raw", chain, [
                *m, "-m", "limit", "--limit", f"{spec.rate}/second", "--limit-burst", str(spec.rate),
                "-m", "comment", "--comment", TAG + sid, "-j", "TRACE"]))
            out.append(PlannedRule(fam, "raw", chain, [*m, "-m", "comment", "--comment", TAG + sid + SEEN_SUFFIX]))
    return out


def new_session_id() -> str:
    return secrets.token_hex(4)


def proc_start(pid: int) -> str | None:
    """Start time of a process (field 22 of /proc/PID/stat), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


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
    netns: dict  # {"id": "dev:ino", "name": ..., "pid": ...}
    backend: str
    rules: list[PlannedRule] = field(default_factory=list)
    nf_log: dict[int, str] = field(default_factory=dict)  # pf -> logger to restore
    created: float = 0.0
    # nf_tables tables/chains that iptables-nft created for our rules: [nft family, table, chain|""]
    made: list[list[str]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.sid}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        data = {"sid": self.sid, "pid": self.pid, "start": self.start, "netns": self.netns,
                "backend": self.backend, "rules": [r.to_json() for r in self.rules],
                "nf_log": {str(k): v for k, v in self.nf_log.items()}, "created": self.created,
                "made": self.made}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def alive(self) -> bool:
        return self.start is not None and proc_start(self.pid) == self.start

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            d = json.loads(path.read_text())
            return cls(d["sid"], int(d["pid"]), d.get("start"), d.get("netns") or {}, d["backend"],
                       [PlannedRule(r["family"], r["table"], r["chain"], list(r["args"])) for r in d["rules"]],
                       {int(k): v for k, v in (d.get("nf_log") or {}).items()}, float(d.get("created", 0)),
                       [list(x) for x in d.get("made") or []])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RuletraceError(f"unreadable session state file: {e}", origin=None) from e


def all_states() -> list[tuple[Path, State | None]]:
    if not STATE_DIR.is_dir():
        return []
    out: list[tuple[Path, State | None]] = []
    for p in sorted(STATE_DIR.glob("*.json")):
        try:
            out.append((p, State.load(p)))
        except RuletraceError:
            out.append((p, None))
    return out


# --- running commands --------------------------------------------------------------------


class Actions:
    """Runs (or, in dry-run, prints) every change; ``say`` receives one line per change."""

    def __init__(self, *, dry_run: bool = False, say: Callable[[str], None] | None = None) -> None:
        self.dry_run = dry_run
        self.say = say or (lambda s: None)

    def run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str] | None:
        self.say(("would run: " if self.dry_run else "run: ") + shlex.join(argv))
        if self.dry_run:
            return None
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        except FileNotFoundError as e:
            raise RuletraceError(f"{argv[0]} not found: install it or choose another --backend") from e
        except subprocess.TimeoutExpired as e:
            raise RuletraceError(f"timed out: {shlex.join(argv)}") from e
        if check and p.returncode != 0:
            err = p.stderr.strip()
            if "Permission denied" in err or "you must be root" in err:
                raise RuletraceError(f"{argv[0]}: permission denied (run as root / with CAP_NET_ADMIN)")
            raise RuletraceError(f"{shlex.join(argv)} failed: {err[:400]}")
        return p

    def set_nf_log(self, pf: int, logger: str) -> None:
        self.say(("would write " if self.dry_run else "write ") + f"{logger} to {NF_LOG_SYSCTL.format(pf=pf)}")
        if not self.dry_run:
            set_nf_log(pf, logger)


# --- undo --------------------------------------------------------------------------------


def undo(state: State, actions: Actions) -> list[str]:
    """Delete the state's rules and restore its nf_log bindings; returns problems (not raised)."""
    problems: list[str] = []
    for r in reversed(state.rules):
        p = actions.run(r.delete_cmd(state.backend), check=False)
        if p is not None and p.returncode != 0 and not _gone(p.stderr):
            problems.append(f"{shlex.join(r.delete_cmd(state.backend))}: {p.stderr.strip()[:200]}")
    for fam, table, chain in state.made:  # chains first, then the table, each only when empty
        if chain:
            if nft_exists(fam, table, chain) and not nft_has_rules(fam, table, chain):
                actions.run(["nft", "delete", "chain", fam, table, chain], check=False)
        elif nft_exists(fam, table) and not nft_has_chains(fam, table):
            actions.run(["nft", "delete", "table", fam, table], check=False)
    current = nf_log_bindings()
    for pf, logger in state.nf_log.items():
        if current.get(pf, (None,))[0] != logger:
            try:
                actions.set_nf_log(pf, logger)
            except RuletraceError as e:
                problems.append(str(e))
    return problems


NFT_FAMILY = {"ipv4": "ip", "ipv6": "ip6"}


def _nft(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["nft", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None


def nft_exists(fam: str, table: str, chain: str = "") -> bool:
    """True when the nf_tables table (or chain) exists in this namespace."""
    p = _nft("list", "chain", fam, table, chain) if chain else _nft("list", "table", fam, table)
    return p is not None and p.returncode == 0


def nft_has_rules(fam: str, table: str, chain: str) -> bool:
    p = _nft("-j", "list", "chain", fam, table, chain)
    return p is None or p.returncode != 0 or '"rule"' in p.stdout


def nft_has_chains(fam: str, table: str) -> bool:
    p = _nft("-j", "list", "table", fam, table)
    return p is None or p.returncode != 0 or '"chain"' in p.stdout


def nft_missing(rules: list[PlannedRule]) -> list[list[str]]:
    """nf_tables chains (and tables) our rules need that do not exist yet, in deletion order."""
    out: list[list[str]] = []
    tables: list[list[str]] = []
    for r in rules:
        fam = NFT_FAMILY[r.family]
        if [fam, r.table, r.chain] not in out and not nft_exists(fam, r.table, r.chain):
            out.append([fam, r.table, r.chain])
        if [fam, r.table, ""] not in tables and not nft_exists(fam, r.table):
            tables.append([fam, r.table, ""])
    return out + tables


def _gone(stderr: str) -> bool:
    s = stderr.lower()
    return "does a matching rule exist" in s or "bad rule" in s or "no chain/target/match" in s


def tagged_rules(backend: str, family: str) -> list[tuple[str, str, str, str]]:
    """Rules tagged by ruletrace in a backend: ``(sid, table, chain, spec after -A CHAIN)``."""
    out: list[tuple[str, str, str, str]] = []
    table = ""
    for line in be.save(backend, family).splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A ") and TAG in line:
            m = _TAG_RE.search(line)
            if m:
                chain, _, spec = line[3:].partition(" ")
                out.append((m[1], table, chain, spec))
    return out


def stale_sessions(here: str | None = None) -> tuple[list[State], list[tuple[str, str, str, str, str]]]:
    """Dead sessions of this namespace, and tagged rules (in this namespace) of no live session.

    Returns ``(states, orphans)``; an orphan is ``(backend, family, table, chain, spec)``.
    """
    here = here or ns_id()
    live: set[str] = set()
    dead: list[State] = []
    for _p, st in all_states():
        if st is None:
            continue
        if st.alive():
            live.add(st.sid)
        elif st.netns.get("id") == here:
            dead.append(st)
    dead_rules = {(st.backend, r.family, r.table, r.chain, shlex.join(r.args)) for st in dead for r in st.rules}
    orphans: list[tuple[str, str, str, str, str]] = []
    for b in be.BACKENDS:
        for fam in be.FAMILIES:
            for sid, table, chain, spec in tagged_rules(b, fam):
                if sid in live:
                    continue
                if (b, fam, table, chain, shlex.join(tokenize(spec))) in dead_rules:
                    continue  # the dead session's own undo removes it
                orphans.append((b, fam, table, chain, spec))
    return dead, orphans


def clean_stale(actions: Actions, here: str | None = None) -> tuple[int, list[str]]:
    """Undo dead sessions and delete orphaned tagged rules in this namespace; (changes, problems)."""
    dead, orphans = stale_sessions(here)
    problems: list[str] = []
    n = 0
    for st in dead:
        actions.say(f"session {st.sid} (pid {st.pid}, {time.strftime('%F %T', time.localtime(st.created))}) "
                    "is gone: undoing its changes")
        problems += undo(st, actions)
        n += len(st.rules) + len(st.nf_log)
        if not actions.dry_run:
            st.remove()
    for b, fam, table, chain, spec in orphans:
        actions.say(f"rule tagged by a finished ruletrace session: -t {table} -A {chain} {spec}")
        p = actions.run([be.tool(b, fam), "-w", "-t", table, "-D", chain, *tokenize(spec)], check=False)
        if p is not None and p.returncode != 0 and not _gone(p.stderr):
            problems.append(p.stderr.strip()[:200])
        n += 1
    return n, problems


def other_namespace_states(here: str | None = None) -> list[State]:
    """Dead sessions recorded for other namespaces (cleaned with ``cleanup --netns``/``--pid``)."""
    here = here or ns_id()
    return [st for _p, st in all_states() if st is not None and not st.alive() and st.netns.get("id") != here]


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
