"""The nf_log text parser: the field text of a kernel-log record (``IN=… OUT=… SRC=…``) -> fields.

The format, the field names and the renames are described in ``fields.py`` (the vocabulary);
``parse_fields`` reads well-formed text on a fast path (one regular expression) and anything
else token by token; ``tidy_text`` repairs damaged pastes first (tabs, runs of spaces, a
trailing ``...``).
"""

from __future__ import annotations

import re

from .fields import IP_FLAG_WORDS, TCP_FLAG_WORDS

_TCP_FLAGS = frozenset(TCP_FLAG_WORDS)

# Keys the kernel prints with "=", longest first: used to split pastes that lost a space
# ("LEN=84TOS=0x00", "TYPE=8CODE=0ID=28976SEQ=1"). ARP-only keys are left out on purpose:
# "PROTO=ICMPTYPE=8" must split as PROTO + TYPE, not PROTO + PTYPE.
_GLUE_KEYS = tuple(
    sorted(
        {
            "IN", "OUT", "PHYSIN", "PHYSOUT", "MAC", "MACSRC", "MACDST", "MACPROTO", "VPROTO", "VID",
            "SRC", "DST", "LEN", "TOS", "PREC", "TTL", "ID", "TC", "HOPLIMIT", "FLOWLBL", "PROTO",
            "SPT", "DPT", "SEQ", "ACK", "WINDOW", "RES", "URGP", "TYPE", "CODE", "PARAMETER",
            "POINTER", "GATEWAY", "MTU", "SPI", "UID", "GID", "MARK", "TUNNEL",
        },
        key=len,
        reverse=True,
    )
)

_ETH_MAC_LEN = 41  # 14 bytes "dd:dd:dd:dd:dd:dd:ss:ss:ss:ss:ss:ss:pp:pp" (ETH_HLEN = 14)


def _unglue(tok: str) -> list[str]:
    """Split a token that lost its spaces, e.g. ``TTL=64ID=0`` -> ``TTL=64``, ``ID=0``."""
    parts: list[str] = []
    start = 0  # start of the current key=value piece
    eq = tok.find("=")
    while True:
        nxt = tok.find("=", eq + 1)
        if nxt < 0:
            parts.append(tok[start:])
            return parts
        before = tok[eq + 1 : nxt]  # value of the current key, glued to the next key
        for key in _GLUE_KEYS:
            if before.endswith(key) and len(before) > len(key):
                cut = eq + 1 + len(before) - len(key)
                parts.append(tok[start:cut])
                start = cut
                break
            if before == key:  # empty value: "IN=OUT=eth0"
                parts.append(tok[start : eq + 1])
                start = eq + 1
                break
        eq = nxt


def _group(toks: list[str], i: int, open_: str, close: str) -> tuple[str, int]:
    """Join tokens from ``toks[i]`` until the brackets balance; return the text and the next index."""
    depth = 0
    j = i
    n = len(toks)
    while j < n:
        t = toks[j]
        depth += t.count(open_) - t.count(close)
        j += 1
        if depth <= 0:
            break
    return " ".join(toks[i:j]), j


_last: tuple[object, dict[str, str]] = (None, {})  # the last text parsed and its fields
# recent texts and their fields: the steps of the few packets in flight repeat their texts,
# though not always one after the other (a packet's steps are explained after all were read)
_recent: dict[str | bytes, dict[str, str]] = {}
_RECENT_MAX = 4096


def parse_fields(raw: str | bytes) -> dict[str, str]:
    """Parse the nf_log field text that starts at ``IN=`` into a dict keyed by kernel-log names."""
    global _last
    last = _last
    if raw is last[0]:  # consecutive events often share one text object (see sources.kernel_log)
        return dict(last[1])
    got = _recent.get(raw) if isinstance(raw, (str, bytes)) else None
    if got is not None:
        _last = (raw, got)
        return dict(got)
    s = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    if not s.startswith("IN="):
        i = s.find("IN=")
        while i > 0 and s[i - 1].isalpha():  # PHYSIN=, or a prefix word ending in "IN="
            i = s.find("IN=", i + 3)
        if i >= 0:
            s = s[i:]
    out = _parse_regular(s)
    if out is None:
        out = _parse_tokens(s)
    if "..." in s or "\u2026" in s:  # redacted values (MAC=...) are unknown, never a value
        out = {k: v for k, v in out.items() if v.strip(".\u2026")}
    for k in ("SRC", "DST"):  # a redacted or damaged address (10.0.0.x, <ip>) is unknown, never a value
        v = out.get(k)
        if v is not None and not address_ok(v):
            del out[k]
    _last = (raw, out)
    if isinstance(raw, (str, bytes)):
        if len(_recent) >= _RECENT_MAX:
            _recent.clear()
        _recent[raw] = out
    return dict(out)


_HEX6 = "0123456789abcdefABCDEF:."
# every ASCII decimal text of 1 to 3 digits whose value is below 256 ("0", "07", "007", "255"):
# a set lookup per part instead of isascii/isdigit/int (the octet rule, as one table)
_OCTETS = frozenset(f"{n:0{w}d}" for w in (1, 2, 3) for n in range(min(256, 10**w)))


