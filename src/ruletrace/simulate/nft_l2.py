"""Native nftables before the IP stack: netdev ingress and the bridge family's hooks.

The order a frame meets them (net/core/dev.c, net/bridge/br_input.c, br_forward.c):
- ``netdev`` base chains on ``hook ingress`` of the input device, in priority order (equal
  priorities: the later registered first), before anything else; a drop ends the frame.
- On a bridge port (``ip -j addr`` shows its ``master``): the ``bridge`` family's prerouting
  chains; then a frame for the bridge's own address goes to bridge ``input`` and up to the IP
  stack, where it arrives on the bridge device (and nf_tables gives it a new trace id); any other
  frame is bridged: bridge ``forward`` and ``postrouting``, and the IP hooks never see it (with
  br_netfilter's ``bridge-nf-call-iptables`` off, which is stated).
An accept ends one base chain, not the hook (as for ip and inet: nft_walk.NftCompiled.walk walks
each chain). No conntrack, no nat here.
"""

from __future__ import annotations

from typing import Any

from ..model import Ruleset
from .nft_walk import NChain, NftCompiled, nft_compiled
from .semantics import ACCEPT

L2_FAMILIES = ("netdev", "bridge")


def l2_compiled(rulesets: list[Ruleset], v6: bool, linear: bool) -> NftCompiled:
    """The netdev and bridge tables of these listings, compiled (the caller checks ``has_l2``)."""
    return nft_compiled(rulesets, v6, linear, L2_FAMILIES)


def _chains(cc: NftCompiled, family: str, hook: str, device: str | None = None) -> list[NChain]:
    """The base chains of one family's hook in the order they run (priority, later registered first)."""
    out = []
    for rs, _t, tab in cc.tables:
        if rs.family != family:
            continue
        for ch in tab.values():
            if ch.base and ch.hook == hook and (device is None or device in ch.src.devices):
                out.append(ch)
    out.sort(key=lambda ch: (ch.priority, -ch.reg))
    return out


def _run(cc: NftCompiled, chains: list[NChain], hook: str, p: Any, c: Any, R: Any) -> str:
    p.hook = hook
    R.hooks.append(hook)
    for ch in chains:
        v = cc.walk(ch, p, c, R)
        if v != ACCEPT:
            return v
    return ACCEPT


def before_ip(cc: NftCompiled, p: Any, c: Any, R: Any, local: bool) -> tuple[str, bool]:
    """Walk what comes before the IP stack for an incoming frame: (verdict, bridged).

    ``bridged``: the frame crossed the bridge to another port and never reaches the IP hooks.
    On the way up from a bridge, ``p.iif`` becomes the bridge device.
    """
    if ingress := _chains(cc, "netdev", "ingress", p.iif):
        v = _run(cc, ingress, "INGRESS", p, c, R)
        if v != ACCEPT:
            return v, False
    master = c.facts.masters.get(p.iif)
    if master is None:
        return ACCEPT, False
    v = _run(cc, _chains(cc, "bridge", "prerouting"), "PREROUTING", p, c, R)
    if v != ACCEPT:
        return v, False
    if local:
        v = _run(cc, _chains(cc, "bridge", "input"), "INPUT", p, c, R)
        p.iif = master
        p.snap = None
        return v, False
    c.note(f"bridged by {master} (DST is on its own prefix, not one of its addresses): the IP hooks do not see it "
           "(br_netfilter's bridge-nf-call-iptables assumed off)")
    for hook, name in (("forward", "FORWARD"), ("postrouting", "POSTROUTING")):
        v = _run(cc, _chains(cc, "bridge", hook), name, p, c, R)
        if v != ACCEPT:
            return v, True
    return ACCEPT, True
