"""Hand-made explanations for the renderer tests, mirroring seed 003 (Kubernetes NodePort 52000 / port 80)."""

from __future__ import annotations

from rich.console import Console

from ruletrace.model import (
    CauseLink,
    Change,
    Explanation,
    Fate,
    Origin,
    Packet,
    Rule,
    Step,
    StepKind,
    TraceEvent,
    Verdict,
)
from ruletrace.render.theme import THEME

# The SYN of seed 003 as the kernel logged it (fields named as in the kernel log).
SYN_52000 = {
    "IN": "eth0",
    "OUT": "",
    "MAC": "00:15:5d:12:e2:28:00:15:5d:12:e2:24:08:00",
    "SRC": "172.28.129.2",
    "DST": "172.28.129.4",
    "LEN": "60",
    "TOS": "0x00",
    "PREC": "0x00",
    "TTL": "64",
    "ID": "41569",
    "IPFLAGS": "DF",
    "PROTO": "TCP",
    "SPT": "55694",
    "DPT": "52000",
    "SEQ": "2805899841",
    "ACK": "0",
    "WINDOW": "29200",
    "RES": "0x00",
    "TCPFLAGS": "SYN",
    "URGP": "0",
    "OPT": "020405B40402080ACCEE00200000000001030307",
}


def _rule(table: str, text: str, num: int) -> Rule:
    chain = text.split()[1]
    target = text.split(" -j ")[-1].split()[0] if " -j " in text else None
    return Rule(table, chain, num, text, target)


def build(path: str, rows: list[tuple], fields: dict[str, str], packet_id: int) -> tuple[Packet, list[Step]]:
    """Events and steps from rows of (tag, depth, rule text | policy | returned-to, action, extra fields)."""
    events: list[TraceEvent] = []
    steps: list[Step] = []
    for line, (tag, depth, what, action, extra) in enumerate(rows, start=1):
        table, chain, kind, num = tag.split(":")
        ev = TraceEvent(
            table,
            chain,
            StepKind(kind),
            int(num),
            family="ipv4",
            ts=1704115396.0,
            origin=Origin(path, line),
            source="kernel-log",
            fields={**fields, **extra},
        )
        events.append(ev)
        step = Step(ev, depth=depth, action=action)
        if kind == "rule":
            step.rule = _rule(table, what, int(num))
        elif kind == "policy":
            step.policy = what
        else:
            step.returned_to = what
        steps.append(step)
    return Packet(packet_id, events), steps


M = {"MARK": "0x8000"}
SEED003_52000 = [
    ("raw:PREROUTING:policy:3", 0, "ACCEPT", "accept", {}),
    ("mangle:PREROUTING:rule:1", 0, '-A PREROUTING -m comment --comment "cali:6gwbT8clXdHdC1b1" -j cali-PREROUTING', "jump", {}),
    ("mangle:cali-PREROUTING:rule:3", 1, '-A cali-PREROUTING -m comment --comment "cali:wNH7KsA3ILKJBsY9" -j cali-from-host-endpoint', "jump", {}),
    ("mangle:cali-from-host-endpoint:return:1", 2, "cali-PREROUTING", "return", {}),
    ("mangle:cali-PREROUTING:return:5", 1, "PREROUTING", "return", {}),
    ("mangle:PREROUTING:policy:2", 0, "ACCEPT", "accept", {}),
    ("nat:PREROUTING:rule:1", 0, '-A PREROUTING -m comment --comment "cali:6gwbT8clXdHdC1b1" -j cali-PREROUTING', "jump", {}),
    ("nat:cali-PREROUTING:rule:1", 1, '-A cali-PREROUTING -m comment --comment "cali:r6XmIziWUJsdOK6Z" -j cali-fip-dnat', "jump", {}),
    ("nat:cali-fip-dnat:return:1", 2, "cali-PREROUTING", "return", {}),
    ("nat:cali-PREROUTING:return:2", 1, "PREROUTING", "return", {}),
    ("nat:PREROUTING:rule:2", 0, '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES', "jump", {}),
    ("nat:KUBE-SERVICES:rule:59", 1, '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS', "jump", {}),
    ("nat:KUBE-NODEPORTS:rule:16", 2, '-A KUBE-NODEPORTS -p tcp -m comment --comment "ootob9/ingress-nginx:http" -m tcp --dport 52000 -j KUBE-XLB-VETHOZVMBYUVK3NB', "jump", {}),
    ("nat:KUBE-XLB-VETHOZVMBYUVK3NB:rule:4", 3, '-A KUBE-XLB-VETHOZVMBYUVK3NB -m comment --comment "ootob9/ingress-nginx:http has no local endpoints" -j KUBE-MARK-DROP', "jump", {}),
    ("nat:KUBE-MARK-DROP:rule:1", 4, "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000", "continue", {}),
    ("nat:KUBE-MARK-DROP:return:2", 4, "KUBE-XLB-VETHOZVMBYUVK3NB", "return", M),
    ("nat:KUBE-XLB-VETHOZVMBYUVK3NB:return:5", 3, "KUBE-NODEPORTS", "return", M),
    ("nat:KUBE-NODEPORTS:return:37", 2, "KUBE-SERVICES", "return", M),
    ("nat:KUBE-SERVICES:return:60", 1, "PREROUTING", "return", M),
    ("nat:PREROUTING:rule:5", 0, "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER", "jump", M),
    ("nat:DOCKER:return:8", 1, "PREROUTING", "return", M),
    ("nat:PREROUTING:policy:9", 0, "ACCEPT", "accept", M),
    ("mangle:INPUT:policy:1", 0, "ACCEPT", "accept", M),
    ("filter:INPUT:rule:1", 0, "-A INPUT -j KUBE-FIREWALL", "jump", M),
    ("filter:KUBE-FIREWALL:rule:1", 1, '-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" -m mark --mark 0x8000/0x8000 -j DROP', "drop", M),
]


