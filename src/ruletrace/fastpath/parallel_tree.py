"""The packet tree of ``explain`` (without colour) for huge kernel logs, on every core, equal to the sequential output.

As ``parallel_json.py`` does for JSON: each worker process reads, groups and plans the whole log
(``pipeline.Run.shard``), so packet positions, ids and the reply lookup (explain/replies.py: an
UNKNOWN packet answered by a later one, maybe of another worker's block) are exactly the
sequential run's. It explains in detail, annotates and lays out only its share: blocks of
``BLOCK`` consecutive packets, dealt to the workers in turn. A block goes to the parent as one
string, its packets' texts joined by a blank line; the parent writes the blocks in order, a
blank line between packets, as ``render.tree.render_explanations`` does.

Reading, grouping and planning every packet in every process costs ~0.07 ms of CPU a packet
(100,000-packet kube log: 7.3 s of the ~46 s a packet's detail and layout take in one process);
reading slices instead (``parallel.py``) would need the packet ids, the line numbers of ``-v``
and the reply lookup carried across slice boundaries. The output is byte for byte the
sequential one (tests/pipeline/test_parallel_tree.py).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Iterator
from typing import IO, Any

from ..errors import RuletraceError
from ..model import Explanation

BLOCK = 200  # packets a block (~1 MB of text): enough to queue cheaply, small enough to keep all busy
QUEUED = 8  # blocks a worker may have laid out ahead of the parent
Share = Callable[[Callable[[int], bool]], Iterator[tuple[int, Explanation]]]


def _serve(k: int, workers: int, share: Share, out: Any, render: Callable[[Explanation], str],
           count: Callable[[Explanation], Any], finish: Callable[[], Any]) -> None:
    """A worker: lay out blocks k, k + workers, …; send each as ``(block, packets, text)``, then
    ``("done", finish())``. A block whose packets were all filtered out is sent empty."""
    try:
        texts: list[str] = []
        block = k  # the next block of this worker, and its texts so far
        for n, e in share(lambda n: (n // BLOCK) % workers == k):
            b = n // BLOCK
            while block < b:
                out.put((block, len(texts), "\n".join(texts)))
                block, texts = block + workers, []
            count(e)
            texts.append(render(e))
        info = finish()  # how many packets there were: every block up to the last one is sent
        last = (info["packets_total"] - 1) // BLOCK
        while block <= last:
            out.put((block, len(texts), "\n".join(texts)))
            block, texts = block + workers, []
        out.put(("done", info))
    except RuletraceError as e:
        out.put(("error", (e.message, e.origin)))
    except BaseException as e:  # said in the parent, with the worker's words
        out.put(("error", (f"explaining in a worker process failed: {type(e).__name__}: {e}", None)))


def write(share: Share, stream: IO[str], *, render: Callable[[Explanation], str],
          count: Callable[[Explanation], Any], finish: Callable[[], dict[str, Any]],
          progress: Callable[[], None] | None = None, workers: int | None = None) -> tuple[int, list[Any]]:
    """Write ``render(e)`` of every explanation of ``share`` (``Run.shard``), a blank line between
    two, made by ``workers`` processes; return (packets written, each worker's ``finish()``).

    ``render(e)`` is one packet's text ending in a newline (``PlainTree.render``); ``count(e)``
    runs in the worker before it (annotations, a Summary's ``add``); ``finish()`` in each worker
    after its last packet, its value sent back (picklable; ``packets_total`` is required).
    ``progress()`` is called while the parent waits.
    """
    workers = max(2, workers or min(os.cpu_count() or 2, 8))
    ctx = multiprocessing.get_context("fork")
    queues = [ctx.Queue(QUEUED) for _ in range(workers)]
    procs = [ctx.Process(target=_serve, args=(k, workers, share, queues[k], render, count, finish), daemon=True)
             for k in range(workers)]
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

    try:
        for p in procs:
            p.start()
        n = 0
        b = 0
        write_ = stream.write
        while True:
            item = get(b % workers)
            if item[0] == "done":
                infos[b % workers] = item[1]
                break
            _, packets, text = item
            if packets:
                write_(text if not n else "\n" + text)
                n += packets
            b += 1
        for k in range(workers):
            if infos[k] is None:
                infos[k] = get(k)[1]
        stream.flush()
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
