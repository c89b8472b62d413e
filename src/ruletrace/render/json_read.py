"""ruletrace's own JSON output read back as the model: files of ``explain``/``simulate``/``trace --json``.

``JsonPackets(path)`` yields one ``Explanation`` per packet object (``render.json.from_json``),
so ``report --from-json`` and ``diff`` work on the same objects as a trace explained afresh.
Bad input is one RuletraceError naming the file and, where the text has one, the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from ..errors import RuletraceError
from ..inputs import open_limited_text
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
    return b'"tool":"ruletrace"' in flat or (flat.startswith(b'{"id":') and b'"steps":' in flat)


class JsonPackets:
    """Packets of a ruletrace JSON file as explanations, read as they come.

    Reads the ``--json`` document of explain/simulate (``{"schema": …, "packets": [...]}``, as
    streamed one packet a line or as any one JSON document) and the JSON Lines of ``trace --json``
    (one packet object a line). ``sources`` and ``warnings`` of a document are known once it has
    been read.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.sources: list[dict[str, Any]] = []
        self.warnings: list[str] = []

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
        lineno = 1
        head = first.strip()
        if not head:
            raise RuletraceError("empty file: expected ruletrace --json output", origin=Origin(self.path, 1))
        # explain --json streams: a header line ending in '"packets": [', one packet a line, a tail line
        if head.startswith("{") and head.replace(" ", "").endswith('"packets":['):
            tail_parts: list[str] = []
            for line in f:
                lineno += 1
                s = line.strip()
                if s.startswith("{"):
                    yield self._packet(s.rstrip(","), lineno)
                elif s.startswith("]"):
                    tail_parts.append("{" + s[1:].lstrip(",").lstrip())
                    tail_parts += list(f)
                    break
            self._tail("".join(tail_parts))
            return
        # a packet object per line (trace --json)?
        try:
            obj = json.loads(head)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "steps" in obj:
            yield self._model(obj, 1)
            for line in f:
                lineno += 1
                if line.strip():
                    yield self._packet(line.strip(), lineno)
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
            self.sources = [s for s in doc.get("sources") or [] if isinstance(s, dict)]
            self.warnings = [str(w) for w in doc.get("warnings") or []]
        else:
            raise RuletraceError("not ruletrace JSON: expected an object with \"packets\" (ruletrace explain "
                                 "--json)", origin=Origin(self.path, 1))
        for k, p in enumerate(packets):
            yield self._model(p, None, f"packets[{k}]: ")

    def _packet(self, text: str, line: int) -> Explanation:
        try:
            obj = json.loads(text)
        except ValueError as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise RuletraceError(f"bad packet object: {msg}", origin=Origin(self.path, line)) from e
        return self._model(obj, line)

    def _model(self, obj: Any, line: int | None, where: str = "") -> Explanation:
        if not isinstance(obj, dict) or not isinstance(obj.get("steps"), list):
            raise RuletraceError(f"{where}not a ruletrace packet object (no \"steps\" list)",
                                 origin=Origin(self.path, line))
        try:
            return from_json(obj)
        except RuletraceError as e:
            raise RuletraceError(where + e.message, origin=Origin(self.path, line)) from None

    def _tail(self, text: str) -> None:
        try:
            tail = json.loads(text) if text.strip() else {}
        except ValueError:
            return
        if isinstance(tail, dict):
            self.sources = [s for s in tail.get("sources") or [] if isinstance(s, dict)]
            self.warnings = [str(w) for w in tail.get("warnings") or []]
