"""Traffic agent run inside a lab namespace (stdlib only): listen, or send one bounded flow.

Run as ``python3 agent.py listen LOG --tcp 80 --udp 53`` (until killed) or
``python3 agent.py tcp|udp|ping DST [PORT] --sport N --timeout S``; the senders print one JSON
object: ``{"result": …}`` with result connected / refused / timeout / unreachable / reply / error.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import socket
import struct
import sys
import time
from typing import Any

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
PAYLOAD = b"ruletrace-lab"

_UNREACH = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM}


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    folded: int = ~s & 0xFFFF
    return folded


def _result_of(e: OSError) -> str:
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if e.errno == errno.ECONNREFUSED:
        return "refused"
    if e.errno in _UNREACH:
        return "unreachable"
    return f"error:{errno.errorcode.get(e.errno or 0, e.errno)}"


def listen(log: str, tcp: list[int], udp: list[int], family: str) -> None:
    """Accept TCP connections and echo UDP datagrams, logging each as a JSON line."""
    sel = selectors.DefaultSelector()
    fams = [socket.AF_INET, socket.AF_INET6] if family == "both" else [_family(family)]
    for fam in fams:
        any_addr = "::" if fam == socket.AF_INET6 else "0.0.0.0"
        for port in tcp:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((any_addr, port))
            s.listen(16)
            sel.register(s, selectors.EVENT_READ, ("tcp", port))
        for port in udp:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((any_addr, port))
            sel.register(s, selectors.EVENT_READ, ("udp", port))
    out = open(log, "a", buffering=1)
    print(json.dumps({"ev": "ready", "pid": os.getpid()}), file=out)
    while True:
        for key, _ in sel.select():
            proto, port = key.data
            s = key.fileobj  # type: ignore[assignment]  # only sockets are registered above
            if proto == "tcp":
                c, peer = s.accept()
                print(json.dumps({"ev": "accept", "proto": "tcp", "port": port, "peer": peer[0],
                                  "peer_port": peer[1], "ts": time.time()}), file=out)
                c.close()
            else:
                data, peer = s.recvfrom(2048)
                print(json.dumps({"ev": "recv", "proto": "udp", "port": port, "peer": peer[0],
                                  "peer_port": peer[1], "ts": time.time()}), file=out)
                s.sendto(data, peer)  # the reply: an ESTABLISHED packet that skips nat


def send_tcp(dst: str, port: int, sport: int, timeout: float) -> dict[str, Any]:
    """Connect (one handshake), then close; report how connect() ended."""
    s = socket.socket(_family(dst), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # one SYN only: the first retransmission would come after 1 s (TCP_TIMEOUT_INIT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
    s.bind(("::" if ":" in dst else "0.0.0.0", sport))
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
    except OSError as e:
        s.close()
        return {"result": _result_of(e)}
    # wait for the server's FIN so that the whole exchange is over before the next flow
    try:
        s.recv(64)
    except OSError:
        pass
    s.close()
    return {"result": "connected"}


def send_udp(dst: str, port: int, sport: int, timeout: float) -> dict[str, Any]:
    """Send one datagram and wait for an echo."""
    s = socket.socket(_family(dst), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if ":" in dst else "0.0.0.0", sport))
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        s.send(PAYLOAD)
        s.recv(2048)
        return {"result": "reply"}
    except OSError as e:
        r = _result_of(e)
        return {"result": "no-reply" if r == "timeout" else r}
    finally:
        s.close()


def send_ping(dst: str, ident: int, timeout: float) -> dict[str, Any]:
    """One ICMP / ICMPv6 echo request on a raw socket; wait for the matching reply."""
    v6 = ":" in dst
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        msg = struct.pack("!BBHHH", ICMPV6_ECHO_REQUEST, 0, 0, ident, 1) + PAYLOAD  # kernel sums v6
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        msg = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, 1) + PAYLOAD
        msg = msg[:2] + struct.pack("!H", _checksum(msg)) + msg[4:]
    deadline = time.monotonic() + timeout
    try:
        s.sendto(msg, (dst, 0))
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            data = s.recv(2048)
            icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]  # raw v4 sockets include the IP header
            typ, _, _, rid = struct.unpack_from("!BBHH", icmp)
            if typ == (ICMPV6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY) and rid == ident:
                return {"result": "reply"}
            if typ in ((1,) if v6 else (3,)):  # destination unreachable
                return {"result": "unreachable"}
        return {"result": "timeout"}
    except OSError as e:
        return {"result": _result_of(e)}
    finally:
        s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    li = sub.add_parser("listen")
    li.add_argument("log")
    li.add_argument("--tcp", type=int, nargs="*", default=[])
    li.add_argument("--udp", type=int, nargs="*", default=[])
    li.add_argument("--family", default="both")
    for name in ("tcp", "udp"):
        p = sub.add_parser(name)
        p.add_argument("dst")
        p.add_argument("port", type=int)
        p.add_argument("--sport", type=int, required=True)
        p.add_argument("--timeout", type=float, default=1.0)
    p = sub.add_parser("ping")
    p.add_argument("dst")
    p.add_argument("--ident", type=int, required=True)
    p.add_argument("--timeout", type=float, default=1.0)
    a = ap.parse_args(argv)
    if a.cmd == "listen":
        listen(a.log, a.tcp, a.udp, a.family)
        return 0
    if a.cmd == "tcp":
        r = send_tcp(a.dst, a.port, a.sport, a.timeout)
    elif a.cmd == "udp":
        r = send_udp(a.dst, a.port, a.sport, a.timeout)
    else:
        r = send_ping(a.dst, a.ident, a.timeout)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
