"""Owners must not claim what the names do not say (found in review): a host interface in the
user's DOCKER-USER chain is no Docker network, a network range in a comment is no Kubernetes
service, and an IPv6 endpoint keeps its port apart."""

from ruletrace.explain.owners import owner_of
from ruletrace.model import Rule


def test_a_host_interface_in_docker_user_is_not_a_docker_network():
    rule = Rule("filter", "DOCKER-USER", 1, "-A DOCKER-USER -i eth0 -s 1.2.3.4/32 -j DROP", target="DROP")
    owner = owner_of("filter", "DOCKER-USER", rule)
    assert owner is not None and owner.kind == "docker"
    assert owner.name == "DOCKER-USER" and not owner.specific and "eth0" not in owner.evidence


def test_a_docker_bridge_in_docker_user_is_still_named():
    rule = Rule("filter", "DOCKER-USER", 1, "-A DOCKER-USER -i br-0123456789ab -j DROP", target="DROP")
    owner = owner_of("filter", "DOCKER-USER", rule)
    assert owner is not None and "br-0123456789ab" in owner.evidence


def test_a_network_in_a_comment_is_not_a_kubernetes_service():
    rule = Rule("filter", "INPUT", 1, '-A INPUT -m comment --comment "allow 10.0.0.0/8" -j KUBE-FIREWALL',
                target="KUBE-FIREWALL")
    owner = owner_of("filter", "INPUT", rule)
    assert owner is None or (owner.name != "10.0.0.0/8" and not owner.specific)
    rule = Rule("nat", "KUBE-POSTROUTING", 1,
                '-A KUBE-POSTROUTING -m comment --comment "snat pods 10.244.0.0/16" -j MASQUERADE',
                target="MASQUERADE")
    owner = owner_of("nat", "KUBE-POSTROUTING", rule)
    assert owner is None or (owner.name != "10.244.0.0/16" and not owner.specific)
    # a real ns/svc:port comment is still the owner
    rule = Rule("nat", "KUBE-SVC-X", 1, '-A KUBE-SVC-X -m comment --comment "default/web:http" -j KUBE-SEP-Y',
                target="KUBE-SEP-Y")
    assert owner_of("nat", "KUBE-SVC-X", rule).name == "default/web:http"


def test_an_ipv6_endpoint_keeps_its_port_apart():
    owner = owner_of("kube-proxy", "endpoint-ABCD1234-ns/svc/tcp/http__fd00:10::5/8080")
    assert owner is not None and owner.detail == "endpoint [fd00:10::5]:8080"
    owner = owner_of("kube-proxy", "endpoint-ABCD1234-ns/svc/tcp/http__10.0.0.5/8080")
    assert owner is not None and owner.detail == "endpoint 10.0.0.5:8080"


def test_a_namespace_starting_with_a_digit_is_still_a_service():
    """_is_network says no without ipaddress to texts not starting with a digit; those that do
    still go through it: a namespace may start with one."""
    rule = Rule("nat", "KUBE-SVC-X", 1, '-A KUBE-SVC-X -m comment --comment "3scale/apicast:http" -j KUBE-SEP-Y',
                target="KUBE-SEP-Y")
    assert owner_of("nat", "KUBE-SVC-X", rule).name == "3scale/apicast:http"
    rule = Rule("nat", "KUBE-SVC-X", 1, '-A KUBE-SVC-X -m comment --comment "10.1.2.0/24" -j KUBE-SEP-Y',
                target="KUBE-SEP-Y")
    owner = owner_of("nat", "KUBE-SVC-X", rule)
    assert owner is not None and owner.name == "KUBE-SVC-X"  # the hashed chain, not the network
