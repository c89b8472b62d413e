"""Options shared by several commands: defined once so that they mean the same everywhere."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import click

from ..errors import RuletraceError
from ..sources.detect import FORMATS

RULESET_HELP = ("iptables-save / ip6tables-save output, an `iptables -L -n -v` listing, or `nft -j list "
                "ruleset` (repeat for IPv4 + IPv6).")

ruleset = click.option("-r", "--ruleset", "rulesets", multiple=True, metavar="FILE", help=RULESET_HELP)
example = click.option("--example", metavar="NAME", help="Use a bundled example (see `ruletrace examples`).")
trace_format = click.option("-f", "--format", "fmt", type=click.Choice(FORMATS),
                            help="Trace format (default: detected).")
no_color = click.option("--no-color", is_flag=True,
                        help="No colours (also when NO_COLOR is set or output is not a TTY).")
width = click.option("--width", type=int, help="Output width (default: the terminal's).")


def packet_filters(f: Callable[..., Any]) -> Callable[..., Any]:
    """-m/--match, --fate and --packet: which packets to keep."""
    f = click.option("--packet", "packet_ids", multiple=True, type=int, metavar="ID",
                     help="Keep only packet ID.")(f)
    f = click.option("--fate", "fates", multiple=True, metavar="FATE",
                     help="Keep packets with this fate: dropped, rejected, delivered, forwarded, sent, "
                          "unknown.")(f)
    f = click.option("-m", "--match", "match", multiple=True, metavar="FIELD=VALUE",
                     help="Keep packets with this field at any step: dport=52000, src=10.0.0.0/8, "
                          "proto=tcp, in=eth0 …; owner=ns/svc keeps packets that pass a rule of that owner "
                          "(Kubernetes service, Docker network, firewalld zone …).")(f)
    return f


def _examples_root() -> Path:
    return Path(str(resources.files("ruletrace") / "examples"))


def list_examples() -> dict[str, dict]:
    """name -> example.json contents (plus "dir"), for every bundled example."""
    out: dict[str, dict] = {}
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
