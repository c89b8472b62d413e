"""``trace --raw-match``: a raw match in the syntax of the rules the session installs.

A session that traces from a table of its own (a native nf_tables host, ``nftnative.py``)
takes the raw match as an nft match expression (``ip saddr 10.0.0.0/8 tcp dport 443``); a
session that adds iptables rules (legacy xtables, or an iptables-nft host without native tables)
takes iptables match options (``-m mark --mark 0x10``). Which one a host needs is known only
once its backend is detected, so the syntax is told from the text itself (iptables options start
with ``-`` or ``! -``; an nft expression never does) and a mismatch is one clear error before
anything is changed.

An nft expression goes into the session's rules as text, so it is checked twice before the
table is made: here, that it is one match and nothing else (no line break, ``;``, ``#`` or
unbalanced brace that could end the rule or the chain, no statement or verdict that would change
packets or state); then ``check_script`` asks nft itself (``nft --check -f -``: the whole table
script is parsed and validated by the kernel, nothing is committed).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import RuletraceError

if TYPE_CHECKING:
    from .session import TraceSpec

# nft(8) "STATEMENTS": words that only a statement (never a match expression) has at the top level
STATEMENT_WORDS = frozenset({
    "accept", "drop", "reject", "queue", "continue", "return", "jump", "goto", "counter", "log", "limit",
    "quota", "snat", "dnat", "masquerade", "redirect", "notrack", "dup", "fwd", "tproxy", "synproxy", "set",
    "add", "update", "delete", "vmap", "comment", "flow", "offload", "last", "xt", "meter", "reset",
})
_TOKEN = re.compile(r'"[^"]*"|"|[{}]|[^\s{}"]+')
CMD_TIMEOUT = 30.0


def is_iptables_syntax(raw: str) -> bool:
    """True when the raw match reads as iptables options (``-m …``, ``! -s …``)."""
    words = raw.split()
    if not words:
        return False
    return words[0].startswith("-") or (words[0] == "!" and len(words) > 1 and words[1].startswith("-"))


def check_raw(spec: TraceSpec, *, native: bool, both: bool, warn: Callable[[str], None]) -> None:
    """Before any change: the raw match is in the session's syntax (``check_syntax``) and, on a
    native host, nft accepts the table script that holds it (``check_script``)."""
    raw = spec.raw_text.strip()
    if not raw:
        return
    check_syntax(raw, native=native, both=both)
    if native:
        from .nftnative import table_script

        note = check_script(table_script(spec, "0" * 32), raw)
        if note:
            warn(note)


def check_syntax(raw: str, *, native: bool, both: bool) -> None:
    """The raw match fits the session: nft syntax when tracing from the session's own table,
    iptables syntax when adding iptables rules, none when tracing both backends at once."""
    if both:
        raise RuletraceError(f"--raw-match {raw!r}: tracing both backends needs the match in both syntaxes "
                             "(legacy iptables rules and an nf_tables table); filter with -p/-s/-d/--sport/"
                             "--dport/-i, or trace one backend (--backend legacy / nft)")
    if native and is_iptables_syntax(raw):
        raise RuletraceError(f"--raw-match {raw!r}: this host is traced from an nf_tables table of the "
                             "session's own, so the raw match is an nft match expression "
                             "(e.g. 'meta mark 0x10', 'ip saddr 10.0.0.0/8 tcp dport 443'), not iptables options")
    if not native and not is_iptables_syntax(raw):
        raise RuletraceError(f"--raw-match {raw!r}: this host is traced through iptables rules, so the raw "
                             "match is iptables match options (e.g. '-m mark --mark 0x10'), not an nft expression")


def clause(spec: TraceSpec) -> str:
    """The nft expression of ``--raw-match`` for the session's rules, after the lexical checks."""
    raw = spec.raw_text.strip()
    if not raw or is_iptables_syntax(raw):  # (iptables options only: a spec made without the text)
        raise RuletraceError(f"--raw-match {raw or ' '.join(spec.raw_match)!r}: iptables options cannot go "
                             "into the session's nf_tables table: give an nft match expression")
    for bad, what in (("\n", "a line break"), ("\r", "a line break"), ("\\", "a backslash")):
        if bad in raw:
            raise RuletraceError(f"--raw-match {raw!r}: {what} cannot be part of one match expression")
    depth = 0
    for tok in _TOKEN.findall(raw):
        if tok == '"':
            raise RuletraceError(f"--raw-match {raw!r}: a quote is not closed")
        if tok.startswith('"'):
            continue
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth < 0:
                raise RuletraceError(f"--raw-match {raw!r}: '}}' without its '{{'")
        elif ";" in tok or "#" in tok:
            raise RuletraceError(f"--raw-match {raw!r}: {';' if ';' in tok else '#'!r} would end the rule: "
                                 "give one match expression")
        elif depth == 0 and tok.lower() in STATEMENT_WORDS:
            raise RuletraceError(f"--raw-match {raw!r}: {tok!r} is a statement, not a match: the raw match "
                                 "may only select packets (the session's rules add the counter and nftrace)")
    if depth:
        raise RuletraceError(f"--raw-match {raw!r}: '{{' without its '}}'")
    return raw


_NFT_ERROR = re.compile(r"^[^:\n]*:(\d+):(\d+)(?:-(\d+))?: Error: (.*)$", re.M)


def check_script(script: str, raw: str) -> str | None:
    """``nft --check -f -`` of the session's table script, nothing committed: raises the first
    error nft reports (with the part of the raw match it points at); returns a note when nft could
    not be asked (not found, no permission), None when the script passed."""
    try:
        p = subprocess.run(["nft", "--check", "-f", "-"], input=script, capture_output=True, text=True,
                           timeout=CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"--raw-match not checked by nft ({e})"
    if p.returncode == 0:
        return None
    err = p.stderr.strip()
    if "Operation not permitted" in err:
        return "--raw-match not checked by nft (no permission to ask the kernel)"
    m = _NFT_ERROR.search(err)
    if m is None:
        first = err.splitlines()[0] if err else f"exit status {p.returncode}"
        raise RuletraceError(f"--raw-match {raw!r}: nft refuses it: {first[:300]}")
    lines = script.splitlines()
    n, c1 = int(m[1]), int(m[2])
    c2 = int(m[3]) if m[3] else c1
    near = lines[n - 1][c1 - 1:c2] if 0 < n <= len(lines) else ""
    where = f" (at {near!r})" if near.strip() else ""
    raise RuletraceError(f"--raw-match {raw!r}: nft refuses it: {m[4].strip()}{where}")
