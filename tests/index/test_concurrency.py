"""Searches in several threads while another thread adds and deletes."""

from __future__ import annotations

import threading
import time

import numpy as np

from matryoshka_retrieval import MatryoshkaIndex


def test_concurrent_search_add_delete_never_crashes_or_returns_removed_ids(corpus, queries) -> None:  # type: ignore[no-untyped-def]
    index = MatryoshkaIndex(coarse_dim=32, device="cpu")
    index.add_vectors(corpus[:1000], ids=[f"base{i}" for i in range(1000)])
    deleted: set[str] = set()
    added: set[str] = {f"base{i}" for i in range(1000)}
    state = threading.Lock()
    errors: list[BaseException] = []
    bad: list[str] = []
    stop = threading.Event()
    searches = [0]

    def writer() -> None:
        try:
            rng = np.random.default_rng(0)
            for round_ in range(40):
                new_ids = [f"w{round_}-{j}" for j in range(25)]
                rows = rng.choice(len(corpus), 25)
                with state:  # known before they land, so no search can see them unknown
                    added.update(new_ids)
                index.add_vectors(corpus[rows], ids=new_ids, metadatas=[{"r": round_}] * 25)
                victims = [f"w{round_}-{j}" for j in range(0, 25, 3)] + [f"base{round_}"]
                index.delete(victims)
                with state:  # gone once delete returns: later searches must not see them
                    deleted.update(victims)
                deadline = time.monotonic() + 5  # let the readers search between rounds
                while searches[0] < 2 * (round_ + 1) and time.monotonic() < deadline:
                    time.sleep(0.001)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                with state:
                    gone_before = set(deleted)
                q = queries[rng.integers(len(queries), size=4)]
                searches[0] += 1
                for hits in index.search_vectors(
                    q, k=10, filter=None if seed % 2 else {"r": {"$gte": 0}}
                ):
                    with state:
                        known = set(added)
                    for hit in hits:
                        if hit.id not in known or hit.id in gone_before:
                            bad.append(hit.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(s,)) for s in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert searches[0] >= 80  # the readers really ran while the writer worked
    assert not bad, bad[:10]
    assert len(index) == 1000 + 40 * 25 - 40 * 10
    remaining = set(index.search_vectors(corpus[:50], k=20)[0].ids)
    assert not remaining & deleted
