"""The document a report page renders from: packets aggregated as they stream by, and ``unpack`` to read it back.

Each distinct path is stored once, each *variant* (path, fate, deciding step, shared details,
NAT rewrites, protocol, interfaces) once, and per packet only its id, variant index and
addresses (columns). The hit map (``analyze.hitmap``) is counted once per path and embedded
sparse; rule text is kept only for chains some packet entered. docs/report.md describes the
format; ``render.html`` puts it in the page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain as _chain
from typing import Any

from ..analyze.diff import decided_at, endpoint, port
from ..analyze.hitmap import HitMap, table_order
from ..fields import show_address
from ..model import HOOK_TABLES, TABLES, Explanation, Fate, Ruleset, iptables_priority, rule_spec
from ..rulesets.nft_model import is_nftables, shared_in_rulesets, table_label
from .json import from_json
from .report_unpack import unpack

__all__ = ["FATES", "FORMAT", "ReportData", "file_name", "rule_spec", "unpack"]

FORMAT = 2  # version of the embedded document ("v"); 2: packets aggregated by variant, sparse hit counts
_CORES_MAX = 50_000  # memo entries of (path key, shared objects); starts over when full
_BUCKET_MAX = 8  # memo entries under one verdict object (the oldest goes)
PAGE_SIZE = 200  # packets per page of the packet list
KINDS = ("rule", "return", "policy")  # StepKind values
_NOT_IP = frozenset({"bridge", "netdev", "arp"})  # families whose hooks are not the IP stack's the diagram draws
FATES = tuple(f.value for f in Fate)


class ReportData:
    """Collects explanations as they stream by; ``data()`` is the document the page renders from.

    Packets are aggregated as they come: a path (its steps) is stored once, a *variant* (path,
    fate, deciding step, shared details, NAT rewrites, protocol, interfaces) once, and per packet
    only its id, variant and addresses are kept. The hit map is counted once per path, weighted
    by its packets.
    """

    def __init__(self, rulesets: Sequence[Ruleset] = (), *, keep: Iterable[Any] = (), fast: bool = True) -> None:
        self.rulesets = list(rulesets)
        # fast=False: every packet's shared part made from its explanation (the reference the memo
        # of explanations one explainer shared is tested against: tests/report/test_report_fast.py)
        self.fast = fast
        self.shared = 0  # packets whose shared part came from the memo
        self._cores: dict[int, list[tuple[Any, ...]]] = {}  # id(verdict) -> [(what the core is made of, core, verdict)]
        self._core_count = 0
        self._core_ids: dict[Any, int] = {}
        self._fast_variants: dict[tuple[Any, ...], int] = {}
        self._rs_of = HitMap(self.rulesets)  # picks a packet's ruleset by family
        self.keep = set(keep)  # packet ids whose explanation is kept (for --diff)
        self.kept: dict[Any, Explanation] = {}
        self._strings: dict[str, int] = {}
        self._places: dict[tuple[Any, ...], int] = {}  # (ruleset, table, chain, kind, num) -> place id
        self._place_text: dict[int, str] = {}  # rule text seen in the trace, per place (no ruleset)
        self._steps: dict[tuple[Any, ...], int] = {}  # (place, depth, action, returned_to, policy, warning, note) -> id
        self._step_of: dict[int, dict[tuple[Any, ...], tuple[int, int]]] = {}  # ruleset -> step signature -> (step, place)
        self._paths: dict[tuple[Any, ...], int] = {}  # (ruleset, step signature) -> path id
        self._by_key: dict[tuple[Any, ...], int] = {}  # (ruleset, Explanation.path_key) -> path id
        self._path_steps: list[list[int]] = []
        self._path_places: list[list[int]] = []  # path id -> its places (ids into _places) for the hit map
        # the diagram's table rows: (HOOK, table label) -> row id; each row's [hook, label, priority];
        # per path, each step's row (-1: none): a native step's by its base chain's hook, an iptables
        # step's by the built-in chain that named its hook (analyze.hitmap.hook_tables)
        self._boxes: dict[tuple[str, str], int] = {}
        self._box_rows: list[list[Any]] = []
        self._path_boxes: list[list[int]] = []
        self._native_seen = False  # a step of a native nf_tables table got a row
        self._shared_tables = shared_in_rulesets(self.rulesets)
        self._extras: dict[tuple[Any, ...], int] = {}
        self._variants: dict[tuple[Any, ...], int] = {}
        self._variant_keys: list[tuple[Any, ...]] = []
        self._addrs: dict[str, int] = {}
        self._ports: dict[Any, int | None] = {}  # logged port text -> number (analyze.diff.port)
        self._shown: dict[str, tuple[int, str, str, str]] = {}  # logged address -> _show(it): _add_fast
        self._one_ruleset = len(self.rulesets) <= 1
        # one entry per packet, in input order
        self.ids: list[Any] = []
        self._pv: list[int] = []
        self._src: list[int] = []
        self._sport: list[int | None] = []
        self._dst: list[int] = []
        self._dport: list[int | None] = []
        self._hitmap: HitMap | None = None
        # packets per variant, per path and per fate, counted from _pv when asked (_counts)
        self._counted: tuple[int, list[int], list[int], Counter[str]] | None = None

    @property
    def packets(self) -> int:
        """How many packets were added."""
        return len(self.ids)

    @property
    def fates(self) -> Counter[str]:
        """Packets per fate (``Fate`` value), in the order each fate first came."""
        return self._counts()[2]

    def _counts(self) -> tuple[list[int], list[int], Counter[str]]:
        """Packets per variant, per path and per fate: counted from each packet's variant when asked
        (a variant names its path and fate), not a packet at a time as they come."""
        pv = self._pv
        got = self._counted
        if got is not None and got[0] == len(pv):
            return got[1], got[2], got[3]
        keys = self._variant_keys
        per_variant = [0] * len(keys)
        for v, n in Counter(pv).items():
            per_variant[v] = n
        per_path = [0] * len(self._path_steps)
        fates: Counter[str] = Counter()
        for key, n in zip(keys, per_variant):
            per_path[key[0]] += n
            fates[key[1]] += n
        self._counted = (len(pv), per_variant, per_path, fates)
        return per_variant, per_path, fates

    @property
    def hitmap(self) -> HitMap:
        """Per-rule counts over every packet added so far (counted once per distinct path)."""
        if self._hitmap is None or self._hitmap.packets != len(self.ids):
            hm = HitMap(self.rulesets)
            keys: list[Any] = [None] * len(self._places)
            for key, i in self._places.items():
                keys[i] = key
            per_path = self._counts()[1]
            if self.fast:  # the same counts (HitMap.add_paths), with the work per place done once
                hm.add_paths(keys, zip(self._path_places, per_path))
            else:
                for pids, n in zip(self._path_places, per_path):
                    hm.add([keys[p] for p in pids], weight=n)  # each place under its own ruleset
            self._hitmap = hm
        return self._hitmap

    # ------------------------------------------------------------------ input

    @property
    def paths(self) -> int:
        """How many distinct paths the packets took."""
        return len(self._path_steps)

    def add(self, item: Explanation | Mapping[str, Any]) -> None:
        """Count and store one packet: an Explanation or a JSON packet object (``render.json.from_json``)."""
        e = item if isinstance(item, Explanation) else from_json(item)
        if self.keep and e.packet.id in self.keep:
            self.kept[e.packet.id] = e
        pk = e.path_key
        if pk is not None and self.fast:  # as _add_explanation chooses, one call less a packet
            self._add_fast(e, pk)
        else:
            self._add_explanation(e)

    def add_all(self, items: Iterable[Explanation | Mapping[str, Any]]) -> int:
        """``add`` each item; return how many."""
        n = 0
        for it in items:
            self.add(it)
            n += 1
        return n

    def _add_explanation(self, e: Explanation) -> None:
        pk = e.path_key
        if self.fast and pk is not None:
            self._add_fast(e, pk)
            return
        fam = None
        for ev in e.packet.events:
            if ev.family:
                fam = ev.family
                break
        rs = self._rs_of.ruleset_index(fam)
        path, dec, vt, extra, cid = self._core(e, rs, e.path_key)
        first = e.first
        get = first.get
        src, dst = get("SRC") or None, get("DST") or None
        src, dst = src and show_address(src), dst and show_address(dst)  # the printed form
        ports = self._ports
        spt, dpt = get("SPT"), get("DPT")
        sport = ports[spt] if spt in ports else ports.setdefault(spt, port(spt))
        dport = ports[dpt] if dpt in ports else ports.setdefault(dpt, port(dpt))
        nat = tuple([(c.what, _nat_old(c.what, c.old, src, sport, dst, dport), c.new, c.step)
                     for c in e.nat]) if e.nat else ()
        # bridge ports (br_netfilter): PHYSIN as it came in, PHYSOUT as it last left (FORWARD/POSTROUTING)
        last = e.packet.events[-1].fields if e.packet.events else first
        phys = (get("PHYSIN") or last.get("PHYSIN") or None, last.get("PHYSOUT") or None)
        fate = str(e.fate)
        if fate not in FATES:
            fate = "unknown"
        own = (fate, nat, get("PROTO") or None, get("IN") or None, get("OUT") or None, get("TCPFLAGS") or None, phys)
        fk = (cid, *own)  # cid stands for (path, dec, vt, extra): one hash of small values a packet
        var = self._fast_variants.get(fk)
        if var is None:
            key = (path, fate, dec, vt, extra, *own[1:])
            var = self._variants.get(key)
            if var is None:
                var = self._variants[key] = len(self._variant_keys)
                self._variant_keys.append(key)
            self._fast_variants[fk] = var
        self.ids.append(e.packet.id)
        self._pv.append(var)
        addrs = self._addrs  # interned (_intern, inlined)
        self._src.append((addrs[src] if src in addrs else addrs.setdefault(src, len(addrs))) if src else -1)
        self._dst.append((addrs[dst] if dst in addrs else addrs.setdefault(dst, len(addrs))) if dst else -1)
        self._sport.append(sport)
        self._dport.append(dport)

    def _add_fast(self, e: Explanation, pk: Any) -> None:
        """``_add_explanation`` for an explanation with a path key: the same document, less work a packet.

        The reference is the rest of ``_add_explanation`` (``fast=False``); tests/report/test_report_fast.py
        proves the documents and pages equal. What differs is only how values are found again:
        - what a packet shares with its path (path, deciding step, verdict, why, marks, causes,
          notes) is made once per explainer's path key and the objects the explainer shared
          (explain/pathcache.py: one verdict object per plan, the same cause and mark objects for
          the packets of one template); ``_core`` of equal inputs gives equal results, so a memo
          entry dropped only costs the work again;
        - with at most one ruleset every packet is counted under ruleset 0 (as ``ruleset_index``
          answers), so the family is not looked up;
        - a logged address is shown (``show_address``) and numbered once per distinct text, and the
          start of its ``endpoint`` text made then too: a NAT ``old`` value is compared with the
          packet's own endpoint as ``_nat_old`` does, without a call a rewrite;
        - a port text is made a number (``port``) in line, without a table;
        - the last event's fields are those of the latest earlier event with the same raw text and
          parser whose fields are already parsed (``TraceEvent.same_fields``: equal fields);
        - the variant is found by one flat tuple of the packet's own values.
        """
        if self._one_ruleset:
            rs = 0
        else:
            fam = None
            for ev in e.packet.events:
                if ev.family:
                    fam = ev.family
                    break
            rs = self._rs_of.ruleset_index(fam)
        v = e.verdict
        # the packet's shared part, looked up by its verdict object (one per plan; held here, so its id
        # stays its own) and then compared: path key, causes, marks, warnings, notes, last seen, ruleset
        # (lists compare their items by identity first: the explainer's shared objects compare in C)
        cause, marks, warnings, notes = e.cause, e.marks, e.warnings, e.notes
        # one flat tuple (the lengths first, so it says where each list ends): compared with a stored
        # one in one pass over contiguous memory, not five stored lists
        made_of = (pk, rs, e.last_seen, len(cause), len(marks), len(warnings), *cause, *marks, *warnings, *notes)
        bucket = self._cores.get(id(v))
        core = None
        if bucket is not None:
            for ent in bucket:
                if ent[0] == made_of:
                    core = ent[1]
                    break
        if core is None:
            if bucket is None:
                if self._core_count >= _CORES_MAX:
                    self._cores.clear()
                    self._core_count = 0
                bucket = self._cores[id(v)] = []
            elif len(bucket) >= _BUCKET_MAX:
                del bucket[0]
                self._core_count -= 1
            core = self._core(e, rs, pk)
            bucket.append((made_of, core, v))
            self._core_count += 1
        else:
            self.shared += 1
        events = e.packet.events
        if events:
            ev = events[0]
            first = ev._fields
            if first is None:
                first = ev.fields
            last = events[-1]._fields
            if last is None:
                last = _known_fields(events)
        else:
            first = last = e.packet.fields or {}
        get = first.get
        shown = self._shown
        src, dst = get("SRC"), get("DST")
        if src:
            got_src = shown.get(src)
            if got_src is None:
                got_src = shown[src] = self._show(src)
            si = got_src[0]
        else:
            si, got_src = -1, None
        if dst:
            got_dst = shown.get(dst)
            if got_dst is None:
                got_dst = shown[dst] = self._show(dst)
            di = got_dst[0]
        else:
            di, got_dst = -1, None
        spt, dpt = get("SPT"), get("DPT")  # analyze.diff.port, in line
        sport = int(spt) if spt and spt.isdigit() and spt.isascii() else None
        dport = int(dpt) if dpt and dpt.isdigit() and dpt.isascii() else None
        enat = e.nat
        if enat:
            parts = []
            for c in enat:
                what = c.what
                old: Any = c.old
                if what == "DST":  # _nat_old: the packet's own first DST:DPT is written as 0
                    own = None if got_dst is None else got_dst[2] if dport is None else got_dst[3] + str(dport)
                    if old == own:
                        old = 0
                elif what == "SRC":
                    own = None if got_src is None else got_src[2] if sport is None else got_src[3] + str(sport)
                    if old == own:
                        old = 0
                parts.append((what, old, c.new, c.step))
            nat: tuple[Any, ...] = tuple(parts)
        else:
            nat = ()
        fate = str(e.fate)
        if fate not in FATES:
            fate = "unknown"
        physin, physout = get("PHYSIN") or last.get("PHYSIN") or None, last.get("PHYSOUT") or None
        fk = (core[4], fate, nat, get("PROTO") or None, get("IN") or None, get("OUT") or None,
              get("TCPFLAGS") or None, physin, physout)
        var = self._fast_variants.get(fk)
        if var is None:
            path, dec, vt, extra, _cid = core
            key = (path, fate, dec, vt, extra, *fk[2:7], (physin, physout))
            var = self._variants.get(key)
            if var is None:
                var = self._variants[key] = len(self._variant_keys)
                self._variant_keys.append(key)
            self._fast_variants[fk] = var
        self.ids.append(e.packet.id)
        self._pv.append(var)
        self._src.append(si)
        self._dst.append(di)
        self._sport.append(sport)
        self._dport.append(dport)

    def _show(self, logged: str) -> tuple[int, str, str, str]:
        """A logged address's number, its shown form (``show_address``), and its ``endpoint`` text
        without a port and the start of it with one (``addr:`` or ``[addr]:``)."""
        shown = show_address(logged)
        a = show_address(str(shown))  # as endpoint(shown, port) makes it
        return _intern(self._addrs, shown), shown, a, f"[{a}]:" if ":" in a else f"{a}:"

    def _core(self, e: Explanation, rs: int, pk: Any) -> tuple[Any, ...]:
        """(path, deciding step, verdict, extra, their number) of a packet: what it shares with its path."""
        steps = e.steps
        # the explainer's key of the path saves reading every step (same key: same steps)
        path = None if pk is None else self._by_key.get((rs, pk))
        sig: tuple[Any, ...] | None = None
        if path is None:
            sig = _signature(steps)
            path = self._paths.get((rs, sig))
            if path is None:
                path = self._new_path(rs, sig, steps)
            if pk is not None:
                self._by_key[(rs, pk)] = path
        v = e.verdict
        dec = -1
        for c in e.cause:
            if c.role == "decided" and isinstance(c.step, int):
                dec = c.step
                break
        else:
            if v is not None:
                dec = _decisive_index(sig or _signature(steps), v.table, v.chain, v.num, v.family)
        extra = (
            v.reason if v is not None and v.reason else None,
            tuple([(c.what, c.old, c.new, c.step) for c in e.marks]) if e.marks else (),
            tuple([(c.role, c.text, c.step) for c in e.cause if c.role != "decided"]),
            tuple(e.warnings), tuple(e.notes),
            e.last_seen if v is None else None,
        )
        # the deciding table as every view names it ("ip same" where two families share the name)
        vt = None if v is None else (v.action, table_label(v.table, v.family, e.shared) if v.table else v.table,
                                     v.chain, v.num, v.rule is not None)
        cid = _intern(self._core_ids, (path, dec, vt, extra))  # type: ignore[arg-type]  # any hashable
        return path, dec, vt, extra, cid

    def _new_path(self, rs: int, sig: tuple[Any, ...], steps: Sequence[Any]) -> int:
        path = self._paths[(rs, sig)] = len(self._path_steps)
        step_ids = []
        places: list[int] = []
        # a step's place and number per (ruleset, its signature): one look-up a step seen before
        step_of = self._step_of.get(rs)
        if step_of is None:
            step_of = self._step_of[rs] = {}
        place_text = self._place_text
        one = self._one_ruleset
        for st, step in zip(sig, steps):
            got = step_of.get(st)
            if got is None:
                table, chain, kind, num, depth, action, returned_to, policy, warning, note, family = st
                # each step in the ruleset of its own family: one native path meets ip nat and inet filter
                srs = rs if one or family is None else self._rs_of.ruleset_index(family, rs)
                pkey = (srs, table, chain, kind, num)
                place = self._places.get(pkey)
                if place is None:
                    place = self._places[pkey] = len(self._places)
                skey = (place, depth, action, returned_to, policy, warning, note)
                sid = self._steps.get(skey)
                if sid is None:
                    sid = self._steps[skey] = len(self._steps)
                got = step_of[st] = (sid, place)
            sid, place = got
            if place not in place_text:
                rule = step.rule
                if rule is not None and rule.text:
                    place_text[place] = rule.text
            step_ids.append(sid)
            places.append(place)
        self._path_steps.append(step_ids)
        self._path_places.append(places)
        self._path_boxes.append(self._step_boxes(rs, sig, steps))
        return path

    # ------------------------------------------------------------------ the diagram's rows

    def _box(self, hook: str, label: str, priority: int | None) -> int:
        """The row of ``label`` at ``hook`` (made at its first sight); its priority the lowest known."""
        b = self._boxes.get((hook, label))
        if b is None:
            b = self._boxes[(hook, label)] = len(self._box_rows)
            self._box_rows.append([hook, label, priority])
        elif priority is not None and (self._box_rows[b][2] is None or priority < self._box_rows[b][2]):
            self._box_rows[b][2] = priority
        return b

    def _step_boxes(self, rs: int, sig: tuple[Any, ...], steps: Sequence[Any]) -> list[int]:
        """Each step's diagram row (-1: none), as the terminal tree groups steps by hook: a step's hook
        is its base chain's (``Step.hook``; else the ruleset's base chain, else a built-in chain's
        name), and a user chain's step is under the hook of the chain that called it."""
        out: list[int] = []
        hook: str | None = None
        prio: int | None = None
        for st, step in zip(sig, steps):
            table, chain, family = st[0], st[1], st[10]
            srs = rs if self._one_ruleset or family is None else self._rs_of.ruleset_index(family, rs)
            ruleset = self.rulesets[srs] if 0 <= srs < len(self.rulesets) else None
            native = is_nftables(ruleset) if ruleset is not None else family is not None
            h, p = getattr(step, "hook", None), getattr(step, "priority", None)
            if not h:
                ch = ruleset.chain(table, chain) if ruleset is not None else None
                up = str(chain).upper()
                if ch is not None and ch.hook:
                    h, p = ch.hook, ch.priority
                elif up in HOOK_TABLES and table in TABLES:
                    h, p = up, iptables_priority(table, up)
            if h:
                h = str(h).upper()
                if h != hook or p is not None:
                    hook, prio = h, p
            fam = ruleset.family if ruleset is not None else family
            if hook not in HOOK_TABLES or fam in _NOT_IP or (not native and table not in HOOK_TABLES[hook]):
                out.append(-1)
                continue
            if native and ruleset is not None:
                label = table_label(table, ruleset.family, self._shared_tables)
                self._native_seen = True
            else:
                label = table
                self._native_seen = self._native_seen or native
            out.append(self._box(hook, label, prio if prio is not None else iptables_priority(table, hook)))
        return out

    def diagram_rows(self) -> dict[str, list[tuple[int, str, int | None]]]:
        """Each hook's table rows ``(row id, table label, priority)`` in kernel priority order: the
        iptables tables (raw, mangle, nat, filter, security) for an iptables ruleset or trace, each
        nf_tables table with a base chain on the hook for a native listing, and every table a path
        passed."""
        hooked = False
        for rs in self.rulesets:
            if not is_nftables(rs) or rs.family in _NOT_IP:
                continue
            for table, chains in rs.tables.items():
                for ch in chains.values():
                    if ch.hook and ch.hook.upper() in HOOK_TABLES:
                        hooked = True
                        self._box(ch.hook.upper(), table_label(table, rs.family, self._shared_tables), ch.priority)
        legacy = any(not is_nftables(rs) for rs in self.rulesets)
        if legacy or (not hooked and not self._native_seen):
            for hook, tables in HOOK_TABLES.items():
                for t in tables:
                    self._box(hook, t, iptables_priority(t, hook))
        out: dict[str, list[tuple[int, str, int | None]]] = {h: [] for h in HOOK_TABLES}
        for b, (hook, label, prio) in enumerate(self._box_rows):
            out[hook].append((b, label, prio))
        for rows in out.values():
            rows.sort(key=lambda r: (r[2] is None, r[2] or 0, r[0]))
        return out

    def box_counts(self) -> list[int]:
        """Packets that passed each diagram row (a row a path passes twice counts its packets once)."""
        counts = [0] * len(self._box_rows)
        for boxes, n in zip(self._path_boxes, self._counts()[1]):
            for b in set(boxes):
                if b >= 0:
                    counts[b] += n
        return counts

    def _s(self, text: Any) -> int:
        return -1 if text is None else _intern(self._strings, str(text))

    # ------------------------------------------------------------------ output

    def deciders(self) -> Counter[tuple[str, str]]:
        """(where the fate was decided, rule key) -> packets."""
        out: Counter[tuple[str, str]] = Counter()
        for key, n in zip(self._variant_keys, self._counts()[0]):
            vt, extra = key[3], key[4]
            if vt is None:
                out[(decided_at(None, None, None, None, False, extra[5]), "")] += n
                continue
            action, table, chain, num, has_rule = vt
            out[(decided_at(action, table, chain, num, has_rule, None), f"{table}:{chain}:{num}" if has_rule else "")] += n
        return out

    def data(self, *, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON document the page renders from (``unpack`` reads it back; see docs/report.md)."""
        self._strings = {}
        self.diagram_rows()  # every row, so the document names them all
        hm = self.hitmap
        tables: dict[str, int] = {}
        if self.fast and self.rulesets:
            chains, chain_index, sizes, texts = _chain_rows_fast(hm, self.rulesets, tables)
        else:
            chains, chain_index, sizes, texts = _chain_rows(hm, self.rulesets, tables)
        text_of = {ci: tx for ci, tx in texts}
        xchains: list[list[Any]] = []
        kinds: list[str] = list(KINDS)
        places: list[list[Any]] = [[]] * len(self._places)
        kind_no = {k: n for n, k in enumerate(kinds)}  # kinds.index
        place_text = self._place_text
        for (rs, table, chain, kind, num), i in self._places.items():
            got = chain_index.get((rs, table, chain))
            ci = -1 - len(xchains) if got is None else got
            if got is None:
                chain_index[(rs, table, chain)] = ci
                xchains.append([rs, tables.setdefault(table, len(tables)), chain])
            k = kind_no.get(kind)
            if k is None:
                k = kind_no[kind] = len(kinds)
                kinds.append(kind)
            places[i] = [ci, k, num]
            # no ruleset: the rule text comes from the trace, where it showed it
            text = place_text.get(i)
            if text and ci >= 0 and kind == "rule" and isinstance(num, int) and 1 <= num <= sizes[ci]:
                tx = text_of.get(ci)
                if tx is not None and tx[num - 1] is None:
                    tx[num - 1] = rule_spec(text, chain)
        steps: list[list[Any]] = [[]] * len(self._steps)
        sdict = self._strings

        def s(text: Any) -> int:  # self._s, with the None test first (most values are None)
            if text is None:
                return -1
            if type(text) is not str:
                text = str(text)
            i = sdict.get(text)
            if i is None:
                i = sdict[text] = len(sdict)
            return i

        for (place, depth, action, returned_to, policy, warning, note), i in self._steps.items():
            if returned_to is None and policy is None and warning is None and note is None and action \
                    and type(action) is str:  # most steps: s() of the action only, nothing to trim after it
                ai = sdict.get(action)
                if ai is None:
                    ai = sdict[action] = len(sdict)
                steps[i] = [place, depth, ai]
                continue
            row = [place, depth, s(action or None), s(returned_to), s(policy), s(warning), s(note)]
            steps[i] = _trim(row)
        extras: list[dict[str, Any]] = []
        extra_ids: dict[tuple[Any, ...], int] = {}
        variants: list[list[Any]] = []
        for path, fate, dec, _vt, extra, nat, proto, in_, out, flags, phys in self._variant_keys:
            x = -1
            if any(extra):
                x = extra_ids.get(extra, -1)
                if x < 0:
                    x = extra_ids[extra] = len(extras)
                    extras.append(self._extra(extra, s))
            variants.append(_trim([path, FATES.index(fate), dec, x, s(proto), s(in_), s(out),
                                   s(flags), [list(c) for c in nat] or None, s(phys[0]), s(phys[1])]))
        ids = self.ids
        delta = all(type(i) is int for i in ids)
        d = dict(defaults or {})
        if "a" not in d:
            d["a"] = ids[0] if ids else None
        if "b" not in d:
            keys, pv = self._variant_keys, self._pv  # the first packet whose fate differs from the first's
            d["b"] = next((ids[k] for k in range(len(ids)) if keys[pv[k]][1] != keys[pv[0]][1]), None)
        addrs: list[str] = [""] * len(self._addrs)
        for a, i in self._addrs.items():
            addrs[i] = a
        strings: list[str] = [""] * len(self._strings)
        for text, i in self._strings.items():
            strings[i] = text
        return {
            "v": FORMAT,
            "page_size": PAGE_SIZE,
            "fates": list(FATES),
            "kinds": kinds,
            "tables": list(tables),
            # "RULESET/TABLE" -> the table with its family where two families' tables share its name
            # (rulesets/nft_model.table_label, as every other view names it)
            "table_labels": self._table_labels(tables, chains, xchains),
            "chains": chains,
            "xchains": xchains,
            "places": places,
            "steps": steps,
            "paths": self._path_steps,
            # the diagram's table rows [HOOK, table label], and per path each step's row (-1: none)
            "boxes": [[h, label] for h, label, _p in self._box_rows],
            "path_boxes": self._path_boxes,
            "variants": variants,
            "extras": extras,
            "strings": strings,
            "addrs": addrs,
            "packets": {
                "id": [b - a for a, b in zip([0, *ids], ids)] if delta else list(ids),
                "id_delta": delta,
                "v": self._pv, "src": self._src, "sport": self._sport, "dst": self._dst, "dport": self._dport,
            },
            "texts": texts,
            "rulesets": [_ruleset_name(rs) for rs in self.rulesets],
            "ruleset_known": bool(self.rulesets),
            "defaults": d,
        }

    def _table_labels(self, tables: dict[str, int], chains: list[list[Any]],
                      xchains: list[list[Any]]) -> dict[str, str]:
        shared = shared_in_rulesets(self.rulesets)
        out: dict[str, str] = {}
        if not shared:
            return out
        names = list(tables)
        for row in (*chains, *xchains):
            rs, t = row[0], row[1]
            name = names[t]
            if name in shared and 0 <= rs < len(self.rulesets) and is_nftables(self.rulesets[rs]):
                label = table_label(name, self.rulesets[rs].family, shared)
                if label != name:
                    out[f"{rs}/{t}"] = label
        return out

    def _extra(self, extra: tuple[Any, ...], s: Callable[[Any], int] | None = None) -> dict[str, Any]:
        if s is None:
            s = self._s
        why, marks, cause, warnings, notes, last = extra
        e: dict[str, Any] = {}
        if why:
            e["why"] = s(why)
        if marks:
            e["marks"] = [list(c) for c in marks]
        if cause:
            sdict = self._strings  # where s() numbers a text (data's and _s alike), in line for str
            rows = []
            for role, text, step in cause:
                if type(role) is str and type(text) is str:
                    r = sdict.get(role)
                    if r is None:
                        r = sdict[role] = len(sdict)
                    t = sdict.get(text)
                    if t is None:
                        t = sdict[text] = len(sdict)
                    rows.append([r, t, step])
                else:
                    rows.append([s(role), s(text), step])
            e["cause"] = rows
        if warnings:
            e["warn"] = [s(w) for w in warnings]
        if notes:
            e["notes"] = [s(n) for n in notes]
        if last:
            e["last"] = s(last)
        return e


def _chain_rows(hm: HitMap, rulesets: Sequence[Ruleset], tables: dict[str, int]) -> tuple[
        list[list[Any]], dict[tuple[int, str, str], int], list[int], list[list[Any]]]:
    """The document's chain rows (every chain of ``hm.chain_counts()``, ``tables`` numbered as met), the
    chain index of each (ruleset, table, chain), each chain's rule count, and the rule texts
    ``[chain index, [rule spec or None, ...]]`` of the chains packets entered. The reference of
    ``_chain_rows_fast``."""
    chains: list[list[Any]] = []
    chain_index: dict[tuple[int, str, str], int] = {}
    sizes: list[int] = []
    texts: list[list[Any]] = []
    rs_chains = {i: {(t, name): c for t, cs in rs.tables.items() for name, c in cs.items()}
                 for i, rs in enumerate(rulesets)}
    for cc in hm.chain_counts():
        ci = len(chains)
        chain_index[(cc.ruleset, cc.table, cc.name)] = ci
        t = tables.setdefault(cc.table, len(tables))
        row: list[Any] = [cc.ruleset, t, cc.name, cc.rules, cc.policy]
        if cc.entered:
            row += [cc.entered, cc.fell_off, [x for kv in cc.hits.items() for x in kv],
                    [x for kv in cc.deepest.items() for x in kv]]
            if cc.known:
                rules = rs_chains[cc.ruleset][(cc.table, cc.name)].rules
                texts.append([ci, [rule_spec(r.text, cc.name) for r in rules]])
            else:
                texts.append([ci, [None] * cc.rules])
        elif cc.policy is None:
            row.pop()
        chains.append(row)
        sizes.append(cc.rules)
    return chains, chain_index, sizes, texts


def _chain_rows_fast(hm: HitMap, rulesets: Sequence[Ruleset], tables: dict[str, int]) -> tuple[
        list[list[Any]], dict[tuple[int, str, str], int], list[int], list[list[Any]]]:
    """``_chain_rows`` (the reference) for given rulesets, without a ``ChainCounts`` object a chain:
    the chains are walked as ``HitMap.chain_counts`` walks them (rulesets in order, tables in kernel
    order, chains as listed), a chain no packet entered is one short row, and the counts of one
    that was entered are flattened from the hit map's own tables (``tests/report/test_report_fast.py``:
    the same rows on every case, and on a generated kube log)."""
    chains: list[list[Any]] = []
    chain_index: dict[tuple[int, str, str], int] = {}
    sizes: list[int] = []
    texts: list[list[Any]] = []
    entered_of, ends, deep = hm.entered, hm.ends, hm.deepest
    hits: dict[tuple[int, str, str], list[tuple[int, int]]] = {}
    for (rs_i, table, cname, num), c in hm.hits.items():
        got = hits.get((rs_i, table, cname))
        if got is None:
            hits[(rs_i, table, cname)] = [(num, c)]
        else:
            got.append((num, c))
    flat = _chain.from_iterable
    for i, rs in enumerate(rulesets):
        for table in table_order(rs.tables):
            of_table = rs.tables[table]
            if not of_table:
                continue
            t = tables.setdefault(table, len(tables))  # numbered at its first chain, as the reference does
            for chain in of_table.values():
                name, policy, rules = chain.name, chain.policy, chain.rules
                n = len(rules)
                key = (i, table, name)
                ci = chain_index[key] = len(chains)
                sizes.append(n)
                entered = entered_of.get(key, 0)
                if not entered:
                    chains.append([i, t, name, n, policy] if policy is not None else [i, t, name, n])
                    continue
                got = hits.get(key)
                if not got:
                    h = []
                elif len(got) == 1:  # most chains: one rule matched
                    k, c = got[0]
                    h = [k, c] if 1 <= k <= n else []
                else:
                    h = list(flat(sorted(kv for kv in got if 1 <= kv[0] <= n)))
                d = deep.get(key)
                if not d:
                    dl = []
                elif len(d) == 1:
                    dl = list(flat(d.items()))
                else:
                    dl = list(flat(sorted(d.items())))
                chains.append([i, t, name, n, policy, entered, ends.get(key, 0), h, dl])
                prefix = f"-A {name} "  # rule_spec (the reference), in line: one prefix a chain
                cut = len(prefix)
                texts.append([ci, [None if (x := r.text) is None else x[cut:] if x.startswith(prefix) else x
                                   for r in rules]])
    return chains, chain_index, sizes, texts


def _known_fields(events: Sequence[Any]) -> dict[str, str]:
    """The last event's fields, parsed at most once: an earlier event with the very same raw text and
    parser has equal fields (``TraceEvent.same_fields``), so its parsed dict is taken when there is one."""
    last = events[-1]
    if last._fields is not None or last.raw is None or last._parse is None:
        return last.fields  # type: ignore[no-any-return]
    raw, parse = last.raw, last._parse
    for k in range(len(events) - 2, -1, -1):
        ev = events[k]
        if ev.raw is not raw or ev._parse is not parse:
            break
        if ev._fields is not None:
            return ev._fields  # type: ignore[no-any-return]
    return last.fields  # type: ignore[no-any-return]


def _signature(steps: Sequence[Any]) -> tuple[Any, ...]:
    """What makes a path: each step's place and what the explainer made of it."""
    return tuple([(s.event.table, s.event.chain, str(s.event.kind), s.event.num, s.depth, s.action or "",
                   s.returned_to, s.policy, s.warning, s.note, s.event.family) for s in steps])


