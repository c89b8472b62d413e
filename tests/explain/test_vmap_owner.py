"""Who decided where a verdict map chose the chain: kube-proxy's nftables mode rejects a packet to a
service without endpoints in the shared ``reject-chain``, reached through ``ip daddr . meta l4proto
. th dport vmap @no-endpoint-services``; only the map element names the service.

The lab capture ``nft_captures/kube-nft`` (a SYN to 10.96.9.9:80, refused), and the same capture
with a second service without endpoints added: one path, two services, two owners."""

from __future__ import annotations

import re
from pathlib import Path

from ruletrace.analyze.rule_check import vmap_element, vmap_key
from ruletrace.analyze.summary import Summary
from ruletrace.pipeline import Run, load_rulesets

KUBE = Path(__file__).resolve().parents[1] / "fixtures" / "nft_captures" / "kube-nft"
LOOKUP = "ip daddr . meta l4proto . th dport vmap @no-endpoint-services"
CART = '10.96.9.9 . tcp . 80 comment "shop/cart:http" : goto reject-chain'
DB = '10.96.9.8 . tcp . 5432 comment "shop/db:sql" : goto reject-chain'


def test_the_element_the_logged_fields_select_and_never_a_guess():
    assert vmap_key(LOOKUP) == ((("dst", ""), ("proto", ""), ("dport", "")), "no-endpoint-services")
    assert vmap_key("tcp dport vmap @ports") == ((("dport", ""),), "ports")
    assert vmap_key("ip daddr @cluster-ips reject") is None  # a set, not a verdict map
    assert vmap_key("ct state vmap @states") is None  # a key the log cannot show
    syn = {"DST": "10.96.9.9", "PROTO": "TCP", "DPT": "80"}
    assert vmap_element(LOOKUP, [DB, CART], syn) == CART
    assert vmap_element(LOOKUP, [DB, CART], {**syn, "PROTO": "UDP"}) is None  # no element
    assert vmap_element(LOOKUP, [DB, CART], {"DST": "10.96.9.9", "PROTO": "TCP"}) is None  # no port logged
    # two elements that both fit (an interval and an address in it): not one answer, so none
    both = ["10.96.0.0/16 . tcp . 80 : goto reject-chain", CART]
    assert vmap_element(LOOKUP, both, syn) is None
    # review: an address range settles (it blocked every lookup), and an element's counter or
    # timeout is not part of its key
    ranged = ["10.0.0.1-10.0.0.5 . tcp . 80 : drop",
              '10.96.9.9 . tcp . 80 timeout 1h expires 59m counter packets 3 bytes 180 comment "shop/cart:http" '
              ": goto reject-chain"]
    assert vmap_element(LOOKUP, ranged, syn) == ranged[1]
    assert vmap_element(LOOKUP, ranged, {**syn, "DST": "10.0.0.3"}) == ranged[0]
    # kube-proxy's node port lookup: matches before the key (`ip daddr @nodeport-ips`) held, the key
    # is the concatenation right before vmap
    nodeport = "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"
    assert vmap_key(nodeport) == ((("proto", ""), ("dport", "")), "no-endpoint-nodeports")
    assert vmap_element(nodeport, ['tcp . 30081 comment "shop/cart:http" : goto reject-chain'],
                        {"DST": "10.78.0.2", "PROTO": "TCP", "DPT": "30081"}) is not None
    assert vmap_key("ip daddr . ct state vmap @m") is None  # a key part the log cannot show


