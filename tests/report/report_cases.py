"""Shared inputs for the report tests: the seed-003 pair (NodePort 52000 dropped, port 80 delivered)."""

from __future__ import annotations

import base64
import gzip
import json
import re
from functools import lru_cache
from pathlib import Path

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "explain"
RULES = str(FIX / "seed003.rules")
LOG = str(FIX / "seed003.log")


@lru_cache(maxsize=1)
def seed003_json() -> tuple[dict, dict]:
    """Packets 1 (dport 52000) and 2 (dport 80) of seed 003 in their JSON form, each step whole (the
    shape of schema 1, which report --from-json and diff read too: ``render.json.expand``)."""
    from ruletrace.pipeline import explain_files
    from ruletrace.render.json import expand, to_json

    r = explain_files(RULES, [LOG])
    a, b = (expand(to_json(e)) for e in r.explanations)
    return a, b


def step(table: str, chain: str, kind: str, num: int, rule: str | None = None, **fields: str) -> dict:
    """One JSON step (schema 1 form) with the given fields."""
    return {"table": table, "chain": chain, "kind": kind, "num": num, "rule": rule, "policy": None,
            "returned_to": None, "depth": 0 if chain.isupper() and chain in {"PREROUTING", "INPUT", "FORWARD",
            "OUTPUT", "POSTROUTING"} else 1, "action": None, "warning": None, "note": None, "fields": dict(fields)}


def packet(pid: int, steps: list[dict], fate: str = "unknown", tcpflags: str | None = None, **top) -> dict:
    """A schema 1 JSON packet object around ``steps`` (``expand(to_json(e))``): the addresses, ports and
    interfaces of the top level are the first step's fields (given there too)."""
    p = {"id": pid, "proto": "TCP", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1000, "dport": 80,
         "family": "ipv4", "in": "eth0", "out": None, "steps": steps, "fate": fate, "verdict": None,
         "last_seen": None, "nat": [], "marks": [], "cause": [], "warnings": [], "notes": []}
    p.update(top)
    if steps:
        first = {"PROTO": p["proto"], "SRC": p["src"], "DST": p["dst"], "SPT": p["sport"], "DPT": p["dport"],
                 "IN": p["in"], "OUT": p["out"], "TCPFLAGS": tcpflags}
        steps[0]["fields"] = {**{k: str(v) for k, v in first.items() if v is not None}, **steps[0]["fields"]}
    return p


def embedded(page: str) -> dict:
    """The report's data document with its rule texts (``texts``), as ``ReportBuilder.data()`` made it."""
    doc = _element(page, "report-data")
    doc["texts"] = _element(page, "report-text")
    return doc


def _element(page: str, ident: str):
    m = re.search(rf'<script type="application/(json|octet-stream)" id="{ident}"( data-encoding="gzip\+base64")?>'
                  r'(.*?)</script>', page, re.S)
    assert m, f"no {ident} element"
    return json.loads(gzip.decompress(base64.b64decode(m.group(3))).decode() if m.group(2) else m.group(3))
