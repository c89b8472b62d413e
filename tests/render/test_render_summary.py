"""Summary: counts by fate and deciding rule, skipped lines, warnings; terminal table and JSON."""

from __future__ import annotations

from render_cases import build, render, seed003_drop, seed003_port80, unknown_fate
from rich.cells import cell_len

from ruletrace.analyze import summary as summary_mod
from ruletrace.analyze.summary import Summary
from ruletrace.model import Explanation, Fate, Verdict
from ruletrace.render import summary as summary_view
from ruletrace.render.summary import to_renderable

KUBE_FIREWALL_1 = (
    '-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets"'
    " -m mark --mark 0x8000/0x8000 -j DROP"
)


def _filled() -> Summary:
    s = Summary()
    for e in (seed003_drop(), seed003_port80(), seed003_drop(), unknown_fate(), seed003_drop()):
        assert s.add(e) is e
    s.add_skipped(4)
    s.add_skipped()
    return s


def test_counts() -> None:
    s = _filled()
    assert s.packets == 5
    assert s.skipped_lines == 5
    assert s.fates == {Fate.DROPPED: 3, Fate.DELIVERED: 1, Fate.UNKNOWN: 1}
    assert s.packets_with_warnings == 1  # only the port-80 packet has warnings (one overall, one on a step)
    assert s.warnings == {"ruleset looks older than the log": 1, "filter:KUBE-FIREWALL has 1 rule in the ruleset": 1}


def test_to_json() -> None:
    j = _filled().to_json()
    assert list(j) == ["packets", "skipped_lines", "fates", "deciding", "packets_with_warnings", "warnings"]
    assert j["packets"] == 5 and j["skipped_lines"] == 5
    assert j["fates"] == {"dropped": 3, "rejected": 0, "delivered": 1, "forwarded": 0, "sent": 0, "unknown": 1}
    assert j["deciding"] == [
        {
            "action": "drop",
            "table": "filter",
            "chain": "KUBE-FIREWALL",
            "num": 1,
            "rule": KUBE_FIREWALL_1,
            "policy": None,
            "last_seen": None,
            "count": 3,
            # KUBE-FIREWALL is plumbing: the owner is the tree's, the service whose rule marked the packet
            "owner": {"kind": "kubernetes", "name": "ootob9/ingress-nginx:http", "specific": True,
                      "evidence": 'comment "ootob9/ingress-nginx:http has no local endpoints"',
                      "detail": "has no local endpoints"},
        },
        {
            "action": "accept",
            "table": "filter",
            "chain": "INPUT",
            "num": 2,
            "rule": None,
            "policy": "ACCEPT",
            "last_seen": None,
            "count": 1,
            "owner": None,
        },
        {
            "action": None,
            "table": None,
            "chain": None,
            "num": None,
            "rule": None,
            "policy": None,
            "last_seen": "nat:POSTROUTING",
            "count": 1,
            "owner": None,
        },
    ]
    assert j["packets_with_warnings"] == 1
    assert {w["text"]: w["count"] for w in j["warnings"]} == {
        "ruleset looks older than the log": 1,
        "filter:KUBE-FIREWALL has 1 rule in the ruleset": 1,
    }


def test_empty_summary() -> None:
    s = Summary()
    assert s.to_json()["packets"] == 0
    assert render(to_renderable(s)) == "0 packets\n"


def test_terminal_rows() -> None:
    out = render(to_renderable(_filled()))
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert lines[0] == "5 packets, 5 lines skipped, 1 with warnings"
    assert "dropped 3 60.0%" in lines
    assert "delivered 1 20.0%" in lines
    assert "unknown 1 20.0%" in lines
    assert "rejected 0 0.0%" not in lines  # fates nobody had are left out
    drop_row = next(line for line in lines if line.startswith("3 drop filter:KUBE-FIREWALL rule 1 "))
    # the owner column: who decided as the tree says (the service that marked it), then the rule
    assert drop_row.startswith("3 drop filter:KUBE-FIREWALL rule 1 kubernetes ootob9/ingress-nginx")
    assert "-m comment" in drop_row
    assert "1 accept filter:INPUT policy ACCEPT" in lines
    assert "1 none trace ends at nat:POSTROUTING" in lines
    assert "1 ruleset looks older than the log" in lines


