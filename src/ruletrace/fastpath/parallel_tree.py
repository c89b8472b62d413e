"""The packet tree of ``explain`` (without colour) for huge kernel logs, on every core, equal to the sequential output.

As in ``parallel_json.py``, each worker process reads, groups and plans the whole log
(``pipeline.Run.shard_by_path``), so packet positions, ids and the reply lookup (explain/replies.py:
an UNKNOWN packet answered by a later one, maybe another worker's) are exactly the sequential
run's. Each worker explains in detail, annotates and lays out only its share, sent to the parent as
``(position, text)`` in batches; the parent merges the workers' streams by position and writes
the texts in order, a blank line between two packets, as ``render.tree.render_explanations`` does.

The share is dealt by path (``Dealer``), not by position: a path's packets go to one worker, so
its explanation template (explain/pathcache.py) and its layout (render/tree_plain.py) are made and
kept in one process only — half the misses and half the cache memory of each worker with two
workers. Every process deals alike, as each sees every packet in the same order. A path moves to
the least loaded worker when its own is ``SLACK`` packets ahead, so one path that most packets
take is still shared out.

Reading, grouping and planning every packet in every process costs ~0.07 ms of CPU a packet
(100,000-packet kube log: 7.3 s of the ~46 s the detail and layout take in one process);
reading slices instead (``parallel.py``) would need the packet ids, the line numbers of ``-v``
and the reply lookup carried across slice boundaries. The output is byte for byte the
sequential one (tests/pipeline/test_parallel_tree.py).
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import queue
from collections.abc import Callable, Iterator
from typing import IO, Any

from ..errors import RuletraceError
from ..model import Explanation
from . import parallel

BATCH = 200  # packets a worker sends at once (~1 MB of text)
QUEUED = 8  # batches a worker may have laid out ahead of the parent
SLACK = 400  # packets a worker may be dealt ahead of the least loaded one before its paths move
OWNERS_MAX = 100_000  # paths whose worker is remembered; then dealt afresh (as the plan cache, bounded)
Share = Callable[[int, Callable[[Any], bool]], Iterator[tuple[int, Explanation]]]


class Dealer:
    """Whether worker ``k`` of ``workers`` takes a packet, by its path: the path's worker, unless
    that one has been dealt more than ``slack`` packets beyond the least loaded worker; then the
    path moves to the least loaded one (the lowest number of those). A new path goes to the least
    loaded worker; up to ``OWNERS_MAX`` paths are remembered. Deterministic: every process deals
    the same packets alike."""

    __slots__ = ("k", "load", "owner", "slack")

    def __init__(self, k: int, workers: int, slack: int | None = None) -> None:
        self.k = k
        self.slack = SLACK if slack is None else slack
        self.load = [0] * workers
        self.owner: dict[Any, int] = {}

    def __call__(self, path: Any) -> bool:
        load = self.load
        w = self.owner.get(path)
        if w is None or load[w] > min(load) + self.slack:
            if w is None and len(self.owner) >= OWNERS_MAX:
                self.owner.clear()  # in every process at the same packet: they still deal alike
            w = self.owner[path] = load.index(min(load))
        load[w] += 1
        return w == self.k


def _serve(k: int, workers: int, share: Share, out: Any, render: Callable[[Explanation], str],
           count: Callable[[Explanation], Any], finish: Callable[[], Any]) -> None:
    """A worker: send ``(positions, texts)`` of its packets in batches, then ``("done", finish())``."""
    try:
        ns: list[int] = []
        texts: list[str] = []
        for n, e in share(k, Dealer(k, workers)):
            count(e)
            ns.append(n)
            texts.append(render(e))
            if len(ns) >= BATCH:
                out.put((ns, texts))
                ns, texts = [], []
        info = finish()
        if ns:
            out.put((ns, texts))
        out.put(("done", info))
    except RuletraceError as e:
        out.put(("error", (e.message, e.origin)))
    except BaseException as e:  # said in the parent, with the worker's words
        out.put(("error", (f"explaining in a worker process failed: {type(e).__name__}: {e}", None)))


def write(share: Share, stream: IO[str], *, render: Callable[[Explanation], str],
          count: Callable[[Explanation], Any], finish: Callable[[], dict[str, Any]],
          progress: Callable[[], None] | None = None, workers: int | None = None) -> tuple[int, list[Any]]:
    """Write ``render(e)`` of every explanation, a blank line between two, made by ``workers``
    processes; return (packets written, each worker's ``finish()``).

    ``share(k, deal)`` is worker k's ``(position, explanation)`` pairs (``Run.shard_by_path``);
    ``render(e)`` one packet's text ending in a newline (``PlainTree.render``); ``count(e)`` runs
    in the worker before it (annotations, a Summary's ``add``); ``finish()`` in each worker after
    its last packet, its value sent back (picklable). ``progress()`` is called while the parent waits.
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

    def stream_of(k: int) -> Iterator[tuple[int, str]]:
        while True:
            item = get(k)
            if item[0] == "done":
                infos[k] = item[1]
                return
            yield from zip(*item)

    try:
        for p in procs:
            p.start()
        n = 0
        write_ = stream.write
        for _, text in heapq.merge(*map(stream_of, range(workers))):  # positions differ: texts never compared
            write_(text if not n else "\n" + text)
            n += 1
        stream.flush()
        for p in procs:
            p.join()
    finally:
        parallel.stop(procs)
    return n, infos
