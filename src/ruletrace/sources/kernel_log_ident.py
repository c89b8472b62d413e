"""The identity rule of kernel-log records: which field text a packet's identity is made of.

One rule for every kernel-log reader: ``kernel_log.read_events`` (the reference),
``kernel_log_records`` (damaged and cut lines) and the ``--summary`` fast path
(``fastpath/kernel_log_paths.py``). ``identity_key`` says what text an ident is computed (and
cached) from, ``ident_of`` computes it, ``partial_ident`` keeps what survives of it in a record cut
short, and ``complete`` says whether field text reaches the packet's end.
"""

from __future__ import annotations

import re

from ..fields import PROTO_NAMES, PartialIdent
from .tag import TRACE_MARK


def complete(f: dict[str, str]) -> bool:
    """False for field text cut short (a paste or a log line truncated inside the packet).

    The 'cut line' rule, for the readers and for explain/causes.py: PROTO is there, and the
    transport header the kernel prints for TCP/UDP/ICMP is whole, unless the packet is a
    fragment (``FRAG``) or the kernel itself said the header was short (``INCOMPLETE``).
    """
    proto = f.get("PROTO")
    if proto is None:
        return False
    if "SPT" in f:
        if proto == "TCP" and "URGP" not in f:
            return False
        if proto in ("UDP", "UDPLITE") and "ULEN" not in f:
            return False
    elif proto in _HEADER_PROTOS and "TYPE" not in f and "FRAG" not in f and "INCOMPLETE" not in f:
        return False
    if "TYPE" in f and "CODE" not in f:
        return False
    return True


_HEADER_PROTOS = frozenset({"TCP", "UDP", "UDPLITE", "ICMP", "ICMPv6"})
# PROTO= values nf_log prints besides those with a branch of their own in ident_of: AH, ESP and
# numbers (fields.PROTO_NAMES); a last token "PROTO=T" or "PROTO=" is a name cut short
_OTHER_NAMES = frozenset(n.encode() for n in PROTO_NAMES.values()) - {b"TCP", b"UDP", b"UDPLITE", b"ICMP", b"ICMPv6"}
WHOLE_LAST = re.compile(rb" PROTO=(?:TCP|UDP|UDPLITE|ICMP|ICMPv6)\Z")  # a protocol name is whole


def identity_key(fs: bytes) -> bytes:
    """The identity rule: the text a packet's identity (``ident_of``) is computed from.

    That is the record's field text without trailing blanks and without a trailing ``MARK=``
    field (nf_log prints it last; the ident leaves it out, so a mark set or cleared mid-path
    changes nothing). Readers cache idents by this text (read_events and the ``--summary``
    reader in kernel_log_paths): two texts with one key have one ident.
    """
    bare = fs.rstrip()
    m = bare.rfind(b" MARK=")
    if m > 0 and b" " not in bare[m + 1 :]:  # the last field, not glued text
        return bare[:m]
    return bare


