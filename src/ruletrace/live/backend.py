"""Which iptables backend a host uses (legacy xtables or nf_tables) and its command-line tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from ..errors import RuletraceError
from ..rulesets.nft_model import NFT_WORDS

LEGACY = "legacy"
NFT = "nft"
BOTH = "both"  # legacy xtables and nf_tables traced in one session
BACKENDS = (LEGACY, NFT)
FAMILIES = ("ipv4", "ipv6")

# backend -> family -> (rule tool, save tool)
TOOLS: dict[str, dict[str, tuple[str, str]]] = {
    LEGACY: {"ipv4": ("iptables-legacy", "iptables-legacy-save"),
             "ipv6": ("ip6tables-legacy", "ip6tables-legacy-save")},
    NFT: {"ipv4": ("iptables-nft", "iptables-nft-save"), "ipv6": ("ip6tables-nft", "ip6tables-nft-save")},
}


CAPS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}  # include/uapi/linux/capability.h
STATUS = "/proc/self/status"
CMD_TIMEOUT = 30.0


def missing_caps(status: str | None = None) -> list[str]:
    """The capabilities live tracing needs that this process lacks in its effective set.

    CAP_NET_ADMIN changes netfilter state; CAP_NET_RAW is what legacy iptables needs for the raw
    socket it talks to the kernel through (its error then says only "you must be root").
    """
    try:
        with open(status or STATUS) as f:
            text = f.read()
    except OSError:
        return [] if os.geteuid() == 0 else list(CAPS)
    eff = 0
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            eff = int(line.split()[1], 16)
    return [name for name, bit in CAPS.items() if not eff >> bit & 1]


def permission_error(name: str) -> RuletraceError:
    """``name`` was refused: say which capability is missing (never one the process has)."""
    missing = missing_caps()
    if missing:
        have = [c for c in CAPS if c not in missing]
        return RuletraceError(f"{name}: permission denied: this process lacks {' and '.join(missing)}"
                              + (f" (it has {', '.join(have)})" if have else "") + ": run it as root, e.g. with sudo")
    return RuletraceError(f"{name}: permission denied although this process has CAP_NET_ADMIN and "
                          "CAP_NET_RAW (a security module, a user namespace without the network "
                          "namespace, or a read-only /proc?)")


def tool(backend: str, family: str, *, save: bool = False) -> str:
    """The iptables (or -save) binary of a backend and family."""
    return TOOLS[backend][family][1 if save else 0]


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None


def save(backend: str, family: str, *, counters: bool = False) -> str:
    """``iptables-save`` output of one backend and family (empty when the tool is missing)."""
    name = tool(backend, family, save=True)
    if not have_tool(name):
        return ""
    try:
        p = subprocess.run([name, *(["-c"] if counters else [])], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as e:
        raise RuletraceError(f"{name} timed out") from e
    if p.returncode != 0:
        msg = p.stderr.strip()
        if "Permission denied" in msg or "you must be root" in msg:
            raise permission_error(name)
        return ""
    return p.stdout


def count_rules(text: str) -> int:
    """Number of ``-A`` lines in iptables-save output."""
    return sum(1 for line in text.splitlines() if line.startswith("-A "))


def count_policies(text: str) -> int:
    """Built-in chains whose policy is not ACCEPT in iptables-save output (a DROP policy with no
    rule at all still decides every packet)."""
    return sum(1 for line in text.splitlines() if line.startswith(":") and len(line.split()) > 1
               and line.split()[1] not in ("ACCEPT", "-"))


def default_backend() -> str | None:
    """What plain ``iptables`` is here: ``iptables -V`` says ``(nf_tables)`` or ``(legacy)``."""
    if not have_tool("iptables"):
        return None
    try:
        out = subprocess.run(["iptables", "-V"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "nf_tables" in out:
        return NFT
    if "legacy" in out:
        return LEGACY
    return LEGACY if out.strip() else None  # iptables < 1.8 has only the legacy backend


@dataclass
class BackendReport:
    """Rule counts per backend and family, the tools present, and the backend to use."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # backend -> family -> rules
    policies: dict[str, int] = field(default_factory=dict)  # backend -> built-in chains not ACCEPT
    # every nf_tables table: (nft family, table, chains, rules, owner); iptables-nft's included
    tables: list[tuple[str, str, int, int, str]] = field(default_factory=list)
    tools: dict[str, bool] = field(default_factory=dict)
    default: str | None = None
    chosen: str | None = None
    warnings: list[str] = field(default_factory=list)

    def total(self, backend: str) -> int:
        return sum(self.counts.get(backend, {}).values())

    def native_tables(self) -> list[tuple[str, str, int, int, str]]:
        """nf_tables tables that are not iptables-nft's (firewalld, fw4, kube-proxy, nftables.conf…)."""
        return [t for t in self.tables if not t[4].startswith("iptables-nft")]

    @property
    def native(self) -> bool:
        """Trace nf_tables through a table of our own (the whole nf_tables ruleset): the nf_tables
        side is traced and holds tables iptables-nft-save does not show."""
        return self.chosen in (NFT, BOTH) and bool(self.native_tables())

    def active(self, backend: str) -> bool:
        """The backend holds rules (or a policy that is not ACCEPT) that packets pass."""
        if backend == NFT and self.native_tables():
            return True
        return bool(self.total(backend) or self.policies.get(backend))


