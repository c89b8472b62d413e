"""Lab hosts where the kernel drops packets outside netfilter (issue 15: the whole fate).

One client and one host joined by a veth pair; each scenario changes sysctls and routes only
inside the host's namespace. ``SCENARIOS`` names, per scenario, what the client sends and the
kernel drop reason the host's kernel gives (on 6.x kernels):

- closed-udp     UDP to a port nobody listens on          NO_SOCKET (__udp4_lib_rcv)
- forward-off    to a routed network, ip_forward=0        IP_INADDRERRORS (ip_error)
- no-route       to a network the host has no route for    IP_INNOROUTES (ip_error)
- rp-filter      from a source routed elsewhere, strict    IP_RPFILTER
- ttl-expired    UDP with TTL 1 to a routed network        IP_INHDR (ip_forward)
- tcp-closed     TCP SYN to a closed port (answered by RST) NO_SOCKET (tcp_v4_rcv)
- policy-route   mangle marks it 0x1, ip rule 100 fwmark 0x1 -> table 100, an unreachable route there
                                                          NOT_SPECIFIED (ip_error; ICMP host unreachable)
- ct-invalid     a lone TCP ACK, nf_conntrack_tcp_loose=0, filter INPUT drops ctstate INVALID
                                                          NETFILTER_DROP (nft_do_chain: iptables-nft)
- dnat-forward   nat PREROUTING DNATs the host's address to a routed one: routed after the DNAT, forwarded
- dnat-output    the host sends; nat OUTPUT DNATs it elsewhere: routed again (ip_route_me_harder)
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
    reason: str | None  # what the kernel says, verbatim (None: not a drop scenario)
    function: str | None
    proto: str = "udp"


SCENARIOS = {
    "closed-udp": FateScenario("closed-udp", C_ADDR, H_ADDR, "NO_SOCKET", "__udp4_lib_rcv"),
    "forward-off": FateScenario("forward-off", C_ADDR, ROUTED_DST, "IP_INADDRERRORS", "ip_error"),
    "no-route": FateScenario("no-route", C_ADDR, UNROUTED_DST, "IP_INNOROUTES", "ip_error"),
    "rp-filter": FateScenario("rp-filter", SPOOF_SRC, H_ADDR, "IP_RPFILTER", None),
    "ttl-expired": FateScenario("ttl-expired", C_ADDR, ROUTED_DST, "IP_INHDR", "ip_forward"),
    "tcp-closed": FateScenario("tcp-closed", C_ADDR, H_ADDR, "NO_SOCKET", "tcp_v4_rcv", "tcp"),
    "policy-route": FateScenario("policy-route", C_ADDR, ROUTED_DST, "NOT_SPECIFIED", "ip_error"),
    "ct-invalid": FateScenario("ct-invalid", C_ADDR, H_ADDR, "NETFILTER_DROP", "nft_do_chain", "tcp"),
    "dnat-forward": FateScenario("dnat-forward", C_ADDR, H_ADDR, None, None),
    "dnat-output": FateScenario("dnat-output", H_ADDR, C_ADDR, None, None),
}
MARK, RULE_PRIO, TABLE = "0x1", "100", "100"  # policy-route
# the rule lines each scenario adds on the host (iptables-nft); kept to show in docs and tests
HOST_RULES = {
    "policy-route": [["-t", "mangle", "-A", "PREROUTING", "-d", ROUTED_DST, "-j", "MARK", "--set-mark", MARK]],
    "ct-invalid": [["-A", "INPUT", "-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]],
    # accepts, and makes the namespace track connections (the entry is shown beside the path)
    "tcp-closed": [["-A", "INPUT", "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"]],
    # (an ACCEPT rule in the hook after the routing step: the trace then shows the device the kernel chose)
    "dnat-forward": [["-t", "nat", "-A", "PREROUTING", "-p", "udp", "-d", H_ADDR, "--dport", str(PORT), "-j", "DNAT",
                      "--to-destination", f"{ROUTED_DST}:{PORT}"], ["-A", "FORWARD", "-p", "udp", "-j", "ACCEPT"]],
    "dnat-output": [["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-d", C_ADDR, "--dport", str(PORT), "-j", "DNAT",
                     "--to-destination", f"{ROUTED_DST}:{PORT}"], ["-t", "nat", "-A", "POSTROUTING", "-p", "udp",
                                                                   "-j", "ACCEPT"]],
}

# a lone TCP ACK from a raw socket (the kernel fills in the IP checksum and ID)
_LONE_ACK = """import socket, struct
src, dst, dport = {src!r}, {dst!r}, {port}
def csum(b):
    if len(b) % 2: b += b"\\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
