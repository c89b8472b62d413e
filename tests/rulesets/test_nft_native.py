"""Kernel round trip of the native nft fixtures: nft -f in a fresh namespace, every listing form read back.

``nft list ruleset``, ``-a``, ``-s``, ``-n`` and ``-j`` of the same ruleset must give the same
model; the rule keys of the text and JSON readings must be equal (the JSON is rendered the way
nft prints); and ``nft monitor trace`` must print rule text whose key is the listing's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ruletrace.lab.netns import Lab, run
from ruletrace.model import nft_rule_key
from ruletrace.rulesets import load_rulesets

pytestmark = pytest.mark.kernel
NATIVE = Path(__file__).parents[1] / "fixtures" / "nft_native"
EXAMPLES = Path(__file__).parents[2] / "src" / "ruletrace" / "examples"
# flowtable.nft needs nf_flow_table and an eth0, which the test kernel lacks: test_nft_text reads it
FIXTURES = sorted(p.name for p in NATIVE.glob("*.nft") if p.name != "flowtable.nft")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command"
    return None


@pytest.fixture
def ns():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with Lab() as lab:
        yield lab.host("nft").ns


def _listings(ns: str, tmp: Path) -> dict[str, Path]:
    out = {}
    for name, flags in (("plain", []), ("a", ["-a"]), ("s", ["-s"]), ("n", ["-n"]), ("j", ["-j"])):
        p = tmp / f"list-{name}"
        p.write_text(run(["nft", *flags, "list", "ruleset"], ns=ns).stdout)
        out[name] = p
    return out


def _shape(rulesets):
    """Everything the listing forms share: chains with hooks, priorities, policies, rule counts, sets."""
    out = {}
    for rs in rulesets:
        for t, chains in rs.tables.items():
            for c in chains.values():
                out[(rs.family, t, c.name)] = (c.hook, c.type, c.priority, c.policy, len(c.rules), c.reg)
        for (t, name), s in rs.sets.items():
            out[(rs.family, t, "@" + name)] = (s.kind, len(s.elements))
        for key in rs.objects:
            out[(rs.family, *key)] = "object"
    return out


def _rules(rulesets):
    return {(rs.family, t, c.name, r.num): r for rs in rulesets for t, chains in rs.tables.items()
            for c in chains.values() for r in c.rules}


@pytest.mark.parametrize("name", FIXTURES)
def test_every_listing_form_gives_the_same_model(ns, tmp_path, name):
    load = run(["nft", "-f", str(NATIVE / name)], ns=ns, check=False)
    assert load.returncode == 0, f"nft -f {name}: {load.stderr}"
    forms = {k: load_rulesets(str(p)) for k, p in _listings(ns, tmp_path).items()}
    source = load_rulesets(str(NATIVE / name))
    shape = _shape(forms["plain"])
    assert shape
    for k in ("a", "s", "n", "j"):
        assert _shape(forms[k]) == shape, k
    # the fixture file itself: same chains, hooks, priorities and rule counts (sets may be merged)
    assert {k: v for k, v in _shape(source).items() if "@" not in k[2]} == \
        {k: v for k, v in shape.items() if "@" not in k[2]}
    plain, with_a, js = _rules(forms["plain"]), _rules(forms["a"]), _rules(forms["j"])
    assert plain.keys() == with_a.keys() == js.keys() == _rules(forms["n"]).keys()
    for k, r in with_a.items():
        assert r.handle is not None and js[k].handle == r.handle, k
        assert plain[k].handle is None
        assert nft_rule_key(r.text) == nft_rule_key(plain[k].text), k
        assert nft_rule_key(js[k].text) == nft_rule_key(r.text), (js[k].text, r.text)
        assert (js[k].target, js[k].goto, js[k].vmap) == (r.target, r.goto, r.vmap), k
    for rs_a, rs_j in zip(forms["a"], forms["j"]):
        assert {k: sorted(s.elements) for k, s in rs_a.sets.items() if not s.timeout} == \
            {k: sorted(s.elements) for k, s in rs_j.sets.items() if not s.timeout}


TRACED = """table ip rtmark {
	chain pre {
		type filter hook prerouting priority raw - 5; policy accept;
		udp dport 9 meta nftrace set 1
	}
	chain out {
		type filter hook output priority raw - 5; policy accept;
		udp dport 9 meta nftrace set 1
	}
}
"""


SEND = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('10.77.0.1', 9))"


def test_trace_rule_text_keys_equal_the_listing_keys(ns, tmp_path):
    """One UDP datagram on lo through the fixtures' chains: each traced rule's key is a listing key."""
    for name in ("zones.nft", "router.nft", "layered.nft", "docker.nft"):
        run(["nft", "-f", str(NATIVE / name)], ns=ns)
    run(["nft", "-f", "-"], ns=ns, input=TRACED)
    run(["ip", "addr", "add", "10.77.0.1/8", "dev", "lo"], ns=ns)
    listing = tmp_path / "list.txt"
    listing.write_text(run(["nft", "-a", "list", "ruleset"], ns=ns).stdout)
    keys = {(rs.family, t, c.name, nft_rule_key(r.text)): r.handle for rs in load_rulesets(str(listing))
            for t, chains in rs.tables.items() for c in chains.values() for r in c.rules}
    out = tmp_path / "trace.txt"
    with out.open("w") as f:
        mon = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "-a", "monitor", "trace"], stdout=f,
                               stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)  # let the monitor subscribe before the packet (not an assertion)
            run([sys.executable, "-c", SEND], ns=ns)
            time.sleep(0.5)
        finally:
            mon.terminate()
            mon.wait(timeout=5)
    fam = {"ip": "ipv4", "ip6": "ipv6"}
    seen = 0
    for line in out.read_text().splitlines():
        words = line.split(" ", 7)  # trace id ID FAMILY TABLE CHAIN rule TEXT # handle N (verdict V)
        if len(words) < 8 or words[6] != "rule":
            continue
        text, _, _ = words[7].rpartition(" (verdict ")
        body, _, handle = text.rpartition(" # handle ")
        key = (fam.get(words[3], words[3]), words[4], words[5], nft_rule_key(body))
        assert keys.get(key) == int(handle), line
        seen += 1
    assert seen >= 4  # the nftrace rules and the filter rules the datagram went through


@pytest.mark.parametrize("example", ["docker-portmap", "filter-basics", "k8s-nodeport", "openstack-router", "ipv6"])
def test_example_iptables_nft_listing_text_equals_json(ns, tmp_path, example):
    """iptables-nft hosts: text and JSON of the same ruleset agree on every rule without xt placeholders."""
    d = EXAMPLES / example
    for f in sorted(d.glob("ruleset*-nft.rules")):
        run(["ip6tables-nft-restore" if "6-nft" in f.name else "iptables-nft-restore"], ns=ns,
            input=f.read_text())
    ls = _listings(ns, tmp_path)
    text, js = _rules(load_rulesets(str(ls["a"]))), _rules(load_rulesets(str(ls["j"])))
    assert text.keys() == js.keys()
    for k, r in text.items():
        assert js[k].handle == r.handle
        if "xt " not in js[k].text:
            assert nft_rule_key(js[k].text) == nft_rule_key(r.text), k
    # the bundled JSON of the example reads as one ruleset per family
    bundled = load_rulesets(str(d / "ruleset-nft.json"))
    assert len({rs.family for rs in bundled}) == len(bundled)
