"""Ruleset readers: each module reads one listing format and returns a Ruleset.

nft listings (``nft list ruleset`` text and ``nft -j``) give one Ruleset per nft family:
``load_rulesets`` returns them all; ``load_ruleset`` returns the only one or says to use it.
"""

from __future__ import annotations

import re
import textwrap

from ..errors import RuletraceError
from ..inputs import compression
from ..model import Origin, Ruleset
from ..pcap import looks_like_capture

# line-start markers of iptables-save output: "*filter", ":INPUT ACCEPT [0:0]", "-A INPUT …", "[0:0] -A …"
_SAVE = re.compile(
    r"^(?:\*(?:raw|mangle|nat|filter|security)\s*$|:\S+ (?:ACCEPT|DROP|-) \[\d+:\d+\]"
    r"|(?:\[\d+:\d+\] )?-A \S)",
    re.M,
)
# print_header() of iptables -L, also inside a paste that lost its newlines
_LIST = re.compile(r"Chain \S+ \((?:policy [A-Z]+|-?\d+ references)")
_JSON = re.compile(r'\s*\{\s*"nftables"\s*:')
# kernel log "TRACE: raw:PREROUTING:policy:2", nft monitor "trace id 1a2b3c4d ip filter …"
_TRACE = re.compile(r"TRACE: \w+:\S+:(?:rule|return|policy):\d+|^trace id [0-9a-f]+ ", re.M)
# "nft list ruleset" text: "table inet filter {"
_NFT_TEXT = re.compile(r"^[ \t]*table [a-z0-9]+ \S+ \{", re.M)  # family checked by the reader
# a chain pasted without its table: "chain input {" then "type filter hook …" or a rule
_NFT_CHAIN = re.compile(r"^[ \t]*chain [^\s{}]+ \{[ \t]*(?:#[^\n]*)?$", re.M)
_SNIFF = 64 * 1024  # bytes looked at to tell text from binary


def load_ruleset(path: str, *, text: str | None = None) -> Ruleset:
    """Read a ruleset file ("-" = stdin) in any supported format, detected from its content.

    An nft listing holding several families is refused: read it with ``load_rulesets``.
    """
    rulesets = load_rulesets(path, text=text)
    if len(rulesets) != 1:
        fams = ", ".join(str(rs.family) for rs in rulesets) or "none"
        raise RuletraceError(f"this nft listing holds {len(rulesets)} families ({fams}): "
                             "read it with load_rulesets()", origin=Origin(path))
    return rulesets[0]


def load_rulesets(path: str, text: str | None = None, *, save: Ruleset | None = None) -> list[Ruleset]:
    """Read a ruleset file in any supported format: one Ruleset per family it holds.

    ``save``: an iptables-save listing of the same host, which resolves the ``xt`` placeholders
    of an iptables-nft ``nft -j`` listing (by position in the chain).
    """
    origin = Origin(path)
    if text is None:
        text = _read(path, origin)
    if not text.strip():
        raise RuletraceError("empty ruleset file", origin=origin)
    try:
        return _parse(text, origin, save)
    except RuletraceError as e:
        bare = _unquoted(text)
        if bare is None:
            raise
        try:
            got = _parse(bare, origin, save)
        except RuletraceError:
            raise e from None  # the fault is the listing's, not its quoting: said of the text as given
    for rs in got:
        rs.warnings.insert(0, f"{path}: read without the indentation or ``` fences it was pasted with")
    return got


def _unquoted(text: str) -> str | None:
    """A ruleset pasted as a quote (indented as Markdown, a forum or an email does, between ``` fences)
    as the tool printed it; the same lines, so line numbers hold. None: nothing to take away."""
    lines = ["" if ln.strip().startswith("```") else ln for ln in text.split("\n")]
    bare = textwrap.dedent("\n".join(lines))
    return bare if bare != text else None


def _parse(text: str, origin: Origin, save: Ruleset | None) -> list[Ruleset]:
    if _SAVE.search(text):
        from . import iptables_save

        return [iptables_save.parse(text, origin=origin)]
    if _LIST.search(text):
        from . import iptables_list

        return [iptables_list.parse(text, origin=origin)]
    if _JSON.match(text):
        try:
            from . import nft_json
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.nft_json":
                raise
            raise RuletraceError("nft JSON rulesets are not supported by this build "
                                 "(ruletrace.rulesets.nft_json is missing)", origin=origin) from None
        return nft_json.parse(text, origin=origin, save=save)
    if _NFT_TEXT.search(text):
        from . import nft_text

        return nft_text.parse(text, origin=origin)
    if _NFT_CHAIN.search(text):
        from . import nft_text

        return nft_text.parse(text, origin=origin, fragment=True)
    if _TRACE.search(text):
        raise RuletraceError("this is a trace log, not a ruleset: give it as a trace input and pass "
                             "iptables-save, iptables -L or nft list ruleset output as the ruleset",
                             origin=origin)
    raise RuletraceError("not a ruleset: expected iptables-save, iptables -L -n [-v], "
                         "nft list ruleset or nft -j list ruleset output", origin=origin)


def _read(path: str, origin: Origin) -> str:
    from ..inputs import read_limited

    data = read_limited(path, "ruleset")
    head = data[:_SNIFF]
    # text listings may hold a stray NUL (the bpf match in iptables -L); binary files hold many
    # control bytes
    ctrl = sum(1 for b in head if b < 9 or (13 < b < 32 and b != 27))
    if ctrl * 20 > len(head) or looks_like_capture(head) or compression(head) is not None:
        raise RuletraceError("binary file, not a ruleset listing", origin=origin)
    return data.decode("utf-8", errors="replace")
