"""The one data model: rulesets, trace events, packets and their explanations.

Data flows one way: sources produce ``TraceEvent``s, ``correlate`` groups them into
``Packet``s, ``explain`` turns a packet plus a ``Ruleset`` into an ``Explanation``, and the
renderers show explanations. stdlib only, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class StepKind(StrEnum):
    """What a TRACE step reports (the ``type`` of ``TRACE: table:chain:type:num``)."""

    RULE = "rule"  # rule num matched (any target, also non-terminal ones)
    RETURN = "return"  # fell off the end of a user chain; num = rules + 1
    POLICY = "policy"  # fell off the end of a built-in chain; num = rules + 1


class Fate(StrEnum):
    DROPPED = "dropped"
    REJECTED = "rejected"
    DELIVERED = "delivered"  # delivered to a local socket (INPUT path)
    FORWARDED = "forwarded"  # routed through the host (FORWARD path)
    SENT = "sent"  # locally generated and sent out (OUTPUT path)
    UNKNOWN = "unknown"  # trace ends without a decision; see Explanation.last_seen


# Hooks in kernel order and the tables that hook there, in priority order
# (raw -300, mangle -150, nat DNAT -100, filter 0, security 50, nat SNAT 100).
# nat INPUT is SNAT-priority (100): filter INPUT runs before nat INPUT.
HOOK_TABLES: dict[str, tuple[str, ...]] = {
    "PREROUTING": ("raw", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "security", "nat"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}
BUILTIN_CHAINS = frozenset(HOOK_TABLES)
TABLES = ("raw", "mangle", "nat", "filter", "security")
# the priorities iptables registers its tables' chains at (NF_IP_PRI_*); nat: DNAT -100, SNAT 100
_IPTABLES_PRIORITY = {"raw": -300, "mangle": -150, "filter": 0, "security": 50}


def iptables_priority(table: str, hook: str) -> int | None:
    """The hook priority of an iptables table's built-in chain, None for a table iptables does not have."""
    if table == "nat":
        return -100 if hook in ("PREROUTING", "OUTPUT") else 100
    return _IPTABLES_PRIORITY.get(table)


@dataclass(slots=True, frozen=True)
class Origin:
    """Where a thing was read: used in error messages and to show the source."""

    path: str  # file path, "-" for stdin, "netlink" for live, "simulate" for the simulator
    line: int | None = None  # 1-based line for text formats; record number for binary ones
    col: int | None = None  # 1-based column where a text reader knows it (syntax errors)

    def __str__(self) -> str:
        if not self.line:
            return self.path
        return f"{self.path}:{self.line}:{self.col}" if self.col else f"{self.path}:{self.line}"

    @property
    def short(self) -> str:
        """Its file's name and line (``kernel.log:6``): a step's place, under a header that names the path
        whole (a long path in an indented column broke in the middle of a word)."""
        return str(Origin(self.path.rsplit("/", 1)[-1] or self.path, self.line, self.col))


NFTRACE_ON = "nftrace set 1"  # the statement that turns nf_tables tracing on (`meta nftrace set 1`)


