"""Kernel facts in the captures themselves, read by the lab's independent oracle."""

from __future__ import annotations

import pytest

from ruletrace.lab import oracle

pytestmark = pytest.mark.kernel

LEGACY = ("kernel.log", "nflog.pcap", "ulogd.json")
NFT = ("nft-monitor.txt", "xtables-monitor.txt")


def _flow_packet(packets, outcome, flow, pass_name):
    """The first captured packet of a flow (by source port, or ICMP id for echoes)."""
    f = next(x for x in outcome["flows"] if x["name"] == flow)
    p = f["passes"][pass_name]
    for pkt in packets:
        if p["sport"] is not None and pkt.first.get("SPT") == str(p["sport"]):
            return pkt
        if p["icmp_id"] is not None and pkt.first.get("ICMPID") == str(p["icmp_id"]):
            return pkt
    raise AssertionError(f"no packet of {flow} in the capture")


def _tags(pkt):
    return [":".join(map(str, t)) for t in pkt.tags]


@pytest.mark.parametrize("capture,pass_name", [("kernel.log", "kernel-log"), ("nflog.pcap", "nflog"),
                                               ("ulogd.json", "ulogd")])
def test_k8s_nodeport_mark_drop_path(recordings, capture, pass_name):
    d, outcome = recordings("k8s-nodeport"), recordings.outcome("k8s-nodeport")
    packets = oracle.read(d / capture)
    syn = _tags(_flow_packet(packets, outcome, "syn-52000", pass_name))
    assert "nat:KUBE-NODEPORTS:rule:16" in syn
    assert syn.index("nat:KUBE-XLB-VETHOZVMBYUVK3NB:rule:4") < syn.index("nat:KUBE-MARK-DROP:rule:1")
    assert syn[-1] == "filter:KUBE-FIREWALL:rule:1"
    ok = _tags(_flow_packet(packets, outcome, "syn-80", pass_name))
    assert ok.index("nat:KUBE-SERVICES:return:4") < ok.index("nat:PREROUTING:rule:2")  # DNAT after
    assert not any("KUBE-MARK-DROP" in t for t in ok)
    assert ok[-1] == "nat:INPUT:policy:1"


def test_k8s_mark_shows_in_kernel_log(recordings):
    lines = (recordings("k8s-nodeport") / "kernel.log").read_text().splitlines()
    marked = [x for x in lines if "DPT=52000" in x and "MARK=0x8000" in x]
    assert marked and all("KUBE-MARK-DROP:rule:1" not in x for x in marked)  # shown after the rule ran


@pytest.mark.parametrize("capture,pass_name", [("kernel.log", "kernel-log"), ("nflog.pcap", "nflog"),
                                               ("ulogd.json", "ulogd")])
def test_openstack_postrouting_accept_skips_snat(recordings, capture, pass_name):
    d, outcome = recordings("openstack-router"), recordings.outcome("openstack-router")
    packets = oracle.read(d / capture)
    for flow in ("vm-ping", "vm-tcp"):
        tags = _tags(_flow_packet(packets, outcome, flow, pass_name))
        assert tags[-1] == "nat:quantum-l3-agent-POSTROUTING:rule:1"
        assert not any("snat" in t for t in tags)


def test_docker_bridged_packets_carry_physin(recordings):
    lines = (recordings("docker-portmap") / "kernel.log").read_text().splitlines()
    bridged = [x for x in lines if "SRC=172.17.0.2 DST=172.17.0.3" in x]
    assert bridged and all("PHYSIN=" in x for x in bridged)
    assert any("PHYSOUT=" in x for x in bridged if "filter:FORWARD" in x)


@pytest.mark.parametrize("scenario", ["docker-portmap", "filter-basics", "k8s-nodeport"])
def test_established_replies_skip_nat(recordings, scenario):
    d = recordings(scenario)
    packets = oracle.kernel_log(d / "kernel.log")
    replies = [p for p in packets if p.first.get("SPT") in ("80", "22", "52000", "5353")]
    assert replies
    for p in replies:
        assert not any(t[0] == "nat" for t in p.tags), _tags(p)


@pytest.mark.parametrize("scenario", ["k8s-nodeport", "docker-portmap", "openstack-router", "filter-basics",
                                      "ipv6"])
def test_every_capture_has_every_flows_first_packet(recordings, scenario):
    d, outcome = recordings(scenario), recordings.outcome(scenario)
    for capture, pass_name in (("kernel.log", "kernel-log"), ("nflog.pcap", "nflog"), ("ulogd.json", "ulogd")):
        packets = oracle.read(d / capture)
        for f in outcome["flows"]:
            _flow_packet(packets, outcome, f["name"], pass_name)
    assert len(oracle.read(d / "nft-monitor.txt")) >= len(outcome["flows"])


def test_unavailable_formats_are_recorded_with_a_reason(recordings):
    missing = recordings.outcome("ipv6")["missing"]
    assert "match extension not found" in missing["xtables-monitor.txt"]
    assert "nftrace" in missing["kernel.log/nflog.pcap/ulogd.json (nft backend)"]
