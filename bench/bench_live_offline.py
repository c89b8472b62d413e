"""The live tracer's per-step work without a kernel (issue 16 item 6): what a CPU second takes.

Builds the NFLOG messages of ``--packets`` ICMP echo requests crossing ``--rules`` matching
rules (the ``bench_live.py`` lab's path: raw PREROUTING policy, filter INPUT rules 1..N, its
policy) and nf_tables trace events of the same shape, then measures in this process, in one run:

- decoding a step: the reference decoders (``nflog.decode_packet`` after
  ``sources.nflog.decode_record``; ``TraceDecoder.decode``) against the fast paths the live loop
  uses (``NflogListener.decode_bodies``; ``TraceDecoder.decode_fast``), µs a step and the ratio;
- the whole live path after the socket (decode, group, judge, explain, then the one-line view or
  ``--json``): steps per CPU second, against the bar of 50,000.

No root needed. CPU time (``time.process_time``), so other load on the machine disturbs it less
than wall time; ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import struct
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))  # measure the working tree, not an installed copy

from ruletrace.live import backend as be  # noqa: E402
from ruletrace.live import netlink as nl  # noqa: E402
from ruletrace.live import nflog, nftrace  # noqa: E402
from ruletrace.live import session as ss  # noqa: E402
from ruletrace.live.tracer import Tracer, Version  # noqa: E402
from ruletrace.rulesets import load_ruleset  # noqa: E402

BAR = 50_000
SID = "aaaa1111" * 4
ETH = bytes.fromhex("0a0000000002" "0a0000000001" "0800")


def ruleset_text(rules: int) -> str:
    return "\n".join(["*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                      f"-A PREROUTING -p icmp -m comment --comment ruletrace:{SID}:seen",
                      f"-A PREROUTING -p icmp -m limit --limit 10000/sec -m comment --comment ruletrace:{SID} -j TRACE",
                      "COMMIT", "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                      *[f"-A INPUT -p icmp -m comment --comment rtl{i}" for i in range(rules)], "COMMIT", ""])


def icmp(i: int) -> bytes:
    h = struct.pack("!BBHHH", 8, 0, 0, 0x5254, i & 0xFFFF) + b"rtlf" * 4
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(h), i & 0xFFFF, 0x4000, 64, 1, 0,
                       bytes([10, 89, 0, 1]), bytes([10, 89, 0, 2])) + h


def nflog_body(prefix: bytes, payload: bytes, seq: int, sec: int, hook: int) -> bytes:
    b = struct.pack("!BBH", 2, 0, 0) + nl.nla(1, struct.pack("!HBx", 0x0800, hook)) + nl.nla(10, prefix + b"\0")
    b += nl.nla(4, struct.pack("!I", 1)) + nl.nla(15, struct.pack("!H", 1)) + nl.nla(16, ETH)
    b += nl.nla(3, struct.pack("!QQ", sec, 1000)) + nl.nla(12, struct.pack("!I", seq))
    return b + nl.nla(9, payload)


def nflog_bodies(packets: int, rules: int) -> list[bytes]:
    out, seq = [], 0
    tags = ([(b"TRACE: raw:PREROUTING:policy:3 ", 0)] + [(f"TRACE: filter:INPUT:rule:{k} ".encode(), 1)
                                                          for k in range(1, rules + 1)]
            + [(f"TRACE: filter:INPUT:policy:{rules + 1} ".encode(), 1)])
    for i in range(packets):
        payload = icmp(i)
        for prefix, hook in tags:
            seq += 1
            out.append(nflog_body(prefix, payload, seq, int(time.time()), hook))
    return out


def nft_bodies(packets: int, rules: int) -> list[bytes]:
    def msg(chain: str, ttype: int, tid: int, *, handle: int | None = None, verdict: int | None = None,
            policy: int | None = None, headers: bool = False) -> bytes:
        b = nl.NFGENMSG.pack(2, 0, 0) + nl.nla(nftrace.NFTA_TRACE_TABLE, b"filter\0")
        b += nl.nla(nftrace.NFTA_TRACE_CHAIN, chain.encode() + b"\0") + nl.nla(nftrace.NFTA_TRACE_ID, struct.pack("!I", tid))
        b += nl.nla(nftrace.NFTA_TRACE_TYPE, struct.pack("!I", ttype))
        b += nl.nla(nftrace.NFTA_TRACE_NFPROTO, struct.pack("!I", 2))
        if handle is not None:
            b += nl.nla(nftrace.NFTA_TRACE_RULE_HANDLE, struct.pack("!Q", handle))
        if verdict is not None:
            b += nl.nla_nested(nftrace.NFTA_TRACE_VERDICT, nl.nla(nftrace.NFTA_VERDICT_CODE, struct.pack("!i", verdict)))
        if policy is not None:
            b += nl.nla(nftrace.NFTA_TRACE_POLICY, struct.pack("!I", policy))
        if headers:
            p = icmp(tid)
            b += nl.nla(nftrace.NFTA_TRACE_IIF, struct.pack("!I", 1)) + nl.nla(nftrace.NFTA_TRACE_NETWORK_HEADER, p[:20])
            b += nl.nla(nftrace.NFTA_TRACE_TRANSPORT_HEADER, p[20:])
        return b

    out = []
    for tid in range(packets):
        out.append(msg("INPUT", 3, tid, handle=10, verdict=-1, headers=True))
        out += [msg("INPUT", 3, tid, handle=10 + k, verdict=-1) for k in range(1, rules)]
        out.append(msg("INPUT", 1, tid, policy=1))
    return out


def per_step(fn, items: list[bytes]) -> float:
    t0 = time.process_time()
    fn(items)
    return (time.process_time() - t0) / len(items) * 1e6


def decoders(packets: int, rules: int) -> list[tuple[str, float, float]]:
    bodies = nflog_bodies(packets, rules)

    def nflog_ref(items: list[bytes]) -> None:
        for i, b in enumerate(items):
            nflog.decode_packet(b, record=i + 1, ifname=lambda x: "veth")

    def nflog_fast(items: list[bytes]) -> None:
        nflog.NflogListener([2], ifname=lambda x: "veth").decode_bodies(items)

    rs = load_ruleset("bench.save", text=ruleset_text(rules))
    rs.family = "ipv4"
    for k, r in enumerate(rs.chain("filter", "INPUT").rules):
        r.handle = 10 + k
        rs.handles[("filter", "INPUT", r.handle)] = r
    nft = nft_bodies(packets, rules)

    def nft_ref(items: list[bytes]) -> None:
        d = nftrace.TraceDecoder(lambda fam: rs, lambda x: "veth")
        for b in items:
            d.decode(b)

    def nft_fast(items: list[bytes]) -> None:
        d = nftrace.TraceDecoder(lambda fam: rs, lambda x: "veth")
        for b in items:
            d.decode_fast(b)

    return [("NFLOG", per_step(nflog_ref, bodies), per_step(nflog_fast, bodies)),
            ("nftrace", per_step(nft_ref, nft), per_step(nft_fast, nft))]


class _Sock:
    """NFLOG bodies handed out a batch of whole packets at a time (as the socket gives them)."""

    overruns = 0

    def __init__(self, bodies: list[bytes], batch: int) -> None:
        self.bodies, self.batch, self.i = bodies, batch, 0

    def packet_bodies(self, timeout: float | None, mtype: int) -> list[bytes]:
        out = self.bodies[self.i:self.i + self.batch]
        self.i += self.batch
        return out

    def discard(self, deadline: float, mtype: int | None = None) -> tuple[int, bool]:
        return 0, False

    def close(self) -> None:
        pass


def whole(packets: int, rules: int, view: str) -> float:
    """Steps per CPU second from NFLOG bodies to the one-line view (``line``) or JSON lines (``json``)."""
    from rich.console import Console

    from ruletrace.analyze.live import packet_time
    from ruletrace.render import json as rjson
    from ruletrace.render.live import LiveView, json_object

    ss.STATE_DIR = pathlib.Path(tempfile.mkdtemp(prefix="rtlf-"))
    text = ruleset_text(rules)
    rs = load_ruleset("bench.save", text=text)
    rs.family = "ipv4"
    spec = ss.TraceSpec(proto="icmp", direction="in", families=("ipv4",), rate=10000)
    spec.validate()
    t = Tracer(spec, backend="legacy", idle=0.0, churn_interval=0)
    t.sid, t.backend, t.mode = SID, be.LEGACY, "nflog"
    t.state = ss.State(SID, 1, None, {}, be.LEGACY, ss.plan_rules(spec, SID))
    bodies = nflog_bodies(packets, rules)
    listener = nflog.NflogListener([2], ifname=lambda x: "veth")
    listener.sock = _Sock(bodies, 10 * (rules + 2))  # type: ignore[assignment]  # a stand-in socket
    t.source = listener
    t.versions.add(Version(0, 0.0, {"ipv4": rs}, {"ipv4": text}))
    t._count = lambda: None  # type: ignore[method-assign]  # no kernel counters here
    out = io.StringIO()
    lines = LiveView(Console(file=out, width=200, no_color=True))
    alone: rjson.AlonePaths = {}  # as cli/trace.py: each line's path part built once per path
    t0 = time.process_time()
    for e in t.explanations(stop=lambda: listener.sock.i >= len(bodies)):  # type: ignore[union-attr]
        if view == "line":
            lines.show(e)
        else:
            out.write(rjson.dumps(json_object(rjson.to_json(e, alone), t.sid, packet_time(e, time.time()))) + "\n")
    cpu = time.process_time() - t0
    assert t.stats["packets"] == packets, t.stats
    return len(bodies) / cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=300, help="packets (default 300)")
    ap.add_argument("--rules", type=int, default=100, help="matching rules each crosses (default 100)")
    a = ap.parse_args(argv)
    for name, ref, fast in decoders(a.packets, a.rules):
        print(f"decode {name:8} reference {ref:6.1f} µs a step, fast path {fast:6.1f} µs a step: {ref / fast:.1f}x")
    for view in ("line", "json"):
        rate = whole(a.packets, a.rules, view)
        print(f"whole live path, {view:4} view: {rate:,.0f} steps per CPU s ({rate / BAR:.2f} of the bar {BAR:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
