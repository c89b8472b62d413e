"""Lab hosts where the kernel drops packets outside netfilter (issue 15: the whole fate).

One client and one host joined by a veth pair; each scenario changes sysctls and routes only
inside the host's namespace. ``SCENARIOS`` names, per scenario, what the client sends and the
kernel drop reason the host's kernel gives (on 6.x kernels):

- closed-udp     UDP to a port nobody listens on          NO_SOCKET (__udp4_lib_rcv)
- forward-off    to a routed network, ip_forward=0        IP_INADDRERRORS (ip_error)
- no-route       to a network the host has no route for    IP_INNOROUTES (ip_error)
- rp-filter      from a source routed elsewhere, strict    IP_RPFILTER
"""

from __future__ import annotations

from dataclasses import dataclass

from .netns import Host, Lab, run

C_ADDR, H_ADDR = "10.93.0.1", "10.93.0.2"
ROUTED = "10.94.0.0/24"  # the host routes it to a spare device (forward-off)
ROUTED_DST = "10.94.0.7"
UNROUTED_DST = "10.95.0.7"  # the host has no route for it (no-route)
SPOOF_SRC = "10.96.0.9"  # the client sends from it; the host routes 10.96.0.0/24 elsewhere (rp-filter)
PORT = 9998


@dataclass(slots=True)
class FateScenario:
    name: str
    src: str
    dst: str
    reason: str  # what the kernel says, verbatim
    function: str | None


SCENARIOS = {
    "closed-udp": FateScenario("closed-udp", C_ADDR, H_ADDR, "NO_SOCKET", "__udp4_lib_rcv"),
    "forward-off": FateScenario("forward-off", C_ADDR, ROUTED_DST, "IP_INADDRERRORS", "ip_error"),
    "no-route": FateScenario("no-route", C_ADDR, UNROUTED_DST, "IP_INNOROUTES", "ip_error"),
    "rp-filter": FateScenario("rp-filter", SPOOF_SRC, H_ADDR, "IP_RPFILTER", None),
}


@dataclass(slots=True)
class FateLab:
    lab: Lab
    client: Host
    host: Host
    c_if: str
    h_if: str
    spare: str

    def prepare(self, name: str) -> FateScenario:
        """Set the host's sysctls for one scenario (inside its namespace only)."""
        sc = SCENARIOS[name]
        fwd = "0" if name == "forward-off" else "1"
        rpf = "1" if name == "rp-filter" else "0"
        self.lab.sysctl(self.host, {"net.ipv4.ip_forward": fwd, "net.ipv4.conf.all.rp_filter": rpf,
                                    f"net.ipv4.conf.{self.h_if}.rp_filter": rpf})
        return sc

    def send_udp(self, sc: FateScenario, count: int = 1) -> None:
        """``count`` UDP datagrams client -> scenario destination, from the scenario's source."""
        code = ("import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"s.bind(('{sc.src}', 0))\n" + f"for _ in range({count}): s.sendto(b'rt15', ('{sc.dst}', {PORT}))\n")
        run(["python3", "-c", code], ns=self.client.ns)


def build(lab: Lab) -> FateLab:
    client, host = lab.host("fc"), lab.host("fh")
    c_if, h_if = lab.veth(client, "fc0", host, "fh0")
    lab.addr(client, c_if, f"{C_ADDR}/24", f"{SPOOF_SRC}/32")
    lab.addr(host, h_if, f"{H_ADDR}/24")
    for net in (ROUTED, UNROUTED_DST + "/32"):
        lab.route(client, net, H_ADDR)
    spare = lab.spare_device(host, "fs0")
    lab.addr(host, spare, "10.94.0.1/24", "10.96.0.1/24")  # ROUTED and the spoofed source live behind it
    return FateLab(lab, client, host, c_if, h_if, spare)
