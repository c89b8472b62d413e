"""Undoing a live session: delete its rules and the nf_tables objects it made, restore its nf_log
bindings. Used by the session at its end (``tracer.Tracer.teardown``) and by ``ruletrace cleanup``
for a session that was killed (``ownership.py``); the state it undoes is ``session.State``.
"""

from __future__ import annotations

import shlex
import subprocess

from ..errors import RuletraceError
from . import backend as be
from . import marker as mk
from . import session as ss


def dry_run_undo(state: ss.State, actions: ss.Actions, rule_backend: str) -> None:
    """--dry-run: print the commands an undo of ``state`` would run (nothing was made)."""
    for r in reversed(state.rules):
        actions.run(r.delete_cmd(rule_backend))
    for fam, table in state.tables:
        actions.run(["nft", "delete", "table", fam, table])


def undo(state: ss.State, actions: ss.Actions, marker: mk.Marker | None = None) -> list[str]:
    """Delete the state's rules, the nf_tables objects it made (when empty and no other live
    session still uses them) and restore its nf_log bindings (unless another live session still
    uses them), then drop ``marker``'s claims. Every step is tried on its own; returns the
    problems (nothing is raised)."""
    problems: list[str] = []
    try:
        with mk.netns_lock(dry_run=actions.dry_run):
            _undo(state, actions, problems)
            if marker is not None:
                marker.close()  # under the lock: the next one out sees we are gone
    except RuletraceError as e:  # the lock: undo anyway, the rules at least are ours alone
        problems.append(str(e))
        _undo(state, actions, problems)
    return problems


def _undo(state: ss.State, actions: ss.Actions, problems: list[str]) -> None:
    backend = be.LEGACY if state.backend == be.BOTH else state.backend
    for r in reversed(state.rules):
        cmd = r.delete_cmd(backend)
        try:
            p = actions.run(cmd, check=False)
        except RuletraceError as e:
            problems.append(str(e))
            continue
        if p is None or p.returncode == 0 or already_gone(p.stderr):
            continue
        if p.returncode == ss.PARAMETER_PROBLEM and absent(r, backend):  # never added: it did not parse
            continue
        problems.append(f"{shlex.join(cmd)}: {ss.tool_error(p.stderr)[:200]}")
    for fam, table in reversed(state.tables):  # the session's own tables: deleted whole, by name
        try:
            if be.nft_exists(fam, table):
                actions.run(["nft", "delete", "table", fam, table], check=True)
        except RuletraceError as e:
            problems.append(str(e))
    held = mk.claims(exclude=state.sid)
    for fam, table, chain in state.made:  # chains first, then the table, each only when empty
        if mk.nft_claim(fam, table, chain) in held:
            continue  # another live session uses it: the last one out deletes it
        try:
            if chain:
                if be.nft_exists(fam, table, chain) and not be.nft_has_rules(fam, table, chain):
                    actions.run(["nft", "delete", "chain", fam, table, chain], check=True)
            elif be.nft_exists(fam, table) and not be.nft_has_chains(fam, table):
                actions.run(["nft", "delete", "table", fam, table], check=True)
        except RuletraceError as e:
            problems.append(str(e))
    current = ss.nf_log_bindings()
    for pf, logger in state.nf_log.items():
        if mk.claimed_nf_log(held, pf) is not None:
            continue  # another live session uses the binding: it restores it when it leaves
        if current.get(pf, (None,))[0] != logger:
            try:
                actions.set_nf_log(pf, logger)
            except RuletraceError as e:
                problems.append(str(e))


def nft_missing(rules: list[ss.PlannedRule]) -> list[list[str]]:
    """nf_tables chains (and tables) our rules need that do not exist yet, in deletion order."""
    out: list[list[str]] = []
    tables: list[list[str]] = []
    for r in rules:
        fam = be.NFT_FAMILY[r.family]
        if [fam, r.table, r.chain] not in out and not be.nft_exists(fam, r.table, r.chain):
            out.append([fam, r.table, r.chain])
        if [fam, r.table, ""] not in tables and not be.nft_exists(fam, r.table):
            tables.append([fam, r.table, ""])
    return out + tables


def absent(rule: ss.PlannedRule, backend: str) -> bool:
    """Whether ``rule`` is provably not in the kernel: the save of its family has no rule with
    its comment in its chain. A delete can fail for a rule that was never added (a record of an
    insert iptables refused: its options do not even parse); such a record has nothing to undo."""
    name = be.tool(backend, rule.family, save=True)
    try:
        p = subprocess.run([name], capture_output=True, text=True, timeout=ss.CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and not ss.rule_present(rule, p.stdout)


def already_gone(stderr: str) -> bool:
    """Whether iptables' complaint about a delete says the rule is not there any more."""
    s = stderr.lower()
    return "does a matching rule exist" in s or "bad rule" in s or "no chain/target/match" in s
