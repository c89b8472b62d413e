"""``iptables -L -n [-v] [-x] [--line-numbers] [-t TABLE]`` listings, one or several tables per file.

Format: print_header() in iptables/xshared.c and print_firewall() in iptables/iptables.c
(git://git.netfilter.org/iptables). A table's listing is announced by a command line such as
``# iptables -L -n -v --line-numbers -t nat`` or by a ``####`` / ``nat`` / ``####`` banner;
without either the table is filter.
"""

from __future__ import annotations

import re

from ..errors import RuletraceError
from ..fields import bounded_int
from ..model import TABLES, Chain, Origin, Rule, Ruleset

FORMAT = "iptables-list"

# print_header(): "Chain INPUT (policy ACCEPT 0 packets, 0 bytes)", "Chain INPUT (policy ACCEPT)",
# "Chain DOCKER (1 references)"
_CHAIN = re.compile(
    r"Chain (?P<name>\S+) \((?:policy (?P<policy>[A-Z]+)(?: (?P<pkts>\d+[KMGTP]?) packets,"
    r" (?P<bytes>\d+[KMGTP]?) bytes)?|(?P<refs>-?\d+) references|ERROR obtaining refs)\)"
)
_COLUMNS = re.compile(
    r"(?:num\s+)?(?:pkts\s+bytes\s+)?(?:target\s+)?prot\s+opt\s+(?:in\s+out\s+)?source\s+destination"
)
# a shell or "# …" line that ran the listing: "# ip6tables-legacy -L -n -v -t nat",
# "root@h:~# iptables -t nat -nvL"
_COMMAND = re.compile(r"\b(ip6?)tables(?:-legacy|-nft)?(?=\s)(?P<args>.*)")
_LIST_FLAG = re.compile(r"(?:^|\s)(?:--list\b|-[a-zA-Z]*L)")
_TABLE_FLAG = re.compile(r"(?:^|\s)(?:--table[=\s]\s*|-t\s*)(?P<table>\S+)")
_BANNER = re.compile(r"#{5,}")
# xtables_print_num(): without -x, counts above 99999 are rounded to K/M/G/T units of 1000
_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_OPT = frozenset(("--", "-f", "!f"))  # the "opt" column: fragment flag, "--" when unset
_V6_HINT = re.compile(r"\s::/0\s|\bip6tables")
_V4_HINT = re.compile(r"\s0\.0\.0\.0/0\s|\biptables")
# rows left out of a pasted excerpt are kept as numbered placeholders (TRACE numbers count them);
# more than this many in one listing is not an excerpt but a damaged rule number
MAX_MISSING_RULES = 100_000


def parse(text: str, *, origin: Origin) -> Ruleset:
    """Read an ``iptables -L`` / ``ip6tables -L`` listing into a Ruleset."""
    reader = _Reader(origin)
    for lineno, line in enumerate(text.split("\n"), 1):
        if "\x00" in line:
            line = line.replace("\x00", "")  # the bpf match prints its string's NUL terminator
        pieces = _unglue(line)
        if pieces is None:
            reader.feed(lineno, line)
        else:
            for piece in pieces:
                reader.feed(lineno, piece)
    return reader.finish(text)


class _Columns:
    """Which columns a listing has, from its column header line."""

    __slots__ = ("num", "counts", "target", "opt", "via", "target_at")

    def __init__(self, header: str) -> None:
        names = header.split()
        self.num = names[0] == "num"
        self.counts = "pkts" in names
        self.target = "target" in names
        self.opt = "opt" in names
        self.via = "in" in names
        self.target_at = header.find("target")


