"""``nft list ruleset`` text (also with ``-a``, ``-s``, ``-n``, and files ``nft -f`` loads).

Grammar read (nft(8)): ``table FAMILY NAME { … }`` holding ``chain``, ``set``, ``map``,
``flowtable`` blocks, stateful objects (``counter``, ``quota``, ``limit``, ``ct helper``,
``ct timeout``, ``ct expectation``, ``secmark``, ``synproxy``), ``comment`` and ``flags``. In a
chain, ``type T hook H [device D | devices = { … }] priority P;`` and ``policy P;`` make a base
chain; ``comment "…"`` is the chain's; every other statement is a rule, kept as listed (minus
``# handle N``, which sets ``Rule.handle``) whether or not ruletrace understands it.

Statements end at a newline or ``;`` outside braces; braces inside a statement (anonymous sets,
``elements = { … }`` over several lines) nest. Scanning is one regular-expression pass without
backtracking; lines longer than ``MAX_LINE`` and nesting deeper than ``MAX_DEPTH`` are refused.
A fragment without ``table`` (``chain X { … }`` pasted alone) is read as table ``ip pasted`` with
a warning (``fragment=True``, what ``load_rulesets`` passes when no ``table`` line is present).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import RuletraceError
from ..fields import bounded_int
from ..model import NftSet, Origin, Ruleset
from .nft_model import CHAIN_TYPES, FAMILIES, HOOKS, Builder

MAX_LINE = 1 << 20  # characters in one line
MAX_DEPTH = 64  # braces open at once
_TOKEN = re.compile(r'"[^"\n]*"?|[{};]|\n|#[^\n]*|[^\s{};"#]+|[ \t\r\f\v]+')
OBJECTS = ("counter", "quota", "limit", "secmark", "synproxy")
CT_OBJECTS = ("helper", "timeout", "expectation")
_HANDLE = re.compile(r"#\s*handle (\d+)\s*$")


@dataclass(slots=True)
class Tok:
    text: str
    line: int
    col: int
    ws: bool  # blank space before it on the same statement


class _Scan:
    """Statements of one block at a time, over the token list."""

    def __init__(self, text: str, origin: Origin) -> None:
        self.origin = origin
        self.toks: list[Tok] = []  # "\n" and "#…" comments kept; blanks folded into ws
        line, line_start, ws = 1, 0, False
        for m in _TOKEN.finditer(text):
            t = m.group()
            c = t[0]
            if c == "\n":
                if m.start() - line_start > MAX_LINE:
                    self.fail(line, 1, f"line longer than {MAX_LINE} characters")
                self.toks.append(Tok("\n", line, m.start() - line_start + 1, False))
                line, line_start, ws = line + 1, m.end(), False
                continue
            if c in " \t\r\f\v":
                ws = True
                continue
            col = m.start() - line_start + 1
            if c == '"' and (len(t) == 1 or t[-1] != '"'):
                self.fail(line, col, "unterminated string: expected '\"' before the end of the line")
            self.toks.append(Tok(t, line, col, ws))
            ws = False
        if len(text) - line_start > MAX_LINE:
            self.fail(line, 1, f"line longer than {MAX_LINE} characters")
        self.end = (line, len(text) - line_start + 1)
        self.i = 0

    def fail(self, line: int, col: int, msg: str) -> None:
        raise RuletraceError(msg, origin=Origin(self.origin.path, line, col))

    def statement(self, openers: bool = False) -> tuple[list[Tok], str | None, str]:
        """Next statement's tokens, its trailing comment, and what ended it: ``;``, ``\\n``, ``{``, ``}``, ``EOF``.

        With ``openers`` (top level and table bodies) a ``{`` ends the statement (a block opens);
        elsewhere it opens a nested group that ends at its ``}``.
        """
        toks: list[Tok] = []
        comment, depth, n = None, 0, len(self.toks)
        while self.i < n:
            t = self.toks[self.i]
            self.i += 1
            s = t.text
            if s[0] == "#":
                comment = s
                continue
            if s == "\n" or s == ";":
                if depth == 0:
                    return toks, comment, s
                continue
            if s == "{":
                if depth == 0 and openers:
                    return toks, comment, "{"
                depth += 1
                if depth > MAX_DEPTH:
                    self.fail(t.line, t.col, f"braces nested deeper than {MAX_DEPTH}")
            elif s == "}":
                if depth == 0:
                    return toks, comment, "}"
                depth -= 1
            toks.append(t)
        if depth:
            self.fail(*self.end, "expected '}' before the end of the file")
        return toks, comment, "EOF"

    def after_opener(self) -> str | None:
        """The comment after a block opener (``chain x { # handle 3``)."""
        if self.i < len(self.toks) and self.toks[self.i].text[0] == "#":
            self.i += 1
            return self.toks[self.i - 1].text
        return None


def join(toks: list[Tok]) -> str:
    """Statement text as listed, blanks collapsed to one space."""
    return "".join((" " if t.ws and k else "") + t.text for k, t in enumerate(toks))


def _handle(comment: str | None) -> int | None:
    m = _HANDLE.search(comment) if comment else None
    return bounded_int(m[1]) if m else None


def _unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def parse(text: str, *, origin: Origin, fragment: bool = False) -> list[Ruleset]:
    """Read a listing: one Ruleset per nft family, in order of appearance."""
    sc = _Scan(text, origin)
    b = Builder(origin, "nft-text")
    if fragment:
        b.warnings.append("no 'table' line: the chains were read as table 'ip pasted'")
        _table_body(sc, b, "ip", "pasted", None)
        return b.finish()
    while True:
        toks, _comment, end = sc.statement(openers=True)
        if end == "EOF" and not toks:
            break
        if not toks:
            if end == "}":
                t = sc.toks[sc.i - 1]
                sc.fail(t.line, t.col, "unexpected '}': no block is open")
            continue
        head = toks[0]
        words = [t.text for t in toks]
        if words == ["flush", "ruleset"]:
            continue
        if head.text != "table":
            sc.fail(head.line, head.col, f"expected 'table FAMILY NAME {{', found {head.text!r}")
        if end != "{" or len(words) not in (2, 3):
            sc.fail(head.line, head.col, "expected 'table FAMILY NAME {'")
        fam, name = (words[1], words[2]) if len(words) == 3 else ("ip", words[1])
        if fam not in FAMILIES:
            t = toks[1]
            sc.fail(t.line, t.col, f"unknown family {fam!r}: expected ip, ip6, inet, arp, bridge or netdev")
        sc.after_opener()
        _table_body(sc, b, fam, _unquote(name), head)
    return b.finish()


def _table_body(sc: _Scan, b: Builder, fam: str, table: str, opener: Tok | None) -> None:
    b.table(fam, table)
    while True:
        toks, _comment, end = sc.statement(openers=True)
        if end == "}" and not toks:
            return
        if end == "EOF" and not toks:
            if opener is None:
                return
            sc.fail(*sc.end, f"expected '}}' closing table {table} (opened at line {opener.line})")
        if not toks:
            continue
        words = [t.text for t in toks]
        head = toks[0]
        kind, name_at = words[0], 1
        if kind == "ct" and len(words) > 1 and words[1] in CT_OBJECTS:
            kind, name_at = f"ct {words[1]}", 2
        if end != "{":
            if kind in ("comment", "flags") and end != "}":
                continue  # table comment / flags dormant
            sc.fail(head.line, head.col, "expected chain, set, map, flowtable, an object, comment or '}'")
        if len(words) != name_at + 1:
            sc.fail(head.line, head.col, f"expected '{kind} NAME {{'")
        name = _unquote(words[name_at])
        handle = _handle(sc.after_opener())
        where = Origin(sc.origin.path, head.line)
        if kind == "chain":
            _chain_body(sc, b, fam, table, name, handle, where)
        elif kind in ("set", "map"):
            _set_body(sc, b, fam, table, kind, name, handle, where)
        elif kind == "flowtable":
            b.flowtable(fam, table, name, "; ".join(_block_lines(sc, head)))
        elif kind in OBJECTS or kind.startswith("ct "):
            b.object(fam, table, kind, name, "; ".join(_block_lines(sc, head)))
        else:
            sc.fail(head.line, head.col, f"expected chain, set, map, flowtable or an object, found {kind!r}")


def _block_lines(sc: _Scan, head: Tok) -> list[str]:
    out: list[str] = []
    while True:
        toks, _comment, end = sc.statement()
        if toks:
            if end == "{":
                sc.fail(toks[0].line, toks[0].col, "expected a statement or '}'")
            out.append(join(toks))
        if end == "}":
            return out
        if end == "EOF":
            sc.fail(*sc.end, f"expected '}}' closing the block opened at line {head.line}")


def _chain_body(sc: _Scan, b: Builder, fam: str, table: str, name: str, handle: int | None,
                where: Origin) -> None:
    c = b.chain(fam, table, name, handle=handle, origin=where)
    base: dict[str, Any] = {}
    while True:
        toks, comment, end = sc.statement()
        if toks:
            if end == "{":
                sc.fail(toks[0].line, toks[0].col, "expected a statement or '}' (chains do not nest)")
            head = toks[0].text
            if head == "type" and not base:
                base = _base_chain(sc, toks, fam)
            elif head == "policy" and len(toks) == 2:
                base["policy"] = toks[1].text
            elif head == "comment" and len(toks) == 2:
                c.comment = _unquote(toks[1].text)
            else:
                b.rule(fam, table, name, join(toks), handle=_handle(comment),
                       origin=Origin(sc.origin.path, toks[0].line))
        if end == "}":
            break
        if end == "EOF":
            sc.fail(*sc.end, f"expected '}}' closing chain {name} (opened at line {where.line})")
    if base:
        b.chain(fam, table, name, origin=where, **base)


def _base_chain(sc: _Scan, toks: list[Tok], fam: str) -> dict[str, Any]:
    """``type filter hook input [device "lo" | devices = { a, b }] priority filter - 10``."""
    words = [t.text for t in toks]
    out: dict[str, Any] = {"type": None, "hook": None, "priority": None, "devices": ()}
    i, n = 0, len(words)
    while i < n:
        w = words[i]
        if w in ("type", "hook") and i + 1 < n:
            out[w] = words[i + 1]
            i += 2
        elif w == "device" and i + 1 < n:
            out["devices"] = (_unquote(words[i + 1]),)
            i += 2
        elif w == "devices" and i + 2 < n and words[i + 1] == "=":
            j = i + 2
            devs: list[str] = []
            if words[j] == "{":
                j += 1
                while j < n and words[j] != "}":
                    devs.extend(_unquote(d) for d in words[j].split(",") if d)
                    j += 1
                j += 1
            else:
                devs.append(_unquote(words[j]))
                j += 1
            out["devices"] = tuple(devs)
            i = j
        elif w == "priority" and i + 1 < n:
            out["priority"] = " ".join(words[i + 1 :])
            break
        else:
            sc.fail(toks[i].line, toks[i].col, "expected 'type', 'hook', 'device(s)' or 'priority'")
    if out["hook"] not in HOOKS:
        sc.fail(toks[0].line, toks[0].col, f"expected a hook ({', '.join(HOOKS)})")
    if out["type"] not in CHAIN_TYPES:
        sc.fail(toks[0].line, toks[0].col, f"expected a chain type ({', '.join(CHAIN_TYPES)})")
    if out["priority"] is None:
        sc.fail(toks[0].line, toks[0].col, "expected 'priority'")
    return out


def _set_body(sc: _Scan, b: Builder, fam: str, table: str, kind: str, name: str, handle: int | None,
              where: Origin) -> None:
    s = NftSet(table, name, kind, handle=handle, origin=where)
    while True:
        toks, _comment, end = sc.statement()
        if toks:
            words = [t.text for t in toks]
            head = words[0]
            if end == "{":
                sc.fail(toks[0].line, toks[0].col, "expected a statement or '}'")
            if head in ("type", "typeof"):
                s.typeof = head == "typeof"
                spec = join(toks[1:])
                key, sep, data = spec.partition(" : ")
                s.key = key
                if sep:
                    s.data = data
                    if data == "verdict":
                        s.kind = "vmap"
            elif head == "flags":
                s.flags = tuple(f for w in words[1:] for f in w.split(",") if f)
            elif head == "timeout" and len(words) == 2:
                s.timeout = words[1]
            elif head == "comment" and len(words) == 2:
                s.comment = _unquote(words[1])
            elif head == "elements" and words[1:3] == ["=", "{"]:
                s.elements = _elements(toks[3:-1] if words[-1] == "}" else toks[3:])
            # size, policy, auto-merge, gc-interval, counter: kept by nothing, harmless
        if end == "}":
            break
        if end == "EOF":
            sc.fail(*sc.end, f"expected '}}' closing {kind} {name} (opened at line {where.line})")
    b.set(fam, s)


def _elements(toks: list[Tok]) -> list[str]:
    """``a, b . c : goto x, { nested }`` -> ["a", "b . c : goto x", "{ nested }"] (top-level commas)."""
    out: list[str] = []
    cur: list[Tok] = []
    depth = 0
    for t in toks:
        s = t.text
        if s == "{":
            depth += 1
        elif s == "}":
            depth -= 1
        if depth == 0 and s.endswith(",") and s[0] != '"':
            if s != ",":
                cur.append(Tok(s[:-1], t.line, t.col, t.ws))
            out.append(join(cur))
            cur = []
            continue
        cur.append(t)
    if cur:
        out.append(join(cur))
    return out
