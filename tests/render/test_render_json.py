"""JSON output: keys and values for the seed 003 packets, the document, dumps, JSON Lines, the schema."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from render_cases import SYN_52000, build, seed003_drop, seed003_port80, unknown_fate

import ruletrace
from ruletrace.analyze.summary import Summary
from ruletrace.model import Explanation
from ruletrace.render import json as rjson
from ruletrace.render.json import SCHEMA_VERSION, document, dumps, to_json, write_document, write_jsonl

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "json-schema.json"

PACKET_KEYS = [
    "id", "proto", "src", "dst", "sport", "dport", "family", "in", "out", "fields", "steps", "fate",
    "verdict", "last_seen", "nat", "marks", "cause", "warnings", "notes", "owner", "owners", "tables",
]  # fmt: skip
STEP_KEYS = ["table", "chain", "kind", "num", "depth", "action"]  # always there, then the ones that apply
STEP_OPTIONAL = ["rule", "policy", "returned_to", "warning", "note", "fields"]


def _rules(j: dict) -> dict[str, str]:
    return j["tables"]["rules"]


def test_packet_header_values() -> None:
    j = to_json(seed003_drop())
    assert list(j) == PACKET_KEYS
    assert SCHEMA_VERSION == 2
    assert (j["id"], j["proto"], j["src"], j["dst"]) == (1, "TCP", "172.28.129.2", "172.28.129.4")
    assert (j["sport"], j["dport"]) == (55694, 52000)  # ints, as first seen
    assert (j["family"], j["in"], j["out"]) == ("ipv4", "eth0", None)  # "OUT=" (empty) is null
    assert j["fields"] == SYN_52000  # the packet's fields once, as first seen
    assert j["fate"] == "dropped"
    assert j["last_seen"] is None
    assert j["warnings"] == [] and j["notes"] == [] and j["nat"] == []


def test_steps() -> None:
    j = to_json(seed003_drop())
    steps = j["steps"]
    assert len(steps) == 25
    for s in steps:
        keys = list(s)
        assert keys[:6] == STEP_KEYS and keys[-2:] == ["origin", "ts"]
        assert keys[6:-2] == [k for k in STEP_OPTIONAL if k in s]  # in this order, each only when it applies
    # the first step: no rule, no changed fields (they are the packet's)
    assert steps[0] == {"table": "raw", "chain": "PREROUTING", "kind": "policy", "num": 3, "depth": 0,
                        "action": "accept", "policy": "ACCEPT", "origin": "messages:1", "ts": 1704115396.0}
    s13 = steps[12]
    assert (s13["table"], s13["chain"], s13["kind"], s13["num"], s13["depth"]) == ("nat", "KUBE-NODEPORTS", "rule", 16, 2)
    assert _rules(j)[s13["rule"]] == (
        '-A KUBE-NODEPORTS -p tcp -m comment --comment "ootob9/ingress-nginx:http" -m tcp --dport 52000'
        " -j KUBE-XLB-VETHOZVMBYUVK3NB"
    )
    assert s13["rule"] == rjson.rule_id(_rules(j)[s13["rule"]]) and len(s13["rule"]) == 16
    assert "policy" not in s13 and "returned_to" not in s13
    ret = steps[15]
    assert (ret["kind"], ret["num"], ret["returned_to"], ret["depth"]) == ("return", 2, "KUBE-XLB-VETHOZVMBYUVK3NB", 4)
    assert "rule" not in ret
    # each step carries only the fields that changed: the mark shows up after KUBE-MARK-DROP set it
    assert [k for k, s in enumerate(steps) if "fields" in s] == [15]
    assert ret["fields"] == {"MARK": "0x8000"}
    assert steps[24]["origin"] == "messages:25"
    assert sorted(_rules(j)) == sorted({s["rule"] for s in steps if "rule" in s} | {c["rule"] for c in j["cause"]})


def test_fields_removed_and_changed() -> None:
    """A field a step no longer shows is null in its ``fields``; a changed one has its new value."""
    rows = [("raw:PREROUTING:policy:1", 0, "ACCEPT", "accept", {}),
            ("nat:PREROUTING:policy:1", 0, "ACCEPT", "accept", {"MARK": "0x1"}),
            ("filter:INPUT:policy:1", 0, "ACCEPT", "accept", {"DPT": "80"})]
    packet, steps = build("x", rows, {"SRC": "10.0.0.1", "DPT": "53"}, 3)
    j = to_json(Explanation(packet, steps=steps))
    assert j["fields"] == {"SRC": "10.0.0.1", "DPT": "53"}
    assert [s.get("fields") for s in j["steps"]] == [None, {"MARK": "0x1"}, {"DPT": "80", "MARK": None}]


def test_verdict_marks_cause() -> None:
    j = to_json(seed003_drop())
    fw = (
        '-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets"'
        " -m mark --mark 0x8000/0x8000 -j DROP"
    )
    assert j["verdict"] == {
        "action": "drop",
        "table": "filter",
        "chain": "KUBE-FIREWALL",
        "num": 1,
        "rule": rjson.rule_id(fw),
        "reason": "mark 0x8000/0x8000 matched",
    }
    assert _rules(j)[j["verdict"]["rule"]] == fw
    assert j["marks"] == [
        {
            "what": "MARK",
            "old": None,
            "new": "0x8000",
            "table": "nat",
            "chain": "KUBE-MARK-DROP",
            "num": 1,
            "rule": rjson.rule_id("-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000"),
            "note": "",
            "step": 14,
        }
    ]
    assert [(c["role"], c["table"], c["chain"], c["num"], c["step"]) for c in j["cause"]] == [
        ("decided", "filter", "KUBE-FIREWALL", 1, 24),
        ("mark set", "nat", "KUBE-MARK-DROP", 1, 14),
        ("called from", "nat", "KUBE-XLB-VETHOZVMBYUVK3NB", 4, 13),
        ("called from", "nat", "KUBE-NODEPORTS", 16, 12),
    ]
    assert _rules(j)[j["cause"][0]["rule"]] == fw
    assert j["cause"][3]["text"] == "ootob9/ingress-nginx:http, dport 52000"


def test_nat_policy_verdict_warnings() -> None:
    j = to_json(seed003_port80())
    assert j["dport"] == 80  # as first seen, before the DNAT
    assert [s.get("fields") for s in j["steps"]] == [None, None, {"DPT": "52000"}, None, None, None, None]
    assert j["nat"] == [
        {
            "what": "DST",
            "old": "172.28.129.4:80",
            "new": "172.28.129.4:52000",
            "table": "nat",
            "chain": "PREROUTING",
            "num": 3,
            "rule": rjson.rule_id(
                "-A PREROUTING -d 172.28.129.4/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 172.28.129.4:52000"),
            "note": "",
            "step": 1,
        }
    ]
    assert j["verdict"] == {
        "action": "accept",
        "table": "filter",
        "chain": "INPUT",
        "num": 2,
        "rule": None,
        "reason": "no filter rule dropped it",
    }
    assert j["steps"][4]["warning"] == "filter:KUBE-FIREWALL has 1 rule in the ruleset"
    assert j["warnings"] == ["ruleset looks older than the log"]
    assert j["notes"] == ["only the first packet of a connection goes through nat"]


def test_unknown_fate() -> None:
    j = to_json(unknown_fate())
    assert (j["fate"], j["verdict"], j["last_seen"]) == ("unknown", None, "nat:POSTROUTING")
    assert (j["proto"], j["sport"], j["dport"], j["in"], j["out"]) == ("UDP", 5353, 53, None, "eth1")


def _one(fields: dict[str, str], family: str | None = None) -> Explanation:
    packet, steps = build("x", [("filter:INPUT:policy:1", 0, "ACCEPT", "accept", {})], fields, 9)
    packet.events[0].family = family
    return Explanation(packet, steps=steps)


def test_ports_and_family_edge_cases() -> None:
    j = to_json(_one({"SRC": "2001:db8::1", "DST": "2001:db8::2", "PROTO": "ICMPv6", "SPT": "²", "DPT": "x"}))
    assert (j["sport"], j["dport"], j["family"]) == (None, None, "ipv6")
    assert to_json(_one({"SRC": "10.0.0.1"}))["family"] == "ipv4"
    assert to_json(_one({"SRC": "10.0.0.1"}, family="bridge"))["family"] == "bridge"  # the source's word wins
    empty = to_json(Explanation(build("x", [], {}, 4)[0]))
    assert (empty["proto"], empty["src"], empty["sport"], empty["family"], empty["steps"]) == (None, None, None, None, [])


def _document() -> dict:
    expls = [seed003_drop(), seed003_port80(), unknown_fate()]
    summary = Summary()
    for e in expls:
        summary.add(e)
    summary.add_skipped(2)
    return document(
        expls,
        summary,
        warnings=["2 lines skipped (not TRACE lines)"],
        sources=["rules.v4", {"path": "messages", "format": "kernel-log", "role": "trace"}],
    )


def test_document() -> None:
    d = _document()
    assert list(d) == ["schema", "tool", "version", "packets", "tables", "sources", "summary", "warnings"]
    assert (d["schema"], d["tool"], d["version"]) == (2, "ruletrace", ruletrace.__version__)
    # every rule text and owner once, in the document's tables; the packets name them by id
    standalone = [to_json(e) for e in (seed003_drop(), seed003_port80(), unknown_fate())]
    assert [dict(p, tables=None) for p in standalone] == [dict(p, tables=None) for p in d["packets"]]
    assert d["tables"]["rules"] == {k: v for p in standalone for k, v in p["tables"]["rules"].items()}
    assert d["tables"]["owners"] == {k: v for p in standalone for k, v in p["tables"]["owners"].items()}
    assert d["sources"] == [
        {"path": "rules.v4", "format": None, "role": None},
        {"path": "messages", "format": "kernel-log", "role": "trace"},
    ]
    assert [p["id"] for p in d["packets"]] == [1, 2, 3]
    assert d["summary"]["packets"] == 3 and d["summary"]["skipped_lines"] == 2
    assert d["warnings"] == ["2 lines skipped (not TRACE lines)"]
    assert document([])["summary"] is None
    assert document([], {"packets": 0})["summary"] == {"packets": 0}


@pytest.mark.parametrize("indent", [False, True])
def test_dumps_same_with_and_without_orjson(monkeypatch, indent: bool) -> None:
    d = _document()
    d["packets"][0]["notes"] = ["ünïcode \x1b[31m \u2028 ok"]
    fast = dumps(d, indent=indent)
    monkeypatch.setattr(rjson, "_orjson", None)
    slow = dumps(d, indent=indent)
    assert slow == fast
    assert json.loads(slow) == d
    assert "\\u001b" in slow and "ünïcode" in slow  # control characters escaped, the rest kept as UTF-8
    assert ("\n" in slow) is indent


def test_write_jsonl(monkeypatch) -> None:
    expls = [seed003_drop(), unknown_fate()]
    flushes = []
    buf = io.StringIO()
    monkeypatch.setattr(buf, "flush", lambda: flushes.append(1))
    assert write_jsonl(iter(expls), buf, flush=True) == 2
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert buf.getvalue().endswith("\n")
    # a table line before each packet that is the first to use a rule text or owner
    assert [sorted(x) for x in lines] == [["tables"], sorted(PACKET_KEYS[:-1]), ["tables"], sorted(PACKET_KEYS[:-1])]
    for table_line, packet, e in ((lines[0], lines[1], expls[0]), (lines[2], lines[3], expls[1])):
        alone = to_json(e)
        assert packet == {k: v for k, v in alone.items() if k != "tables"}
        assert table_line["tables"] == alone["tables"]  # (the two packets share no rule)
    assert len(flushes) == 2
    buf = io.StringIO()
    write_jsonl([seed003_drop(), seed003_drop()], buf)
    assert len(buf.getvalue().splitlines()) == 3  # the second packet's rules are known already


class _SourceInfo:  # what the pipeline keeps per input: attributes, no role
    def __init__(self, path: str, format: str) -> None:
        self.path, self.format = path, format


@pytest.mark.parametrize("packets", [True, False])
def test_write_document_streams_the_same_document(packets: bool) -> None:
    expls = [seed003_drop(), seed003_port80(), unknown_fate()]
    sources: list = []
    warnings: list[str] = []
    summary = Summary()

    def stream():  # sources, warnings and counts fill up while the packets stream, as in a real run
        sources.append("rules.v4")
        for e in expls:
            yield summary.add(e)
        sources.append(_SourceInfo("messages", "kernel-log"))
        warnings.append("2 lines skipped")

    buf = io.StringIO()
    n = write_document(stream(), buf, summary=summary, warnings=warnings, sources=sources, packets=packets)
    assert n == 3
    text = buf.getvalue()
    expected = document(expls if packets else [], summary, warnings, sources)
    assert json.loads(text) == expected
    assert list(json.loads(text)) == list(expected)
    assert expected["sources"][1] == {"path": "messages", "format": "kernel-log", "role": None}
    assert text.endswith("\n") and text.count("\n") == (5 if packets else 1)  # one line per packet
    assert json.loads(text)["summary"]["packets"] == 3


def test_write_document_without_packets() -> None:
    buf = io.StringIO()
    assert write_document([], buf) == 0
    assert json.loads(buf.getvalue()) == document([])


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema, schema


def test_output_validates_against_the_json_schema() -> None:
    jsonschema, schema = _validator()
    jsonschema.Draft202012Validator(schema).validate(json.loads(dumps(_document())))
    packet_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/packet"}
    for e in (seed003_drop(), seed003_port80(), unknown_fate()):
        jsonschema.Draft202012Validator(packet_schema).validate(json.loads(dumps(to_json(e))))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda p: p.update(extra=1),  # an undocumented key
        lambda p: p.update(sport="55694"),  # a port as a string
        lambda p: p["steps"][0].update(kind="jump"),
        lambda p: p.update(fate="lost"),
        lambda p: p.pop("fields"),
        lambda p: p["steps"][0].update(rule=None),  # no rule: the key is left out, never null
        lambda p: p["steps"][12].update(rule="KUBE-NODEPORTS"),  # a rule is an id, not a text
        lambda p: p["steps"][15].update(fields={"MARK": 1}),
    ],
    ids=["extra-key", "port-string", "bad-kind", "bad-fate", "missing-fields", "null-rule", "rule-text",
         "field-number"],
)
def test_json_schema_rejects_what_it_does_not_document(breakage) -> None:
    jsonschema, schema = _validator()
    packet_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/packet"}
    p = to_json(seed003_drop())
    breakage(p)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(packet_schema).validate(p)
