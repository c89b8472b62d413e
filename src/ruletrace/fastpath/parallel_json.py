"""``explain --json`` / ``--jsonl`` of huge kernel logs on every core, equal to the sequential output.

The file is cut at line starts into slices of ``SLICE_BYTES`` (``slice_packets.cut``, which also
counts the lines before each cut, so origins keep their file-wide line numbers). Worker processes
claim the slices in turn from a shared counter; each reads only its slice (and a little around
it) into the packets one sequential pass groups there (``fastpath/slice_packets.py``), explains
them the reference way (``pipeline.Run.explain_slice``: the path cache, the filters, near misses,
the reply lookup) and encodes them, sending blocks of ``BLOCK`` packets through its own bounded
queue. The parent takes the slices back in order and writes them:

- ids: a worker numbers packets within its slice; the parent adds the packets of the slices
  before (each slice's count comes with its end), so every packet has the sequential id;
- replies (explain/replies.py): an UNKNOWN packet still waiting at the end of its slice is looked
  up in the packets of the slices after it, which its worker reads for that only, until none
  waits (or the window is over). Packets carry ids ``MARK + slice x STRIDE + n`` in the workers;
  the few explanations whose notes name another packet so are sent as objects, and the parent
  puts the real id in and encodes them itself once the slices they name are counted;
- tables (render/json.py ``Tables``): a worker sends with each packet the table entries that are
  new *to it*. Any entry the packet uses that an earlier packet used is in the parent's table
  already (the earlier packet was written first), so those new to the parent are exactly the
  entries the sequential writer would put in this packet's table line, in the same order.

Memory: a worker holds one slice's grouping state and its caches; the parent at most ``QUEUED``
blocks per worker, and behind an explanation that names a later packet the output up to that
packet. The output is byte for byte the sequential one (tests/pipeline/test_parallel_json.py).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from ..errors import RuletraceError
from ..model import Explanation, Packet
from ..render.json import Tables, dumps, packet_json, write_lines
from ..sources.stats import ReadStats
from . import parallel, slice_packets

SLICE_BYTES = 32 << 20  # the largest slice (~5,000 packets of the kube log); the last ones are smaller
BLOCK = 200  # packets a message: small enough to keep the parent busy, big enough to queue cheaply
QUEUED = 8  # messages a worker may have sent ahead of the parent
MARK = 10**15  # packet ids in the workers: MARK + slice * STRIDE + number within the slice
STRIDE = 10**8
_MARKED = re.compile(r"(?<!\d)1\d{15}(?!\d)")

# explain(packets of the slice, packets after it) -> explanations; count(e) in the worker for each
Explain = Callable[[Iterable[Packet], Iterable[Packet]], Iterator[Explanation]]


def usable(path: str, fmt: str | None) -> bool:
    """One plain kernel-log file large enough to be worth the processes (as the parallel summary)."""
    return parallel.usable(path, fmt)


def _claim(counter: Any, owner: Any, k: int) -> int:
    with counter.get_lock():
        i: int = counter.value
        counter.value = i + 1
        if i < len(owner):
            owner[i] = k
    return i


def _serve(k: int, job: dict[str, Any], out: Any) -> None:
    """A worker: claim slices until none is left; send ``("p", [(n, new tables, text) or
    (n, None, explanation), …])`` blocks, ``("end", packets, stats)`` after each slice, then
    ``("done", finish())``."""
    try:
        path, name, cuts, lines = job["path"], job["name"], job["cuts"], job["lines"]
        explain: Explain = job["explain"]
        count: Callable[[Explanation], Any] = job["count"]
        done_bytes = job["done_bytes"]
        tables = Tables()
        take_new = tables.take_new
        last = len(cuts) - 1

        def after(i: int) -> Iterator[Packet]:
            for j in range(i + 1, last):  # read only as replies to the slice's waiting packets
                for p in slice_packets.packets(path, cuts, lines, j, name=name):
                    p.id += MARK + j * STRIDE
                    yield p

        while (i := _claim(job["counter"], job["owner"], k)) < last:
            st = slice_packets.SliceStats(lines[i] + 1, lines[i + 1] + 1)
            total = 0

            def mine(i: int = i, st: slice_packets.SliceStats = st) -> Iterator[Packet]:
                nonlocal total
                base = MARK + i * STRIDE
                for p in slice_packets.packets(path, cuts, lines, i, st, name=name):
                    total += 1
                    p.id += base
                    yield p

            block: list[Any] = []
            base = MARK + i * STRIDE
            for e in explain(mine(), after(i)):
                count(e)
                n = e.packet.id - base
                if e.notes and any(_MARKED.search(x) for x in e.notes):
                    block.append((n, None, e))  # names another packet: the parent encodes it
                else:
                    text = dumps(packet_json(e, tables))
                    cut = text.index(",")  # '{"id":N' -- the parent writes the real id
                    new = take_new()
                    block.append((n, None if new is None else new["tables"], text[cut:]))
                if len(block) >= BLOCK:
                    out.put(("p", block))
                    block = []
            if block:
                out.put(("p", block))
            with done_bytes.get_lock():
                done_bytes.value += cuts[i + 1] - cuts[i]
            out.put(("end", total, st))
        out.put(("done", job["finish"]()))
    except RuletraceError as e:
        out.put(("error", (e.message, e.origin)))
    except BaseException as e:  # said in the parent, with the worker's words
        out.put(("error", (f"explaining in a worker process failed: {type(e).__name__}: {e}", None)))


def write(path: str, name: str, explain: Explain, stream: IO[str], *, jsonl: bool,
          count: Callable[[Explanation], Any], finish: Callable[[], dict[str, Any]],
          progress: Callable[[int], None] | None = None, workers: int | None = None,
          tail: Callable[[list[Any], ReadStats, int], dict[str, Any]] | None = None,
          ) -> tuple[int, list[Any], ReadStats, int]:
    """Write the packets of ``path`` as ``--jsonl`` lines or as the ``--json`` document, made by
    ``workers`` processes; return (packets written, each worker's ``finish()``, the read stats of
    the whole file, packets read).

    ``explain(packets, after)`` is ``Run.explain_slice``; ``count(e)`` runs in the worker for each
    explanation (a Summary's ``add``); ``finish()`` in each worker after its last slice, its value
    sent back (picklable). ``tail(infos, stats, packets)`` gives the document's ``summary``,
    ``warnings`` and ``sources`` (``--json``). ``progress(bytes)`` is told the bytes done.
    """
    workers = max(2, workers or min(os.cpu_count() or 2, 8))
    cuts, lines = slice_packets.cut(path, SLICE_BYTES, shrink=2 * workers)
    nslices = len(cuts) - 1
    ctx = multiprocessing.get_context("fork")
    done_bytes = ctx.Value("q", 0)
    owner = ctx.Array("i", [-1] * max(1, nslices), lock=False)
    job = {"path": path, "name": name, "cuts": cuts, "lines": lines, "explain": explain, "count": count,
           "finish": finish, "counter": ctx.Value("l", 0), "owner": owner, "done_bytes": done_bytes}
    queues = [ctx.Queue(QUEUED) for _ in range(workers)]
    procs = [ctx.Process(target=_serve, args=(k, job, queues[k]), daemon=True) for k in range(workers)]
    tables = Tables()
    rules, owners = tables.rules, tables.owners
    infos: list[Any] = [None] * workers
    parts: list[ReadStats] = []
    offsets = [0]  # packets before each slice whose end came in
    shown = 0

    def show() -> None:
        nonlocal shown
        if progress is not None:
            now = done_bytes.value
            if now != shown:
                progress(now - shown)
                shown = now

    def alive_or_fail(k: int) -> None:
        if not procs[k].is_alive() and queues[k].empty():
            raise RuletraceError(f"a worker process ended without its result (exit {procs[k].exitcode})")

    def get(k: int) -> Any:
        while True:
            try:
                item = queues[k].get(timeout=0.2)
            except queue.Empty:
                alive_or_fail(k)
                show()
                continue
            if item[0] == "error":
                message, origin = item[1]
                raise RuletraceError(message, origin=origin)
            return item

    def owner_of(j: int) -> int:
        while owner[j] < 0:
            for k in range(workers):
                if not procs[k].is_alive():
                    try:  # a worker's error (it stops there) says what went wrong
                        item = queues[k].get_nowait()
                    except queue.Empty:
                        item = None
                    if item is not None and item[0] == "error":
                        message, origin = item[1]
                        raise RuletraceError(message, origin=origin)
                    alive_or_fail(k)
            show()
            time.sleep(0.001)
        return int(owner[j])

    def real_id(mark: int) -> int | None:
        """The id of the packet a worker called ``mark``; None while its slice is not counted."""
        j, n = divmod(mark - MARK, STRIDE)
        return offsets[j] + n if j < len(offsets) else None

    def marks(e: Explanation) -> list[str]:
        """The worker ids in ``e``'s notes (16-digit numbers that are no worker id stay as they are)."""
        return [m for x in e.notes for m in _MARKED.findall(x) if 0 <= int(m) - MARK < nslices * STRIDE]

    def encode(n: int, new: Any, text: Any) -> Iterator[tuple[bool, str]]:
        """A packet's lines: the table line it needs (entries new to the parent), then the packet."""
        if new is None and isinstance(text, Explanation):  # named another packet: encoded here
            e = text
            ids = {m: str(real_id(int(m))) for m in marks(e)}
            e.notes = [_MARKED.sub(lambda m: ids.get(m.group(), m.group()), x) for x in e.notes]
            e.packet.id = n
            out = dumps(packet_json(e, tables))
            got = tables.take_new()
            if got is not None:
                yield False, dumps(got)
            yield True, out
            return
        if new is not None:
            fresh = {"rules": {i: t for i, t in new["rules"].items() if i not in rules},
                     "owners": {i: o for i, o in new["owners"].items() if i not in owners}}
            if fresh["rules"] or fresh["owners"]:
                rules.update(fresh["rules"])
                owners.update(fresh["owners"])
                tables.take_new()  # (the parent's own new-entry list is not used)
                yield False, dumps({"tables": fresh})
        yield True, '{"id":' + str(n) + text

    def ready(item: tuple[int, Any, Any]) -> bool:
        e = item[2]
        if item[1] is not None or not isinstance(e, Explanation):
            return True
        return all(real_id(int(m)) is not None for m in marks(e))

    def texts() -> Iterator[tuple[bool, str]]:
        """(a packet?, its line) in order: the packets, each after the table line it needs."""
        held: deque[tuple[int, Any, Any]] = deque()  # behind an explanation naming a later packet
        for j in range(nslices):
            k = owner_of(j)
            while True:
                item = get(k)
                if item[0] == "end":
                    offsets.append(offsets[j] + item[1])
                    parts.append(item[2])
                    break
                if item[0] == "done":
                    raise RuletraceError("a worker process ended before its slice was done")
                base = offsets[j]
                for n, new, text in item[1]:
                    got = (base + n, new, text)
                    if held or not ready(got):
                        held.append(got)
                    else:
                        yield from encode(*got)
            while held and ready(held[0]):
                yield from encode(*held.popleft())
        while held:  # the slices they name are all counted now
            yield from encode(*held.popleft())

    def done() -> list[Any]:
        for k in range(workers):
            if infos[k] is None:
                item = get(k)
                if item[0] != "done":
                    raise RuletraceError("a worker process sent more than its slices")
                infos[k] = item[1]
        return infos

    def total_stats() -> ReadStats:
        return slice_packets.merge(parts)

    def doc_tail() -> tuple[Any, list[str], list[Any]]:
        got = tail(done(), total_stats(), offsets[-1]) if tail is not None else {}
        return got.get("summary"), got.get("warnings", []), got.get("sources", [])

    try:
        for p in procs:
            p.start()
        n = 0
        if jsonl:
            for is_packet, text in texts():
                stream.write(text + "\n")
                n += is_packet
        else:
            n = write_lines((text for is_packet, text in texts() if is_packet), stream, tables, tail=doc_tail)
        done()
        for p in procs:
            p.join()
        show()
    finally:
        parallel.stop(procs)
    return n, infos, total_stats(), offsets[-1]
