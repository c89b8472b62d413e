"""``to_json`` with per-path seeds kept across packets (trace --json) equals ``to_json`` alone."""

from __future__ import annotations

import pytest

from ruletrace.cli.options import example_paths
from ruletrace.pipeline import Run, load_rulesets
from ruletrace.render import json as rjson

EXAMPLES = ["docker-portmap", "filter-basics", "ipv6", "k8s-nodeport", "openstack-router"]


def explanations(name: str) -> list:
    rules, logs = example_paths(name)
    return list(Run(load_rulesets(rules), logs).explanations())


@pytest.mark.parametrize("name", EXAMPLES)
def test_seeded_objects_equal_fresh_ones_byte_for_byte(name):
    expls = explanations(name)
    paths: rjson.AlonePaths = {}
    for e in expls * 3:  # each path met again: the seeds are used
        assert rjson.dumps(rjson.to_json(e, paths)) == rjson.dumps(rjson.to_json(e))
    assert paths and all(e.path_key in paths for e in expls if e.path_key is not None)


def test_all_examples_through_one_cache():
    """One cache across rulesets and explainers: each explainer's paths keep apart."""
    paths: rjson.AlonePaths = {}
    expls = [e for name in EXAMPLES for e in explanations(name)]
    for e in expls + expls[::-1]:
        assert rjson.dumps(rjson.to_json(e, paths)) == rjson.dumps(rjson.to_json(e))


def test_a_seed_is_the_tables_after_the_path_part_only():
    """The seed holds the rules of the path's steps, not the verdict's or causes' of the packet that
    made it (those are added per packet, in the packet's order)."""
    expls = [e for e in explanations("k8s-nodeport") if e.path_key is not None]
    paths: rjson.AlonePaths = {}
    for e in expls:
        rjson.to_json(e, paths)
        rules, _owners, (consts, _o) = paths[e.path_key]
        assert set(rules) == {c["rule"] for c in consts if "rule" in c}


def test_each_object_has_tables_of_its_own():
    """Rules a packet adds beyond its path (an explain-miss's, say) never reach the seed: the
    object's tables are copies, changing them changes no later packet."""
    paths: rjson.AlonePaths = {}
    e = next(e for e in explanations("filter-basics") if e.path_key is not None)
    fresh = rjson.dumps(rjson.to_json(e))
    for _ in range(2):
        obj = rjson.to_json(e, paths)
        obj["tables"]["rules"]["0" * 16] = "-A INPUT -j ACCEPT"
        obj["tables"]["owners"]["0" * 16] = {}
    assert rjson.dumps(rjson.to_json(e, paths)) == fresh
