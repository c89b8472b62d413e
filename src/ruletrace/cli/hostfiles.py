"""The host's routing facts given as files (`ip -j addr`, `ip -j route show table all`, `ip -j rule`,
`sysctl -a`), read for explain's ranked causes (explain/fatecauses.py)."""

from __future__ import annotations

import click

from .. import routes as rt
from ..errors import RuletraceError
from ..inputs import read_limited
from ..model import Origin


def _text(path: str) -> str:
    return read_limited(path, "host facts file").decode("utf-8", "replace")


def route_facts(addrs: str | None, routes: str | None, rules: str | None, sysctl: str | None) -> rt.RouteFacts:
    f = rt.RouteFacts()
    if routes:
        f.routes, f.where["routes"] = rt.load_json_list(_text(routes), routes), routes
    if rules:
        f.rules, f.where["rules"] = rt.load_json_list(_text(rules), rules), rules
    if sysctl:
        f.sysctls, f.where["sysctls"] = rt.parse_sysctl(_text(sysctl), sysctl), sysctl
    if addrs:
        for link in rt.load_json_list(_text(addrs), addrs):
            for ai in link.get("addr_info") or []:
                if isinstance(ai, dict) and isinstance(ai.get("local"), str):
                    f.local.add(ai["local"])
        if not f.local:
            raise RuletraceError("no addresses in it (expected `ip -j addr` output)", origin=Origin(addrs, 1))
        f.where["addrs"] = addrs
    return f


def options(fn):
    """--addrs --routes --rules --sysctl, as explain takes them."""
    for opt in reversed([
        click.option("--addrs", metavar="FILE", help="`ip -j addr` of the host (with --routes: names causes)."),
        click.option("--routes", metavar="FILE", help="`ip -j route show table all` of the host: routing "
                     "decisions, and the likely cause when a packet ends after PREROUTING."),
        click.option("--rules", "ip_rules", metavar="FILE", help="`ip -j rule` of the host (policy routing)."),
        click.option("--sysctl", "sysctl_file", metavar="FILE", help="`sysctl -a` of the host (ip_forward, "
                     "rp_filter)."),
    ]):
        fn = opt(fn)
    return fn
