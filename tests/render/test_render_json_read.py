"""JSON read back: ``from_json`` is the inverse of ``to_json`` on every bundled example, and the
file reader (``render.json_read``) gives the same model from every form ruletrace writes, with
one-line errors naming the file and line."""

from __future__ import annotations

import io
import json

import pytest

from ruletrace.cli.options import example_paths, list_examples
from ruletrace.errors import RuletraceError
from ruletrace.pipeline import explain_files
from ruletrace.render.json import document, dumps, from_json, to_json, write_document, write_jsonl
from ruletrace.render.json_read import JsonPackets, is_ruletrace_json


@pytest.fixture(scope="module", params=sorted(list_examples()))
def example(request) -> list:
    rules, logs = example_paths(request.param)
    expls = explain_files(rules, logs).explanations
    assert expls
    return expls


def test_examples_round_trip(example) -> None:
    for e in example:
        j = to_json(e)
        back = from_json(j)
        assert to_json(back) == j
        # the model, not just its JSON: steps carry events and rules, the verdict its rule
        assert [s.event.fields for s in back.steps] == [dict(s.event.fields) for s in e.steps]
        assert (back.verdict is None) == (e.verdict is None)
        if e.verdict is not None and e.verdict.rule is not None:
            assert back.verdict.rule.text == e.verdict.rule.text


@pytest.mark.parametrize("form", ["document", "jsonl", "indented", "one-line", "standalone", "stdin"])
def test_every_written_form_reads_back(example, form, tmp_path, monkeypatch) -> None:
    out = io.StringIO()
    if form in ("document", "stdin"):
        write_document(example, out, warnings=["w1"], sources=[{"path": "k.log", "format": "kernel-log"}])
    elif form == "jsonl":
        write_jsonl(example, out)
    elif form == "standalone":  # trace --json: each line with its own tables
        out.write("".join(dumps(to_json(e)) + "\n" for e in example))
    else:
        out.write(dumps(document(example, warnings=["w1"]), indent=form == "indented"))
    f = tmp_path / "out.json"
    f.write_text(out.getvalue())
    assert is_ruletrace_json(str(f))
    path = str(f)
    if form == "stdin":  # the tables come last and stdin cannot be read from its end: lines are kept
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(f.read_bytes())))
        path = "-"
    r = JsonPackets(path)
    assert [to_json(e) for e in r] == [to_json(e) for e in example]
    if form not in ("jsonl", "standalone"):
        assert r.warnings == ["w1"]


@pytest.mark.parametrize("text,where,message", [
    ('{"id": 1, "steps": []}\n{"id": 2, "steps": [{"table": "filter"}]}\n', 2, "packet step without table/chain"),
    ('{"id": 1, "steps": []}\n{"id": "two", "steps": []}\n', 2, "packet.id: expected an integer, got a string"),
    ('{"id": 1, "steps": [{"table": "filter", "chain": "INPUT", "kind": "jump", "num": 1}]}\n', 1,
     "steps[0].kind: 'jump' is not one of rule, return, policy"),
    ('{"id": 1, "steps": [{"table": "t", "chain": "c", "kind": "rule", "num": "3"}]}\n', 1,
     "steps[0].num: expected an integer, got a string"),
    ('{"id": 1, "steps": [{"table": "t", "chain": "c", "kind": "rule", "fields": {"SRC": 1}}]}\n', 1,
     "steps[0].fields: every value must be a string"),
    ('{"id": 1, "steps": [], "fate": "lost"}\n', 1, "fate 'lost' is not one of dropped"),
    ('{"schema": 1, "tool": "ruletrace", "version": "0", "packets": [\n{"id": 1, "steps": []},\n'
     '{"id": 2, "steps": [], "verdict": "drop"}\n],"sources":[],"summary":null,"warnings":[]}\n', 3,
     "packet.verdict: expected an object, got a string"),
    ('{"id": 1, "steps": [], "nat": [{"what": "DST", "step": 1.5}]}\n', 1, "nat[0].step: expected an integer"),
])
def test_bad_values_are_one_line_errors_with_file_and_line(tmp_path, text, where, message) -> None:
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(RuletraceError) as e:
        list(JsonPackets(str(f)))
    assert str(e.value).startswith(f"{f}:{where}: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_whole_document_errors_name_the_packet(tmp_path) -> None:
    f = tmp_path / "doc.json"
    f.write_text(json.dumps({"schema": 1, "tool": "ruletrace", "packets": [{"id": 1, "steps": []},
                                                                         {"id": 2, "steps": [], "notes": [3]}]},
                            indent=2))
    with pytest.raises(RuletraceError) as e:
        list(JsonPackets(str(f)))
    assert str(e.value) == f"{f}: packets[1]: notes: expected a string, got an integer"


def test_origin_text_reads_back_to_the_same_text() -> None:
    e = from_json({"id": 1, "steps": [
        {"table": "t", "chain": "c", "kind": "rule", "num": 1, "origin": o}
        for o in ("kern.log:12", "a:b:3:4", "/var/log/x", "x:0", "journal:5:0", "")]})
    assert [str(s.event.origin) for s in e.steps] == ["kern.log:12", "a:b:3:4", "/var/log/x", "x:0", "journal:5:0", ""]
    assert (e.steps[0].event.origin.path, e.steps[0].event.origin.line) == ("kern.log", 12)
