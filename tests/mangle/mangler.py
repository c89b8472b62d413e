"""The paste mangler: the damaged forms of lab-recorded logs and rulesets that people post.

Each function takes the text of a kernel log (or a ruleset) and returns it as a paste would
show it. Nothing here knows what ruletrace makes of the result.
"""

from __future__ import annotations

import re

_MAC = re.compile(r"MAC=(\S+)")
_STAMP = re.compile(r"^\[\s*(\d+)\.(\d+)\] ")


def redact_mac_dots(text: str) -> str:
    return _MAC.sub("MAC=...", text)


def redact_mac_xx(text: str) -> str:
    return _MAC.sub(lambda m: "MAC=" + re.sub(r"[0-9a-f]{2}", "xx", m.group(1)), text)


def tabs_and_double_spaces(text: str) -> str:
    """Fields separated by tabs or double spaces (copied out of a terminal or a web page)."""
    out = []
    for i, line in enumerate(text.splitlines()):
        head, sep, rest = line.partition("TRACE: ")
        tag, _, fields = rest.partition(" ")
        glue = "\t" if i % 2 else "  "
        out.append(head + sep + tag + glue + glue.join(fields.split(" ")) if sep else line)
    return "\n".join(out) + "\n"


def dmesg_T(text: str) -> str:
    """``dmesg -T`` stamps instead of the uptime: ``[Mon Nov 23 03:55:01 2026]``."""
    def stamp(m: re.Match) -> str:
        s = int(m.group(1))
        return f"[Mon Nov 23 03:{55 + s // 3600 % 5:02d}:{s % 60:02d} 2026] "
    return "\n".join(_STAMP.sub(stamp, line) for line in text.splitlines()) + "\n"


def hostname_prefix(text: str) -> str:
    """Lines collected from many hosts: ``[node-1] `` before each."""
    return "\n".join(f"[node-1] {line}" for line in text.splitlines()) + "\n"


def syslog_prefix(text: str) -> str:
    return "\n".join(_STAMP.sub(lambda m: f"Nov 23 03:55:{int(m.group(1)) % 60:02d} node-1 kernel: [{m.group(1)}.{m.group(2)}] ", line)
                     for line in text.splitlines()) + "\n"


def truncate_tail(text: str, keep_after: str = " DPT=") -> str:
    """Every line cut with ``...`` after its destination port (forum posts and narrow terminals)."""
    out = []
    for line in text.splitlines():
        i = line.find(keep_after)
        if i < 0:
            out.append(line)
            continue
        j = line.find(" ", i + len(keep_after))
        out.append(line[:j] + " ..." if j > 0 else line)
    return "\n".join(out) + "\n"


def cut_mid_value(text: str, every: int = 5, field: str = " SEQ=") -> str:
    """Some lines end inside a field value (a paste cut at a fixed width)."""
    out = []
    for n, line in enumerate(text.splitlines()):
        i = line.find(field)
        out.append(line[: i + len(field) + 3] if n % every == 2 and i > 0 else line)
    return "\n".join(out) + "\n"


def interleave_log_lines(text: str) -> str:
    """LOG target and ebtables lines between the TRACE lines (the same kernel log)."""
    out = []
    for n, line in enumerate(text.splitlines()):
        out.append(line)
        m = _STAMP.match(line)
        if m and n % 4 == 1:
            f = line.partition("TRACE: ")[2].partition(" ")[2]
            out.append(f"[{m.group(1)}.{m.group(2)}] IN-DROP: {f}")
            out.append(f"[{m.group(1)}.{m.group(2)}] EBT-IN IN=br0 OUT= MAC source = 02:42:ac:11:00:02 "
                       "MAC dest = 02:42:ac:11:00:03 proto = 0x0800")
    return "\n".join(out) + "\n"


# --- rulesets


def save_tables(text: str, keep: set[str]) -> str:
    """An iptables-save listing with only some of its tables."""
    out, on = [], True
    for line in text.splitlines():
        if line.startswith("*"):
            on = line[1:].strip() in keep
        if on:
            out.append(line)
        if line == "COMMIT":
            on = True
    return "\n".join(x for x in out if not x.startswith("#")) + "\n"


def drop_chains(text: str, chains: set[str]) -> str:
    """An iptables-save listing without some user chains (their rules and declarations)."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if words and ((words[0] == "-A" and words[1] in chains) or (words[0].lstrip(":") in chains
                                                                     and line.startswith(":"))):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def single_chain(text: str, table: str, chain: str) -> str:
    """One chain of one table, as ``iptables-save -t T | grep -- '-A CHAIN'`` with its header."""
    out, cur = [], None
    for line in text.splitlines():
        if line.startswith("*"):
            cur = line[1:].strip()
            if cur == table:
                out.append(line)
        elif cur == table and (line.startswith(f":{chain} ") or line.startswith(f"-A {chain} ") or line == "COMMIT"):
            out.append(line)
    return "\n".join(out) + "\n"


def fragment_without_header(text: str, table: str) -> str:
    """The ``-A`` lines of one table, without ``*table``, chain declarations or COMMIT."""
    out, cur = [], None
    for line in text.splitlines():
        if line.startswith("*"):
            cur = line[1:].strip()
        elif cur == table and line.startswith("-A "):
            out.append(line)
    return "\n".join(out) + "\n"