def address_ok(v: str) -> bool:
    """Is ``v`` an address as nf_log prints one (dotted IPv4, IPv6 with colons)? Cheap: no
    ``ipaddress`` object on this path; run once per distinct field text."""
    if ":" in v:
        # strip(chars) leaves "" exactly when every character is one of them
        return 2 <= v.count(":") <= 7 and len(v) <= 45 and not v.strip(_HEX6)
    parts = v.split(".")
    # only ASCII digits: str.isdigit() is true for "①" and "²", which int() refuses
    if len(parts) != 4:
        return False
    a, b, c, d = parts
    o = _OCTETS
    return a in o and b in o and c in o and d in o


_KV = re.compile(r"(?<![A-Z])([A-Z]+)=(\S*)")  # not from inside a run of capitals: linear
_IP_FLAG = re.compile(r" (CE|DF|MF)(?= |$)")
_TCP_FLAG = re.compile(r" (AE|CWR|ECE|URG|ACK|PSH|RST|SYN|FIN)(?= |$)")
_TCP_OPT = re.compile(r" OPT \(([^ ()]*)\)")


# _KV only after a space (run on " " + text: so also at its start); a literal first character lets
# the regex engine skip ahead, about a third quicker; where it finds one pair per "=" its pairs
# are exactly _KV's (see _key_values)
_KV_SPACED = re.compile(r" ([A-Z]+)=(\S*)")


def _key_values(s: str, p: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]] | None:
    """``KEY=value`` pairs before and after ``s[p]`` (the space before ``PROTO=``), or None unless
    every "=" of ``s`` is in exactly one pair.

    Reference: ``_KV.findall(s[:p])`` and ``_KV.findall(s[p:])``, None when their pairs differ
    in number from the "=" of ``s`` (tests/sources/test_logtext_pairs.py proves the two equal).
    Why they agree: each _KV_SPACED pair is a _KV pair (same greedy match, same place); a _KV
    pair it misses starts inside a token (after neither a space nor a capital) and ends at the
    next blank, so it overlaps none of them and holds an "=" of its own: one pair per "=" leaves
    none missed. No pair spans ``s[p]`` (a space) and each holds one "=", so the "=" before
    ``p`` count the pairs before it.
    """
    n_eq = s.count("=")
    kv = _KV_SPACED.findall(" " + s)
    if len(kv) == n_eq:
        n_head = s.count("=", 0, p)
        return kv[:n_head], kv[n_head:]
    hk = _KV.findall(s[:p])
    tk = _KV.findall(s[p:])
    if len(hk) + len(tk) != n_eq:
        return None
    return hk, tk


def _parse_regular(s: str) -> dict[str, str] | None:
    """Fast path for the common layout (a few C-level regex calls); None for anything unusual.

    Taken only when every token is accounted for: ``KEY=value`` pairs, IP flags before
    ``PROTO=``, TCP flags and one TCP ``OPT (hex)`` after it. Glued keys, inner packets, IP
    options, fragments' extension headers, ARP and unknown words go to ``_parse_tokens``.
    """
    p = s.find(" PROTO=")
    if p < 0 or "[" in s:
        return None
    head = s[:p]
    tail = s[p:]
    pairs = _key_values(s, p)
    if pairs is None:
        return None
    hk, tk = pairs
    ipf = _IP_FLAG.findall(head)
    tcpf = _TCP_FLAG.findall(tail)
    m = _TCP_OPT.search(tail)
    if len(hk) + len(tk) + len(ipf) + len(tcpf) + (2 if m else 0) != len(s.split()):
        return None
    out = dict(hk)
    if len(out) != len(hk):
        return None  # a key twice
    mac = out.get("MAC")
    if mac is not None and len(mac) == _ETH_MAC_LEN:
        out["MACDST"] = mac[:17]
        out["MACSRC"] = mac[18:35]
        out["MACPROTO"] = mac[36:38] + mac[39:41]
    if ipf:
        out["IPFLAGS"] = " ".join(ipf)
    t = dict(tk)
    proto = t["PROTO"]
    if "LEN" in t:
        t["ULEN"] = t.pop("LEN")
    if proto.startswith("ICMP"):
        if "ID" in t:
            t["ICMPID"] = t.pop("ID")
        if "SEQ" in t:
            t["ICMPSEQ"] = t.pop("SEQ")
    out.update(t)
    if tcpf:
        out["TCPFLAGS"] = " ".join(tcpf)
    elif proto == "TCP" and "URGP" in out:
        out["TCPFLAGS"] = ""
    if m:
        out["OPT"] = m.group(1)
    return out