def ident_of(fs: bytes) -> tuple[str, bytes] | None:
    """(family, ident) from well-formed field text; None sends the record to the slow path.

    The ident is (LEN, the IPv4 text after ``ID=`` up to ``PROTO=`` — ID, CE/DF/MF, FRAG,
    options — or the IPv6 one after ``FLOWLBL=`` — flow label, extension headers —, PROTO,
    transport): TCP ``SEQ= ACK= WINDOW= RES= flags``, the UDP length, ICMP ``TYPE= CODE=`` and
    the echo sequence. Left out because they change on the way: SRC/DST/SPT/DPT and the ICMP echo
    id (NAT), TTL/HOPLIMIT, TOS/TC, MARK, interfaces, MAC, UID/GID, TCP options (TCPMSS).
    None also for text cut short and for text holding another record (glued lines).
    ``partition`` is used throughout: on this path the number of calls, not bytes, is the cost.
    """
    _, sep, x = fs.partition(b" LEN=")
    if not sep:
        return None
    ln, _, x = x.partition(b" ")
    if x.startswith(b"TOS="):
        family = "ipv4"
        _, sep, x = x.partition(b" ID=")
    elif x.startswith(b"TC="):
        family = "ipv6"
        _, sep, x = x.partition(b" FLOWLBL=")
    else:
        return None
    if not sep:
        return None
    ipc, sep, x = x.partition(b" PROTO=")
    if not sep:
        return None
    proto, _, x = x.partition(b" ")
    if proto == b"TCP":
        if x.startswith(b"SPT="):
            _, sep, y = x.partition(b" SEQ=")
            if not sep:  # LOG without --log-tcp-sequence
                _, sep, y = x.partition(b" WINDOW=")
            tr, sep, x = y.partition(b" URGP=")
            if not sep:
                return None  # cut short
        elif _no_header(ipc, x):
            tr = b""  # a fragment without the TCP header
        else:
            return None  # cut right after PROTO=
    elif proto == b"UDP" or proto == b"UDPLITE":
        if x.startswith(b"SPT="):
            _, sep, y = x.partition(b" LEN=")
            if not sep:
                return None
            tr, _, x = y.partition(b" ")
        elif _no_header(ipc, x):
            tr = b""
        else:
            return None
    elif proto == b"ICMP" or proto == b"ICMPv6":
        if x.startswith(b"TYPE="):
            typ, _, y = x.partition(b" ")
            code, sep, x = y.partition(b" ")
            if not code.startswith(b"CODE="):
                return None
            tr = typ + b" " + code
            if x.startswith(b"ID="):  # echo request / reply: keep the sequence, not the id
                _, sep, y = x.partition(b" SEQ=")
                if not sep:
                    return None
                sq, _, x = y.partition(b" ")
                tr += b" " + sq
        elif _no_header(ipc, x):
            tr = b""
        else:
            return None
    elif not x and proto not in _OTHER_NAMES and not proto.isdigit():
        return None  # the text ends inside PROTO=: "PROTO=T" is no protocol nf_log names
    else:
        tr = b""
    if TRACE_MARK in x:
        return None
    return family, b"\x00".join((ln, ipc, proto, tr))  # bytes: its hash is cached


def _no_header(ipc: bytes, x: bytes) -> bool:
    """No transport header after ``PROTO=`` that the kernel meant: a fragment, or a short packet."""
    return b"FRAG:" in ipc or x.startswith(b"INCOMPLETE")


_ID_KEYS = ((b"TOS=", b" ID="), (b"TC=", b" FLOWLBL="))  # the IP header's first field -> its ID's key


def partial_ident(fs: bytes) -> PartialIdent | None:
    """For tidy text cut short: the part of ``ident_of``'s ident it holds, a byte prefix of the
    full one (``fields.PartialIdent``); None when the text ends before the packet's ID (IPv4
    ``ID=``, IPv6 ``FLOWLBL=``): what is left then names no packet."""
    _, sep, x = fs.partition(b" LEN=")
    if not sep:
        return None
    ln, _, x = x.partition(b" ")
    # ident_of's head (there inlined, the hot path): the packet's ID starts at ID= (IPv4) or FLOWLBL= (IPv6)
    id_key = next((key for head, key in _ID_KEYS if x.startswith(head)), None)
    if id_key is None:
        return None
    _, sep, x = x.partition(id_key)
    if not sep:
        return None
    ipc, sep2, x = x.partition(b" PROTO=")
    if not sep2:  # cut before PROTO=: the ID (flow label) and what followed, the last maybe cut
        words = ipc.split(b" ")
        if len(words) > 1:  # "51391 DF P": the last word may be a piece of the next field
            ipc = b" ".join(words[:-1])  # (" PROTO=" here), which no prefix of the full ident holds
        return PartialIdent(ln + b"\x00" + ipc)  # still a byte prefix of the full ident
    proto, sp, x = x.partition(b" ")
    if not sp:
        return PartialIdent(b"\x00".join((ln, ipc, proto)))
    tr = b""
    if proto == b"TCP" and x.startswith(b"SPT="):
        _, sep, y = x.partition(b" SEQ=")
        if not sep:
            _, sep, y = x.partition(b" WINDOW=")
        if sep:
            tr = y.partition(b" URGP=")[0]
    elif (proto == b"UDP" or proto == b"UDPLITE") and x.startswith(b"SPT="):
        _, sep, y = x.partition(b" LEN=")
        if sep:
            tr = y.partition(b" ")[0]
    elif (proto == b"ICMP" or proto == b"ICMPv6") and x.startswith(b"TYPE="):
        w = x.split(b" ")
        tr = b" ".join(w[:2])
        if len(w) > 3 and w[2].startswith(b"ID=") and w[3].startswith(b"SEQ="):
            tr += b" " + w[3][4:]
    return PartialIdent(b"\x00".join((ln, ipc, proto, tr)))
