"""`ruletrace explain --explain-miss [TABLE:]CHAIN`: each rule of CHAIN checked against a traced packet's logged fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ruletrace.cli import main
from ruletrace.cli.status import ExitStatus

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "ruletrace" / "examples"

V6_RULES = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p ipv6-icmp -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -s fd00:97::/64 -p tcp -m tcp --dport 8443 -j ACCEPT
COMMIT
"""
V6_LOG = ("[  100.000001] TRACE: filter:INPUT:policy:6 IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd "
          "SRC=fd00:0098:0000:0000:0000:0000:0000:0002 DST=fd00:0010:0000:0000:0000:0000:0000:0001 LEN=80 TC=0 "
          "HOPLIMIT=64 FLOWLBL=123456 PROTO=TCP SPT=40000 DPT=8443 WINDOW=64800 RES=0x00 SYN URGP=0\n")

NFT_RULES = """table inet hostfw {
	chain input {
		type filter hook input priority filter; policy drop;
		iifname "lo" accept
		ct state established,related accept
		tcp dport 8080 accept
		ip saddr 10.9.0.0/16 tcp dport 22 accept
	}
}
"""
NFT_LOG = ("[  1.000002] TRACE: hostfw:input:{kind}:{num} IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "
           "SRC=192.168.50.2 DST=10.1.0.1 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=4242 DF PROTO=TCP SPT=40000 "
           "DPT={dport} WINDOW=64240 RES=0x00 SYN URGP=0\n")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def misses(capsys, *args: str) -> list[list[dict]]:
    code, out, err = run(capsys, "explain", *args, "--json")
    assert code == ExitStatus.OK, err
    return [p["explain_miss"] for p in json.loads(out)["packets"]]


def by_num(rows: list[dict]) -> dict[int, tuple[str, str]]:
    return {r["num"]: (r["result"], r["reason"]) for r in rows}


def test_ipv6_policy_drop_names_the_failed_condition_of_each_rule(tmp_path, capsys):
    (tmp_path / "r6").write_text(V6_RULES)
    (tmp_path / "k.log").write_text(V6_LOG)
    (rows,) = misses(capsys, "-r", str(tmp_path / "r6"), str(tmp_path / "k.log"), "--explain-miss", "INPUT")
    got = by_num(rows)
    assert got[5] == ("failed", "would have accepted it but `-s fd00:97::/64` did not match: "
                                "the packet's source is fd00:98::2")
    assert got[1] == ("failed", "would have accepted it but `-i lo` did not match: the packet's input interface is eth0")
    # the trace shows rule 2 did not match; only its conntrack condition, which the log cannot show, can be why
    assert got[2] == ("failed", "did not match (the trace shows it): `-m conntrack --ctstate RELATED,ESTABLISHED`, "
                                "which the log cannot show, did not hold")
    assert got[3][1].endswith("`-p ipv6-icmp` did not match: the packet's protocol is TCP")
    assert got[4][1].endswith("`--dport 22` did not match: the packet's destination port is 8443")
    assert {r["table"] for r in rows} == {"filter"} and [r["num"] for r in rows] == [1, 2, 3, 4, 5]


def test_ipv4_matched_rule_and_the_rules_after_it(capsys):
    ex = EXAMPLES / "filter-basics"
    per_packet = misses(capsys, "-r", str(ex / "ruleset.rules"), str(ex / "kernel.log"), "--match", "dport=22",
                        "--explain-miss", "filter:SERVICES")
    assert per_packet
    got = by_num(per_packet[0])
    assert got[1] == ("matched", "matched: the trace shows the packet took this rule")
    assert all(res == "not reached" for n, (res, _) in got.items() if n > 1)


def test_a_condition_the_log_cannot_show_is_unknown_never_guessed(capsys):
    # the echo reply is sent: it never reached INPUT; INPUT rule 2 (conntrack) cannot be checked from its fields
    ex = EXAMPLES / "filter-basics"
    code, out, _ = run(capsys, "explain", "-r", str(ex / "ruleset.rules"), str(ex / "kernel.log"), "--json",
                       "--explain-miss", "INPUT")
    assert code == ExitStatus.OK
    sent = [p for p in json.loads(out)["packets"] if p["fate"] == "sent"]
    assert sent
    got = by_num(sent[0]["explain_miss"])
    assert got[2] == ("unknown", "unknown: the log cannot show whether `-m conntrack --ctstate RELATED,ESTABLISHED` "
                                 "held (every condition it shows did)")
    assert got[1] == ("failed", "would have accepted it but `-i lo` did not match: the packet has no input interface")