def _parse_tokens(s: str) -> dict[str, str]:
    """The general parser: token by token, splitting glued keys, grouping ``[…]`` and ``OPT (…)``."""
    out: dict[str, str] = {}
    toks = s.split()
    ipflags: list[str] = []
    tcpflags: list[str] = []
    extra: list[str] = []
    proto: str | None = None  # set once PROTO= is seen: later keys belong to the transport header
    i = 0
    n = len(toks)
    while i < n:
        tok = toks[i]
        i += 1
        if tok.startswith("["):  # ICMP error: the quoted packet, one level deep
            text, i = _group(toks, i - 1, "[", "]")
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1].strip()
            out.setdefault("INNER", text)
            continue
        eq = tok.find("=")
        if eq > 0:
            if tok.find("=", eq + 1) > 0 and not tok.startswith(("[", "TUNNEL=")):
                pieces = _unglue(tok)
                if len(pieces) > 1:
                    toks[i - 1 : i] = pieces
                    n = len(toks)
                    i -= 1
                    continue
            key = tok[:eq]
            val = tok[eq + 1 :]
            if proto is not None:
                if key == "LEN":
                    key = "ULEN"
                elif proto.startswith("ICMP"):
                    if key == "ID":
                        key = "ICMPID"
                    elif key == "SEQ":
                        key = "ICMPSEQ"
            elif key == "PROTO":
                proto = val
            elif key == "MAC" and len(val) == _ETH_MAC_LEN:
                out["MACDST"] = val[:17]
                out["MACSRC"] = val[18:35]
                out["MACPROTO"] = val[36:38] + val[39:41]
            if key not in out:  # the first value wins (ARP payload MACSRC after the Ethernet one)
                out[key] = val
            continue
        if tok == "OPT" and i < n and toks[i].startswith("("):
            text, i = _group(toks, i, "(", ")")
            inner = text[1:-1].strip() if text.endswith(")") else text[1:].strip()
            if proto is None:  # IPv4 options (hex), or IPv6 extension headers "( FRAG:0 ID:… )"
                if " " in inner or inner.startswith("FRAG:"):
                    _ext_words(inner.split(), out, ipflags, extra)
                out.setdefault("IPOPT", inner)
            else:  # TCP options (hex)
                out.setdefault("OPT", inner)
            continue
        if tok.startswith("FRAG:") or tok.startswith("ID:"):
            _ext_words([tok], out, ipflags, extra)
            continue
        if tok == "INCOMPLETE":
            if i < n and toks[i].startswith("["):  # "INCOMPLETE [65535 bytes]"
                text, i = _group(toks, i, "[", "]")
                out.setdefault("INCOMPLETE", text.strip("[]").split()[0] if text.strip("[] ") else "")
            else:  # IPv6 fragment header with the M flag set
                ipflags.append("MF")
            continue
        if proto is None:
            if tok in IP_FLAG_WORDS:
                ipflags.append(tok)
                continue
            if tok == "ARP":
                out.setdefault("PROTO", "ARP")
                continue
        elif tok in _TCP_FLAGS:
            tcpflags.append(tok)
            continue
        if tok == "TRUNCATED":
            out["TRUNCATED"] = ""
            continue
        extra.append(tok)
    if ipflags:
        out["IPFLAGS"] = " ".join(ipflags)
    if tcpflags:
        out["TCPFLAGS"] = " ".join(tcpflags)
    elif proto == "TCP" and "URGP" in out:
        out["TCPFLAGS"] = ""
    if extra:
        out["EXTRA"] = " ".join(extra)
    return out


def _ext_words(toks: list[str], out: dict[str, str], ipflags: list[str], extra: list[str]) -> None:
    """IPv6 extension-header words: ``FRAG:off``, ``INCOMPLETE`` (M flag), ``ID:%08x``, ``AH``, ``ESP``."""
    for t in toks:
        if t.startswith("FRAG:"):
            out.setdefault("FRAG", t[5:])
        elif t.startswith("ID:"):
            out.setdefault("FRAGID", t[3:])
        elif t == "INCOMPLETE":
            ipflags.append("MF")
        elif t.startswith("SPI="):
            out.setdefault("SPI", t[4:])
        elif t in ("AH", "ESP", ")", "("):
            continue
        else:
            extra.append(t)


_ELLIPSES = ("...", "\u2026")


def tidy_text(s: str) -> tuple[str, bool]:
    """Damaged field text as the kernel printed it: (text, whether it ended in ``...``).

    Tabs and runs of blanks separate fields like one space (``dmesg -T``, ``column -t``);
    fields glued by a lost space are split (``LEN=84TOS=0x00``); a trailing ``...`` (a paste cut
    on purpose) is taken off and reported, so that the fields before it count as whole.
    """
    toks = s.split()
    cut = False
    if toks and toks[-1].endswith(_ELLIPSES):
        last = toks.pop().rstrip(".\u2026")
        cut = True
        if last:
            toks.append(last)
            cut = False  # "DPT=80...": that value may be cut too
    out: list[str] = []
    for tok in toks:
        eq = tok.find("=")
        if eq > 0 and tok.find("=", eq + 1) > 0 and not tok.startswith(("[", "TUNNEL=")):
            out.extend(_unglue(tok))
        else:
            out.append(tok)
    return " ".join(out), cut
