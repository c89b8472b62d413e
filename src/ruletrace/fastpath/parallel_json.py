"""``explain --json`` / ``--jsonl`` of huge kernel logs on every core, equal to the sequential output.

Each worker process reads and groups the whole log (cheap next to explaining) and plans every
packet, so packet positions, ids and the reply lookup (explain/replies.py: an UNKNOWN packet
answered by a later one) are exactly the sequential run's. It explains in detail, annotates and
encodes only its share: blocks of ``BLOCK`` consecutive packets, dealt to the workers in turn
(``pipeline.Run.shard``). The parent takes the blocks back in order, each from its worker's
queue (bounded: a worker ahead of the writer waits), and writes them.

Tables (render/json.py ``Tables``): a worker sends with each packet the table entries that are
new *to it*. Any entry the packet uses that an earlier packet used is in the parent's table
already (the earlier packet was written first), so those new to the parent are exactly the
entries the sequential writer would put in this packet's table line, in the same order. The
output is byte for byte the sequential one (tests/pipeline/test_parallel_json.py).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Iterator
from typing import IO, Any

from ..errors import RuletraceError
from ..model import Explanation
from ..render.json import Tables, dumps, packet_json, write_lines
from . import parallel

BLOCK = 200  # packets a block: small enough to keep every worker busy, big enough to queue cheaply
QUEUED = 8  # blocks a worker may have written ahead of the parent
Share = Callable[[Callable[[int], bool]], Iterator[tuple[int, Explanation]]]


def usable(path: str, fmt: str | None) -> bool:
    """One plain kernel-log file large enough to be worth the processes (as the parallel summary)."""
    return parallel.usable(path, fmt)


def _serve(k: int, workers: int, share: Share, out: Any, count: Callable[[Explanation], Any],
           finish: Callable[[], Any]) -> None:
    """A worker: explain and encode blocks k, k + workers, …; send each as
    ``(block, [(new table entries or None, packet text), …])``, then ``("done", finish())``."""
    try:
        tables = Tables()
        take_new = tables.take_new
        lines: list[tuple[Any, str]] = []
        block = k  # the next block of this worker, and its lines so far
        for n, e in share(lambda n: (n // BLOCK) % workers == k):
            b = n // BLOCK
            while block < b:  # blocks of this worker with no packet kept (all filtered out)
                out.put((block, lines))
                block, lines = block + workers, []
            count(e)
            text = dumps(packet_json(e, tables))
            new = take_new()
            lines.append((None if new is None else new["tables"], text))
        info = finish()  # how many packets there were: every block up to the last one is sent
        last = (info["packets_total"] - 1) // BLOCK
        while block <= last:
            out.put((block, lines))
            block, lines = block + workers, []
        out.put(("done", info))
    except RuletraceError as e:
        out.put(("error", (e.message, e.origin)))
    except BaseException as e:  # said in the parent, with the worker's words
        out.put(("error", (f"explaining in a worker process failed: {type(e).__name__}: {e}", None)))


def write(share: Share, stream: IO[str], *, jsonl: bool, count: Callable[[Explanation], Any],
          finish: Callable[[], dict[str, Any]], progress: Callable[[], None] | None = None,
          workers: int | None = None, tail: Callable[[list[Any]], dict[str, Any]] | None = None,
          ) -> tuple[int, list[Any]]:
    """Write the packets of ``share`` (``Run.shard``) as ``--jsonl`` lines or as the ``--json``
    document, made by ``workers`` processes; return (packets written, each worker's ``finish()``).

    ``count(e)`` runs in the worker for each packet it explains (a Summary's ``add``);
    ``finish()`` in each worker after its last packet, its value sent back (picklable: the run's
    sources, warnings, counts, the worker's summary; ``packets_total`` is required).
    ``tail(infos)`` gives the document's ``summary``, ``warnings`` and ``sources`` (``--json``).
    ``progress()`` is called while the parent waits.
    """
    workers = max(2, workers or min(os.cpu_count() or 2, 8))
    ctx = multiprocessing.get_context("fork")
    queues = [ctx.Queue(QUEUED) for _ in range(workers)]
    procs = [ctx.Process(target=_serve, args=(k, workers, share, queues[k], count, finish), daemon=True)
             for k in range(workers)]
    tables = Tables()
    rules, owners = tables.rules, tables.owners
    infos: list[Any] = [None] * workers

    def get(k: int) -> Any:
        while True:
            try:
                item = queues[k].get(timeout=0.2)
            except queue.Empty:
                if not procs[k].is_alive() and queues[k].empty():
                    raise RuletraceError(f"a worker process ended without its result (exit {procs[k].exitcode})") \
                        from None
                if progress is not None:
                    progress()
                continue
            if item[0] == "error":
                message, origin = item[1]
                raise RuletraceError(message, origin=origin)
            return item

    def texts() -> Iterator[tuple[bool, str]]:
        """(a packet?, its line) in order: the packets, each after the table line it needs."""
        b = 0
        while True:
            item = get(b % workers)
            if item[0] == "done":
                infos[b % workers] = item[1]
                return
            for new, text in item[1]:
                if new is not None:
                    fresh = {"rules": {i: t for i, t in new["rules"].items() if i not in rules},
                             "owners": {i: o for i, o in new["owners"].items() if i not in owners}}
                    if fresh["rules"] or fresh["owners"]:
                        rules.update(fresh["rules"])
                        owners.update(fresh["owners"])
                        yield False, dumps({"tables": fresh})
                yield True, text
            b += 1

    def done() -> list[Any]:
        for k in range(workers):
            if infos[k] is None:
                infos[k] = get(k)[1]
        return infos

    def doc_tail() -> tuple[Any, list[str], list[Any]]:
        got = tail(done()) if tail is not None else {}
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
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(2)
                if p.is_alive():
                    p.kill()
                    p.join()
    return n, infos
