"""Renderers: explanations as a terminal tree, a summary table, JSON (and HTML in html.py); JSON read back.

Names are imported on first use, so ``ruletrace.render.json`` works without loading rich.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "THEME": "theme",
    "to_renderable": "tree",
    "render_explanations": "tree",
    "Summary": "summary",  # analyze.summary.Summary, re-exported by render.summary
    "SCHEMA_VERSION": "json",
    "to_json": "json",
    "from_json": "json",
    "document": "json",
    "dumps": "json",
    "write_jsonl": "json",
    "packet_json": "json",
    "Tables": "json",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
