"""Files in, explained packets out: the stages wired together for the CLI, the lab and tests."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .correlate.group import group_packets
from .errors import RuletraceError
from .explain.explain import Explainer
from .explain.replies import with_replies
from .fields import FIELD_NAMES, bounded_int, proto_name, same_address
from .model import Explanation, Fate, Packet, Ruleset, RulesetView, TraceEvent, pick_ruleset
from .sources.stats import ReadStats

if TYPE_CHECKING:
    from .analyze.summary import Summary

_HANDLE_SOURCES = frozenset({"nft-monitor", "xtables-monitor", "nftrace"})


@dataclass(slots=True)
class SourceInfo:
    path: str
    format: str


@dataclass
class PacketFilter:
    """Which packets to keep: ``--match`` field conditions, ``--fate`` and ``--packet`` ids."""

    match: dict[str, str] = field(default_factory=dict)  # field name (kernel-log, upper) -> value
    fates: set[Fate] = field(default_factory=set)
    ids: set[int] = field(default_factory=set)
    # --match owner=WANT: a packet whose path passes a rule or chain of that owner (explain/owners.py);
    # tested on the explanation, as owners come from the ruleset, not from the logged fields
    owners: list[str] = field(default_factory=list)

    # user words -> kernel-log field names
    ALIASES: ClassVar[dict[str, str]] = {
        "dport": "DPT", "sport": "SPT", "src": "SRC", "dst": "DST", "proto": "PROTO",
        "in": "IN", "out": "OUT", "mark": "MARK", "id": "ID", "ttl": "TTL", "physin": "PHYSIN",
        "physout": "PHYSOUT", "type": "TYPE", "code": "CODE", "len": "LEN",
    }

    @classmethod
    def parse(cls, match: Iterable[str] = (), fates: Iterable[str] = (), ids: Iterable[int] = ()) -> PacketFilter:
        m: dict[str, str] = {}
        owners: list[str] = []
        for item in match:
            k, sep, v = item.partition("=")
            if not sep or not k:
                raise RuletraceError(f"--match {item!r}: expected FIELD=VALUE, e.g. dport=52000")
            if k.lower() == "owner":
                if not v:  # (an empty FIELD= matches an empty field, e.g. out=; no owner is empty)
                    raise RuletraceError(f"--match {item!r}: give the owner, e.g. owner=ns/svc or owner=docker")
                owners.append(v)
                continue
            key = cls.ALIASES.get(k.lower(), k.upper())
            if key not in FIELD_NAMES:
                raise RuletraceError(f"--match {item!r}: unknown field {k!r}; known: {', '.join(cls.known_fields())}")
            m[key] = match_value(key, v.strip(), item)
        fs = set()
        for f in fates:
            try:
                fs.add(Fate(f.lower()))
            except ValueError:
                raise RuletraceError(
                    f"--fate {f!r}: expected one of {', '.join(x.value for x in Fate)}"
                ) from None
        return cls(m, fs, set(ids), owners)

    @classmethod
    def known_fields(cls) -> list[str]:
        """The field words ``--match`` takes: the short names, ``owner``, then every other kernel-log name."""
        aliased = set(cls.ALIASES.values())
        return [*cls.ALIASES, "owner"] + sorted(f.lower() for f in FIELD_NAMES if f not in aliased)

    def wants_packet(self, p: Packet) -> bool:
        if self.ids and p.id not in self.ids:
            return False
        if not self.match:
            return True
        # a condition holds when any step of the packet shows it (the DST before or after DNAT)
        return all(any(field_matches(ev.fields.get(k), v) for ev in p.events) for k, v in self.match.items())

    def wants(self, e: Explanation) -> bool:
        if self.fates and e.fate not in self.fates:
            return False
        return not self.owners or owned_by(e, self.owners)


_NUMBERS = {"SPT": 65535, "DPT": 65535, "ID": 2**32 - 1, "TTL": 255, "HOPLIMIT": 255, "LEN": 2**32 - 1,
            "TYPE": 255, "CODE": 255, "MARK": 2**32 - 1}


def match_value(key: str, v: str, item: str) -> str:
    """A ``--match`` value as the fields spell it, or an error naming what is wrong with it: an address
    or CIDR for SRC/DST (``[fd00::1]`` taken too), a number in range for ports and the like, a mark in any
    base (``0x00008000`` and ``32768`` are the log's ``0x8000``), a protocol by name or number
    (``ipv6-icmp`` and ``58`` are the log's ``ICMPv6``). An empty value matches an empty field (``out=``)."""
    if not v:
        return v
    if key in ("SRC", "DST"):
        bare = v[1:-1] if v[:1] == "[" and v[-1:] == "]" else v
        try:
            ipaddress.ip_network(bare, strict=False) if "/" in bare else ipaddress.ip_address(bare)
        except ValueError:
            raise RuletraceError(f"--match {item!r}: {bare!r} is not an IP address or network") from None
        return bare
    if key in _NUMBERS:
        n = bounded_int(v, 0) if key == "MARK" else bounded_int(v)
        if n is None or not 0 <= n <= _NUMBERS[key]:
            what = "a number (0x… for hex)" if key == "MARK" else "a number"
            raise RuletraceError(f"--match {item!r}: expected {what} from 0 to {_NUMBERS[key]}")
        return f"{n:#x}" if key == "MARK" else str(n)
    if key == "PROTO":
        from .rulesets.options import PROTOCOLS

        low = v.lower()
        n = int(low) if low.isdigit() and len(low) <= 3 else PROTOCOLS.get("icmpv6" if low == "icmp6" else low)
        if n is None or n > 255:  # the log writes a protocol by name or number: no other word can match
            raise RuletraceError(f"--match {item!r}: expected a protocol name (tcp, udp, icmp, ipv6-icmp, …) "
                                 "or number from 0 to 255")
        return proto_name(n).upper()
    return v


def owned_by(e: Explanation, wants: list[str]) -> bool:
    """Every ``owner=`` value names an owner of a rule or chain on the packet's path (or of its decision)."""
    from .explain.owners import deciding_owner, path_owners

    have = path_owners(e)
    decided = deciding_owner(e)
    if decided is not None:
        have.append(decided)
    return all(any(o.matches(w) for o in have) for w in wants)


def field_matches(have: str | None, want: str) -> bool:
    """A packet field value against a --match value (exact, case-insensitive, the same address in
    another form — ``fd00:10::2`` is the log's ``fd00:0010:0000:…:0002`` — or in a CIDR)."""
    if have is None:
        return False
    if have == want:
        return True
    if "/" in want:
        try:
            return ipaddress.ip_address(have) in ipaddress.ip_network(want, strict=False)
        except ValueError:
            return False
    if have.upper() == want.upper():
        return True
    return ":" in want and ":" in have and same_address(have, want)


@dataclass
class ExplainResult:
    explanations: list[Explanation]
    sources: list[SourceInfo]
    warnings: list[str]
    skipped: int
    packets_total: int


class Run:
    """One explain run: sources are read lazily; ``explanations()`` streams."""

    def __init__(
        self,
        rulesets: list[Ruleset] | Callable[[], list[Ruleset]],
        inputs: list[str],
        *,
        fmt: str | None = None,
        packet_filter: PacketFilter | None = None,
        detail: bool = True,
        ifmap: dict[int, str] | None = None,
        progress: Callable[[int], None] | None = None,
        on_source: Callable[[SourceInfo], None] | None = None,
        explain_miss: tuple[str, str] | None = None,
    ) -> None:
        self._rulesets = rulesets  # or a loader, called once when first needed
        self.explain_miss = explain_miss  # (table, chain) of --explain-miss (analyze/explain_miss.chain_key)
        self.on_source = on_source  # told of each input as its format is known, before its packets
        self.inputs = inputs
        self.fmt = fmt
        self.filter = packet_filter or PacketFilter()
        self.detail = detail or bool(self.filter.owners)  # owners are read from the steps
        self.ifmap = ifmap
        self.progress = progress
        self.sources: list[SourceInfo] = []
        self.warnings: list[str] = []
        self.skipped = 0
        self.events = 0
        self.packets_total = 0
        self._explainers: dict[str | None, Explainer] = {}
        self._stats: list[Any] = []

    @property
    def rulesets(self) -> list[Ruleset]:
        if callable(self._rulesets):
            self._rulesets = self._rulesets()
        return self._rulesets

    def _explainer(self, family: str | None) -> Explainer:
        """One explainer for every family: each step is looked up in the ruleset of its own family."""
        ex = self._explainers.get(None)
        if ex is None:
            from .analyze.rule_check import taken_mismatch

            ex = self._explainers[None] = Explainer(RulesetView(self.rulesets), summary_only=not self.detail,
                                                    taken_check=taken_mismatch)
        return ex

    def read_events(self) -> Iterator[TraceEvent]:
        """Every input's events, format detected per file, merged in time order."""
        from .sources import detect

        def on_format(path: str, fmt: str) -> None:
            self._add_source(SourceInfo(path, fmt))

        def new_stats(path: str, fmt: str) -> ReadStats:
            st = ReadStats()
            self._stats.append(st)
            return st

        options: dict[str, Any] = {}
        if self.ifmap is not None:
            options["ifmap"] = self.ifmap
        if self.progress is not None:
            options["progress"] = self.progress
        events = detect.read_any(self.inputs, self.fmt, on_format=on_format, stats=new_stats, **options)
        return self._resolve_handles(events)

    def _add_source(self, info: SourceInfo) -> None:
        self.sources.append(info)
        if self.on_source is not None:
            self.on_source(info)

    def _resolve_handles(self, events: Iterator[TraceEvent]) -> Iterator[TraceEvent]:
        """nf_tables sources name rules by handle: number them from the ruleset of their family."""
        from .sources.handles import Resolver

        resolvers: dict[int, Resolver] = {}
        for ev in events:
            if ev.num is None and (ev.handle is not None or ev.source in _HANDLE_SOURCES):
                rs = pick_ruleset(self.rulesets, ev.family)
                if rs is not None:
                    r = resolvers.get(id(rs))
                    if r is None:
                        r = resolvers[id(rs)] = Resolver(rs)
                    r.resolve(ev)
            yield ev
        cut = sum(r.cut for r in resolvers.values())
        if cut:
            where = [w for r in resolvers.values() for w in r.cut_lines][:10]
            more = ", …" if cut > len(where) else ""
            self.warnings.append(
                f"{cut} rule text(s) cut short ({', '.join(where)}{more}): each is read as the rule of its "
                "chain that it begins (unknown where several do)")

    def summary(self) -> Summary:
        """Counts over every packet the filters keep, skipped lines included.

        One large uncompressed kernel-log file, summary only (``detail=False``), no packet-field
        filters is counted on every core (``parallel_log``, the one place that picks a fast path;
        ``fastpath.parallel``, equal to the sequential pass: tests/pipeline/test_parallel.py);
        anything else streams ``explanations()`` once.
        """
        from .analyze.summary import Summary

        summ = self._parallel_summary()
        if summ is None:
            summ = Summary()
            for e in self.explanations():
                summ.add(e)
        summ.add_skipped(self.skipped)
        return summ

    def parallel_log(self, output: str) -> str | None:
        """The one place that picks a fast path: the log file that processes on every core share
        for ``output`` (``"summary"``, ``"json"`` or ``"tree"``), or None where the sequential
        reference must run. Each needs one plain kernel-log file of 32 MiB or more
        (``fastpath.parallel.usable``); the summary counts paths without detail, so with no
        filter that reads fields or steps; JSON and the tree explain in detail, without --ifmap."""
        from .fastpath import parallel

        if len(self.inputs) != 1:
            return None
        if output == "summary":
            if self.detail or self.filter.match or self.filter.ids or self.filter.owners:
                return None
        elif not self.detail or self.ifmap is not None:
            return None
        path = self.inputs[0]
        return path if parallel.usable(path, self.fmt) else None

    def _parallel_summary(self) -> Summary | None:
        """The summary computed on every core, or None where that does not apply."""
        from .fastpath import parallel

        path = self.parallel_log("summary")
        if path is None:
            return None
        summ, skipped, events, misfits = parallel.summarize(
            path, lambda: self.rulesets, pick_ruleset, self.filter.fates, progress=self.progress
        )
        self._add_source(SourceInfo(path, "kernel-log"))
        self.skipped, self.events, self.packets_total = skipped, events, summ.packets
        self._finish_warnings(misfits)
        return summ

    def write_json_parallel(self, stream: Any, *, jsonl: bool,
                            annotate: Callable[[Explanation], Any] | None = None,
                            workers: int | None = None) -> int | None:
        """``explain --jsonl`` (or the ``--json`` document) written on every core, equal byte for byte
        to the sequential output (``fastpath.parallel_json``; tests/pipeline/test_parallel_json.py);
        the packets written, or None where it does not apply: the caller then streams
        ``explanations()``. It applies to one plain kernel-log file of 32 MiB or more, with detail.
        ``annotate(e)`` runs on each explanation before it is written (routing facts)."""
        from .analyze.summary import Summary
        from .fastpath import parallel_json

        path = self.parallel_log("json")
        if path is None:
            return None
        self.rulesets  # noqa: B018  # loaded once, before the workers fork
        self._add_source(SourceInfo(path, "kernel-log"))  # "read X as FORMAT" before the results
        summ = Summary()

        def each(e: Explanation) -> None:
            if annotate is not None:
                annotate(e)
            summ.add(e)

        def finish() -> dict[str, Any]:
            return {"summary": summ, "misfits": sum(ex.misfit_packets for ex in self._explainers.values())}

        def close(infos: list[Any], stats: ReadStats, packets: int) -> None:
            self.skipped, self.events, self.packets_total = stats.skipped, stats.events, packets
            self.warnings = list(stats.warnings)
            self._finish_warnings(sum(info["misfits"] for info in infos))

        def tail(infos: list[Any], stats: ReadStats, packets: int) -> dict[str, Any]:
            close(infos, stats, packets)
            total = Summary()
            for info in infos:
                total.merge(info["summary"])
            total.add_skipped(self.skipped)
            return {"summary": total, "warnings": self.warnings, "sources": self.sources}

        report = self.progress
        self.progress = None  # the workers do not draw it: the parent reports their bytes
        try:
            n, infos, stats, packets = parallel_json.write(
                path, path, self.explain_slice, stream, jsonl=jsonl, count=each, finish=finish,
                progress=report, workers=workers, tail=tail)
        finally:
            self.progress = report
        close(infos, stats, packets)
        return n

    def explain_slice(self, packets: Iterable[Packet], after: Iterable[Packet]) -> Iterator[Explanation]:
        """``explanations()`` of ``packets`` (one slice of the log, fastpath/slice_packets.py) without
        the run's counts; ``after``, the packets that follow, are read (as far as needed) only to
        answer the slice's UNKNOWN packets still waiting at its end (explain/replies.py)."""
        fed = passed = 0

        def items() -> Iterator[tuple[Packet, Explanation | None]]:
            nonlocal fed
            for pair in self._explained(packets=packets):
                fed += pair[1] is not None
                yield pair
            rest = iter(after)
            while passed != fed:  # something waits for a reply (asked before a packet is read)
                p = next(rest, None)
                if p is None:
                    return
                yield p, None

        for e in with_replies(items()):
            passed += 1
            kept = self._kept(e)
            if kept is not None:
                yield kept

    def write_tree_parallel(self, stream: Any, render: Callable[[Explanation], str], *,
                            annotate: Callable[[Explanation], Any] | None = None,
                            workers: int | None = None) -> tuple[int, Summary] | None:
        """The packet tree (``render(e)``: one packet's text, ``render.tree_plain.PlainTree.render``)
        written on every core, a blank line between packets, equal byte for byte to the sequential
        ``render.tree.render_explanations`` (``fastpath.parallel_tree``;
        tests/pipeline/test_parallel_tree.py); returns the packets written and their summary
        (skipped lines counted), or None where it does not apply: the caller then streams
        ``explanations()``. It applies where the parallel JSON does (one plain kernel-log file of
        32 MiB or more, with detail). ``annotate(e)`` runs on each explanation first (routing facts)."""
        from .analyze.summary import Summary
        from .fastpath import parallel_tree

        path = self.parallel_log("tree")
        if path is None:
            return None
        share, progress = self._on_every_core(path)
        summ = Summary()

        def each(e: Explanation) -> None:
            if annotate is not None:
                annotate(e)
            summ.add(e)

        def finish() -> dict[str, Any]:
            return {"summary": summ, "warnings": self.warnings, "skipped": self.skipped, "events": self.events,
                    "packets_total": self.packets_total}

        n, infos = parallel_tree.write(share, stream, render=render, count=each, finish=finish, progress=progress,
                                       workers=workers)
        progress()
        first = infos[0]
        self.warnings, self.skipped, self.events, self.packets_total = (
            list(first["warnings"]), first["skipped"], first["events"], first["packets_total"])
        total = Summary()
        for info in infos:
            total.merge(info["summary"])
        total.add_skipped(self.skipped)
        return n, total

    def _on_every_core(self, path: str) -> tuple[Callable[[int, Callable[[Any], bool]],
                                                          Iterator[tuple[int, Explanation]]], Callable[[], None]]:
        """For a run that forked processes share (``shard_by_path``): the rulesets loaded and the
        source said once, here, before the fork; ``share(k, deal)``, run in process k, gives its
        explanations, process 0 counting the bytes it reads for the progress bar; ``progress()``,
        in the parent, shows them."""
        import multiprocessing

        self.rulesets  # noqa: B018  # loaded once, before the workers fork
        self._add_source(SourceInfo(path, "kernel-log"))  # "read X as FORMAT" before the results
        done_bytes = multiprocessing.get_context("fork").Value("q", 0)
        report = self.progress

        def share(k: int, deal: Callable[[Any], bool]) -> Iterator[tuple[int, Explanation]]:
            def count_bytes(n: int) -> None:
                with done_bytes.get_lock():
                    done_bytes.value += n

            self.progress = count_bytes if report is not None and k == 0 else None  # one process shows it
            self.on_source = None  # said once, by the parent
            return self.shard_by_path(deal)

        shown = 0

        def progress() -> None:
            nonlocal shown
            if report is not None:
                now = done_bytes.value
                report(now - shown)
                shown = now

        return share, progress

    def explanations(self) -> Iterator[Explanation]:
        if not self.detail:  # summaries: no reply lookup (it would read every packet's fields)
            for _packet, e in self._explained():
                if e is not None and self.filter.wants(e):
                    yield e
        else:
            for _n, e in self._detailed(None):
                yield e
        self._finish()

    def shard_by_path(self, deal: Callable[[Any], bool]) -> Iterator[tuple[int, Explanation]]:
        """One process's share of a run that several processes make alike, as ``(position,
        explanation)``: every packet is read, grouped and planned as in ``explanations()``, so
        positions, ids and the reply lookup are the same; the share is dealt by path: ``deal(path)`` is asked for each packet the
        packet filter keeps, in reading order, with its path's signature (equal for the packets of
        one path: ``Explainer.path_of``); the packets it keeps are explained in detail. Every
        process asks it of the same packets in the same order (fastpath/parallel_tree.py)."""
        yield from self._detailed(None, deal)
        self._finish()

    def _detailed(self, mine: Callable[[int], bool] | None,
                  deal: Callable[[Any], bool] | None = None) -> Iterator[tuple[int, Explanation]]:
        where: dict[int, int] = {}  # id(explanation) -> its position, for this share's explanations
        shared = mine is not None or deal is not None
        for e in with_replies(self._explained(mine, where, deal)):
            n = where.pop(id(e), -1) if shared else -1
            if shared and n < 0:
                continue  # another process's packet, planned here only for the reply lookup
            kept = self._kept(e)
            if kept is not None:
                yield n, kept

    def _kept(self, e: Explanation) -> Explanation | None:
        """``e`` with its analyses when the filters keep it, else None. An ``owner=`` filter is
        asked after the analyses, which may name the owner (analyze/vmap_owner: the service whose
        map element chose kube-proxy's reject-chain); other filters before, to spare the work."""
        if self.filter.owners:
            e = self._annotated(e)
            return e if self.filter.wants(e) else None
        return self._annotated(e) if self.filter.wants(e) else None

    def _annotated(self, e: Explanation) -> Explanation:
        """A kept packet's analyses: near misses of a drop, ``--explain-miss``."""
        from .analyze import explain_miss, near_miss

        view = self._explainer(None).view
        near_miss.annotate(e, view)  # a drop: the ACCEPT rule one condition away
        if self.explain_miss is not None:
            explain_miss.annotate(e, view, self.explain_miss)
        return e

    def _explained(self, mine: Callable[[int], bool] | None = None,
                   where: dict[int, int] | None = None,
                   deal: Callable[[Any], bool] | None = None,
                   packets: Iterable[Packet] | None = None) -> Iterator[tuple[Packet, Explanation | None]]:
        """Every packet (of the inputs, or ``packets``), with its explanation when the packet filter
        keeps it (in detail when ``mine`` keeps its position or ``deal`` its path, or always without
        them; ``where`` gets their positions)."""
        for n, packet in enumerate(group_packets(self.read_events()) if packets is None else packets):
            self.packets_total += 1
            if not self.filter.wants_packet(packet):
                yield packet, None
                continue
            fam = packet.events[0].family if packet.events else None
            ex = self._explainer(fam)
            # each distinct path (and field-change signature) annotated once: equal to explain()
            if mine is None and deal is None:
                yield packet, ex.explain_cached(packet) if self.detail else ex.explain(packet, detail=False)
            elif deal(ex.path_of(packet)) if deal is not None else mine is not None and mine(n):
                e = ex.explain_cached(packet)
                if where is not None:
                    where[id(e)] = n
                yield packet, e
            else:  # its fate is all the reply lookup reads of it (a cached plan)
                yield packet, ex.explain(packet, detail=False)

    def _finish(self) -> None:
        for st in self._stats:
            sk = getattr(st, "skipped", 0) or 0
            self.skipped += sk
            self.events += getattr(st, "events", 0) or 0
            self.warnings.extend(getattr(st, "warnings", ()))
        self._finish_warnings(sum(ex.misfit_packets for ex in self._explainers.values()))

    def _finish_warnings(self, misfit: int) -> None:
        # what the ruleset parsers said (a guessed table, a missing COMMIT, a policy not given) first, once
        # each (an nft listing gives one ruleset per family, each with the file's warnings)
        said = dict.fromkeys(w for rs in self.rulesets for w in rs.warnings)
        self.warnings[:0] = [w for w in said if w not in self.warnings]
        from .sources.detect import NEWEST_FIRST

        if misfit and any(NEWEST_FIRST in w for w in self.warnings):
            self.warnings.append(f"the ruleset does not fit {misfit} packet(s); the input runs newest-first "
                                 "(above), which alone causes this")
        elif misfit and self.skipped:
            self.warnings.append(
                f"the ruleset does not fit {misfit} packet(s); {self.skipped} damaged line(s) were skipped "
                "and their steps are missing, which alone can cause this"
            )
        elif misfit:
            self.warnings.append(
                f"the ruleset does not fit {misfit} packet(s) (rule numbers or chain ends that chains it "
                f"holds do not have{', or rules taken that cannot match the packet' if self.detail else ''}): "
                "it looks older or newer than the log"
            )
        if not self.rulesets:
            if any(si.format in _HANDLE_SOURCES for si in self.sources):
                self.warnings.append("no ruleset given: steps show the rule text the trace printed, "
                                     "without rule numbers")
            else:
                self.warnings.append("no ruleset given: steps are shown without rule text")


def load_rulesets(paths: Iterable[str], texts: dict[str, str] | None = None, *,
                  pair_saves: bool = True) -> list[Ruleset]:
    """Every ruleset of every file: an nft listing gives one per family it holds.

    ``texts``: the content of some of ``paths`` already read (a listing read from a live host;
    the path is then only its name in messages). ``pair_saves``: the tables iptables-nft made
    show their ``iptables-nft-save`` lines (``rulesets/xt_save.py``) when a save is given; False
    keeps nft's text of the rules (the simulator walks nft text) and resolves only ``nft -j``'s
    ``xt`` placeholders from the save."""
    from .rulesets import load_rulesets as load

    texts = texts or {}
    loaded = [(p, load(p, text=texts.get(p))) for p in paths]
    saves = [rs for _, got in loaded for rs in got if rs.format == "iptables-save"]
    out: list[Ruleset] = []
    paired: list[Ruleset] = []
    for p, got in loaded:
        if saves and any(rs.format == "nft-json" for rs in got):
            # an iptables-save of the same host resolves the JSON's xt placeholders: pair them
            for i, rs in enumerate(got):
                save = next((sv for sv in saves if sv not in paired and _same_tables(sv, rs)), None)
                if save is not None:
                    from .model import Origin
                    from .rulesets.nft_json import parse_family
                    from .rulesets.nft_model import NFT_WORDS

                    fam = NFT_WORDS.get(rs.family or "", rs.family)
                    if p in texts:
                        got[i] = parse_family(texts[p], origin=Origin(p), family=fam, save=save)
                    else:
                        with open(p, encoding="utf-8", errors="replace") as f:
                            got[i] = parse_family(f.read(), origin=Origin(p), family=fam, save=save)
                        got[i].warnings[:] = [w for w in got[i].warnings if not w.startswith("left out")]
                    if pair_saves:
                        from .rulesets.xt_save import pair_save

                        pair_save(got[i], save)  # every rule, not only the xt placeholders, shows its save line
                    paired.append(save)
        out.extend(got)
    if saves and pair_saves:  # a host with native tables too: iptables-nft's tables take their save lines
        from .rulesets.xt_save import pair_save, restate_placeholders

        for rs in out:
            if rs.format in ("nft-text", "nft-json"):
                save = next((sv for sv in saves if sv not in paired and pair_save(rs, sv)), None)
                if save is not None:
                    paired.append(save)
        for _p, got in loaded:
            if any(rs.format == "nft-json" for rs in got):
                restate_placeholders(got)
    return [rs for rs in out if not any(rs is sv for sv in paired)]


def _same_tables(save: Ruleset, rs: Ruleset) -> bool:
    """A save listing describes the same tables as one family of an nft listing: same tables, chains, rule counts."""
    if save.family not in (None, rs.family) or not save.tables or set(save.tables) != set(rs.tables):
        return False
    # iptables-nft-save prints every built-in chain; nf_tables has those a rule was added to: an
    # empty chain of the save that the listing lacks does not tell them apart
    return all(set(rs.tables[t]) <= set(chains)
               and all(len(c.rules) == len(rs.tables[t][n].rules) if n in rs.tables[t] else not c.rules
                       for n, c in chains.items())
               for t, chains in save.tables.items())


def explain_files(
    ruleset: str | list[str] | None,
    inputs: list[str],
    *,
    fmt: str | None = None,
    packet_filter: PacketFilter | None = None,
) -> ExplainResult:
    """Read a ruleset (or several, one per family) and trace files; explain every packet."""
    paths = [] if ruleset is None else [ruleset] if isinstance(ruleset, str) else list(ruleset)
    run = Run(load_rulesets(paths), inputs, fmt=fmt, packet_filter=packet_filter)
    expls = list(run.explanations())
    return ExplainResult(expls, run.sources, run.warnings, run.skipped, run.packets_total)
