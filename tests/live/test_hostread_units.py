"""simulate --netns/--live reading a host (live/hostread.py), without a kernel: canned listings.
Review findings: a family with policies but no rules was dropped; listings that could not be read
were walked as "no rules"."""

from __future__ import annotations

import json

import pytest

from ruletrace.errors import RuletraceError
from ruletrace.live import hostread as hr

NFT_IP_ONLY = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}},
                                       {"table": {"family": "ip", "name": "filter", "handle": 1}},
                                       {"table": {"family": "ip6", "name": "filter", "handle": 2}}]})
V4 = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
V6 = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"  # a policy, no rule


def canned(outputs: dict[str, tuple[str, str]]):
    def run(argv: list[str]) -> tuple[str, str]:
        if argv[0] == "ip":
            return "[]", ""
        return outputs.get(argv[0], ("", f"{argv[0]} not found"))
    return run


@pytest.fixture(autouse=True)
def _no_legacy(monkeypatch):
    monkeypatch.setattr(hr, "LEGACY", ())


def test_a_family_with_a_drop_policy_and_no_rules_is_kept(monkeypatch):
    monkeypatch.setattr(hr, "_run", canned({"nft": (NFT_IP_ONLY, ""), "iptables-nft-save": (V4, ""),
                                            "ip6tables-nft-save": (V6, "")}))
    h = hr.read_host(None)
    assert sorted(h.rulesets) == ["this host: ip6tables-nft-save", "this host: iptables-nft-save"]
    assert ":INPUT DROP" in h.rulesets["this host: ip6tables-nft-save"]


def test_rulesets_that_could_not_be_read_are_an_error_not_an_empty_host(monkeypatch):
    monkeypatch.setattr(hr, "_run", canned({"nft": ("", "nft not found"),
                                            "iptables-nft-save": ("", "iptables-nft-save: Permission denied (you must be root)"),
                                            "ip6tables-nft-save": ("", "ip6tables-nft-save: exit 1")}))
    with pytest.raises(RuletraceError) as e:
        hr.read_host(None)
    assert "cannot read the rulesets" in str(e.value) and "Permission denied" in str(e.value)


def test_a_failed_listing_beside_a_good_one_is_said(monkeypatch):
    monkeypatch.setattr(hr, "_run", canned({"nft": (NFT_IP_ONLY, ""), "iptables-nft-save": (V4, ""),
                                            "ip6tables-nft-save": ("", "ip6tables-nft-save: exit 1")}))
    h = hr.read_host(None)
    assert "this host: iptables-nft-save" in h.rulesets
    assert "not read: ip6tables-nft-save: exit 1" in h.notes


def test_listening_sockets_are_read_or_said_unread(monkeypatch):
    ss = "Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port\ntcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n"
    monkeypatch.setattr(hr, "_run", canned({"nft": (NFT_IP_ONLY, ""), "iptables-nft-save": (V4, ""), "ss": (ss, "")}))
    assert hr.read_host(None).sockets == ss
    monkeypatch.setattr(hr, "_run", canned({"nft": (NFT_IP_ONLY, ""), "iptables-nft-save": (V4, "")}))
    h = hr.read_host(None)
    assert h.sockets is None
    assert "listening sockets not read (ss not found): whether a socket takes a packet is not checked" in h.notes