def test_long_rule_text_is_ellipsized_on_one_row() -> None:
    for width in (120, 100):
        out = render(to_renderable(_filled()), width=width)
        row = next(line for line in out.splitlines() if "KUBE-FIREWALL rule 1" in line)
        assert row.rstrip().endswith("…") and "ootob9/ingress-nginx" in row
        assert all(cell_len(line) <= width for line in out.splitlines())
    # at 80 the owner takes what is left: the rule text goes first
    out = render(to_renderable(_filled()), width=80)
    row = next(line for line in out.splitlines() if "KUBE-FIREWALL rule 1" in line)
    assert row.rstrip().endswith("ootob9/ingress-nginx:http") and "-m comment" not in row
    assert all(cell_len(line) <= 80 for line in out.splitlines())
    # too narrow for any of it: the rule text is left out, the count, action and place stay whole
    out = render(to_renderable(_filled()), width=50)
    assert "3   drop     filter:KUBE-FIREWALL rule 1" in out and "-m comment" not in out
    assert all(cell_len(line) <= 50 for line in out.splitlines())


def _kube_reject() -> Explanation:
    rule = ('-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "payments/cart-queue-8824:https has no endpoints"'
            " -m addrtype --dst-type LOCAL -m tcp --dport 31234 -j REJECT --reject-with icmp-port-unreachable")
    packet, steps = build("kern.log", [("filter:KUBE-EXTERNAL-SERVICES:rule:347", 0, rule, "reject", {})],
                          {"IN": "eth0", "SRC": "10.0.0.5", "DST": "10.0.0.9", "PROTO": "TCP"}, 7)
    return Explanation(packet, steps=steps, fate=Fate.REJECTED,
                       verdict=Verdict("reject", "filter", "KUBE-EXTERNAL-SERVICES", 347, steps[0].rule, ""))


def test_counts_actions_and_places_are_never_cut() -> None:
    """At 80 columns the table had cut the counts to "26…" and the actions to "a…" (a 100,000-packet
    kube log): those and the rule's place stay whole at any width; the owner gives way first (its
    name kept, without its kind, when short of room), then the rule text."""
    s = Summary()
    s.count(Summary.entry(seed003_drop()), 1_234_567)
    s.count(Summary.entry(_kube_reject()), 26_390)
    for width in (40, 60, 80, 100, 200):
        out = render(to_renderable(s), width=width)
        lines = out.splitlines()
        assert all(cell_len(line) <= width for line in lines), width
        rows = [" ".join(line.split()) for line in lines]
        if width >= 60:
            assert any(r.startswith("1234567 drop filter:KUBE-FIREWALL rule 1") for r in rows), (width, out)
            assert any(r.startswith("26390 reject filter:KUBE-EXTERNAL-SERVICES rule 347") for r in rows), (width, out)
        else:  # only the place gives way, at its end
            assert any(r.startswith("1234567 drop filter:KUBE-") for r in rows), (width, out)
            assert any(r.startswith("26390 reject filter:KUBE-") for r in rows), (width, out)
        owner = next(r for r in rows if r.startswith("26390 "))
        if width == 80:
            assert "payments/cart-qu" in owner and "kubernetes" not in owner
        if width >= 100:
            assert "kubernetes payments/cart-queue" in owner
        if width == 200:
            assert "--comment" in owner


def test_warning_texts_are_capped(monkeypatch) -> None:
    monkeypatch.setattr(summary_mod, "MAX_WARNINGS", 3)
    s = Summary()
    for i in range(5):
        s.warn(f"warning {i}")
    s.warn("warning 0", 2)
    assert s.warnings == {"warning 0": 3, "warning 1": 1, "warning 2": 1, summary_mod.OTHER_WARNINGS: 2}


