"""ruletrace's own JSON output read back as the model: files of ``explain``/``simulate``/``trace --json``.

``JsonPackets(path)`` yields one ``Explanation`` per packet object (``render.json.from_json``),
so ``report --from-json`` and ``diff`` work on the same objects as a trace explained afresh.
Bad input is one RuletraceError naming the file and, where the text has one, the line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import IO, Any

from ..errors import RuletraceError
from ..inputs import compression, open_limited_text
from ..model import Explanation, Origin
from .json import from_json


def is_ruletrace_json(path: str) -> bool:
    """Whether ``path`` holds ruletrace's own JSON output (not a trace in some JSON format)."""
    if path == "-":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    text = head.lstrip()
    if not text.startswith(b"{"):
        return False
    flat = text.replace(b" ", b"").replace(b"\n", b"")
    return (b'"tool":"ruletrace"' in flat or (flat.startswith(b'{"id":') and b'"steps":' in flat)
            or flat.startswith(b'{"tables":{"rules":'))  # explain --jsonl (schema 2) starts with a table line


class JsonPackets:
    """Packets of a ruletrace JSON file as explanations, read as they come.

    Reads the ``--json`` document of explain/simulate (``{"schema": …, "packets": [...]}``, as
    streamed one packet a line or as any one JSON document) and JSON Lines (``explain --jsonl``,
    ``trace --json``: one packet object a line, and in schema 2 table lines), of schema 1 or 2.
    A streamed schema 2 document ends with the ``tables`` its packets refer to: a file is read
    from its end for them first; standard input keeps the packet lines until they come.
    ``sources`` and ``warnings`` of a document are known once it has been read.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.sources: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.tables: dict[str, Any] = {"rules": {}, "owners": {}}
        self.simulated = 0  # packets of ``simulate --json`` (with a "simulation" object): predicted, not traced

    def __iter__(self) -> Iterator[Explanation]:
        try:
            f = open_limited_text(self.path, "ruletrace JSON input")  # bounded, like every input
        except OSError as e:
            raise RuletraceError(f"cannot read: {e.strerror}", origin=Origin(self.path)) from e
        try:
            yield from self._read(f)
        except UnicodeDecodeError as e:
            raise RuletraceError("not a ruletrace JSON file (not UTF-8 text)", origin=Origin(self.path)) from e
        finally:
            f.close()  # (stdin's stream stays open: see ruletrace.inputs)

    def _read(self, f: IO[str]) -> Iterator[Explanation]:
        first = f.readline()
        head = first.strip()
        if not head:
            raise RuletraceError("empty file: expected ruletrace --json output", origin=Origin(self.path, 1))
        # explain --json streams: a header line ending in '"packets": [', one packet a line, a tail line
        if head.startswith("{") and head.replace(" ", "").endswith('"packets":['):
            yield from self._streamed(f, head)
            return
        # a packet object per line (JSON Lines), with table lines (schema 2)?
        try:
            obj = json.loads(head)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and ("steps" in obj or _is_table_line(obj)):
            yield from self._lines(obj, f)
            return
        # one JSON document (e.g. indented by jq)
        text = first + f.read()
        try:
            doc = json.loads(text)
        except ValueError as e:
            at = e.lineno if isinstance(e, json.JSONDecodeError) else None
            raise RuletraceError(f"not ruletrace JSON: {e}", origin=Origin(self.path, at)) from e
        if isinstance(doc, list):
            packets = doc
        elif isinstance(doc, dict) and isinstance(doc.get("packets"), list):
            packets = doc["packets"]
            self._take_tail(doc)
        else:
            raise RuletraceError("not ruletrace JSON: expected an object with \"packets\" (ruletrace explain "
                                 "--json)", origin=Origin(self.path, 1))
        for k, p in enumerate(packets):
            yield self._model(p, None, f"packets[{k}]: ")

    def _streamed(self, f: IO[str], head: str) -> Iterator[Explanation]:
        """A streamed document: packets one a line, then the tail (tables, sources, summary, warnings)."""
        try:
            schema = json.loads(head + "]}").get("schema")
        except (ValueError, AttributeError):
            schema = None
        held: list[tuple[str, int]] | None = None
        if isinstance(schema, int) and schema >= 2:  # the packets name rules in the tables at the end
            tail = _read_tail(self.path)
            if tail is not None:
                self._tail(tail)
            else:
                held = []  # not a file that can be read from its end (stdin): keep the lines
        lineno = 1
        tail_parts: list[str] = []
        for line in f:
            lineno += 1
            s = line.strip()
            if s.startswith("{"):
                if held is None:
                    yield self._packet(s.rstrip(","), lineno)
                else:
                    held.append((s.rstrip(","), lineno))
            elif s.startswith("]"):
                tail_parts.append("{" + s[1:].lstrip(",").lstrip())
                tail_parts += list(f)
                break
        self._tail("".join(tail_parts))
        for text, at in held or ():
            yield self._packet(text, at)

    def _lines(self, obj: dict[str, Any], f: IO[str]) -> Iterator[Explanation]:
        """JSON Lines: packet lines, and table lines whose entries the packets after them use."""
        lineno = 1
        while True:
            if "steps" in obj:
                yield self._model(obj, lineno)
            elif _is_table_line(obj):
                self._merge(obj["tables"], lineno)
            else:
                raise RuletraceError("not a ruletrace packet object (no \"steps\" list) nor a table line",
                                     origin=Origin(self.path, lineno))
            text = ""
            while not text:
                line = f.readline()
                if not line:
                    return
                lineno += 1
                text = line.strip()
            obj = self._decode(text, lineno)

    def _decode(self, text: str, line: int) -> Any:
        try:
            return json.loads(text)
        except ValueError as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise RuletraceError(f"bad packet object: {msg}", origin=Origin(self.path, line)) from e

    def _packet(self, text: str, line: int) -> Explanation:
        return self._model(self._decode(text, line), line)

    def _model(self, obj: Any, line: int | None, where: str = "") -> Explanation:
        if not isinstance(obj, dict) or not isinstance(obj.get("steps"), list):
            raise RuletraceError(f"{where}not a ruletrace packet object (no \"steps\" list)",
                                 origin=Origin(self.path, line))
        if isinstance(obj.get("simulation"), dict):
            self.simulated += 1
        try:
            return from_json(obj, self.tables)
        except RuletraceError as e:
            raise RuletraceError(where + e.message, origin=Origin(self.path, line)) from None

    def _merge(self, tables: Any, line: int | None) -> None:
        if not isinstance(tables, dict):
            raise RuletraceError("tables: expected an object", origin=Origin(self.path, line))
        for key in ("rules", "owners"):
            got = tables.get(key)
            if isinstance(got, dict):
                self.tables[key].update(got)
            elif got is not None:
                raise RuletraceError(f"tables.{key}: expected an object", origin=Origin(self.path, line))

    def _tail(self, text: str) -> None:
        try:
            tail = json.loads(text) if text.strip() else {}
        except ValueError:
            return
        if isinstance(tail, dict):
            self._take_tail(tail)

    def _take_tail(self, doc: dict[str, Any]) -> None:
        if doc.get("tables") is not None:
            self._merge(doc["tables"], None)
        self.sources = [s for s in doc.get("sources") or [] if isinstance(s, dict)]
        self.warnings = [str(w) for w in doc.get("warnings") or []]


def _is_table_line(obj: dict[str, Any]) -> bool:
    return "tables" in obj and "steps" not in obj and "packets" not in obj


def _read_tail(path: str, chunk: int = 1 << 20) -> str | None:
    """The tail line of a streamed document file (``],"tables":…``) read from its end, as an object's
    text; None when ``path`` is not a regular file (stdin, a pipe) or has no such line."""
    if path == "-" or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        if compression(f.read(16)) is not None:
            return None  # a compressed document: read as it comes
        end = f.seek(0, os.SEEK_END)
        buf = b""
        pos = end
        while pos > 0:  # packet lines never start with "]": the last "\n]" starts the tail
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            at = buf.rfind(b"\n]")
            if at >= 0:
                return "{" + buf[at + 2:].decode("utf-8").lstrip(",").lstrip()
    return None
