"""A damaged rule text (an unbalanced quote, as in a truncated paste or a JSON read back) gives no
owner instead of an error: the fuzzed round-trip property test found the error in to_json."""

from ruletrace.explain.owners import owner_of
from ruletrace.model import Rule


def test_unbalanced_quote_in_a_rule_text_gives_no_owner_not_an_error():
    rule = Rule("nat", "KUBE-SVC-X", 1, '-A KUBE-SVC-X -m comment --comment "default/web:http -j KUBE-SEP-Y')
    owner = owner_of("nat", "KUBE-SVC-X", rule)  # the chain alone still says kube-proxy
    assert owner is None or owner.kind == "kubernetes"


def test_an_intact_rule_still_names_its_owner():
    rule = Rule("nat", "KUBE-SVC-X", 1, '-A KUBE-SVC-X -m comment --comment "default/web:http" -j KUBE-SEP-Y',
                target="KUBE-SEP-Y")
    owner = owner_of("nat", "KUBE-SVC-X", rule)
    assert owner is not None and owner.kind == "kubernetes" and "default/web" in owner.name