def seed003_drop() -> Explanation:
    """The SYN to NodePort 52000 that filter:KUBE-FIREWALL drops because of mark 0x8000."""
    packet, steps = build("messages", SEED003_52000, SYN_52000, 1)
    r = {s.event.tag: s.rule for s in steps}
    fw = r["filter:KUBE-FIREWALL:rule:1"]
    mark = r["nat:KUBE-MARK-DROP:rule:1"]
    return Explanation(
        packet,
        steps=steps,
        fate=Fate.DROPPED,
        verdict=Verdict("drop", "filter", "KUBE-FIREWALL", 1, fw, "mark 0x8000/0x8000 matched"),
        marks=[Change("MARK", None, "0x8000", "nat", "KUBE-MARK-DROP", 1, mark, step=14)],
        cause=[
            CauseLink("decided", "filter", "KUBE-FIREWALL", 1, fw, "drops packets that carry mark 0x8000/0x8000", 24),
            CauseLink("mark set", "nat", "KUBE-MARK-DROP", 1, mark, "set mark 0x8000/0x8000", 14),
            CauseLink(
                "called from",
                "nat",
                "KUBE-XLB-VETHOZVMBYUVK3NB",
                4,
                r["nat:KUBE-XLB-VETHOZVMBYUVK3NB:rule:4"],
                "ootob9/ingress-nginx:http has no local endpoints",
                13,
            ),
            CauseLink(
                "called from",
                "nat",
                "KUBE-NODEPORTS",
                16,
                r["nat:KUBE-NODEPORTS:rule:16"],
                "ootob9/ingress-nginx:http, dport 52000",
                12,
            ),
        ],
    )


SYN_80 = {**SYN_52000, "ID": "52941", "SPT": "42182", "DPT": "80", "SEQ": "3510886474"}
TO_52000 = {"DPT": "52000"}
SEED003_80_SHORT = [
    ("raw:PREROUTING:policy:4", 0, "ACCEPT", "accept", {}),
    ("nat:PREROUTING:rule:3", 0, "-A PREROUTING -d 172.28.129.4/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 172.28.129.4:52000", "dnat", {}),
    ("mangle:INPUT:policy:1", 0, "ACCEPT", "accept", TO_52000),
    ("filter:INPUT:rule:1", 0, "-A INPUT -j KUBE-FIREWALL", "jump", TO_52000),
    ("filter:KUBE-FIREWALL:return:3", 1, "INPUT", "return", TO_52000),
    ("filter:INPUT:policy:2", 0, "ACCEPT", "accept", TO_52000),
    ("nat:INPUT:policy:1", 0, "ACCEPT", "accept", TO_52000),
]


def seed003_port80() -> Explanation:
    """The SYN to port 80 (a shortened path): DNAT to 52000 after KUBE-SERVICES, delivered."""
    packet, steps = build("messages", SEED003_80_SHORT, SYN_80, 2)
    steps[4].warning = "filter:KUBE-FIREWALL has 1 rule in the ruleset"
    return Explanation(
        packet,
        steps=steps,
        fate=Fate.DELIVERED,
        verdict=Verdict("accept", "filter", "INPUT", 2, None, "no filter rule dropped it"),
        nat=[
            Change("DST", "172.28.129.4:80", "172.28.129.4:52000", "nat", "PREROUTING", 3, steps[1].rule, step=1)
        ],
        warnings=["ruleset looks older than the log"],
        notes=["only the first packet of a connection goes through nat"],
    )


def unknown_fate() -> Explanation:
    """A packet whose trace stops in nat:POSTROUTING without a verdict."""
    rows = [("nat:POSTROUTING:rule:1", 0, "-A POSTROUTING -s 10.0.0.0/24 -j MASQUERADE", "masquerade", {})]
    fields = {"IN": "", "OUT": "eth1", "SRC": "10.0.0.5", "DST": "8.8.8.8", "PROTO": "UDP", "SPT": "5353", "DPT": "53"}
    packet, steps = build("kern.log", rows, fields, 3)
    return Explanation(packet, steps=steps, fate=Fate.UNKNOWN, last_seen="nat:POSTROUTING")


def render(renderable, width: int = 100) -> str:
    """Text of ``renderable`` on a colourless, non-terminal console of ``width`` columns."""
    console = Console(width=width, color_system=None, force_terminal=False, theme=THEME)
    with console.capture() as cap:
        console.print(renderable)
    return cap.get()