def detect(requested: str = "auto") -> BackendReport:
    """Count rules in both backends, warn when both have rules, and pick one."""
    rep = BackendReport(default=default_backend())
    for b in BACKENDS:
        rep.counts[b] = {}
        for fam in FAMILIES:
            for t in TOOLS[b][fam]:
                rep.tools[t] = have_tool(t)
            text = save(b, fam) if rep.tools[tool(b, fam, save=True)] else ""
            rep.counts[b][fam] = count_rules(text)
            rep.policies[b] = rep.policies.get(b, 0) + count_policies(text)
    rep.tables = nft_tables()
    leg, nft = rep.active(LEGACY), rep.active(NFT)
    if leg and nft:
        n_nft = rep.total(NFT) + sum(t[3] for t in rep.native_tables())
        rep.warnings.append(
            f"rules exist in BOTH backends (legacy: {rep.total(LEGACY)} rules, {rep.policies.get(LEGACY, 0)} "
            f"policies not ACCEPT; nf_tables: {n_nft} rules): both are active and a packet must pass both; a "
            "rule added with the other `iptables` may seem to do nothing")
    if requested in (*BACKENDS, BOTH):
        rep.chosen = requested
    elif leg and nft:
        rep.chosen = BOTH
    elif leg:
        rep.chosen = LEGACY
    elif nft:
        rep.chosen = NFT
    else:
        rep.chosen = rep.default or NFT
    if rep.chosen in (NFT, BOTH) and rep.native_tables() and not have_tool("nft"):
        raise RuletraceError("nf_tables holds native tables but the nft tool is missing: install nftables")
    need = [LEGACY, NFT] if rep.chosen == BOTH else [rep.chosen]
    missing = [t for b in need for t in TOOLS[b]["ipv4"] if not rep.tools.get(t)]
    if missing:
        raise RuletraceError(f"backend {rep.chosen}: {', '.join(missing)} not found (install iptables "
                             f">= 1.8 with its {rep.chosen} tools, or choose --backend)")
    return rep


# what iptables-nft creates: its tables, with base chains named as iptables' built-in chains
XT_TABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})
XT_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
# nf_tables tables named by the programs that make them (a name tells, nothing proves it):
# (nft family or "" for any, table) -> owner
OWNERS: dict[tuple[str, str], str] = {
    ("", "firewalld"): "firewalld",
    ("inet", "fw4"): "OpenWrt fw4",
    ("", "kube-proxy"): "kube-proxy (nftables mode)",
    ("", "docker-bridges"): "docker (nftables firewall backend)",
    ("inet", "netavark"): "podman (netavark)",
    ("", "libvirt_network"): "libvirt",
    ("", "nixos-fw"): "NixOS firewall",
}
# user chains iptables-nft tables get from programs that write iptables rules
XT_CHAIN_OWNERS = (("DOCKER", "docker"), ("KUBE-", "kube-proxy (iptables mode)"), ("f2b-", "fail2ban"),
                   ("ufw-", "ufw"), ("CNI-", "CNI plugins"), ("LIBVIRT_", "libvirt"), ("NETAVARK", "podman (netavark)"))