class _Reader:
    def __init__(self, origin: Origin) -> None:
        self.path = origin.path
        self.rs = Ruleset(origin=origin, format=FORMAT)
        self.table = "filter"
        self.table_line = 0
        self.family_hint: str | None = None
        self.chain: Chain | None = None
        self.columns: _Columns | None = None
        self.banner = False  # the previous line was a "#####" banner
        self.skipped = 0
        self.first_skipped = 0
        self.missing = 0  # placeholder rows made for rules left out of the listing
        self.announced = False  # a line named a table (else the chains are filter's, or what they show)

    def origin(self, lineno: int) -> Origin:
        return Origin(self.path, lineno)

    def feed(self, lineno: int, line: str) -> None:
        s = line.strip()
        if not s:
            return
        if self.banner:
            self.banner = False
            if s in TABLES:
                self._set_table(s, lineno)
                return
        if self.chain is not None and self.columns is not None and self._row(lineno, line, s):
            return
        if s.startswith("Chain "):
            self._chain(lineno, s)
            return
        if self.chain is not None and self.columns is None:
            if not _COLUMNS.match(s):
                raise RuletraceError(f"expected the column header line after 'Chain {self.chain.name} …', "
                                     f"got {_clip(s)}", origin=self.origin(lineno))
            self.columns = _Columns(line)
            return
        # outside a chain's rows: table markers, comments, stderr noise
        self.chain = self.columns = None
        if _BANNER.fullmatch(s):
            self.banner = True
            return
        m = _COMMAND.search(s)
        if m:
            self.family_hint = "ipv6" if m.group(1) == "ip6" else "ipv4"
            args = m.group("args")
            t = _TABLE_FLAG.search(args)
            if t:
                if t.group("table") in TABLES:
                    self._set_table(t.group("table"), lineno)
                    return
            elif _LIST_FLAG.search(args):
                self._set_table("filter", lineno)
                return
        if not s.startswith("#"):
            if not self.skipped:
                self.first_skipped = lineno
            self.skipped += 1

    def _unannounced(self) -> None:
        """Chains listed without a line naming their table are filter's (iptables' default) unless
        they show another: a built-in chain filter has not (a nat listing's PREROUTING) or a target
        only one table runs (DNAT: nat), as for ``-A`` lines without ``*table``; said as a guess."""
        from .iptables_save import TABLE_CHAINS, TARGET_TABLE, tables_fitting

        chains = self.rs.tables["filter"]
        builtins = [n for n in chains if any(n in names for names in TABLE_CHAINS.values())]
        signs = {TARGET_TABLE[r.target] for c in chains.values() for r in c.rules if r.target in TARGET_TABLE}
        fits = [t for t in tables_fitting(builtins) if not signs or signs == {t}]
        if not fits and signs:  # the chains and targets name no one table: filter, said to be doubtful
            targets = sorted({r.target or "" for c in chains.values() for r in c.rules if r.target in TARGET_TABLE})
            self.rs.warnings.append(
                f"{self.path}: no line names the listing's table: read as filter (iptables' default), but "
                f"{', '.join(targets)} run only in {', '.join(sorted(signs))}: it may hold several tables without "
                "the lines naming them ('# iptables -L -n -v -t TABLE' above each)")
            return
        if not fits or fits[0] == "filter":
            return
        table = fits[0]
        not_filter = [b for b in builtins if b not in TABLE_CHAINS["filter"]]
        targets = sorted({r.target for c in chains.values() for r in c.rules if r.target in TARGET_TABLE})
        why = f"filter has no {', '.join(not_filter)}" if not_filter else f"{', '.join(targets)} runs only in {table}"
        for c in chains.values():
            c.table = table
            for r in c.rules:
                r.table = table
        self.rs.tables = {table: chains}
        sure = len(fits) == 1 or bool(signs)
        self.rs.warnings.append(
            f"{self.path}: no line names the listing's table (such as '# iptables -L -n -v -t {table}'): read "
            f"as table {table}, as {why}" + ("" if sure else " — a guess"))

    def _set_table(self, table: str, lineno: int) -> None:
        self.announced = True
        self.table, self.table_line = table, lineno
        self.chain = self.columns = None

    def _chain(self, lineno: int, s: str) -> None:
        m = _CHAIN.match(s)
        if m is None:
            raise RuletraceError(f"bad chain header {_clip(s)}", origin=self.origin(lineno))
        chains = self.rs.tables.setdefault(self.table, {})
        name = m.group("name")
        old = chains.get(name)
        if old is not None:
            first = old.origin.line if old.origin else "?"
            raise RuletraceError(
                f"chain {name} listed twice for table {self.table} (first at line {first}); "
                "announce each table with a line like '# iptables -L -n -v -t nat'",
                origin=self.origin(lineno),
            )
        counters = None
        if m.group("pkts") is not None:
            counters = (_count(m.group("pkts")) or 0, _count(m.group("bytes")) or 0)
        chain = Chain(self.table, name, m.group("policy"), [], counters, self.origin(lineno))
        self.chain = chains[name] = chain
        self.columns = None

    def _row(self, lineno: int, line: str, s: str) -> bool:
        """Add one rule row; False when the line is not a row of this listing."""
        cols = self.columns
        chain = self.chain
        assert cols is not None and chain is not None
        toks = s.split()
        i = 0
        num = len(chain.rules) + 1
        if cols.num:
            got = bounded_int(toks[0], max_digits=10) if toks[0].isdigit() else None
            if got is None:
                return False
            num = got
            i = 1
        counters = None
        if cols.counts:
            if len(toks) < i + 2:
                return False
            pkts, nbytes = _count(toks[i]), _count(toks[i + 1])
            if pkts is None or nbytes is None:
                return False
            counters = (pkts, nbytes)
            i += 2
        elif s.startswith("Chain ") or s.startswith("#"):
            return False
        target, fixed = self._target(toks, i, line)
        if target is None:
            return False
        rest = toks[i:]
        if not rest:
            return False
        # print_firewall() puts "[goto]" right after the addresses (1.8) or at the row's end (older)
        goto = bool(target) and (rest[fixed : fixed + 1] == ["[goto]"] or rest[-1] == "[goto]")
        rules = chain.rules
        if num != len(rules) + 1:
            self._gap(num, lineno)
        rules.append(Rule(self.table, chain.name, num, " ".join(rest), target or None, goto, None,
                          Origin(self.path, lineno), counters))
        return True

    def _target(self, toks: list[str], i: int, line: str) -> tuple[str | None, int]:
        """The target ("" when blank, None when not a row) and the count of fixed columns."""
        # the target column is blank for rules without a target: anchor on the opt column
        # ("--", "-f", "!f") that follows prot
        cols = self.columns
        assert cols is not None
        via = 2 if cols.via else 0
        if not cols.target:
            return "", 4 + via
        if cols.opt:
            if len(toks) > i + 1 and toks[i + 1] in _OPT:
                return "", 4 + via
            if len(toks) > i + 2 and toks[i + 2] in _OPT:
                return toks[i], 5 + via
        if not (cols.num or cols.counts):
            return None, 0  # nothing else tells a row from stray text
        # ip6tables before 1.8 printed the opt column blank: use the header's column position
        at = cols.target_at
        if at >= 0 and line[at : at + 2].strip() and len(toks) > i:
            return toks[i], 4 + via
        return "", 3 + via

    def _gap(self, num: int, lineno: int) -> None:
        chain = self.chain
        assert chain is not None
        have = len(chain.rules)
        if num <= have:
            raise RuletraceError(f"rule number {num} in chain {chain.name} after rule {have}",
                                 origin=self.origin(lineno))
        # rows left out of the listing (pasted excerpts): keep numbering = kernel TRACE numbers
        self.missing += num - 1 - have
        if self.missing > MAX_MISSING_RULES:
            raise RuletraceError(
                f"rule number {num} in chain {chain.name} after rule {have}: more than "
                f"{MAX_MISSING_RULES:,} rules missing from the listing; a damaged rule number?",
                origin=self.origin(lineno))
        self.rs.warnings.append(
            f"{self.path}:{lineno}: {self.table} {chain.name}: "
            f"rules {have + 1}-{num - 1} are not in the listing"
        )
        for n in range(have + 1, num):
            chain.rules.append(Rule(self.table, chain.name, n, f"(rule {n} not in the listing)", None))

    def finish(self, text: str) -> Ruleset:
        rs = self.rs
        if not rs.tables:
            raise RuletraceError("no 'Chain …' header: not an iptables -L listing", origin=rs.origin)
        if self.skipped:
            rs.warnings.append(f"{self.path}:{self.first_skipped}: {self.skipped} line(s) outside any "
                               "chain listing skipped")
        if not self.announced and list(rs.tables) == ["filter"]:
            self._unannounced()
        rs.family = self.family_hint or (
            "ipv6" if _V6_HINT.search(text) else "ipv4" if _V4_HINT.search(text) else None
        )
        return rs


