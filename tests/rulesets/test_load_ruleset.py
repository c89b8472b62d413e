"""load_ruleset(): format detection from content and one-line errors that name the file."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import pytest

import ruletrace.rulesets as rulesets
from ruletrace.errors import RuletraceError
from ruletrace.model import Origin, Ruleset
from ruletrace.rulesets import load_ruleset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

TRACE_LOG = (
    "Aug 24 11:14:47 fw kernel: [594576.178700] TRACE: raw:PREROUTING:policy:2 IN=eth0 OUT= "
    "SRC=10.0.0.1 DST=10.0.0.2 LEN=60 PROTO=TCP SPT=1 DPT=2\n"
)


@pytest.mark.parametrize(
    ("path", "fmt", "rules"),
    [
        (FIXTURES / "corpus" / "nft-v6.save", "iptables-save", 1752),
        (FIXTURES / "corpus" / "legacy-v4.list", "iptables-list", 1602),
        (FIXTURES / "rulesets" / "docker-legacy.save", "iptables-save", 18),
        (FIXTURES / "rulesets" / "banner-v-glued.list", "iptables-list", 18),
        (FIXTURES / "rulesets" / "plain.list", "iptables-list", 13),
    ],
)
def test_detects_format(path: Path, fmt: str, rules: int) -> None:
    rs = load_ruleset(str(path))
    assert rs.format == fmt
    assert rs.rule_count() == rules
    assert rs.origin == Origin(str(path))


def test_text_argument_skips_reading() -> None:
    rs = load_ruleset("not-on-disk.save", text="*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n")
    assert rs.rule("filter", "INPUT", 1).origin == Origin("not-on-disk.save", 3)


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (FIXTURES / "rulesets" / "marked-vx.list").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    rs = load_ruleset("-")
    assert rs.format == "iptables-list" and rs.origin == Origin("-")
    assert rs.rule("nat", "DOCKER", 2).origin == Origin("-", 52)  # grep -n DNAT marked-vx.list


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty ruleset file"),
        (b"\n  \n", "empty ruleset file"),
        (TRACE_LOG.encode(), "trace log, not a ruleset"),
        (b"trace id 1a2b3c4d ip filter input packet: iif \"eth0\"\n", "trace log, not a ruleset"),
        (bytes.fromhex("d4c3b2a1 0200 0400 00000000 00000000 ffff0000 ef000000"), "binary file"),
        (bytes(range(256)) * 4, "binary file"),
        (b"hello world\nthis is not a ruleset\n", "not a ruleset"),
        (b"table inet filter {\n\tchain input {\n\t}\n", "expected .}. closing table filter"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "rules.txt"
    path.write_bytes(content)
    with pytest.raises(RuletraceError, match=message) as exc:
        load_ruleset(str(path))
    assert str(exc.value).startswith(f"{path}:")
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.save"
    with pytest.raises(RuletraceError, match="cannot read ruleset: No such file or directory") as exc:
        load_ruleset(str(path))
    assert exc.value.origin == Origin(str(path))


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(RuletraceError, match="cannot read ruleset") as exc:
        load_ruleset(str(tmp_path))
    assert str(exc.value).startswith(f"{tmp_path}: ")


def test_parse_error_keeps_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.save"
    path.write_text("*filter\n:INPUT ACCEPT [0:0]\n-A NOPE -j ACCEPT\nCOMMIT\n")
    with pytest.raises(RuletraceError) as exc:
        load_ruleset(str(path))
    assert str(exc.value).startswith(f"{path}:3: ")


def test_nft_json_goes_to_nft_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def fake_parse(text: str, *, origin: Origin, save: Ruleset | None = None) -> list[Ruleset]:
        seen.append((text, origin))
        return [Ruleset(format="nft-json", origin=origin)]

    fake = types.ModuleType("ruletrace.rulesets.nft_json")
    fake.parse = fake_parse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ruletrace.rulesets.nft_json", fake)
    monkeypatch.setattr(rulesets, "nft_json", fake, raising=False)
    path = tmp_path / "rules.json"
    path.write_text(' {"nftables": [{"metainfo": {"json_schema_version": 1}}]}\n')
    rs = load_ruleset(str(path))
    assert rs.format == "nft-json"
    assert seen == [(path.read_text(), Origin(str(path)))]


def test_nft_json_reader_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ruletrace.rulesets.nft_json", None)
    monkeypatch.delattr(rulesets, "nft_json", raising=False)
    path = tmp_path / "rules.json"
    path.write_text('{"nftables": []}')
    with pytest.raises(RuletraceError, match="nft JSON rulesets are not supported") as exc:
        load_ruleset(str(path))
    assert exc.value.origin == Origin(str(path))


_K8S = Path(__file__).resolve().parents[2] / "src" / "ruletrace" / "examples" / "k8s-nodeport" / "ruleset.rules"


@pytest.mark.parametrize("quote,offset", [
    (lambda t: "".join("    " + x for x in t.splitlines(keepends=True)), 0),  # Markdown / forum indentation
    (lambda t: "".join("\t" + x for x in t.splitlines(keepends=True)), 0),
    (lambda t: "```\n" + t + "```\n", 1),  # a fenced block pasted whole
    (lambda t: "```sh\n" + "".join("  " + x for x in t.splitlines(keepends=True)) + "```", 1),
])
def test_a_ruleset_pasted_as_a_quote_is_read_with_a_warning(tmp_path, quote, offset):
    """review (pasted data): an indented iptables-save was refused as 'not a ruleset' and a ``` fence line
    as 'not an iptables-save line' (the same indentation on a trace was accepted). Lines keep their numbers."""
    plain = load_ruleset(str(_K8S))
    p = tmp_path / "q.rules"
    p.write_text(quote(_K8S.read_text()))
    rs = load_ruleset(str(p))
    assert rs.warnings[0] == f"{p}: read without the indentation or ``` fences it was pasted with"

    def rules(r):
        return [(t, c, x.num, x.text, x.origin.line if x.origin else None)
                for t, cs in r.tables.items() for c, ch in cs.items() for x in ch.rules]

    assert rules(rs) == [(t, c, n, text, line + offset) for t, c, n, text, line in rules(plain)]


def test_a_fault_inside_a_quoted_ruleset_is_said_of_the_text_as_given(tmp_path):
    p = tmp_path / "q.rules"
    p.write_text("    *filter\n    :INPUT ACCEPT [0:0]\n    -A NOPE -j DROP\n    COMMIT\n")
    with pytest.raises(RuletraceError) as e:
        load_ruleset(str(p))
    assert "not a ruleset" in str(e.value) or "NOPE" in str(e.value)
