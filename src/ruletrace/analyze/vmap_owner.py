"""Who decided, where a verdict map chose the deciding chain: the map element the packet selected.

kube-proxy's nftables mode sends a packet to a service without endpoints through one lookup,
``ip daddr . meta l4proto . th dport vmap @no-endpoint-services``, whose element for that service
(``10.96.9.9 . tcp . 80 comment "shop/cart:http" : goto reject-chain``) is the only place the
service is named; the chain that rejects it, ``reject-chain``, is shared plumbing. The element is
found from the packet's logged fields (``rule_check.vmap_element``: every key part must match, a
part the log cannot settle gives no element, never a guess), and added to the cause links as a
``map element`` link whose owner the tree, the why, JSON and the summaries name.
"""

from __future__ import annotations

from ..explain.causes import add_links
from ..explain.owners import element_rule
from ..model import CauseLink, Explanation, RulesetView, StepKind
from .rule_check import element_parts, vmap_element, vmap_key

ROLE = "map element"


def annotate(expl: Explanation, view: RulesetView | None) -> None:
    """Add the ``map element`` link of the verdict map that jumped to the deciding rule's chain."""
    if view is None or not view or expl.verdict is None or not expl.cause or ROLE in (c.role for c in expl.cause):
        return
    k = expl.cause[0].step
    steps = expl.steps
    if k is None or not 0 <= k < len(steps) or steps[k].depth <= 0:
        return
    v = steps[k]
    j = k - 1  # the step before the deciding chain's first: the lookup that jumped (or went) to it
    while j >= 0 and (steps[j].table, steps[j].chain, steps[j].depth) == (v.table, v.chain, v.depth):
        j -= 1
    if j < 0 or steps[j].depth not in (v.depth - 1, v.depth):  # a jump, or a goto (same depth)
        return
    caller = steps[j]
    rule = caller.rule
    if caller.kind is not StepKind.RULE or rule is None or not (rule.vmap or "").startswith("@"):
        return
    lookup = vmap_key(rule.text)
    rs = view.pick(caller.event.family)
    nset = rs.sets.get((rule.table, lookup[1])) if lookup is not None and rs is not None else None
    if nset is None:
        return
    element = vmap_element(rule.text, nset.elements, caller.event.fields)
    if element is None:
        return
    key, verdict = element_parts(element)
    text = f"the packet's key selected element {key} of map @{nset.name}" + (f" ({verdict})" if verdict else "")
    add_links(expl, [CauseLink(ROLE, rule.table, rule.chain, rule.num, element_rule(rule, nset.name, element),
                               text, j)])
