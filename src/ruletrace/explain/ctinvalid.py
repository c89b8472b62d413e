"""Why conntrack called a packet INVALID, when a rule matching that state decided its fate.

Conntrack marks a packet INVALID (no entry attached) when it cannot start or continue a tracked
connection: a TCP packet without SYN while ``nf_conntrack_tcp_loose=0`` (no mid-stream pickup),
a lone RST, an invalid flag combination, a segment outside the window of the flow's entry, or an
ICMP error that belongs to no connection. The packet's logged fields, the flow's entry (live) and
the conntrack sysctls (live, or ``--sysctl``) say which; what they cannot tell is said as such.
"""

from __future__ import annotations

import re

from ..model import ConntrackEntry, Explanation

INVALID_PREFIX = "conntrack state INVALID: "
# a match FOR the INVALID state: `! --ctstate INVALID` and `ct state != invalid` are the opposite
_INVALID = re.compile(r"(?<!! )--c?t?state\s+(?:\S*,)?INVALID\b|\bct state\s+(?:\{[^}]*)?\binvalid\b", re.I)
_LOOSE = "net.netfilter.nf_conntrack_tcp_loose"
# ICMP error types: unreachable, source quench, redirect, time exceeded, parameter problem;
# ICMPv6: unreachable, packet too big, time exceeded, parameter problem
_ICMP_ERRORS = {"ICMP": {"3", "4", "5", "11", "12"}, "ICMPV6": {"1", "2", "3", "4"}}


def decided_by_invalid(expl: Explanation) -> bool:
    """A drop or reject by a rule that matches the INVALID state (not one that excludes it)."""
    v = expl.verdict
    return (v is not None and v.rule is not None and v.action.lower() in ("drop", "reject")
            and bool(_INVALID.search(v.rule.text)))


def why_invalid(expl: Explanation, entry: ConntrackEntry | None, sysctls: dict[str, str]) -> str:
    f = expl.first
    proto = (f.get("PROTO") or "").upper()
    if proto == "TCP":
        flags = set((f.get("TCPFLAGS") or "").split())
        shown = " ".join(sorted(flags)) or "none"
        if {"SYN", "FIN"} <= flags or {"SYN", "RST"} <= flags:
            return f"the TCP flags {shown} are not a valid combination"
        if entry is not None:
            return (f"the flow's entry ({entry.state or 'state unknown'}) did not accept the segment ({shown}): "
                    "outside its TCP window or flags not valid in that state (nf_conntrack_tcp_be_liberal=0)")
        if "SYN" not in flags:
            if flags == {"RST"}:
                return "a lone RST starts no connection, and no entry exists for the flow"
            loose = sysctls.get(_LOOSE)
            if loose == "0":
                return (f"a TCP packet without SYN ({shown}) starts no connection when {_LOOSE}=0 (no mid-stream "
                        "pickup), and no entry exists for the flow")
            if loose is None:
                return (f"a TCP packet without SYN ({shown}) and no entry for the flow: {_LOOSE}=0 (no mid-stream "
                        "pickup) or a segment outside the window of an entry already gone; the sysctl is not known")
            return (f"a TCP packet without SYN ({shown}) that {_LOOSE}={loose} did not pick up: its sequence "
                    "numbers did not fit a mid-stream connection")
    if f.get("TYPE") in _ICMP_ERRORS.get(proto, ()) and entry is None:
        return "an ICMP error that belongs to no tracked connection"
    return ("conntrack refused it (a malformed or truncated header, a bad checksum with "
            "nf_conntrack_checksum=1, or no room in the table); the trace does not say which")


def invalid_note(expl: Explanation, entry: ConntrackEntry | None = None, sysctls: dict[str, str] | None = None) -> None:
    """Add (or, with the live entry and sysctls, replace) the note that explains an INVALID verdict."""
    if not decided_by_invalid(expl):
        return
    note = INVALID_PREFIX + why_invalid(expl, entry, sysctls or {})
    expl.notes[:] = [n for n in expl.notes if not n.startswith(INVALID_PREFIX)]
    expl.notes.append(note)