def test_native_nft_rules(tmp_path, capsys):
    (tmp_path / "fw.nft").write_text(NFT_RULES)
    (tmp_path / "k.log").write_text(NFT_LOG.format(kind="policy", num=5, dport=22)
                                    + NFT_LOG.format(kind="rule", num=3, dport=8080)
                                    .replace("40000", "40001").replace("ID=4242", "ID=4243").replace("1.000002", "2.000002"))
    drop, accept = misses(capsys, "-r", str(tmp_path / "fw.nft"), str(tmp_path / "k.log"),
                          "--explain-miss", "hostfw:input")
    got = by_num(drop)
    assert got[4] == ("failed", "would have accepted it but `ip saddr 10.9.0.0/16` did not match: "
                                "the packet's source is 192.168.50.2")
    assert got[1] == ("failed", "would have accepted it but `iifname \"lo\"` did not match: "
                                "the packet's input interface is eth0")
    assert got[3] == ("failed", "would have accepted it but `tcp dport 8080` did not match: "
                                "the packet's destination port is 22")
    got = by_num(accept)
    assert got[3][0] == "matched" and got[4][0] == "not reached"


def test_tree_shows_a_block_after_the_packet(tmp_path, capsys):
    (tmp_path / "r6").write_text(V6_RULES)
    (tmp_path / "k.log").write_text(V6_LOG)
    code, out, _ = run(capsys, "explain", "-r", str(tmp_path / "r6"), str(tmp_path / "k.log"), "--no-color",
                       "--width", "200", "--explain-miss", "INPUT")
    assert code == ExitStatus.OK
    block = out[out.index("rules of filter:INPUT, checked against the packet's logged fields"):]
    assert "filter:INPUT:5  -s fd00:97::/64 -p tcp -m tcp --dport 8443 -j ACCEPT" in block
    assert "the packet's source is fd00:98::2" in block
    assert out.index("why") < out.index("rules of filter:INPUT")


@pytest.mark.parametrize("args, message", [
    (["--explain-miss", "NOPE"], "--explain-miss: no chain NOPE in table filter of the given ruleset(s)"),
    (["--explain-miss", "nat:INPUT"], "--explain-miss: no chain INPUT in table nat of the given ruleset(s)"),
])
def test_a_chain_not_in_the_ruleset_is_one_clear_error(capsys, args, message):
    ex = EXAMPLES / "filter-basics"
    code, out, err = run(capsys, "explain", "-r", str(ex / "ruleset.rules"), str(ex / "kernel.log"), *args)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"ruletrace: error: {message}"]


def test_no_ruleset_is_one_clear_error(capsys):
    code, out, err = run(capsys, "explain", str(EXAMPLES / "filter-basics" / "kernel.log"), "--explain-miss", "INPUT")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["ruletrace: error: --explain-miss needs the ruleset: give -r FILE"]


def test_json_validates_against_the_published_schema(tmp_path, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "docs" / "json-schema.json").read_text())
    ex = EXAMPLES / "ipv6"
    code, out, _ = run(capsys, "explain", "-r", str(ex / "ruleset6.rules"), str(ex / "kernel.log"), "--json",
                       "--explain-miss", "INPUT")
    assert code == ExitStatus.OK
    doc = json.loads(out)
    assert all("explain_miss" in p for p in doc["packets"])
    jsonschema.validate(doc, schema)
    from ruletrace.render.json import from_json, to_json

    for p in doc["packets"]:  # read back to the model (report --from-json, diff) and written again alike
        assert to_json(from_json(p, doc["tables"]))["explain_miss"] == p["explain_miss"]
    code, out, _ = run(capsys, "explain", "-r", str(ex / "ruleset6.rules"), str(ex / "kernel.log"), "--json")
    assert all("explain_miss" not in p for p in json.loads(out)["packets"])  # additive: only with the option
