"""What ruletrace may delete: ownership by proof, never by a comment.

* A rule, binding or nf_tables object recorded in a state file is undone (by its full
  recorded spec) only when that session is provably gone: its liveness marker
  ``@ruletrace-<sid>`` is not held in the namespace, *and* its owning process is provably gone
  (another boot id, or no process with the recorded pid and start time in the recorded pid
  namespace). When the pid cannot be checked (another pid namespace, an older record),
  ``force`` accepts the marker alone.
* A rule without a state file (an *orphan*) is recognised only in the exact shapes a session
  writes — in table raw, chain PREROUTING or OUTPUT: ``<matches> -m limit --limit N/sec
  --limit-burst N -m comment --comment ruletrace:<sid> -j TRACE`` or ``<matches> -m comment
  --comment ruletrace:<sid>:seen`` without a target, the matches holding no other target or
  comment, ``<sid>`` exactly 32 lowercase hex digits — and deleted only with ``force`` and when
  no marker of that session is held. Everything else that looks tagged is not ours.
* An nf_tables table without a state file is recognised only as ``table inet
  ruletrace_<sid>`` (or ``netdev`` / ``bridge``, the early hooks' tables: ``nfthooks``) holding
  exactly what a session writes (``nftnative.exact_shape``), and deleted, whole, only with
  ``force`` and when no marker of that session is held.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RuletraceError
from ..rulesets.iptables_save import tokenize
from . import backend as be
from . import marker as mk
from . import session as ss
from . import undo as ud
from .netns import ns_id

ORPHAN_CHAINS = ("PREROUTING", "OUTPUT")
_TARGET_OPTS = frozenset({"-j", "--jump", "-g", "--goto", "--comment"})
_SID = ss.SID_RE.pattern


@dataclass(frozen=True)
class Orphan:
    """A rule in the exact shape of a session's rule, whose session has no state file here."""

    backend: str
    family: str
    table: str
    chain: str
    args: tuple[str, ...]
    sid: str

    def line(self) -> str:
        return shlex.join([be.tool(self.backend, self.family), "-t", self.table, "-A", self.chain, *self.args])

    def delete_cmd(self) -> list[str]:
        return [be.tool(self.backend, self.family), "-w", str(ss.LOCK_WAIT), "-t", self.table, "-D", self.chain,
                *self.args]


def orphan_sid(table: str, chain: str, args: list[str]) -> str | None:
    """The session id when ``args`` (a rule after ``-A CHAIN``) has the exact shape of a
    session's TRACE or counter rule; None for anything else."""
    if table != "raw" or chain not in ORPHAN_CHAINS or len(args) < 4:
        return None
    m = re.fullmatch(f"ruletrace:({_SID}):seen", args[-1])
    if m is not None:  # the counter rule: <matches> -m comment --comment ruletrace:<sid>:seen
        head, tail = args[:-4], args[-4:]
        if tail[:3] != ["-m", "comment", "--comment"]:
            return None
    else:  # the TRACE rule
        head, tail = args[:-12], args[-12:]
        if len(tail) != 12:
            return None
        m = re.fullmatch(f"ruletrace:({_SID})", tail[9])
        if (m is None or tail[:3] != ["-m", "limit", "--limit"] or not re.fullmatch(r"\d+/sec", tail[3])
                or tail[4] != "--limit-burst" or not tail[5].isdigit()
                or tail[6:9] != ["-m", "comment", "--comment"] or tail[10:] != ["-j", "TRACE"]):
            return None
    if any(a in _TARGET_OPTS for a in head):
        return None
    return m[1]


@dataclass(frozen=True)
class OrphanTable:
    """A session's own nf_tables table (exact name and content shape) without a state file here."""

    family: str
    table: str
    sid: str

    def line(self) -> str:
        return f"nft table {self.family} {self.table}"

    def delete_cmd(self) -> list[str]:
        return ["nft", "delete", "table", self.family, self.table]