def test_more_deciding_rules_than_shown(monkeypatch) -> None:
    monkeypatch.setattr(summary_view, "TOP_RULES", 1)
    out = render(to_renderable(_filled()))
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "2 2 more" in lines  # the 2 packets of the 2 rules not shown
    assert len(_filled().to_json()["deciding"]) == 3  # JSON keeps them all


def test_totals_line_says_one_in_the_singular() -> None:
    # a pasted monitor trace cut mid-line: "2 packets, 1 lines skipped"
    s = Summary()
    s.packets, s.skipped_lines = 1, 1
    assert render(to_renderable(s)).splitlines()[0] == "1 packet, 1 line skipped"
    s.packets, s.skipped_lines = 2, 3
    assert render(to_renderable(s)).splitlines()[0] == "2 packets, 3 lines skipped"


def test_deciders_name_the_owner_the_tree_names_and_split_by_it() -> None:
    """A summary of detailed explanations (JSON, the live exit summary) names who decided as the
    tree does; one plumbing rule deciding for two services is two lines. Without detail (`explain
    --summary`, no packet fields) the rule's own owner is all there is, and it is not guessed."""
    from ruletrace.analyze.live import decider_words
    from ruletrace.explain.owners import Owner

    s = _filled()
    (d, n), *_ = s.ranked()
    assert n == 3 and decider_words(d) == "filter:KUBE-FIREWALL rule 1 [kubernetes ootob9/ingress-nginx:http]"
    other = seed003_drop()
    other.cause = other.cause[:1]  # the same rule, no link to a service: its own (plumbing) owner
    s.add(other)
    got = {summary_mod.decider_owner(d): n for d, n in s.ranked() if d.chain == "KUBE-FIREWALL"}
    assert got == {Owner("kubernetes", "ootob9/ingress-nginx:http", "has no local endpoints",
                         'comment "ootob9/ingress-nginx:http has no local endpoints"'): 3,
                   Owner("kubernetes", "KUBE-FIREWALL", "kubernetes firewall for dropping marked packets",
                         "chain KUBE-FIREWALL", specific=False): 1}
    bare = seed003_drop()
    bare.steps, bare.cause = [], []  # `explain --summary`: no detail
    assert summary_mod.decider_owner(Summary.entry(bare)[1]).name == "KUBE-FIREWALL"


def test_two_endpoints_of_one_service_are_one_decider_with_what_they_share() -> None:
    """review: deciders were keyed on the whole owner, so the masquerade of two endpoints of
    shop/front:http read as two identical rows; they are one, without the endpoint, and a third
    service is its own row. Merging a worker's summary groups the same way."""
    from ruletrace.analyze.summary import Decider
    from ruletrace.explain.owners import Owner

    def d(owner):
        return Decider("masquerade", "kube-proxy", "masquerading", 3, "masquerade", None, None, None, owner)

    ep = [Owner("kubernetes", "shop/front:http", f"endpoint 10.244.1.{n}:8080",
                f"chain endpoint-X{n}-shop/front/tcp/http__10.244.1.{n}/8080") for n in (5, 7)]
    dns = Owner("kubernetes", "kube-system/kube-dns:dns", "endpoint 10.244.1.6:53", "chain endpoint-J7")
    s, w = Summary(), Summary()
    s.count((Fate.FORWARDED, d(ep[0]), ()))
    s.count((Fate.FORWARDED, d(dns), ()))
    w.count((Fate.FORWARDED, d(ep[1]), ()), 2)
    s.merge(w)
    got = {(x.owner.name, x.owner.detail, x.owner.evidence): n for x, n in s.ranked()}
    assert got == {("shop/front:http", "", ""): 3, ("kube-system/kube-dns:dns", "endpoint 10.244.1.6:53", "chain endpoint-J7"): 1}
