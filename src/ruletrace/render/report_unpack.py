"""A report document (``report_data.ReportData.data()``) read back: the page's script in Python.

The round-trip test (tests/report/test_report_compact.py) reads a document with ``unpack``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from ..analyze.diff import endpoint


def unpack(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The packets of a report document (``ReportData.data()``) in their JSON form again.

    What the page's script does, in Python: the test that the compact form round-trips. Only
    what the report keeps comes back (no per-step fields, rule text only of chains packets entered).
    """
    strings, addrs, kinds, tables = data["strings"], data["addrs"], data["kinds"], data["tables"]
    text = {ci: tx for ci, tx in data["texts"]}

    def s(i: int) -> str | None:
        return None if i < 0 else strings[i]

    def chain_of(ci: int) -> tuple[str, str]:
        c = data["chains"][ci] if ci >= 0 else data["xchains"][-1 - ci]
        return tables[c[1]], c[2]

    def step(sid: int) -> dict[str, Any]:
        st = untrim(data["steps"][sid], 7)
        ci, kind, num = data["places"][st[0]]
        table, chain = chain_of(ci)
        kind = kinds[kind]
        rule = None
        if ci >= 0 and kind == "rule" and isinstance(num, int) and ci in text and 1 <= num <= len(text[ci]):
            spec = text[ci][num - 1]
            rule = None if spec is None else f"-A {chain} {spec}"
        return {"table": table, "chain": chain, "kind": kind, "num": num, "rule": rule, "depth": st[1],
                "action": s(st[2]), "returned_to": s(st[3]), "policy": s(st[4]), "warning": s(st[5]),
                "note": s(st[6])}

    pk = data["packets"]
    ids = list(itertools.accumulate(pk["id"])) if pk["id_delta"] else pk["id"]
    out = []
    for k, pid in enumerate(ids):
        path, fate, dec, x, proto, in_, out_, flags, nat, physin, physout = untrim(data["variants"][pk["v"][k]], 11)
        nat = nat if nat != -1 else None
        e = data["extras"][x] if x >= 0 else {}
        src = addrs[pk["src"][k]] if pk["src"][k] >= 0 else None
        dst = addrs[pk["dst"][k]] if pk["dst"][k] >= 0 else None
        sport, dport = pk["sport"][k], pk["dport"][k]
        out.append({
            "id": pid, "proto": s(proto), "src": src, "dst": dst, "sport": sport, "dport": dport,
            "in": s(in_), "out": s(out_), "tcpflags": s(flags), "physin": s(physin), "physout": s(physout),
            "steps": [step(sid) for sid in data["paths"][path]],
            "fate": data["fates"][fate], "decisive": dec,
            "reason": s(e.get("why", -1)), "last_seen": s(e.get("last", -1)),
            "nat": [{"what": w, "old": (endpoint(dst, dport) if w == "DST" else endpoint(src, sport))
                     if old == 0 else old, "new": new, "step": st} for w, old, new, st in nat or ()],
            "marks": [{"what": w, "old": old, "new": new, "step": st} for w, old, new, st in e.get("marks", ())],
            "cause": [{"role": s(r), "text": s(t), "step": st} for r, t, st in e.get("cause", ())],
            "warnings": [s(w) for w in e.get("warn", ())],
            "notes": [s(n) for n in e.get("notes", ())],
        })
    return out


def untrim(row: list[Any], n: int) -> list[Any]:
    return list(row) + [-1] * (n - len(row))
