"""Schema 2 against schema 1: documents and JSON Lines that ruletrace 0.1.0 wrote with schema 1
(tests/fixtures/json_v1, made by the code before schema 2) still read to the same model; each
version validates against its own JSON Schema; schema 2 expanded (``render.json.expand``, and the
jq one-liner of docs/json-schema.md) gives the schema 1 packet back, key for key."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ruletrace.cli.options import example_paths
from ruletrace.pipeline import explain_files
from ruletrace.render.json import READS, SCHEMA_VERSION, document, dumps, expand, to_json, write_jsonl
from ruletrace.render.json_read import JsonPackets, is_ruletrace_json

ROOT = Path(__file__).resolve().parents[2]
V1 = ROOT / "tests" / "fixtures" / "json_v1"
DOCS = ROOT / "docs"
# the fixtures name the example files relative to the package (ruletrace/examples/…)
PKG = str(ROOT / "src") + "/"


def _fresh(name: str) -> list:
    rules, logs = example_paths(name)
    return explain_files(rules, logs).explanations


def _local(obj):
    """A JSON value with this checkout's example paths written as the fixtures write them."""
    return json.loads(json.dumps(obj).replace(PKG, ""))


def _validator(name: str):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema), schema


def test_versions() -> None:
    assert SCHEMA_VERSION == 2 and READS == (1, 2)


@pytest.mark.parametrize("name,fixture", [("k8s-nodeport", "k8s-nodeport.json"), ("ipv6", "ipv6.jsonl")])
def test_schema_1_files_still_read(name: str, fixture: str) -> None:
    path = V1 / fixture
    assert is_ruletrace_json(str(path))
    old = [_local(to_json(e)) for e in JsonPackets(str(path))]
    new = [_local(to_json(e)) for e in _fresh(name)]
    assert old == new and len(old) > 1


def test_schema_1_fixtures_validate_against_the_schema_1_file() -> None:
    v, schema = _validator("json-schema-v1.json")
    doc = json.loads((V1 / "k8s-nodeport.json").read_text())
    v.validate(doc)
    packet = type(v)({"$defs": schema["$defs"], "$ref": "#/$defs/packet"})
    for line in (V1 / "ipv6.jsonl").read_text().splitlines():
        packet.validate(json.loads(line))
    v2, _ = _validator("json-schema.json")
    with pytest.raises(pytest.importorskip("jsonschema").ValidationError):
        v2.validate(doc)  # and not against schema 2: the versions differ


def test_schema_2_output_validates_every_form() -> None:
    v, schema = _validator("json-schema.json")
    expls = _fresh("k8s-nodeport") + _fresh("docker-portmap")
    v.validate(json.loads(dumps(document(expls))))
    packet = type(v)({"$defs": schema["$defs"], "$ref": "#/$defs/packet"})
    line = type(v)({"$defs": schema["$defs"], "anyOf": [{"$ref": "#/$defs/packet"}, {"$ref": "#/$defs/table_line"}]})
    for e in expls:
        packet.validate(json.loads(dumps(to_json(e))))
    buf = io.StringIO()
    write_jsonl(expls, buf)
    for text in buf.getvalue().splitlines():
        line.validate(json.loads(text))


def test_expand_gives_the_schema_1_packet_back() -> None:
    """Written by schema 1 (the fixture) and by schema 2 then expanded: the same objects."""
    old = json.loads((V1 / "k8s-nodeport.json").read_text())["packets"]
    doc = document(_fresh("k8s-nodeport"))
    assert [_local(expand(p, doc["tables"])) for p in doc["packets"]] == old
    assert [list(expand(p, doc["tables"])) for p in doc["packets"]] == [list(p) for p in old]
    assert expand(old[0]) == old[0]  # schema 1 is left as it is
    # smaller: each rule text once, each step the fields that changed
    assert len(dumps(_local(doc))) * 2 < len((V1 / "k8s-nodeport.json").read_text())


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_the_documented_jq_one_liner_expands_the_steps(tmp_path) -> None:
    text = (DOCS / "json-schema.md").read_text()
    start = text.index("jq '.tables as $t")
    program = text[start + 4:text.index("'", start + 4)]
    doc = document(_fresh("k8s-nodeport"))
    f = tmp_path / "doc.json"
    f.write_text(dumps(doc))
    out = subprocess.run(["jq", "-c", program, str(f)], capture_output=True, text=True, check=True).stdout
    got = [json.loads(line) for line in out.splitlines()]
    old = json.loads((V1 / "k8s-nodeport.json").read_text())["packets"]
    assert len(got) == len(old)
    for g, o in zip(got, old):  # each step with all its fields and its rule text, as schema 1 wrote it
        assert [_local({k: s.get(k) for k in o["steps"][0]}) for s in g["steps"]] == o["steps"]