@dataclass(slots=True)
class Rule:
    """One rule, exactly as the ruleset listed it."""

    table: str
    chain: str
    num: int  # 1-based position in the chain: the kernel's TRACE rule number (None: known only from a trace's text)
    text: str  # the full iptables-save line, e.g. "-A INPUT -p tcp -j DROP"
    target: str | None = None  # "-j" / "-g" target name, None when the rule has none
    goto: bool = False  # True for "-g CHAIN"
    handle: int | None = None  # nf_tables rule handle where known
    origin: Origin | None = None
    counters: tuple[int, int] | None = None  # packets, bytes where the listing had them
    # --- nf_tables native (rulesets/nft_model.py) ---
    vmap: str | None = None  # verdict-map dispatch ("@name" or "{ k : verdict, … }"); target stays None
    # an iptables-nft rule whose text is its iptables-nft-save line: nf_tables' rendering of it (rulesets/xt_save.py)
    listed: str | None = None

    @property
    def spec(self) -> str:
        """The rule without its leading ``-A CHAIN`` (``rule_spec``, the one home of that cut)."""
        return rule_spec(self.text, self.chain)  # type: ignore[return-value]  # a str for a str

    @property
    def starts_trace(self) -> bool:
        """The rule that turns tracing on (``-j TRACE``; nft's and iptables-nft's ``meta nftrace set 1``):
        a kernel log never shows it (the packet is traced from the next step), a monitor may."""
        return self.target == "TRACE" or NFTRACE_ON in self.text

    @property
    def target_args(self) -> str:
        """Everything after the target name (``--to-destination 1.2.3.4:80``), or ''."""
        if not self.target:
            return ""
        for flag in (" -j ", " -g ", " --jump ", " --goto "):
            i = self.text.rfind(f"{flag}{self.target}")
            if i >= 0:
                return self.text[i + len(flag) + len(self.target) :].strip()
        return ""


@dataclass(slots=True)
class Chain:
    table: str
    name: str
    policy: str | None = None  # ACCEPT / DROP for built-in chains, None for user chains
    rules: list[Rule] = field(default_factory=list)
    counters: tuple[int, int] | None = None
    origin: Origin | None = None
    # --- nf_tables native (rulesets/nft_model.py); None for iptables listings ---
    hook: str | None = None  # base chain hook, lower case: prerouting, input, …, ingress, egress
    priority: int | None = None  # base chain priority, names resolved (filter - 10 -> -10)
    type: str | None = None  # base chain type: filter, nat, route
    devices: tuple[str, ...] = ()  # netdev/inet ingress, egress: the device(s) hooked
    handle: int | None = None  # nf_tables chain handle
    comment: str | None = None
    reg: int | None = None  # registration index: order in the listing (equal priorities: later runs first)

    @property
    def builtin(self) -> bool:
        return self.policy is not None or self.name in BUILTIN_CHAINS


@dataclass(slots=True)
class NftSet:
    """A named nf_tables set, map or verdict map, as listed."""

    table: str
    name: str
    kind: str = "set"  # "set", "map" or "vmap" (a map whose data are verdicts)
    key: str = ""  # key type as listed: "ipv4_addr . inet_proto . inet_service", or the typeof expression
    data: str | None = None  # map data type ("verdict" for a vmap), None for a set
    typeof: bool = False  # key/data were given as "typeof" expressions
    flags: tuple[str, ...] = ()  # interval, timeout, constant, dynamic, …
    timeout: str | None = None
    elements: list[str] = field(default_factory=list)  # each element as listed ("10.0.0.1 . tcp . 80 : goto svc")
    handle: int | None = None
    comment: str | None = None
    origin: Origin | None = None

    @property
    def interval(self) -> bool:
        return "interval" in self.flags

    @property
    def concat(self) -> bool:
        return " . " in self.key


# one nft rule token: a quoted string (kept whole) or a run of other non-blank characters
_NFT_KEY_TOKEN = re.compile(r'"[^"]*"?|[^\s"]+')


def nft_rule_key(text: str) -> str:
    """The text of an nft rule normalized for matching: a listing line against a trace's rule text.

    Counters lose their values (``counter packets 3 bytes 180`` -> ``counter``), a quota its
    ``used N bytes``, a trailing ``# handle N`` goes, whitespace collapses (not inside quotes).
    """
    toks = _NFT_KEY_TOKEN.findall(text)
    n = len(toks)
    if n >= 3 and toks[-3] == "#" and toks[-2] == "handle":
        toks, n = toks[:-3], n - 3
    out: list[str] = []
    i = 0
    while i < n:
        t = toks[i]
        out.append(t)
        if t == "counter" and i + 4 < n + 1 and toks[i + 1 : i + 2] == ["packets"] and toks[i + 3 : i + 4] == ["bytes"]:
            i += 5
            continue
        if t == "used" and "quota" in out and i + 2 < n + 1:
            out.pop()
            i += 3
            continue
        i += 1
    return " ".join(out)


