"""`xtables-monitor --trace` on hosts with native nf_tables tables (issue 13), recorded by the lab
(tests/fixtures/xtables_monitor/native-*, README there). Expected values come from the kernel:
`nft -a monitor trace` of the same traffic (positions through `nft -j`), and each flow's outcome.
The same checks run on fresh recordings of every native scenario in tests/kernel/test_nft_native_lab.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ruletrace.pipeline import explain_files
from ruletrace.sources.xtables_monitor import nh_bytes, packet_fields
from tests.nft.test_native_captures import check_capture

D = Path(__file__).resolve().parents[1] / "fixtures" / "xtables_monitor"


@pytest.mark.parametrize("sc", ["native-hooks", "native-layered"])
@pytest.mark.parametrize("form", ["ruleset-a.nft", "ruleset.json"])
def test_native_host_capture_explains_as_nft_monitor(sc, form):
    d = D / sc
    check_capture(d, [str(d / form)], str(d / "xtables-monitor.txt"))


def test_bridge_frame_passed_up_is_one_packet_with_decoded_header():
    d = D / "native-hooks"
    result = explain_files([str(d / "ruleset-a.nft")], [str(d / "xtables-monitor.txt")])
    first = result.explanations[0]
    fams = [s.event.family for s in first.steps]
    assert fams[:3] == ["netdev"] * 3 and "bridge" in fams and "ipv4" in fams  # one packet, three families
    f = first.steps[0].event.fields
    assert (f["SRC"], f["DST"], f["ID"], f["LEN"], f["PROTO"]) == ("10.79.0.1", "10.79.0.2", "43102", "60", "TCP")


def test_sign_extended_network_header():
    assert nh_bytes("4500003cffffffa85e40") == bytes.fromhex("4500003ca85e40")
    assert nh_bytes("ffffffffffffff80") == b"\xff\x80"
    f = packet_fields("IN=eth0 MACPROTO=0800 NH=4500003cffffffa85e400040067dffffffbd0a4f00010a4f0002")
    assert "NH" not in f and (f["SRC"], f["TTL"], f["ID"]) == ("10.79.0.1", "64", "43102")


def test_cut_rule_line_is_said_and_the_packet_stays_unknown():
    d = D / "native-layered"
    result = explain_files([str(d / "ruleset-a.nft")], [str(d / "xtables-monitor.txt")])
    (w,) = [w for w in result.warnings if "xtables-monitor printed only" in w]
    assert "'-4 -t early'" in w and "early:in rule handle 5" in w and "nft monitor trace" in w
    (e,) = result.explanations
    assert e.fate.value == "unknown" and e.steps[-1].rule is not None and e.steps[-1].num == 1
