"""Searches in several threads while another thread adds and deletes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex
from pg_server import pg


class Workload:
    """One writer adding and deleting in rounds, readers checking every hit they get."""

    def __init__(self, index: MatryoshkaIndex, corpus: np.ndarray, queries: np.ndarray) -> None:
        self.index, self.corpus, self.queries = index, corpus, queries
        self.deleted: set[str] = set()
        self.added: set[str] = {f"base{i}" for i in range(1000)}
        self.state = threading.Lock()
        self.errors: list[BaseException] = []
        self.bad: list[str] = []
        self.stop = threading.Event()
        self.searches = 0

    def write_round(self, round_: int, rng: np.random.Generator) -> None:
        new_ids = [f"w{round_}-{j}" for j in range(25)]
        rows = rng.choice(len(self.corpus), 25)
        with self.state:  # known before they land, so no search can see them unknown
            self.added.update(new_ids)
        self.index.add_vectors(self.corpus[rows], ids=new_ids, metadatas=[{"r": round_}] * 25)
        victims = [f"w{round_}-{j}" for j in range(0, 25, 3)] + [f"base{round_}"]
        self.index.delete(victims)
        with self.state:  # gone once delete returns: later searches must not see them
            self.deleted.update(victims)
        deadline = time.monotonic() + 5  # let the readers search between rounds
        while self.searches < 2 * (round_ + 1) and time.monotonic() < deadline:
            time.sleep(0.001)

    def writer(self) -> None:
        try:
            rng = np.random.default_rng(0)
            for round_ in range(40):
                self.write_round(round_, rng)
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.errors.append(exc)
        finally:
            self.stop.set()

    def read_once(self, seed: int, rng: np.random.Generator) -> None:
        with self.state:
            gone_before = set(self.deleted)
        q = self.queries[rng.integers(len(self.queries), size=4)]
        self.searches += 1
        where = None if seed % 2 else {"r": {"$gte": 0}}
        for hits in self.index.search_vectors(q, k=10, filter=where):
            with self.state:
                known = set(self.added)
            self.bad.extend(h.id for h in hits if h.id not in known or h.id in gone_before)

    def reader(self, seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            while not self.stop.is_set():
                self.read_once(seed, rng)
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.errors.append(exc)


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_concurrent_search_add_delete_never_crashes_or_returns_removed_ids(
    corpus, queries, backend
) -> None:
    server = pg() if backend == "postgres" else {}
    index = MatryoshkaIndex(coarse_dim=32, device="cpu", **server)
    index.add_vectors(corpus[:1000], ids=[f"base{i}" for i in range(1000)])
    work = Workload(index, corpus, queries)
    threads = [threading.Thread(target=work.writer)] + [
        threading.Thread(target=work.reader, args=(s,)) for s in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not work.errors, work.errors
    assert work.searches >= 80  # the readers really ran while the writer worked
    assert not work.bad, work.bad[:10]
    assert len(index) == 1000 + 40 * 25 - 40 * 10
    remaining = set(index.search_vectors(corpus[:50], k=20)[0].ids)
    assert not remaining & work.deleted


def test_a_writer_waits_for_readers_and_new_readers_wait_for_it() -> None:
    import threading

    from matryoshka_retrieval.index._rwlock import RWLock

    lock, events = RWLock(), []
    reader_in, writer_waiting = threading.Event(), threading.Event()

    def writer() -> None:
        writer_waiting.set()
        with lock.write():
            events.append("write")

    def late_reader() -> None:
        with lock.read():
            events.append("late read")

    with lock.read():
        reader_in.set()
        w = threading.Thread(target=writer)
        w.start()
        writer_waiting.wait()
        while not lock._waiting_writers:  # the writer is queued behind this reader
            threading.Event().wait(0.001)
        r = threading.Thread(target=late_reader)
        r.start()
        threading.Event().wait(0.05)
        events.append("first read done")
    w.join(5)
    r.join(5)
    assert events == ["first read done", "write", "late read"]