def _count(tok: str) -> int | None:
    if tok.isdigit():
        return bounded_int(tok)
    unit = _UNITS.get(tok[-1])
    n = bounded_int(tok[:-1]) if unit and tok[:-1].isdigit() else None
    return None if n is None or unit is None else n * unit


# --- pastes that lost their newlines (one line holding banners, chain headers and rows) ---

_GLUED_CHAIN = re.compile(r"Chain \S+ \((?:policy [A-Z]+(?: \d+[KMGTP]? packets, \d+[KMGTP]? bytes)?"
                          r"|-?\d+ references)\)")
_GLUED_SPLIT = re.compile(r"(#{5,})")


def _unglue(line: str) -> list[str] | None:
    """Split a listing pasted onto one line back into lines; None when the line is not glued."""
    if "Chain " not in line:
        return None
    first = _GLUED_CHAIN.search(line)
    if first is None:
        return None
    if first.start() == 0 and not line[first.end() :].strip():
        return None
    out: list[str] = []
    for part in _GLUED_SPLIT.split(line):
        if _BANNER.fullmatch(part) or not part.strip():
            out.append(part)
            continue
        heads = list(_GLUED_CHAIN.finditer(part))
        if not heads:
            out.append(part)
            continue
        out.append(part[: heads[0].start()])
        for k, h in enumerate(heads):
            body = part[h.end() : heads[k + 1].start() if k + 1 < len(heads) else len(part)]
            out.append(h.group(0))
            out.extend(_unglue_rows(body.strip()))
    return [p for p in out if p.strip()]


def _unglue_rows(body: str) -> list[str]:
    cols = _COLUMNS.match(body)
    if cols is None:
        return [body]
    header = cols.group(0)
    names = header.split()
    num = r"\d+\s+" if names[0] == "num" else ""
    counts = r"\d+[KMGTP]?\s+\d+[KMGTP]?\s+" if "pkts" in names else ""
    # a numeric "target" is the prot column of a target-less row glued after options ending in numbers
    target = r"(?:(?!\d+\s)\S+\s+)?" if "target" in names else ""
    via = r"\S+\s+\S+\s+" if "in" in names else ""
    row = re.compile(rf"(?:^|(?<=\s)){num}{counts}{target}!?\S+\s+[-!][-f]\s+{via}\S+\s+\S+(?=\s|$)")
    rows = body[cols.end() :].strip()
    starts = [m.start() for m in row.finditer(rows)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return [header] + [rows[a:b] for a, b in zip(starts, starts[1:] + [len(rows)])]


def _clip(line: str, width: int = 60) -> str:
    line = line.strip()
    return repr(line if len(line) <= width else line[: width - 1] + "…")