def _run(tmp_path: Path, second: bool) -> list:
    ruleset, trace = (KUBE / "ruleset-a.nft").read_text(), (KUBE / "nft-monitor-a.txt").read_text()
    if second:  # shop/db:sql has no endpoints either; a SYN to it takes the same path as the one to cart
        ruleset = ruleset.replace(f"elements = {{ {CART} }}", f"elements = {{ {CART},\n\t\t\t     {DB} }}")
        assert DB in ruleset
        lines = [x for x in trace.splitlines() if x.startswith("trace id 36a023a2 ")]
        trace += "\n".join(x.replace("36a023a2", "36a023a3").replace("10.96.9.9", "10.96.9.8")
                           .replace("dport 80 ", "dport 5432 ") for x in lines) + "\n"
    (tmp_path / "rs.nft").write_text(ruleset)
    (tmp_path / "trace.txt").write_text(trace)
    return list(Run(load_rulesets([str(tmp_path / "rs.nft")]), [str(tmp_path / "trace.txt")]).explanations())


def test_a_service_without_endpoints_owns_the_reject(tmp_path):
    from ruletrace.explain.owners import deciding_owner

    e = next(x for x in _run(tmp_path, False) if x.first.get("DST") == "10.96.9.9")
    o = deciding_owner(e)
    assert (o.kind, o.name, o.detail) == ("kubernetes", "shop/cart:http", "has no endpoints")
    assert o.evidence == 'element of map @no-endpoint-services: comment "shop/cart:http"'
    roles = [c.role for c in e.cause]
    assert roles[:3] == ["decided", "map element", "owner"]
    assert e.cause[0].text == "rejected by kube-proxy:reject-chain rule 1; kubernetes shop/cart:http, has no endpoints"
    link = e.cause[1]
    assert (link.chain, link.num) == ("service-endpoints-check", 1) and CART in link.rule.text
    assert link.text == ("the packet's key selected element 10.96.9.9 . tcp . 80 of map @no-endpoint-services "
                         "(goto reject-chain)")
    # the other rejects keep their own: cluster-ips-check names no service
    wrong_port = next(x for x in _run(tmp_path, False) if x.first.get("DPT") == "81")
    assert "map element" not in [c.role for c in wrong_port.cause]


def test_one_path_two_services_two_owners_and_no_shared_link_changed(tmp_path):
    from ruletrace.explain.owners import deciding_owner

    expls = _run(tmp_path, True)
    cart = next(x for x in expls if x.first.get("DST") == "10.96.9.9")
    db = next(x for x in expls if x.first.get("DST") == "10.96.9.8")
    assert cart.path_key == db.path_key  # one path: the explanation of the second was copied
    assert deciding_owner(cart).name == "shop/cart:http" and deciding_owner(db).name == "shop/db:sql"
    assert re.search(r"; kubernetes shop/cart:http, has no endpoints$", cart.cause[0].text)
    assert re.search(r"; kubernetes shop/db:sql, has no endpoints$", db.cause[0].text)
    s = Summary()
    for x in (cart, db):
        s.add(x)
    owners = sorted(d.owner.name for d, _n in s.ranked() if d.chain == "reject-chain")
    assert owners == ["shop/cart:http", "shop/db:sql"]  # one rule, two services: two deciders


def test_owner_filter_keeps_the_packet_its_map_element_names(capsys):
    """`-m owner=shop/cart:http` keeps the reject the map element names (review: the filter was asked
    before the analyses that find it: "no packet matched the filters")."""
    from ruletrace.cli import main

    argv = ["explain", "-r", str(KUBE / "ruleset-a.nft"), str(KUBE / "nft-monitor-a.txt"), "--no-color"]
    assert main([*argv, "-m", "owner=shop/cart:http"]) == 0
    out = capsys.readouterr().out
    assert out.count("\npacket ") + out.startswith("packet ") == 1
    assert "10.96.9.9:80" in out and "[kubernetes shop/cart:http]" in out


def test_the_live_line_says_what_the_map_says_of_the_service(tmp_path):
    """review: the live line's cause lost "has no endpoints" (its words come from a comment only)."""
    from ruletrace.analyze.live import cause_text

    e = next(x for x in _run(tmp_path, False) if x.first.get("DST") == "10.96.9.9")
    assert cause_text(e).startswith("has no endpoints")