def shaped_tables() -> list[OrphanTable]:
    """Every nf_tables table in the exact shape of a session's own table."""
    from . import nftnative as nn

    if not be.have_tool("nft"):
        return []
    out = []
    for fam, name in nn.own_tables():
        m = nn.TABLE_RE.fullmatch(name)
        if m is not None and nn.exact_shape(name, fam):
            out.append(OrphanTable(fam, name, m[1]))
    return out


def shaped_rules(backend: str, family: str) -> list[Orphan]:
    """Every rule of a backend and family in a session's exact shape."""
    out: list[Orphan] = []
    table = ""
    for line in be.save(backend, family).splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A ") and "ruletrace:" in line:
            chain, _, spec = line[3:].partition(" ")
            try:
                args = tokenize(spec)
            except RuletraceError:
                continue
            sid = orphan_sid(table, chain, args)
            if sid is not None:
                out.append(Orphan(backend, family, table, chain, tuple(args), sid))
    return out


@dataclass
class Leftovers:
    """What sessions left in this namespace, sorted by what may be done with it."""

    dead: list[ss.State] = field(default_factory=list)  # provably gone: undo by the record
    unproven: list[ss.State] = field(default_factory=list)  # marker gone, pid not checkable: force
    live: list[ss.State] = field(default_factory=list)  # records of running sessions: never touched
    orphans: list[Orphan | OrphanTable] = field(default_factory=list)  # no record, marker gone: force
    live_orphans: list[Orphan | OrphanTable] = field(default_factory=list)  # no record here, marker held: never
    tmp: list[Path] = field(default_factory=list)  # <sid>.tmp of provably gone sessions

    def __bool__(self) -> bool:
        return bool(self.dead or self.unproven or self.orphans or self.tmp)


def session_status(st: ss.State, here: str) -> str:
    """``live``, ``dead`` or ``unproven`` for a record of namespace ``here`` (we are in it)."""
    if st.netns.get("id") == here and mk.alive(st.sid):
        return "live"
    gone = st.owner_gone()
    return "dead" if gone is True else "live" if gone is False else "unproven"


def scan(here: str | None = None) -> Leftovers:
    """Leftovers of ruletrace sessions in this network namespace (nothing is changed)."""
    here = here or ns_id()
    out = Leftovers()
    recorded: set[str] = set()
    for _p, st in ss.all_states():
        if st is None:
            continue
        recorded.add(st.sid)
        if st.netns.get("id") != here:
            continue
        getattr(out, session_status(st, here)).append(st)
    for p, st in ss.all_states(tmp=True):
        if st is not None and st.sid not in recorded and session_status(st, here) == "dead":
            out.tmp.append(p)
    found: list[Orphan | OrphanTable] = [o for b in be.BACKENDS for fam in be.FAMILIES for o in shaped_rules(b, fam)]
    for o in found + shaped_tables():
        if o.sid in recorded:
            continue  # its record decides
        (out.live_orphans if mk.alive(o.sid) else out.orphans).append(o)
    return out


def describe(st: ss.State) -> str:
    when = time.strftime("%F %T", time.localtime(st.created)) if st.created else "?"
    return (f"session {st.sid} (pid {st.pid}, started {when}, {st.backend}): {len(st.rules)} rule(s)"
            + (f", nf_log of pf {', '.join(map(str, st.nf_log))}" if st.nf_log else "")
            + "".join(f", nft table {f} {t}" for f, t in st.tables))


