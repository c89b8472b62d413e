"""Options shared by several commands: defined once so that they mean the same everywhere."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from ..errors import RuletraceError
from ..sources.detect import FORMATS

RULESET_HELP = ("iptables-save / ip6tables-save output, an `iptables -L -n -v` listing, or `nft -j list "
                "ruleset` (repeat for IPv4 + IPv6).")

# --- shell completion of values (docs/cli.md "Shell completion") -------------------------


def complete_examples(_ctx, _param, incomplete: str) -> list[CompletionItem]:
    """The bundled examples' names, each with its title."""
    return [CompletionItem(name, help=str(info.get("title") or info.get("description") or ""))
            for name, info in list_examples().items() if name.startswith(incomplete)]


def complete_fates(_ctx, _param, incomplete: str) -> list[CompletionItem]:
    from ..model import Fate

    return [CompletionItem(f.value) for f in Fate if f.value.startswith(incomplete.lower())]


NETNS_DIR = "/run/netns"  # where `ip netns add` puts its names


def complete_netns(_ctx, _param, incomplete: str) -> list[CompletionItem]:
    """The names `ip netns list` shows (the files of /run/netns)."""
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_match(_ctx, _param, incomplete: str) -> list[CompletionItem]:
    """``FIELD=`` for every field --match knows (the value is the user's)."""
    from ..pipeline import PacketFilter

    if "=" in incomplete:
        return []
    return [CompletionItem(f + "=") for f in PacketFilter.known_fields() if f.startswith(incomplete.lower())]


PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6", "sctp", "udplite", "esp", "ah", "gre", "all")


def complete_protocols(_ctx, _param, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(p) for p in PROTOCOLS if p.startswith(incomplete.lower())]


ruleset = click.option("-r", "--ruleset", "rulesets", multiple=True, metavar="FILE", help=RULESET_HELP)
example = click.option("--example", metavar="NAME", shell_complete=complete_examples,
                       help="Use a bundled example (see `ruletrace examples`).")
trace_format = click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), metavar="FORMAT",
                            help="Trace format (default: detected): " + ", ".join(FORMATS) + ".")
no_color = click.option("--no-color", is_flag=True,
                        help="No colours (also when NO_COLOR is set or output is not a TTY).")
width = click.option("--width", type=int, help="Output width (default: the terminal's).")


def packet_filters(f: Callable[..., Any]) -> Callable[..., Any]:
    """-m/--match, --fate and --packet: which packets to keep."""
    f = click.option("--packet", "packet_ids", multiple=True, type=int, metavar="ID",
                     help="Keep only packet ID.")(f)
    f = click.option("--fate", "fates", multiple=True, metavar="FATE", shell_complete=complete_fates,
                     help="Keep packets with this fate: dropped, rejected, delivered, forwarded, sent, "
                          "unknown.")(f)
    f = click.option("-m", "--match", "match", multiple=True, metavar="FIELD=VALUE", shell_complete=complete_match,
                     help="Keep packets with this field at any step: dport=52000, src=10.0.0.0/8, "
                          "proto=tcp, in=eth0 …; owner=ns/svc keeps packets that pass a rule of that owner "
                          "(Kubernetes service, Docker network, firewalld zone …).")(f)
    return f


def _examples_root() -> Path:
    return Path(str(resources.files("ruletrace") / "examples"))


def list_examples() -> dict[str, dict[str, Any]]:
    """name -> example.json contents (plus "dir"), for every bundled example."""
    out: dict[str, dict[str, Any]] = {}
    root = _examples_root()
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        meta = d / "example.json"
        if meta.is_file():
            info = json.loads(meta.read_text())
            info["dir"] = str(d)
            out[d.name] = info
    return out


def example_paths(name: str) -> tuple[list[str], list[str]]:
    """(ruleset paths, trace paths) of a bundled example."""
    ex = list_examples()
    if name not in ex:
        known = ", ".join(ex) or "none bundled"
        raise RuletraceError(f"no example named {name!r} (known: {known}); see `ruletrace examples`")
    info, d = ex[name], Path(ex[name]["dir"])
    rulesets = info.get("rulesets") or [info["ruleset"]]
    logs = info.get("logs") or [info["log"]]
    return [str(d / r) for r in rulesets], [str(d / log) for log in logs]


def with_example(example: str | None, rulesets, inputs) -> tuple[list[str], list[str]]:
    """(ruleset paths, trace paths): the ones given, the example's where none was given."""
    ruleset_paths, paths = list(rulesets), list(inputs)
    if example:
        ex_rules, ex_logs = example_paths(example)
        ruleset_paths = ruleset_paths or ex_rules
        paths = paths or ex_logs
    return ruleset_paths, paths