def owner(family: str, table: str, chains: list[str], uncounted: int = 0) -> str:
    """Who made an nf_tables table, from its name (and for iptables-nft's tables, its chains'):
    ``iptables-nft``, ``iptables-nft (docker, …)``, ``firewalld``…, or ``native`` when unknown.

    ``uncounted``: the table's rules without a ``counter``. iptables-nft gives every rule one (its
    packet and byte counts), so a ``table ip filter`` with a rule that has none was written with
    nft (``iptables-restore-translate``, by hand) and is read as native nf_tables."""
    if family in ("ip", "ip6", "arp", "bridge") and table in XT_TABLES | {"broute"} and not uncounted:
        base = [c for c in chains if c.upper() == c and c in XT_CHAINS | {"BROUTING"}]
        if base or not chains:
            users = sorted({who for c in chains for pre, who in XT_CHAIN_OWNERS if c.startswith(pre)})
            return "iptables-nft" + (f" ({', '.join(users)} chains)" if users else "")
    return OWNERS.get((family, table)) or OWNERS.get(("", table)) or "native"


def nft_tables() -> list[tuple[str, str, int, int, str]]:
    """Every nf_tables table of this namespace: (nft family, table, chains, rules, owner), from
    ``nft -j list ruleset`` (empty when nft is missing or fails). Tables of ruletrace sessions
    are left out."""
    import json
    import re

    p = _nft("-j", "list", "ruleset")
    if p is None or p.returncode != 0:
        return []
    try:
        items = json.loads(p.stdout).get("nftables", [])
    except (ValueError, AttributeError):
        return []
    order: list[tuple[str, str]] = []
    chains: dict[tuple[str, str], list[str]] = {}
    rules: dict[tuple[str, str], int] = {}
    uncounted: dict[tuple[str, str], int] = {}  # rules without a counter: not iptables-nft's (see owner)
    for item in items:
        if not isinstance(item, dict):
            continue
        for kind in ("table", "chain", "rule"):
            obj = item.get(kind)
            if not isinstance(obj, dict):
                continue
            key = (str(obj.get("family")), str(obj.get("table") if kind != "table" else obj.get("name")))
            if re.fullmatch(r"ruletrace_[0-9a-f]{32}", key[1]):
                continue
            if kind == "table":
                order.append(key)
            elif kind == "chain":
                chains.setdefault(key, []).append(str(obj.get("name")))
            else:
                rules[key] = rules.get(key, 0) + 1
                exprs = obj.get("expr")
                if not (isinstance(exprs, list) and any(isinstance(e, dict) and "counter" in e for e in exprs)):
                    uncounted[key] = uncounted.get(key, 0) + 1
    return [(f, t, len(chains.get((f, t), [])), rules.get((f, t), 0),
             owner(f, t, chains.get((f, t), []), uncounted.get((f, t), 0))) for f, t in order]


# --- nf_tables objects (iptables-nft creates tables and chains on first use) ----------------

NFT_FAMILY = NFT_WORDS  # "ipv4" -> "ip" (rulesets/nft_model, the one home)


def _nft(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["nft", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None


def nft_exists(fam: str, table: str, chain: str = "") -> bool:
    """True when the nf_tables table (or chain) exists in this namespace."""
    p = _nft("list", "chain", fam, table, chain) if chain else _nft("list", "table", fam, table)
    return p is not None and p.returncode == 0


def nft_has_rules(fam: str, table: str, chain: str) -> bool:
    p = _nft("-j", "list", "chain", fam, table, chain)
    return p is None or p.returncode != 0 or '"rule"' in p.stdout


def nft_has_chains(fam: str, table: str) -> bool:
    p = _nft("-j", "list", "table", fam, table)
    return p is None or p.returncode != 0 or '"chain"' in p.stdout