def clean(actions: ss.Actions, *, force: bool = False, here: str | None = None) -> tuple[list[str], list[str]]:
    """Undo what may be undone in this namespace; returns ``(problems, lines about what was left)``.

    ``actions.done`` counts the changes actually made.
    """
    lo = scan(here)
    problems: list[str] = []
    left: list[str] = []
    todo = lo.dead + (lo.unproven if force else [])
    for st in todo:
        actions.say(f"{describe(st)}: gone, undoing its changes")
        pr = ud.undo(st, actions)
        problems += pr
        if pr:
            left.append(f"kept the state file of session {st.sid}: its undo failed")
        elif not actions.dry_run:
            st.remove()
    for p in lo.tmp:
        actions.say(f"{'would remove' if actions.dry_run else 'remove'} the unfinished state file {p}")
        if not actions.dry_run:
            try:
                p.unlink()
            except OSError as e:
                problems.append(f"{p}: {e.strerror}")
    if not force:
        for st in lo.unproven:
            left.append(f"{describe(st)}: left alone, its process cannot be proven gone (it ran in another "
                        "pid namespace or before a ruletrace upgrade); `ruletrace cleanup --force` undoes it")
    for o in lo.orphans:
        if force:
            actions.say(f"rule of session {o.sid} (no state file, marker gone): {o.line()}")
            try:
                done = actions.run(o.delete_cmd(), check=False)
            except RuletraceError as e:
                problems.append(str(e))
                continue
            if done is not None and done.returncode != 0 and not ud.already_gone(done.stderr):
                problems.append(f"{o.line()}: {done.stderr.strip()[:200]}")
        else:
            left.append(f"left alone, no state file for it: {o.line()} — `ruletrace cleanup --force` "
                        "deletes it (its session holds no marker in this namespace)")
    for o in lo.live_orphans:
        left.append(f"left alone, its session is running (marker held): {o.line()}")
    return problems, left


# --- sharing with other sessions in the namespace (see marker.py) ------------------------


def share_nf_log(state: ss.State, marker: mk.Marker, pf: int, current: str, want: str | None = None) -> None:
    """Record (and claim) the binding of ``pf`` to restore at the end.

    When another live session of this namespace uses the family's binding, its recorded
    original is ours too, so that whoever leaves last restores what was there before any
    session; and binding ``want`` over a binding another live session uses is refused.
    """
    others = mk.claimed_nf_log(mk.claims(exclude=state.sid), pf)
    if others is not None and want is not None and current != want:
        raise RuletraceError(f"another ruletrace session in this namespace uses the logger {current} of "
                             f"protocol family {pf}: binding {want} would take its trace away (wait for "
                             "it to end, or trace both with --via kmsg)")
    if pf not in state.nf_log:
        state.nf_log[pf] = others if others is not None else current
        marker.hold(mk.nf_log_claim(pf, state.nf_log[pf]))


def share_made(state: ss.State, marker: mk.Marker, missing: list[list[str]]) -> None:
    """Record the nf_tables objects to delete when empty: what is missing now, and what live
    sessions of this namespace recorded as made by ruletrace (the last one out deletes it)."""
    made = [list(x) for x in missing]
    for obj in mk.claimed_nft(mk.claims(exclude=state.sid)):
        if obj not in made:
            made.append(obj)
    made.sort(key=lambda x: x[2] == "")  # chains before their tables
    state.made = made
    for fam, table, chain in made:
        marker.hold(mk.nft_claim(fam, table, chain))


# --- other namespaces --------------------------------------------------------------------


def other_namespace_states(here: str | None = None) -> list[ss.State]:
    """Records of other namespaces whose process is not provably alive (one pass per namespace
    by ``cleanup``; their markers can only be checked from inside)."""
    here = here or ns_id()
    return [st for _p, st in ss.all_states()
            if st is not None and st.netns.get("id") != here and st.owner_gone() is not False]


def find_netns(st: ss.State) -> str | None:
    """A path to the namespace a record was made in, when it still exists (and is the same one)."""
    want = st.netns.get("id")
    cands: list[str] = []
    if st.netns.get("name"):
        cands.append(os.path.join("/run/netns", str(st.netns["name"])))
    if st.netns.get("pid"):
        cands.append(f"/proc/{st.netns['pid']}/ns/net")
    for p in cands:
        try:
            if ns_id(p) == want:
                return p
        except RuletraceError:
            pass
    for p in _nsfs_mounts() + [f"/proc/{d}/ns/net" for d in os.listdir("/proc") if d.isdigit()]:
        try:
            if ns_id(p) == want:
                return p
        except RuletraceError:
            continue
    return None


def _nsfs_mounts() -> list[str]:
    """Mount points of bind-mounted namespaces (``ip netns``, docker) in our mount namespace."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if post.startswith("nsfs "):
                    out.append(pre.split()[4].replace("\\040", " "))
    except OSError:
        pass
    return out
