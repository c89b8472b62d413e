"""What really happened to each scenario's flows (socket results and receiver counters)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel

# flow -> (arrived, socket results seen by the sender): the seeds' stories, told by the kernel
EXPECTED = {
    "k8s-nodeport": {
        "syn-52000": (False, {"timeout"}),  # marked 0x8000 in nat, dropped by KUBE-FIREWALL
        "syn-80": (True, {"connected"}),  # DNAT after KUBE-SERVICES: never marked
        "ping": (True, {"reply"}),
    },
    "docker-portmap": {
        "tcp-10000": (True, {"connected"}),
        "udp-10001": (True, {"reply"}),
        "tcp-10002": (True, {"refused"}),  # reaches the host's TCP, which has no socket there
        "ctr-out": (True, {"reply"}),
        "ctr-ctr": (True, {"reply"}),
    },
    "openstack-router": {
        "vm-ping": (True, {"timeout"}),  # leaves without SNAT: the reply has no way back
        "vm-tcp": (True, {"timeout"}),
        "fip-ssh": (True, {"connected"}),
    },
    "filter-basics": {
        "ping": (True, {"reply"}),
        "tcp-22": (True, {"connected"}),
        "tcp-8080": (True, {"refused"}),
        "tcp-23": (False, {"refused"}),
        "tcp-25": (False, {"timeout"}),
        "tcp-3306": (False, {"timeout"}),
        "udp-53": (True, {"reply"}),
        "udp-54": (False, {"refused"}),
        "out-9000": (True, {"connected"}),
    },
    "ipv6": {
        "ping6": (True, {"reply"}),
        "tcp6-22": (True, {"connected"}),
        "tcp6-23": (False, {"refused"}),
        "tcp6-25": (False, {"timeout"}),
    },
}
ALL_PASSES = {"kernel-log", "nflog", "ulogd", "nft-trace"}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_flows_end_as_the_scenario_says(recordings, scenario):
    outcome = recordings.outcome(scenario)
    got = {f["name"]: f for f in outcome["flows"]}
    assert set(got) == set(EXPECTED[scenario])
    for name, (arrived, results) in EXPECTED[scenario].items():
        f = got[name]
        assert set(f["passes"]) == ALL_PASSES, name
        assert f["arrived"] is arrived, (name, f["passes"])
        assert {p["result"] for p in f["passes"].values()} == results, (name, f["passes"])


def test_receivers_see_the_nat_the_scenario_says(recordings):
    docker = {f["name"]: f for f in recordings.outcome("docker-portmap")["flows"]}
    for p in docker["tcp-10000"]["passes"].values():
        assert p["peer_seen"] == "192.168.50.2"  # DNAT only: the container sees the client
    for p in docker["ctr-out"]["passes"].values():
        assert p["peer_seen"] == "192.168.50.1"  # MASQUERADE to the host's address
    router = {f["name"]: f for f in recordings.outcome("openstack-router")["flows"]}
    for p in router["fip-ssh"]["passes"].values():
        assert p["peer_seen"] == "192.168.0.19"
    k8s = {f["name"]: f for f in recordings.outcome("k8s-nodeport")["flows"]}
    for p in k8s["syn-80"]["passes"].values():
        assert p["peer_seen"] == "172.28.129.2"  # accepted by the 52000 listener after DNAT


def test_recording_writes_every_file(recordings):
    d = recordings("filter-basics")
    for name in ("ruleset.rules", "kernel.log", "nflog.pcap", "ulogd.json", "xtables-monitor.txt",
                 "nft-monitor.txt", "ruleset-nft.rules", "ruleset-nft.json", "outcome.json", "README.md"):
        assert (d / name).stat().st_size > 0, name
    assert "-j TRACE" in (d / "ruleset.rules").read_text()
    assert "Versions" in (d / "README.md").read_text()
