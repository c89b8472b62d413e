"""Owners: who made a rule or chain, read from each product's chain names and comments.

iptables forms come from the bundled examples (recorded by the lab) and tests/fixtures; the nft
layouts below are written here in each product's style (names as the product writes them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ruletrace.explain.owners import Owner, owner_of, rule_comments, rule_owner
from ruletrace.model import Origin, Rule, Ruleset
from ruletrace.pipeline import load_rulesets
from ruletrace.rulesets import nft_text

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "examples"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _save(name: str) -> Ruleset:
    (rs,) = load_rulesets([str(EXAMPLES / name / "ruleset.rules")])
    return rs


def _find(rs: Ruleset, table: str, chain: str, needle: str) -> Rule:
    return next(r for r in rs.tables[table][chain].rules if needle in r.text)


def _nft(text: str) -> Ruleset:
    (rs,) = nft_text.parse(text, origin=Origin("test.nft"))
    return rs


def _r(chain: str, text: str, table: str = "filter", target: str | None = None) -> Rule:
    return Rule(table, chain, 1, f"-A {chain} {text}", target)


# --- comments, every listing form
def test_comments_in_every_form():
    assert rule_comments('-A X -m comment --comment "a b" -m comment --comment c -j ACCEPT') == ["a b", "c"]
    assert rule_comments("ACCEPT tcp -- * * 0.0.0.0/0 0.0.0.0/0 /* ns/web:http */ tcp dpt:80") == ["ns/web:http"]
    assert rule_comments('tcp dport 22 accept comment "ssh"') == ["ssh"]


# --- Kubernetes, iptables mode (k8s-nodeport example)
def test_kubernetes_service_comment_with_its_words():
    rs = _save("k8s-nodeport")
    o = rule_owner(_find(rs, "nat", "KUBE-XLB-VETHOZVMBYUVK3NB", "has no local endpoints"))
    assert o == Owner("kubernetes", "ns/ingress-nginx:http", "has no local endpoints",
                      'comment "ns/ingress-nginx:http has no local endpoints"')
    o = rule_owner(_find(rs, "nat", "KUBE-SERVICES", "cluster IP"))
    assert (o.name, o.detail) == ("default/kubernetes:https", "cluster IP")
    o = rule_owner(_find(rs, "nat", "KUBE-NODEPORTS", "--dport 52000 -j KUBE-XLB"))
    assert (o.kind, o.name, o.detail) == ("kubernetes", "ns/ingress-nginx:http", "")


def test_kubernetes_plumbing_is_not_specific():
    rs = _save("k8s-nodeport")
    o = rule_owner(_find(rs, "filter", "KUBE-FIREWALL", "0x8000"))
    assert o.kind == "kubernetes" and o.name == "KUBE-FIREWALL" and not o.specific
    assert o.detail == "kubernetes firewall for dropping marked packets"


def test_kubernetes_endpoint_and_hashed_chains():
    sep = Rule("nat", "KUBE-SEP-ABCDEFGH", 2,
               '-A KUBE-SEP-ABCDEFGH -p tcp -m comment --comment "default/web:http" -m tcp '
               "-j DNAT --to-destination 10.244.1.7:8080", "DNAT")
    assert rule_owner(sep) == Owner("kubernetes", "default/web:http", "endpoint 10.244.1.7:8080",
                                    'comment "default/web:http"')
    newer = _r("KUBE-SVC-ABCDEFGH", '-m comment --comment "default/web:http -> 10.0.0.5:80" -j KUBE-SEP-X',
               "nat", "KUBE-SEP-X")
    assert rule_owner(newer).detail == "endpoint 10.0.0.5:80"
    hashed = owner_of("nat", "KUBE-SVC-ABCDEFGH")
    assert hashed.name == "KUBE-SVC-ABCDEFGH" and "hashed" in hashed.detail


def test_a_slash_in_a_user_comment_is_not_a_service():
    assert owner_of("filter", "INPUT", _r("INPUT", '-m comment --comment "a/b" -j ACCEPT', target="ACCEPT")) is None


# --- Kubernetes, nftables mode (fixture written in kube-proxy's nft style)
def test_kubernetes_nft_chain_names():
    (rs,) = load_rulesets([str(FIXTURES / "nft_native" / "kubeproxy.nft")])
    chains = rs.tables["kp"]
    svc = owner_of("kp", "service-CCCC-ns1/web/tcp/http")
    assert "service-CCCC-ns1/web/tcp/http" in chains
    assert (svc.kind, svc.name, svc.detail) == ("kubernetes", "ns1/web:http", "")
    ep = "endpoint-C1-ns1/web/tcp/http__10.244.1.5/8080"
    assert ep in chains
    dnat = chains[ep].rules[1]
    assert rule_owner(dnat) == Owner("kubernetes", "ns1/web:http", "endpoint 10.244.1.5:8080", f"chain {ep}")
    ext = owner_of("kp", "external-CCCC-ns1/web/tcp/http")
    assert ext.name == "ns1/web:http" and ext.detail == "external (tcp)"
    mark = owner_of("kp", "mark-for-masquerade")
    assert mark.kind == "kubernetes" and not mark.specific
    plumbing = owner_of("kube-proxy", "filter-input")
    assert plumbing.kind == "kubernetes" and not plumbing.specific


# --- Docker (docker-portmap example: the lab names the bridge rtl1440d0; real hosts docker0/br-…)
def test_docker_published_port_and_network():
    rs = _save("docker-portmap")
    o = rule_owner(_find(rs, "nat", "DOCKER", "--dport 10000"))
    assert o == Owner("docker", "rtl1440d0", "published port 10000/tcp -> 172.17.0.2:80", "bridge rtl1440d0")
    o = rule_owner(_find(rs, "filter", "DOCKER", "--dport 80"))
    assert (o.name, o.detail) == ("rtl1440d0", "published port, to 172.17.0.2:80/tcp")
    user = rule_owner(_find(rs, "filter", "FORWARD", "DOCKER-USER"))
    assert (user.kind, user.name, user.evidence, user.specific) == ("docker", "DOCKER-USER", "target DOCKER-USER", False)


def test_docker_bridge_names_outside_docker_chains():
    o = rule_owner(_r("FORWARD", "-o br-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                      target="ACCEPT"))
    assert (o.kind, o.name) == ("docker", "br-0123456789ab")
    assert rule_owner(_r("FORWARD", "-o eth0 -j ACCEPT", target="ACCEPT")) is None


DOCKER_NFT = """
table ip docker-bridges {
	chain filter-forward-in__docker0 {
		ct state established,related accept
		ip daddr 172.17.0.2 tcp dport 80 accept
		drop
	}
}
"""


def test_docker_nft_chains():
    rs = _nft(DOCKER_NFT)
    r = rs.tables["docker-bridges"]["filter-forward-in__docker0"].rules[1]
    assert (rule_owner(r).kind, rule_owner(r).name) == ("docker", "docker0")


# --- Calico
def test_calico_iptables_chains_and_comments():
    pol = _r("cali-tw-cali1234abcd", '-m comment --comment "cali:AbCdEf12" -m comment --comment '
             '"Policy default/knp.default.allow-web ingress" -j ACCEPT', target="ACCEPT")
    assert rule_owner(pol) == Owner("calico", "policy default/knp.default.allow-web", "ingress",
                                    'comment "Policy default/knp.default.allow-web ingress"')
    jump = _r("cali-tw-cali1234abcd", '-m comment --comment "cali:X1" -j cali-pi-_Ab12Cd', target="cali-pi-_Ab12Cd")
    assert (rule_owner(jump).name, rule_owner(jump).detail) == ("policy _Ab12Cd", "inbound")
    prof = owner_of("filter", "cali-pri-kns.shop")
    assert (prof.name, prof.detail) == ("profile kns.shop", "inbound")
    wl = owner_of("filter", "cali-fw-cali1234abcd")
    assert wl.name == "workload cali1234abcd"
    assert not owner_of("filter", "cali-FORWARD").specific


CALICO_NFT = """
table ip calico {
	chain filter-cali-tw-cali5678 {
		ip saddr 10.0.0.0/8 accept comment "cali:Zz9"
	}
}
"""


def test_calico_nft_chains():
    rs = _nft(CALICO_NFT)
    r = rs.tables["calico"]["filter-cali-tw-cali5678"].rules[0]
    assert (rule_owner(r).kind, rule_owner(r).name, rule_owner(r).detail) == ("calico", "workload cali5678", "to workload")


# --- firewalld
@pytest.mark.parametrize(("table", "chain", "name", "detail"), [
    ("filter", "IN_public_allow", "zone public", "input, allow"),
    ("filter", "FWDI_internal", "zone internal", "forward in"),
    ("nat", "PRE_public", "zone public", "prerouting"),
    ("filter", "IN_policy_allow-host-ipv6", "policy allow-host-ipv6", "input"),
    ("firewalld", "filter_IN_public_allow", "zone public", "input, allow"),
    ("firewalld", "nat_POST_external", "zone external", "postrouting"),
    ("firewalld", "filter_FWD_policy_int-to-ext", "policy int-to-ext", "forward"),
])
def test_firewalld_zones_and_policies(table, chain, name, detail):
    o = owner_of(table, chain)
    assert (o.kind, o.name, o.detail) == ("firewalld", name, detail)


def test_firewalld_plumbing_and_foreign_prefixes():
    assert not owner_of("filter", "INPUT_ZONES").specific
    assert not owner_of("firewalld", "filter_INPUT").specific
    assert owner_of("mytable", "filter_IN_public") is None  # the nft names only in table firewalld


# --- libvirt
def test_libvirt():
    r = _r("LIBVIRT_FWO", "-s 192.168.122.0/24 -i virbr0 -j ACCEPT", target="ACCEPT")
    assert rule_owner(r) == Owner("libvirt", "virbr0", "forward from guests", "bridge virbr0")
    assert owner_of("filter", "LIBVIRT_INP").detail == "input from guests"
    nft = _nft('table ip libvirt_network {\n\tchain guest_output {\n\t\tip saddr 192.168.122.0/24 '
               'iif "virbr0" counter accept\n\t}\n}\n')
    o = rule_owner(nft.tables["libvirt_network"]["guest_output"].rules[0])
    assert (o.kind, o.detail) == ("libvirt", "forward from guests")
    # libvirt's nft rules name the bridge with iif/oif (review: "libvirt guest_input", no bridge)
    assert (o.name, o.evidence, o.specific) == ("virbr0", "bridge virbr0", True)
    from ruletrace.explain.owners import rule_interfaces

    assert rule_interfaces("fib saddr . mark . iif oif missing drop") == []  # iif/oif here name no interface
    # nft name sets, wildcards, a concatenation (review: `{ "br0", "br1" }` gave none, `iifname . oifname` gave ".")
    assert rule_interfaces('oifname { "br0", "br1" } accept') == ["br0", "br1"]
    assert rule_interfaces('iifname . oifname { "eth0" . "br0" } accept') == []
    assert rule_interfaces('iifname "veth*" accept') == ["veth*"]
    assert rule_interfaces("-A FORWARD -i veth+ ! -o docker0 -j ACCEPT") == ["veth+", "docker0"]
    # fw4's zone dispatch names its interfaces as the keys of an anonymous verdict map
    assert rule_interfaces('iifname vmap { "wan" : jump forward_wan, "br-lan" : jump forward_lan }') == [
        "wan", "br-lan"]


# --- OpenWrt fw4
FW4 = """
table inet fw4 {
	chain input_wan {
		icmp type echo-request counter accept comment "!fw4: Allow-Ping"
		jump reject_from_wan
	}
	chain reject_from_wan {
		iifname "wan" counter jump handle_reject comment "!fw4: reject wan IPv4/IPv6 traffic"
	}
	chain handle_reject {
		reject
	}
}
"""


def test_fw4_zones_and_rule_names():
    rs = _nft(FW4)
    ping = rs.tables["fw4"]["input_wan"].rules[0]
    assert rule_owner(ping) == Owner("fw4", "zone wan", "rule Allow-Ping", "chain input_wan of table fw4")
    jump = rs.tables["fw4"]["input_wan"].rules[1]
    assert (rule_owner(jump).name, rule_owner(jump).detail) == ("zone wan", "input")
    assert not rule_owner(rs.tables["fw4"]["handle_reject"].rules[0]).specific
    assert owner_of("rtr", "input_wan") is None  # fw4's chain names only in table fw4
    # fw4 comments its own handle_reject rules too ("!fw4: Reject TCP traffic"): still plumbing, so a
    # reject there is the zone's (review: "REJECTED by fw4:handle_reject rule 1 [fw4 handle_reject]")
    commented = Rule("fw4", "handle_reject", 1, 'meta l4proto tcp reject with tcp reset comment "!fw4: Reject TCP traffic"')
    assert not rule_owner(commented).specific


# --- OpenStack (openstack-router example: neutron's older quantum- names)
def test_openstack_floating_ip():
    rs = _save("openstack-router")
    o = rule_owner(_find(rs, "nat", "quantum-l3-agent-PREROUTING", "192.168.0.16"))
    assert (o.kind, o.name, o.detail) == ("openstack", "neutron l3-agent", "floating IP 192.168.0.16 -> 10.0.0.4")


# --- --match owner=
def test_owner_matches():
    o = Owner("kubernetes", "ns/web:http", "cluster IP")
    assert o.matches("ns/web") and o.matches("ns/web:http") and o.matches("kubernetes") and o.matches("NS/Web")
    assert not o.matches("ns/we") and not o.matches("other/web")
    assert Owner("firewalld", "zone public").matches("public")


# --- the why: the deciding owner, or the cause link that names the object
def test_why_quotes_the_kubernetes_comment():
    from ruletrace.explain.owners import deciding_owner, owner_text
    from ruletrace.pipeline import PacketFilter, explain_files

    d = EXAMPLES / "k8s-nodeport"
    res = explain_files(str(d / "ruleset.rules"), [str(d / "kernel.log")],
                        packet_filter=PacketFilter.parse(["dport=52000"]))
    e = res.explanations[0]
    assert e.cause[0].text.endswith('; kubernetes: "ns/ingress-nginx:http has no local endpoints"')
    owner = next(c for c in e.cause if c.role == "owner")
    assert (owner.chain, owner.num) == ("KUBE-XLB-VETHOZVMBYUVK3NB", 4)
    assert deciding_owner(e).name == "ns/ingress-nginx:http"
    assert owner_text(e) == "kubernetes ns/ingress-nginx:http (has no local endpoints)"


# --- --match owner=, JSON and --summary
def _run(example: str, *match: str, summary: bool = False):
    from ruletrace.pipeline import PacketFilter, Run, load_rulesets

    d = EXAMPLES / example
    run = Run(load_rulesets([str(d / "ruleset.rules")]), [str(d / "kernel.log")],
              packet_filter=PacketFilter.parse(match), detail=not summary)
    return run.summary() if summary else list(run.explanations())


def test_match_owner_keeps_the_packets_of_that_owner():
    kept = _run("k8s-nodeport", "owner=ns/ingress-nginx")
    assert [e.first["DPT"] for e in kept] == ["52000"]  # the one path through the service's rules
    assert _run("k8s-nodeport", "owner=ns/ingress-nginx:http") and not _run("k8s-nodeport", "owner=ns/other")
    every = _run("k8s-nodeport")
    assert len(_run("k8s-nodeport", "owner=kubernetes")) == sum(
        any(s.chain.startswith("KUBE-") for s in e.steps) for e in every)
    docker = _run("docker-portmap", "owner=rtl1440d0")
    assert docker and all(any("rtl1440d0" in (s.rule.text if s.rule else "") for s in e.steps) for e in docker)
    # with --summary too (the owners are read from the steps, so no fast path skips the filter)
    assert _run("k8s-nodeport", "owner=ns/ingress-nginx", summary=True).packets == 1


def test_json_owner_keys_and_round_trip():
    from ruletrace.render.json import expand, from_json, to_json

    e = _run("k8s-nodeport", "dport=52000")[0]
    j = to_json(e)
    assert j["owner"] in j["tables"]["owners"] and all(o in j["tables"]["owners"] for o in j["owners"])
    j = expand(j)  # owners in place of their ids
    assert j["owner"] == {"kind": "kubernetes", "name": "ns/ingress-nginx:http", "detail": "has no local endpoints",
                          "evidence": 'comment "ns/ingress-nginx:http has no local endpoints"', "specific": True}
    names = {o["name"] for o in j["owners"]}
    assert "ns/ingress-nginx:http" in names and "KUBE-XLB-VETHOZVMBYUVK3NB" in names
    assert "docker0" not in names  # nat:DOCKER rule 1 (-i docker0) did not match: only its chain end ran
    assert to_json(from_json(to_json(e))) == to_json(e)  # derived from the rules' text: the same after reading back
    docker = [to_json(x) for x in _run("docker-portmap", "dport=10000")]
    # filter DOCKER's rule says only the container's side; the DNAT on the path gives the host port
    assert expand(docker[0])["owner"]["detail"] == "published port 10000/tcp -> 172.17.0.2:80"
    assert to_json(from_json(docker[0])) == docker[0]


def test_summary_json_names_the_deciding_rules_owner():
    s = _run("docker-portmap", summary=True).to_json()
    owners = {(d["chain"], d["num"]): d["owner"] for d in s["deciding"]}
    assert owners[("DOCKER", 1)]["name"] == "rtl1440d0"
    policy = next(d for d in s["deciding"] if d["chain"] == "INPUT" and d["policy"])
    assert policy["owner"] is None  # filter:INPUT is nobody's


def test_cli_tree_summary_and_match_owner():
    import subprocess
    import sys

    def run(*args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "ruletrace", "explain", "--no-color", "--width", "160", *args],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout

    tree = run("--example", "k8s-nodeport", "--match", "owner=ns/ingress-nginx")
    assert tree.splitlines()[1] == "DROPPED by filter:KUBE-FIREWALL rule 1 [kubernetes ns/ingress-nginx:http]"
    assert 'owner        kubernetes: "ns/ingress-nginx:http has no local endpoints", at nat:KUBE-XLB' in tree
    summary = run("--example", "docker-portmap", "--summary")
    header = next(line for line in summary.splitlines() if "action" in line and "where" in line)
    assert header.split() == ["packets", "action", "where", "owner", "rule"]
    assert any("filter:DOCKER rule 1" in line and "docker rtl1440d0" in line for line in summary.splitlines())
    assert "1 packet\n" in run("--example", "k8s-nodeport", "--summary", "--match", "owner=ns/ingress-nginx")



def test_firewalld_zone_owns_the_catch_all_reject_the_packet_fell_to():
    # lab capture (native nft, a firewalld-style inet table written here, `nft monitor trace`): a SYN to a
    # port zone public does not open goes filter_INPUT -> _ZONES -> IN_public -> IN_public_allow, falls off
    # the zone's chains and is rejected by filter_INPUT's catch-all. That rule is firewalld plumbing; the
    # zone whose rules did not take the packet is who decided (its default target)
    from ruletrace.explain.owners import deciding_owner
    from ruletrace.pipeline import explain_files

    d = FIXTURES / "owners" / "firewalld-zone"
    res = explain_files(str(d / "ruleset.nft"), [str(d / "nft-monitor.txt")])
    rejected = [e for e in res.explanations if e.fate.value == "rejected"]
    assert len(rejected) == 4  # IPv6 and IPv4, each SYN sent again
    for e in rejected:
        assert (e.verdict.chain, e.verdict.num) == ("filter_INPUT", 5)
        o = deciding_owner(e)
        assert (o.kind, o.name, o.specific) == ("firewalld", "zone public", True)
        (fell,) = [c for c in e.cause if c.role == "fell off"]
        assert fell.chain == "filter_IN_public" and e.steps[fell.step].kind.value == "return"
        assert fell.text == ("no rule of firewalld zone public took it (it fell off firewalld:filter_IN_public), "
                             "so firewalld:filter_INPUT rule 5, after the zone's chains, decided")
        assert e.cause[0].text.endswith("; firewalld zone public, input")


def test_firewalld_plumbing_drop_before_any_zone_stays_plumbing(tmp_path):
    # `ct state invalid drop` in filter_INPUT: no zone was walked, so no zone is named
    from ruletrace.explain.owners import deciding_owner
    from ruletrace.pipeline import explain_files

    d = FIXTURES / "owners" / "firewalld-zone"
    lines = [ln for ln in (d / "nft-monitor.txt").read_text().splitlines(keepends=True)
             if "filter_INPUT packet:" in ln and "e4f166c6" in ln]
    lines.append("trace id e4f166c6 inet firewalld filter_INPUT rule ct state invalid drop (verdict drop)\n")
    (tmp_path / "invalid.txt").write_text("".join(lines))
    (e,) = explain_files(str(d / "ruleset.nft"), [str(tmp_path / "invalid.txt")]).explanations
    assert e.fate.value == "dropped" and not [c for c in e.cause if c.role == "fell off"]
    o = deciding_owner(e)
    assert o is not None and not o.specific


FW4_HOST = """table inet fw4 {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept comment "!fw4: Accept traffic from loopback"
		iifname "wan" jump input_wan comment "!fw4: Handle wan IPv4/IPv6 input traffic"
	}
	chain input_wan {
		tcp dport 8443 counter accept comment "!fw4: Allow-Admin"
		jump reject_from_wan
	}
	chain reject_from_wan {
		iifname "wan" counter jump handle_reject comment "!fw4: reject wan IPv4/IPv6 traffic"
	}
	chain handle_reject {
		meta l4proto tcp reject with tcp reset comment "!fw4: Reject TCP traffic"
		reject comment "!fw4: Reject any other traffic"
	}
}
"""


def test_fw4_reject_in_handle_reject_is_the_zones(tmp_path):
    # review: a SYN to a port zone wan does not open read "REJECTED by fw4:handle_reject rule 1
    # [fw4 handle_reject]"; the zone whose chain jumped there is who rejected it
    import subprocess
    import sys

    (tmp_path / "fw4.nft").write_text(FW4_HOST)
    p = subprocess.run([sys.executable, "-m", "ruletrace", "simulate", "--no-color", "--width", "120", "-r",
                        str(tmp_path / "fw4.nft"), "-p", "tcp", "-s", "203.0.113.9", "-d", "192.0.2.1",
                        "--dport", "443", "-i", "wan", "--local-addr", "wan=192.0.2.1/24", "--json"],
                       capture_output=True, text=True)
    assert p.returncode == 4, p.stderr  # rejected
    import json

    doc = json.loads(p.stdout)
    pkt = doc["packets"][0] if "packets" in doc else doc
    owners = doc.get("tables", pkt.get("tables", {})).get("owners", {})
    assert owners[pkt["owner"]]["name"] == "zone wan"
    assert [(c["role"], c["chain"]) for c in pkt["cause"]][:3] == [
        ("decided", "handle_reject"), ("called from", "reject_from_wan"), ("owner", "reject_from_wan")]


def test_firewalld_iptables_backend_reject_after_the_zones_is_the_zones():
    # review: the iptables backend's "-A INPUT -j REJECT" after INPUT_ZONES had no owner (the nft
    # backend's catch-all named zone public): the same answer on both backends now
    from ruletrace.explain.owners import deciding_owner
    from ruletrace.pipeline import explain_files

    d = FIXTURES / "owners" / "firewalld-iptables"
    (e,) = explain_files(str(d / "ruleset.rules"), [str(d / "kernel.log")]).explanations
    assert e.fate.value == "rejected" and (e.verdict.chain, e.verdict.num) == ("INPUT", 6)
    assert deciding_owner(e).name == "zone public"
    assert [c.chain for c in e.cause if c.role == "fell off"] == ["IN_public"]
    assert [(c.chain, c.num) for c in e.cause if c.role == "near miss"] == [("IN_public_allow", 1),
                                                                            ("IN_public_allow", 2)]


def test_docker_filter_rule_owner_takes_the_host_port_from_the_dnat_on_the_path():
    from ruletrace.explain.owners import published_port
    from ruletrace.model import CauseLink, Rule

    filt = Owner("docker", "docker0", "published port, to 172.17.0.2:80/tcp", "bridge docker0")
    accept = Rule("filter", "DOCKER", 1, "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 "
                  "-j ACCEPT", "ACCEPT")
    dnat = Rule("nat", "DOCKER", 2, "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination "
                "172.17.0.2:80", "DNAT")
    link = CauseLink("rewritten", "nat", "DOCKER", 2, dnat, "DST …", 3)
    got = published_port(filt, accept, [link])
    assert got == Owner("docker", "docker0", "published port 8080/tcp -> 172.17.0.2:80", "bridge docker0")
    # another container, another protocol, or no rewrite on the path: the filter rule's own words
    other = Rule("nat", "DOCKER", 3, "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8081 -j DNAT --to-destination "
                 "172.17.0.3:80", "DNAT")
    assert published_port(filt, accept, [CauseLink("rewritten", "nat", "DOCKER", 3, other, "", 3)]) == filt
    udp = Rule("nat", "DOCKER", 4, "-A DOCKER ! -i docker0 -p udp -m udp --dport 8080 -j DNAT --to-destination "
               "172.17.0.2:80", "DNAT")
    assert published_port(filt, accept, [CauseLink("rewritten", "nat", "DOCKER", 4, udp, "", 3)]) == filt
    assert published_port(filt, accept, [CauseLink("decided", "nat", "DOCKER", 2, dnat, "", 3)]) == filt
    # IPv6: the DNAT names the container in brackets
    v6 = Owner("docker", "docker0", "published port, to fd00::2:80/tcp", "bridge docker0")
    accept6 = Rule("filter", "DOCKER", 1, "-A DOCKER -d fd00::2/128 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 "
                   "-j ACCEPT", "ACCEPT")
    dnat6 = Rule("nat", "DOCKER", 2, "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination "
                 "[fd00::2]:80", "DNAT")
    assert published_port(v6, accept6, [CauseLink("rewritten", "nat", "DOCKER", 2, dnat6, "", 1)]).detail == (
        "published port 8080/tcp -> [fd00::2]:80")


def test_firewalld_zone_owns_the_catch_all_after_the_policy_chains():
    # review: firewalld 0.9 and later jump to filter_INPUT_POLICIES_post (empty here) after the zones,
    # so the step before the catch-all reject was that chain's end, and the reject had no zone (owner
    # "firewalld filter_INPUT"). Lab capture (kernel 6.18, `nft monitor trace`, the 0.9 chain layout
    # written here, a table of its own setting nftrace): a SYN to a port zone public does not open
    from ruletrace.explain.owners import deciding_owner
    from ruletrace.pipeline import explain_files

    d = FIXTURES / "owners" / "firewalld-policies"
    (e,) = [x for x in explain_files(str(d / "ruleset.nft"), [str(d / "nft-monitor.txt")]).explanations
            if x.fate.value == "rejected"]
    assert (e.verdict.chain, e.verdict.num) == ("filter_INPUT", 8)
    assert [s.chain for s in e.steps if s.kind.value == "return"][-2:] == ["filter_IN_public",
                                                                           "filter_INPUT_POLICIES_post"]
    o = deciding_owner(e)
    assert (o.kind, o.name, o.specific) == ("firewalld", "zone public", True)
    (fell,) = [c for c in e.cause if c.role == "fell off"]
    assert fell.chain == "filter_IN_public" and e.steps[fell.step].kind.value == "return"
    assert fell.text == ("no rule of firewalld zone public took it (it fell off firewalld:filter_IN_public), "
                         "so firewalld:filter_INPUT rule 8, after the zone's chains, decided")
    assert e.cause[0].text.endswith("; firewalld zone public, input")


def test_firewalld_catch_all_with_no_zone_walked_names_no_zone(tmp_path):
    # the walk back over firewalld's plumbing stops at the start of the base chain's run: a packet no
    # zone took in (the dispatch chain fell off: no interface of a zone) is rejected by plumbing alone
    from ruletrace.explain.owners import deciding_owner
    from ruletrace.pipeline import explain_files

    d = FIXTURES / "owners" / "firewalld-policies"
    rs = (d / "ruleset.nft").read_text().replace('\t\tiifname "fxl-vs" goto filter_IN_public\n\t\tgoto filter_IN_public\n',
                                                 '\t\tiifname "zone0" goto filter_IN_public\n')
    (tmp_path / "rs.nft").write_text(rs)
    mon = "".join(ln for ln in (d / "nft-monitor.txt").read_text().splitlines(keepends=True)
                  if "filter_INPUT_ZONES rule" not in ln and "filter_IN_public rule" not in ln)
    (tmp_path / "mon.txt").write_text(mon)
    (e,) = [x for x in explain_files(str(tmp_path / "rs.nft"), [str(tmp_path / "mon.txt")]).explanations
            if x.fate.value == "rejected"]
    assert [s.chain for s in e.steps if s.kind.value == "return"] == [
        "filter_INPUT_POLICIES_pre", "filter_INPUT_ZONES", "filter_INPUT_POLICIES_post"]
    assert not [c for c in e.cause if c.role == "fell off"]
    o = deciding_owner(e)
    assert o is not None and o.kind == "firewalld" and not o.specific