sa, da = socket.inet_aton(src), socket.inet_aton(dst)
tcp = struct.pack("!HHIIBBHHH", 43210, dport, 1000, 2000, 5 << 4, 0x10, 64240, 0, 0)
tcp = tcp[:16] + struct.pack("!H", csum(sa + da + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, sa, da)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range({count}): s.sendto(ip + tcp, (dst, 0))
"""


@dataclass(slots=True)
class FateLab:
    lab: Lab
    client: Host
    host: Host
    c_if: str
    h_if: str
    spare: str

    def prepare(self, name: str) -> FateScenario:
        """Set the host's sysctls, rules and policy routes for one scenario (inside its namespace
        only), undoing what another scenario set."""
        sc = SCENARIOS[name]
        fwd = "0" if name == "forward-off" else "1"
        rpf = "1" if name == "rp-filter" else "0"
        self.lab.sysctl(self.host, {"net.ipv4.ip_forward": fwd, "net.ipv4.conf.all.rp_filter": rpf,
                                    f"net.ipv4.conf.{self.h_if}.rp_filter": rpf,
                                    "net.netfilter.nf_conntrack_tcp_loose": "0" if name == "ct-invalid" else "1"})
        ns = self.host.ns
        for table in ("mangle", "filter", "nat"):
            run(["iptables-nft", "-w", "2", "-t", table, "-F"], ns=ns, check=False)
        run(["ip", "rule", "del", "priority", RULE_PRIO], ns=ns, check=False)
        run(["ip", "route", "flush", "table", TABLE], ns=ns, check=False)
        for argv in HOST_RULES.get(name, []):
            run(["iptables-nft", "-w", "2", *argv], ns=ns)
        if name == "policy-route":
            run(["ip", "rule", "add", "fwmark", MARK, "lookup", TABLE, "priority", RULE_PRIO], ns=ns)
            run(["ip", "route", "add", "unreachable", ROUTED, "table", TABLE], ns=ns)
        return sc

    def send(self, sc: FateScenario, count: int = 1) -> None:
        """What the scenario's client sends: UDP (TTL 1 for ttl-expired), a TCP connect, a lone ACK."""
        if sc.name == "tcp-closed":
            code = ("import socket\ns=socket.socket()\ns.settimeout(2)\n"
                    f"try: s.connect(('{sc.dst}', {PORT}))\nexcept OSError: pass\n")
        elif sc.name == "ct-invalid":
            code = _LONE_ACK.format(src=sc.src, dst=sc.dst, port=PORT, count=count)
        else:
            self.send_udp(sc, count, ttl=1 if sc.name == "ttl-expired" else None)
            return
        run(["python3", "-c", code], ns=self.client.ns)

    def sender(self, sc: FateScenario) -> Host:
        return self.host if sc.name == "dnat-output" else self.client

    def send_udp(self, sc: FateScenario, count: int = 1, ttl: int | None = None) -> None:
        """``count`` UDP datagrams client -> scenario destination, from the scenario's source."""
        code = ("import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                + (f"s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, {ttl})\n" if ttl else "")
                + f"s.bind(('{sc.src}', 0))\n" + f"for _ in range({count}): s.sendto(b'rt15', ('{sc.dst}', {PORT}))\n")
        run(["python3", "-c", code], ns=self.sender(sc).ns)


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