@dataclass(slots=True)
class Ruleset:
    """All tables of one family, as read from one listing."""

    family: str | None = None  # "ipv4", "ipv6" (nft ip/ip6), "inet", "arp", "bridge", "netdev"; None: unknown
    tables: dict[str, dict[str, Chain]] = field(default_factory=dict)
    origin: Origin | None = None
    format: str = ""  # "iptables-save", "iptables-list", "nft-json", …
    warnings: list[str] = field(default_factory=list)
    # which iptables wrote an iptables-save listing, when its header says: "legacy" (iptables-save,
    # iptables-legacy-save) or "nft" (iptables-nft-save: "(nf_tables)"); None: not said
    backend: str | None = None
    # nf_tables rule handle -> Rule, filled by readers that know handles
    handles: dict[tuple[str, str, int], Rule] = field(default_factory=dict)
    # --- nf_tables native (rulesets/nft_model.py); empty for iptables listings ---
    sets: dict[tuple[str, str], NftSet] = field(default_factory=dict)  # (table, name): named sets and maps
    objects: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (table, kind, name) -> body text
    flowtables: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, name) -> body text

    def chain(self, table: str, name: str) -> Chain | None:
        return self.tables.get(table, {}).get(name)

    def rule(self, table: str, chain: str, num: int) -> Rule | None:
        c = self.chain(table, chain)
        if c is None or num < 1 or num > len(c.rules):
            return None
        return c.rules[num - 1]

    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.tables.values() for c in t.values())

    def has_table(self, table: str) -> bool:
        """True when the listing holds ``table`` (a paste often lists only filter and nat)."""
        return table in self.tables

    def missing(self, table: str, chain: str) -> str | None:
        """What the listing lacks to show ``table:chain`` (None when it has the chain).

        A table or chain left out of a listing is not a misfit: people paste parts of rulesets.
        """
        t = self.tables.get(table)
        if t is None:
            return f"table {table} is not in the ruleset"
        if chain not in t:
            return f"chain {table}:{chain} is not in the ruleset"
        return None


class RulesetView:
    """Several rulesets (one per nf_tables family, or one iptables listing) seen as one: every lookup
    goes to the ruleset of the family the *event* names (an IPv4 packet's steps in an ``inet`` table
    are looked up in the inet ruleset, its steps in an ``ip`` table in the ip one)."""

    __slots__ = ("_picked", "rulesets")

    def __init__(self, rulesets: list[Ruleset]) -> None:
        self.rulesets = [rs for rs in rulesets if rs is not None]
        self._picked: dict[str | None, Ruleset | None] = {}

    def pick(self, family: str | None) -> Ruleset | None:
        """The ruleset of ``family`` (or the one without a family); None when none fits."""
        try:
            return self._picked[family]
        except KeyError:
            got = self._picked[family] = pick_ruleset(self.rulesets, family)
            return got

    def chain(self, table: str, name: str, family: str | None = None) -> Chain | None:
        rs = self.pick(family)
        return None if rs is None else rs.chain(table, name)

    def of_families(self, families: set[str | None]) -> list[Ruleset]:
        """The rulesets a packet of these event families passes through (each once)."""
        out: list[Ruleset] = []
        for f in families:
            rs = self.pick(f)
            if rs is not None and all(rs is not o for o in out):
                out.append(rs)
        return out

    def __bool__(self) -> bool:
        return bool(self.rulesets)


def pick_ruleset(rulesets: list[Ruleset], family: str | None) -> Ruleset | None:
    """The ruleset of a family (or the one without a family), None when none fits."""
    if not rulesets:
        return None
    if family is not None:
        for rs in rulesets:
            if rs.family == family:
                return rs
        for rs in rulesets:
            if rs.family is None:
                return rs
        return None if len(rulesets) > 1 else rulesets[0]
    return rulesets[0]


