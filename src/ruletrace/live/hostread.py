"""A running host's (or network namespace's) rulesets and routing facts, read for ``simulate``.

Read-only: every command only lists (``nft -j list ruleset``, ``iptables-nft-save``,
``iptables-legacy-save`` when the namespace has legacy tables (walked beside nf_tables when both
hold rules), ``ip -j addr``, ``ip -j route show
table all``, ``ip -j rule``) and the sysctls that decide fates (ip_forward, per-interface
forwarding, rp_filter, src_valid_mark, nf_conntrack_tcp_loose) are read from /proc/sys inside the
namespace. Nothing is loaded, added or changed. The texts are handed to the same readers as files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from ..errors import RuletraceError
from .netns import entered, ns_path

TIMEOUT = 20.0
SAVES = (("iptables-nft-save", "ipv4"), ("ip6tables-nft-save", "ipv6"))
LEGACY = (("iptables-legacy-save", "ip_tables_names"), ("ip6tables-legacy-save", "ip6_tables_names"))
CONF_KEYS = ("forwarding", "rp_filter", "src_valid_mark")


@dataclass(slots=True)
class HostRead:
    where: str  # "netns NAME" or "this host"
    rulesets: dict[str, str] = field(default_factory=dict)  # label -> listing text
    addrs: str = "[]"
    routes: str = "[]"
    rules: str = "[]"
    sysctls: str = ""  # "name = value" lines, as `sysctl -a` prints them
    notes: list[str] = field(default_factory=list)

    def label(self, what: str) -> str:
        return f"{self.where}: {what}"


def _run(argv: list[str]) -> tuple[str, str]:
    """(stdout, error) of one listing command ('' and why when it is missing or fails)."""
    if shutil.which(argv[0]) is None:
        return "", f"{argv[0]} not found"
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "", f"{argv[0]}: {e}"
    if p.returncode != 0:
        return "", f"{' '.join(argv)}: {(p.stderr.strip() or f'exit {p.returncode}')[:200]}"
    return p.stdout, ""


def _has_tables(save_text: str) -> bool:
    """A save listing with any table: policies alone decide fates too (``-P INPUT DROP``, no rules)."""
    return any(line.startswith("*") for line in save_text.splitlines())


XT_TABLES = {"filter", "nat", "mangle", "raw", "security"}


def _nft_tables(text: str) -> list[tuple[str, str]]:
    """(family, name) of each table of an ``nft -j list ruleset``."""
    import json

    try:
        data = json.loads(text or "{}")
    except ValueError:
        return []
    items = data.get("nftables", []) if isinstance(data, dict) else []
    return [(t["table"].get("family", ""), t["table"].get("name", "")) for t in items
            if isinstance(t, dict) and isinstance(t.get("table"), dict)]


def _sysctls() -> str:
    base = "/proc/sys/net/ipv4"
    names = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.netfilter.nf_conntrack_tcp_loose"]
    try:
        ifaces = sorted(os.listdir(f"{base}/conf"))
    except OSError:
        ifaces = []
    names += [f"net.ipv4.conf.{i}.{k}" for i in ifaces for k in CONF_KEYS]
    out = []
    for n in names:
        try:
            with open("/proc/sys/" + n.replace(".", "/")) as f:
                out.append(f"{n} = {f.read().strip()}")
        except OSError:
            continue
    return "\n".join(out) + "\n"


def read_host(netns: str | None) -> HostRead:
    """Everything simulate needs, from the namespace ``netns`` (None: the one we run in)."""
    path = ns_path(name=netns) if netns else None
    h = HostRead(f"netns {netns}" if netns else "this host")
    with entered(path):
        nft, err = _run(["nft", "-j", "list", "ruleset"])
        if err and not err.endswith("not found"):  # a ruleset not read must not pass for an empty one
            raise RuletraceError(f"{h.where}: cannot read the nf_tables ruleset ({err}); it needs root")
        if err:
            h.notes.append(f"nf_tables not read: {err}")
        saves = {}
        unread: list[str] = []  # listings that failed: said, and an error when nothing else was read
        for cmd, _fam in SAVES:
            text, err = _run([cmd])
            if text.strip() and _has_tables(text):
                saves[h.label(cmd)] = text
            elif err and not err.endswith("not found"):
                unread.append(err)
        legacy = {}
        for cmd, names in LEGACY:
            try:
                with open(f"/proc/thread-self/net/{names}") as f:
                    loaded = f.read().split()
            except FileNotFoundError:  # ip_tables not loaded at all
                loaded = []
            except OSError as e:
                unread.append(f"/proc/net/{names}: {e.strerror}")
                loaded = []
            if loaded:  # only then: listing a namespace without legacy tables would load the module
                text, err = _run([cmd])
                if _has_tables(text):
                    legacy[h.label(cmd)] = text
                elif err:
                    unread.append(err)
        h.addrs, err = _run(["ip", "-j", "addr"])
        h.routes, err2 = _run(["ip", "-j", "route", "show", "table", "all"])
        r4, err3 = _run(["ip", "-j", "-4", "rule"])
        r6, _e = _run(["ip", "-j", "-6", "rule"])
        if err or err2 or err3:
            raise RuletraceError(f"{h.where}: cannot read the routing facts: {err or err2 or err3}")
        h.rules = _join_json_lists(r4, r6)
        h.sysctls = _sysctls()
    tables = _nft_tables(nft)
    if unread and not tables and not saves and not legacy:  # never walk "no rules" that were only unread
        raise RuletraceError(f"{h.where}: cannot read the rulesets ({'; '.join(unread)}); it needs root")
    h.notes += [f"not read: {e}" for e in unread]
    compatible = not any("incompatible" in t for t in saves.values())  # a native table iptables-nft cannot show
    if tables and saves and compatible and all(f in ("ip", "ip6") and n in XT_TABLES for f, n in tables):
        # only iptables-nft's tables: its save listing says the same, in the form the iptables walk reads
        h.rulesets.update(saves)
    elif tables:
        h.rulesets[h.label("nft -j list ruleset")] = nft
        h.rulesets.update(saves)  # they resolve the xt placeholders of iptables-nft's tables
    # legacy tables run beside nf_tables on the same hooks: simulate walks both (simulate/backends.py)
    h.rulesets.update(legacy)
    return h


def _join_json_lists(a: str, b: str) -> str:
    import json

    out = []
    for text in (a, b):
        try:
            data = json.loads(text or "[]")
        except ValueError:
            continue
        if isinstance(data, list):
            out += data
    return json.dumps(out)