def _decisive_index(sig: tuple[Any, ...], table: Any, chain: Any, num: Any, family: Any = None) -> int:
    """The last step of the path at the verdict's place (when no cause link names the step); of the
    verdict's family where it says one (a table name two families share)."""
    for k in range(len(sig) - 1, -1, -1):
        st = sig[k]
        if st[0] == table and st[1] == chain and (num is None or st[3] == num) and (family is None or st[10] == family):
            return k
    return -1


def _nat_old(what: Any, old: Any, src: Any, sport: Any, dst: Any, dport: Any) -> Any:
    # an ``old`` equal to the packet's own first DST:DPT / SRC:SPT is written as 0, so packets
    # that took the same path share one NAT list
    if (what == "DST" and old == endpoint(dst, dport)) or (what == "SRC" and old == endpoint(src, sport)):
        return 0
    return old


def _intern(index: dict[str, int], text: str) -> int:
    """``text``'s number in ``index`` (numbered in the order first seen)."""
    i = index.get(text)
    if i is None:
        i = index[text] = len(index)
    return i


def _trim(row: list[Any]) -> list[Any]:
    # trailing "nothing" (-1 / None) is left out of a row; _untrim pads it back
    while row and (row[-1] is None or row[-1] == -1):
        row.pop()
    return row


def file_name(path: object) -> str:
    """A file as a report names it: its name only (a report is shared; the reader's folders are
    not the writer's, and a home directory is nobody's business); ``-`` is stdin."""
    p = str(path)
    if p == "-":
        return "stdin"
    return p.rstrip("/").rsplit("/", 1)[-1] or p


def _ruleset_name(rs: Ruleset) -> str:
    where = file_name(rs.origin.path) if rs.origin else "ruleset"
    bits = [b for b in (rs.format, rs.family) if b]
    return f"{where} ({', '.join(bits)})" if bits else where