class TraceEvent:
    """One step of one packet as reported by the kernel (or predicted by the simulator).

    ``fields`` holds the packet as seen at this step, keyed by the kernel log's names
    (see ``ruletrace.fields``). Sources that read text may fill ``raw`` instead and let the
    fields be parsed on first access: most events are never looked at field by field.
    """

    __slots__ = (
        "_fields",
        "_parse",
        "chain",
        "family",
        "handle",
        "ident",
        "kind",
        "num",
        "origin",
        "packet_id",
        "raw",
        "source",
        "table",
        "ts",
        "verdict",
    )

    def __init__(
        self,
        table: str,
        chain: str,
        kind: StepKind,
        num: int | None,
        *,
        ts: float | None = None,
        family: str | None = None,
        handle: int | None = None,
        ident: Any = None,
        packet_id: Any = None,
        verdict: str | None = None,
        origin: Origin | None = None,
        source: str = "",
        fields: dict[str, str] | None = None,
        raw: Any = None,
        parse: Callable[[Any], dict[str, str]] | None = None,
    ) -> None:
        self.table = table
        self.chain = chain
        self.kind = kind
        self.num = num
        self.ts = ts  # seconds since the epoch, or since boot for dmesg-style stamps
        self.family = family  # "ipv4" / "ipv6" / "bridge" / … where known
        self.handle = handle  # nf_tables rule handle where the source has it
        self.ident = ident  # hashable identity invariant along the path (source-specific)
        self.packet_id = packet_id  # exact per-packet identity (nft trace id) where known
        self.verdict = verdict  # explicit kernel verdict where the source has one
        self.origin = origin
        self.source = source  # name of the source format, e.g. "kernel-log"
        self.raw = raw
        self._fields = fields
        self._parse = parse

    @property
    def fields(self) -> dict[str, str]:
        f = self._fields
        if f is None:
            f = self._parse(self.raw) if self._parse is not None and self.raw is not None else {}
            self._fields = f
        return f

    def same_fields(self, other: TraceEvent) -> bool:
        """True when both events' fields are known equal without parsing them: the same raw text for
        the same parser (fields given with a raw text are parsed from it and never changed), or the
        same dict. False only means "not known equal" (compare the fields)."""
        mine = self._fields
        if mine is not None and mine is other._fields:
            return True
        raw = self.raw
        return raw is not None and self._parse is not None and self._parse is other._parse and raw == other.raw

    # nf_tables monitors only (MonitorEvent): the rule text the monitor printed, and whether the
    # event opens a base chain's run; class-level defaults for every other source
    text: str | None = None
    base: bool = False
    # an nf_tables step (a monitor's, the live nftrace's, the nft simulator's): its table's name may be
    # one of several families' (``ip filter``, ``inet filter``); a legacy xtables step's is not
    nftables: bool = False

    @property
    def label_family(self) -> str | None:
        """The family a view names this step's table with where the name is shared
        (rulesets/nft_model.table_label): an nf_tables step's; None for a legacy xtables step."""
        return self.family if self.nftables else None

    @property
    def tag(self) -> str:
        return f"{self.table}:{self.chain}:{self.kind}:{self.num if self.num is not None else '?'}"

    def __repr__(self) -> str:
        return f"TraceEvent({self.tag}{'' if self.origin is None else ' @ ' + str(self.origin)})"


