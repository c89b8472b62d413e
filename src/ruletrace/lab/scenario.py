"""What a lab scenario is: its flows, topology builder, ruleset templates and listeners."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from string import Template

from .netns import Lab

FORWARDING = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}


@dataclass(frozen=True, slots=True)
class Flow:
    """One bounded exchange; its first packet is the one whose fate is checked."""

    name: str
    description: str
    proto: str  # tcp / udp / icmp
    src: str  # host role that sends
    dst: str  # destination address (template)
    port: int | None  # destination port (tcp/udp)
    via: str  # local (delivered to the traced host) / forward (routed or bridged) / output (sent by it)
    receiver: str  # host role where arrival is observed
    timeout: float = 0.8  # seconds; below the 1 s SYN retransmission timer


@dataclass(slots=True)
class Scenario:
    name: str
    title: str
    description: str
    traced: str  # host role whose rules are loaded and traced
    build: Callable[[Lab], dict[str, str]]  # makes the topology, returns template values
    flows: list[Flow]
    rules_v4: str | None = None
    rules_v6: str | None = None
    listeners: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)  # role -> tcp, udp

    def ruleset(self, family: str, values: dict[str, str]) -> str | None:
        """The ruleset text for one family with the run's names filled in."""
        t = self.rules_v4 if family == "ipv4" else self.rules_v6
        return None if t is None else Template(t).substitute(values)

    @property
    def family(self) -> str:
        """ipv6 for a scenario with only an ip6tables ruleset, else ipv4."""
        return "ipv6" if self.rules_v6 is not None and self.rules_v4 is None else "ipv4"

    def flow_dst(self, flow: Flow, values: dict[str, str]) -> str:
        return Template(flow.dst).substitute(values)
