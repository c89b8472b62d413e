"""Which iptables backend a host uses (legacy xtables or nf_tables) and its command-line tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from ..errors import RuletraceError

LEGACY = "legacy"
NFT = "nft"
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
    tools: dict[str, bool] = field(default_factory=dict)
    default: str | None = None
    chosen: str | None = None
    warnings: list[str] = field(default_factory=list)

    def total(self, backend: str) -> int:
        return sum(self.counts.get(backend, {}).values())


def detect(requested: str = "auto") -> BackendReport:
    """Count rules in both backends, warn when both have rules, and pick one."""
    rep = BackendReport(default=default_backend())
    for b in BACKENDS:
        rep.counts[b] = {}
        for fam in FAMILIES:
            for t in TOOLS[b][fam]:
                rep.tools[t] = have_tool(t)
            rep.counts[b][fam] = count_rules(save(b, fam)) if rep.tools[tool(b, fam, save=True)] else 0
    leg, nft = rep.total(LEGACY), rep.total(NFT)
    if leg and nft:
        rep.warnings.append(
            f"rules exist in BOTH backends (legacy: {leg}, nf_tables: {nft}): both are active and a "
            "packet must pass both; a rule added with the other `iptables` may seem to do nothing")
    if requested in BACKENDS:
        rep.chosen = requested
    elif leg and not nft:
        rep.chosen = LEGACY
    elif nft and not leg:
        rep.chosen = NFT
    else:
        rep.chosen = rep.default or NFT
    missing = [t for t in TOOLS[rep.chosen]["ipv4"] if not rep.tools.get(t)]
    if missing:
        raise RuletraceError(f"backend {rep.chosen}: {', '.join(missing)} not found (install iptables "
                             f">= 1.8 with its {rep.chosen} tools, or choose --backend)")
    return rep


# --- nf_tables objects (iptables-nft creates tables and chains on first use) ----------------

NFT_FAMILY = {"ipv4": "ip", "ipv6": "ip6"}


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