class MonitorEvent(TraceEvent):
    """An nf_tables trace event read from ``nft monitor trace`` or ``xtables-monitor --trace``."""

    __slots__ = ("base", "text")
    nftables = True

    def __init__(self, *args: Any, text: str | None = None, base: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # the rule's text as the monitor printed it (nft syntax from ``nft monitor trace``, iptables
        # syntax from ``xtables-monitor``), counters' values left out
        self.text = text
        # the first event after a packet dump: the kernel dumps the packet once per base chain it runs
        self.base = base


@dataclass(slots=True)
class Packet:
    """One traversal of the rules by one packet: its events in order."""

    id: int
    events: list[TraceEvent] = field(default_factory=list)
    # the packet's fields when no event carries them (a simulated packet the routing step dropped
    # before any chain ran); ``Explanation.first`` falls back to them
    fields: dict[str, str] | None = None


@dataclass(slots=True)
class Step:
    """One event annotated with the ruleset."""

    event: TraceEvent
    rule: Rule | None = None  # kind rule: the rule that matched
    policy: str | None = None  # kind policy: the chain's policy
    returned_to: str | None = None  # kind return: the chain execution went back to
    depth: int = 0  # call depth (0 = built-in chain) for indentation
    action: str = ""  # what the step did: accept, drop, reject, jump, goto, return, continue, …
    warning: str | None = None  # the ruleset does not fit this step
    note: str | None = None
    # the hook of the base chain this step runs under ("PREROUTING", "INPUT", …, "INGRESS"), None
    # where neither the ruleset nor the chain's name tells; its priority where the ruleset lists it
    hook: str | None = None
    priority: int | None = None

    @property
    def table(self) -> str:
        return self.event.table

    @property
    def chain(self) -> str:
        return self.event.chain

    @property
    def kind(self) -> StepKind:
        return self.event.kind

    @property
    def num(self) -> int | None:
        return self.event.num


@dataclass(slots=True)
class Verdict:
    """The decision that gave the packet its fate."""

    action: str  # accept / drop / reject / … (lower case)
    table: str | None = None
    chain: str | None = None
    num: int | None = None
    rule: Rule | None = None  # None for a chain policy, or a rule the ruleset does not hold
    reason: str = ""  # one human-readable sentence
    kind: StepKind | None = None  # the deciding step's: RULE with rule None is a rule not in the ruleset
    family: str | None = field(default=None, compare=False)  # the deciding step's event's, where the source says it
    # a legacy xtables verdict's packet family (``family`` is None there: its tables are never labelled in
    # a path); the summary tells iptables' filter from ip6tables' by it (analyze/summary.Summary.ranked)
    legacy_family: str | None = field(default=None, compare=False)


@dataclass(slots=True)
class Change:
    """A NAT rewrite or a mark change, with the step that made it."""

    what: str  # "DST", "SRC", "DPT", "SPT", "MARK", …
    old: str | None
    new: str | None
    table: str | None = None
    chain: str | None = None
    num: int | None = None
    rule: Rule | None = None
    step: int | None = None  # index into Explanation.steps of the step that made it
    note: str = ""


@dataclass(slots=True)
class MissLine:
    """One rule of the ``--explain-miss`` chain, checked against a traced packet's logged fields
    (analyze/explain_miss.py): ``result`` matched / failed / unknown / not reached."""

    table: str
    chain: str
    num: int
    rule: Rule | None  # None: a line about the chain itself (not in the ruleset of this family)
    result: str
    reason: str


@dataclass(slots=True)
class CauseLink:
    """One link of a cause chain: why the deciding rule matched."""

    role: str  # "decided", "matched mark", "mark set", "called from", "rewritten", …
    table: str | None = None
    chain: str | None = None
    num: int | None = None
    rule: Rule | None = None
    text: str = ""  # one sentence
    step: int | None = None


@dataclass(slots=True)
class KernelDrop:
    """The kernel freed the packet outside (or inside) netfilter, and said why (skb:kfree_skb)."""

    reason: str  # the kernel's name, verbatim: "NO_SOCKET", "IP_INADDRERRORS", …
    function: str | None = None  # the kernel function that freed it: "ip_error"
    text: str = ""  # the reason in words, with the host fact named
    fields: dict[str, str] = field(default_factory=dict)  # the packet as the kernel freed it (SRC DST …)


@dataclass(slots=True)
class RouteDecision:
    """One routing lookup: where the kernel sends the packet, and which ``ip rule`` chose the table."""

    point: str  # "input" (after PREROUTING), "output" (after OUTPUT), "reroute" (after NAT / mark change)
    type: str | None = None  # "unicast", "local", "unreachable", … (None: the lookup failed)
    dev: str | None = None
    gateway: str | None = None
    table: str | None = None
    rule: str | None = None  # the ip rule, as `ip rule` prints it: "100: from all fwmark 0x1 lookup 100"
    mark: str | None = None
    error: str | None = None  # the lookup's error ("No route to host")
    sysctls: dict[str, str] = field(default_factory=dict)  # ip_forward, rp_filter of the interfaces involved
    text: str = ""  # one line
    mark_set: str | None = None  # where the mark was set: "mangle:PREROUTING rule 3"
    dst: str | None = None  # the destination looked up


@dataclass(slots=True)
class ConntrackEntry:
    """The conntrack entry of the packet's flow, when first seen or at the end of the trace."""

    when: str  # "first seen", "end"
    proto: str | None = None
    state: str | None = None
    original: str = ""  # "src=… dst=… sport=… dport=…"
    reply: str = ""
    mark: str | None = None
    zone: str | None = None
    status: list[str] = field(default_factory=list)  # ASSURED, SEEN_REPLY, UNREPLIED, …
    timeout: int | None = None
    text: str = ""  # the whole line, as conntrack printed it


@dataclass(slots=True)
class Explanation:
    packet: Packet
    steps: list[Step] = field(default_factory=list)
    fate: Fate = Fate.UNKNOWN
    verdict: Verdict | None = None
    nat: list[Change] = field(default_factory=list)
    marks: list[Change] = field(default_factory=list)
    cause: list[CauseLink] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    last_seen: str | None = None  # "table:chain" of the last event, for fate unknown
    drops: list[KernelDrop] = field(default_factory=list)  # kernel drop reasons (live: skb:kfree_skb)
    routing: list[RouteDecision] = field(default_factory=list)
    conntrack: list[ConntrackEntry] = field(default_factory=list)
    # equal for two explanations one Explainer made from one plan, so with equal steps apart from
    # their events (set by explain.Explainer; None otherwise): the report groups paths by it
    path_key: Any = field(default=None, compare=False, repr=False)
    # ``explain --explain-miss CHAIN``: each rule of CHAIN and why it did (not) match; None without it
    misses: list[MissLine] | None = None
    # table names the path shows in two families (``ip filter`` and ``inet filter``): every view names
    # those with their family (rulesets/nft_model.table_label)
    shared: frozenset[str] = frozenset()

    @property
    def first(self) -> dict[str, str]:
        """The packet's fields as first seen."""
        return self.packet.events[0].fields if self.packet.events else (self.packet.fields or {})


def rule_spec(text: str | None, chain: str) -> str | None:
    """A rule's saved text without its leading ``-A CHAIN`` and the blanks after it: ``-A FOO -j X``
    gives ``-j X``, a bare counting rule ``-A FOO`` gives ``""``; the chain's name must end there
    (``-A FOOBAR …`` is not a rule of FOO's prefix), any other text is given back as it is (an nft
    rule, a listing's line); None for no text. Every view of a rule's text cuts it here
    (``Rule.spec``, the tree, diff, summary, report)."""
    if text is None:
        return None
    prefix = f"-A {chain}"
    n = len(prefix)
    if text.startswith(prefix):
        return text[n:].lstrip() if len(text) == n or text[n].isspace() else text
    if text.startswith("-A") and text[2:3].isspace():  # blanks doubled by a paste: "-A  INPUT …"
        rest = text[2:].lstrip()
        if rest.startswith(chain) and (len(rest) == len(chain) or rest[len(chain)].isspace()):
            return rest[len(chain):].lstrip()
    return text
