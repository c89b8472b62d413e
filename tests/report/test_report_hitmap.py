"""Rule hit map: per-rule packet counts, how far packets got down each chain, unreached rules."""

from __future__ import annotations

from report_cases import RULES, seed003_json

from ruletrace.analyze.hitmap import HitMap, hook_tables, places_of
from ruletrace.render.json import from_json
from ruletrace.rulesets import load_ruleset


def _chain(chains, table, name):
    return next(c for c in chains if (c.table, c.name) == (table, name))


def test_seed003_counts():
    rs = load_ruleset(RULES)
    hm = HitMap([rs])
    for p in seed003_json():
        hm.add(places_of(from_json(p).steps), p["family"])
    chains = hm.chains()
    nodeports = _chain(chains, "nat", "KUBE-NODEPORTS")
    assert nodeports.entered == 2 and nodeports.fell_off == 2
    assert len(nodeports.rules) == 36
    r16 = nodeports.rules[15]
    assert (r16.num, r16.hits, r16.evaluated) == (16, 1, 2)
    assert "--dport 52000" in r16.text
    assert sum(r.hits for r in nodeports.rules) == 1
    assert nodeports.unreached == []  # both packets went down the whole chain
    pre = _chain(chains, "nat", "PREROUTING")
    hits = {r.num: r.hits for r in pre.rules}
    assert hits[1] == 2 and hits[2] == 2 and hits[3] == 1 and hits[5] == 1 and hits[4] == 0
    evaluated = {r.num: r.evaluated for r in pre.rules}
    # packet 2 stopped at rule 3 (REDIRECT is terminal), packet 1 went to the policy
    assert evaluated[3] == 2 and evaluated[4] == 1 and evaluated[8] == 1
    fw = _chain(chains, "filter", "KUBE-FIREWALL")
    assert [r.hits for r in fw.rules] == [1, 0]
    assert [r.evaluated for r in fw.rules] == [2, 1]
    # a chain no packet entered: all its rules unreached
    svc = _chain(chains, "nat", "KUBE-SVC-0000000000000000")
    assert svc.entered == 0 and len(svc.unreached) == len(svc.rules)


def test_every_chain_is_listed_tables_in_kernel_order():
    rs = load_ruleset(RULES)
    chains = HitMap([rs]).chains()
    assert len(chains) == sum(len(t) for t in rs.tables.values())
    order = [c.table for c in chains]
    assert order == sorted(order, key=["raw", "mangle", "nat", "filter", "security"].index)


def test_counts_once_per_packet():
    hm = HitMap()
    # a packet that enters X twice and matches rule 1 both times
    hm.add([("filter", "INPUT", "rule", 1), ("filter", "X", "rule", 1), ("filter", "X", "return", 3),
            ("filter", "INPUT", "rule", 2), ("filter", "X", "rule", 1), ("filter", "X", "return", 3),
            ("filter", "INPUT", "policy", 3)])
    chains = hm.chains()
    x = _chain(chains, "filter", "X")
    assert not x.known
    assert [(r.num, r.hits, r.evaluated) for r in x.rules] == [(1, 1, 1), (2, 0, 1)]
    assert x.entered == 1
    inp = _chain(chains, "filter", "INPUT")
    assert [r.hits for r in inp.rules] == [1, 1]


def test_hook_tables_follow_builtin_chains():
    a, b = seed003_json()
    assert list(hook_tables(places_of(from_json(a).steps))) == [
        ("PREROUTING", "raw"), ("PREROUTING", "mangle"), ("PREROUTING", "nat"), ("INPUT", "mangle"),
        ("INPUT", "filter")]
    assert list(hook_tables(places_of(from_json(b).steps)))[-1] == ("INPUT", "nat")


def _state(hm):
    # every counter add makes, with its keys (a key counted with weight 0 still makes a row)
    return (hm.packets, dict(hm.hits), dict(hm.ends), dict(hm.entered),
            {k: dict(v) for k, v in hm.deepest.items()}, dict(hm.tables))


def _add_paths_vs_add(rulesets, paths):
    """HitMap.add_paths (places numbered once) against HitMap.add per path (the reference)."""
    ids: dict = {}
    numbered = []
    for rs_i, places, w in paths:
        numbered.append(([ids.setdefault((rs_i, *p), len(ids)) for p in places], w))
    keys = list(ids)
    ref, fast = HitMap(rulesets), HitMap(rulesets)
    for rs_i, places, w in paths:
        ref.add(places, weight=w, ruleset=rs_i)
    fast.add_paths(keys, numbered)
    assert _state(fast) == _state(ref)
    assert list(fast.chain_counts()) == list(ref.chain_counts())
    return fast


def test_add_paths_equals_add_on_hand_made_paths():
    # repeats (a rule matched twice counts once), a chain left by return and by policy, steps without a
    # number, rule number 0, weight 0 (keys made, counts 0), user chains under the hook that called
    # them, a table no hook has, a second ruleset, an empty path, and adding to counts already there
    paths = [
        (0, [("raw", "PREROUTING", "rule", 1), ("nat", "PREROUTING", "rule", 2), ("nat", "KUBE-SVC", "rule", 3),
             ("nat", "KUBE-SVC", "return", 4), ("nat", "PREROUTING", "rule", 2), ("filter", "FORWARD", "policy", 5),
             ("mangle", "POSTROUTING", "rule", 1)], 3),
        (0, [("filter", "INPUT", "rule", None), ("filter", "USER", "rule", 0), ("filter", "INPUT", "policy", 2),
             ("weird", "OUTPUT", "rule", 1), ("filter", "OUTPUT", "rule", 1), ("security", "OUTPUT", "rule", 2)], 0),
        (1, [("filter", "INPUT", "rule", 1), ("filter", "INPUT", "rule", 3)], 2),
        (0, [], 4),
        (0, [("filter", "USER", "rule", 7), ("filter", "FORWARD", "rule", 1), ("filter", "USER", "rule", 2)], 1),
    ]
    hm = _add_paths_vs_add([], paths)
    assert hm.hits[(0, "nat", "PREROUTING", 2)] == 3 and hm.tables[("FORWARD", "filter")] == 3 + 1
    assert (1, "filter", "INPUT") in hm.entered
    # a second call adds to the counts of the first, as add does
    ref, fast = HitMap(), HitMap()
    for rs_i, places, w in paths:
        ref.add(places, weight=w, ruleset=rs_i)
        ref.add(places, weight=w, ruleset=rs_i)
    keys = sorted({(rs_i, *p) for rs_i, places, _w in paths for p in places}, key=repr)
    numbered = [([keys.index((rs_i, *p)) for p in places], w) for rs_i, places, w in paths]
    fast.add_paths(keys, numbered)
    fast.add_paths(keys, numbered)
    assert _state(fast) == _state(ref)


def test_add_paths_equals_add_on_seed003():
    rs = load_ruleset(RULES)
    paths = []
    for p in seed003_json():
        paths.append((0, places_of(from_json(p).steps), 1 + p["id"] % 3))
    _add_paths_vs_add([rs], paths)
