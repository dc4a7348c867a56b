"""Benchmark MatryoshkaIndex against FAISS IndexFlatIP and IndexHNSWFlat on the full vectors.

One run prints one table per data set: recall@10 against exact full-dim search, queries/s at
batch 1 and batch 64 (and their ratio to IndexFlatIP), build time and adds/s, the peak RSS of a
fresh process that loads the saved index and serves every query (and its ratio to IndexFlatIP),
and the bytes per vector the index holds in RAM.

Data:
  synthetic  a deterministic clustered set (default 1,000,000 x 768) whose per-dimension
             variance decays as a power law (exponent -1.1, as all-MiniLM-L6-v2 embeddings show
             after a PCA rotation); queries are corpus points plus noise.
  manpages   the man-page corpus in ../shared/data embedded with all-MiniLM-L6-v2 (cached).

Usage:
  python benchmarks/bench_search.py                       # both data sets, full size
  python benchmarks/bench_search.py --n 100000 --data synthetic   # a quick run
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
SHARED = HERE.parent.parent / "shared" / "data" / "manpages"
K = 10


# -- data ------------------------------------------------------------------------------------------
def synthetic(n: int, dim: int, n_queries: int, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Clustered vectors with power-law variance per dim; cached as .npy (float32, unit norm)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"synthetic-{n}x{dim}-s{seed}.npy"
    qpath = CACHE / f"synthetic-{n}x{dim}-s{seed}-q{n_queries}.npy"
    if path.exists() and qpath.exists():
        return path, np.load(qpath)
    rng = np.random.default_rng(seed)
    std = (np.arange(1, dim + 1, dtype=np.float64) ** -0.55).astype(np.float32)  # var ~ i^-1.1
    n_clusters = max(16, n // 500)
    centroids = rng.standard_normal((n_clusters, dim), dtype=np.float32) * std
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), "w+", np.float32, (n, dim))
    chunk = 50_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        members = rng.integers(0, n_clusters, m)
        block = centroids[members] + 0.6 * rng.standard_normal((m, dim), dtype=np.float32) * std
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    out.flush()
    picks = rng.choice(n, n_queries, replace=False)
    queries = np.asarray(out[np.sort(picks)])
    queries += 0.3 * rng.standard_normal(queries.shape, dtype=np.float32) * std
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    del out
    os.replace(path.with_suffix(".tmp.npy"), path)
    np.save(qpath, queries.astype(np.float32))
    return path, queries.astype(np.float32)


def manpages() -> tuple[Path, np.ndarray, list[str], list[str], dict[str, str]]:
    """The man-page corpus and queries embedded with all-MiniLM-L6-v2 (cached)."""
    CACHE.mkdir(exist_ok=True)
    path, qpath, ids_path = (CACHE / f"manpages-{p}" for p in ("corpus.npy", "q.npy", "ids.json"))

    def read(name: str) -> list[dict[str, str]]:
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    corpus, queries = read("corpus.jsonl.gz"), read("queries.jsonl.gz")
    qrels: dict[str, str] = {}
    for line in (SHARED / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        qrels[qid] = did
    if not (path.exists() and qpath.exists() and ids_path.exists()):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from matryoshka_retrieval import SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder(show_progress_bar=True)
        texts = [(d.get("title", "") + " " + d["text"]).strip() for d in corpus]
        np.save(path, encoder.encode_documents(texts))
        np.save(qpath, encoder.encode_queries([q["text"] for q in queries]))
        ids_path.write_text(json.dumps([d["_id"] for d in corpus]))
    return (
        path,
        np.load(qpath),
        json.loads(ids_path.read_text()),
        [q["_id"] for q in queries],
        qrels,
    )


# -- configurations --------------------------------------------------------------------------------
@dataclass
class Config:
    name: str
    kind: str  # faiss-flat | faiss-hnsw | ours
    options: dict[str, Any] = field(default_factory=dict)


def configs(dim: int) -> list[Config]:
    c, mid = 64, min(256, dim // 2)
    b1, b2 = min(128, dim), min(256, dim)
    return [
        Config("FAISS IndexFlatIP, full dim", "faiss-flat"),
        Config("FAISS IndexHNSWFlat M=16, full dim", "faiss-hnsw", {"m": 16, "ef_search": 256}),
        Config("ours exact (coarse_dim=None)", "ours", {"coarse_dim": None}),
        Config(f"ours float32 {c}d x10", "ours", {"coarse_dim": c, "rescore_multiplier": 10}),
        Config(f"ours float32 {c}d x20", "ours", {"coarse_dim": c, "rescore_multiplier": 20}),
        Config(
            f"ours float32 {c}d:1000 > {mid}d:100 > full",
            "ours",
            {"stages": [(c, 1000), (mid, 100)]},
        ),
        Config(f"ours int8 {c}d x10", "ours", {"coarse_dim": c, "precision": "int8"}),
        Config(
            f"ours int8 {c}d x20",
            "ours",
            {"coarse_dim": c, "precision": "int8", "rescore_multiplier": 20},
        ),
        Config(
            f"ours int8 {c}d:1000 > {mid}d:100 > full",
            "ours",
            {"precision": "int8", "stages": [(c, 1000), (mid, 100)]},
        ),
        Config(
            f"ours binary {b1}d:1000 > {b1}d:100 > full",
            "ours",
            {"precision": "binary", "stages": [(b1, 1000), (b1, 100)]},
        ),
        Config(
            f"ours binary {b2}d:1000 > {b2}d:100 > full",
            "ours",
            {"precision": "binary", "stages": [(b2, 1000), (b2, 100)]},
        ),
        Config(
            f"ours hnsw float32 {c}d x10",
            "ours",
            {"coarse_dim": c, "backend": "hnsw", "hnsw_m": 16, "ef_construction": 40},
        ),
    ]


# -- building (in this process) --------------------------------------------------------------------
def build(config: Config, vectors: np.ndarray, folder: Path) -> dict[str, float]:
    n = vectors.shape[0]
    start = time.perf_counter()
    if config.kind == "faiss-flat":
        index = faiss.IndexFlatIP(vectors.shape[1])
        for s in range(0, n, 100_000):
            index.add(np.ascontiguousarray(vectors[s : s + 100_000]))
        built = time.perf_counter() - start
        faiss.write_index(index, str(folder / "index.faiss"))
    elif config.kind == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(
            vectors.shape[1], config.options["m"], faiss.METRIC_INNER_PRODUCT
        )
        index.hnsw.efConstruction = 40
        for s in range(0, n, 100_000):
            index.add(np.ascontiguousarray(vectors[s : s + 100_000]))
        built = time.perf_counter() - start
        faiss.write_index(index, str(folder / "index.faiss"))
    else:
        from matryoshka_retrieval import MatryoshkaIndex

        index = MatryoshkaIndex(dim=vectors.shape[1], device="cpu", **config.options)
        ids = [str(i) for i in range(n)]
        for s in range(0, n, 100_000):
            index.add_vectors(vectors[s : s + 100_000], ids=ids[s : s + 100_000])
        built = time.perf_counter() - start
        index.save(folder / "index")
    del index
    gc.collect()
    return {"build_s": built, "adds_per_s": n / built}


# -- serving (in a fresh process) ------------------------------------------------------------------
def serve(kind: str, folder: str, queries_path: str, options: str, b1_budget: float) -> None:
    """Child process: load the index, time batch-1 and batch-64 search, report peak RSS."""
    queries = np.load(queries_path)
    opts = json.loads(options)
    if kind.startswith("faiss"):
        index = faiss.read_index(str(Path(folder) / "index.faiss"))
        if kind == "faiss-hnsw":
            index.hnsw.efSearch = opts.get("ef_search", 64)

        def search(q: np.ndarray) -> np.ndarray:
            return index.search(q, K)[1]

        ram_bytes = float(queries.shape[1] * 4)
        if kind == "faiss-hnsw":
            ram_bytes += 2 * opts.get("m", 16) * 4 * 1.05  # neighbour lists, level 0 and above
        by_row = None
    else:
        from matryoshka_retrieval import MatryoshkaIndex

        index = MatryoshkaIndex.load(Path(folder) / "index", device="cpu")
        ids = None

        def search(q: np.ndarray) -> np.ndarray:
            hits = index.search_vectors(q, K)
            return np.array([[int(i) for i in h.ids] + [-1] * (K - len(h)) for h in hits])

        from matryoshka_retrieval.index import Manifest

        generation = Manifest.read(Path(folder) / "index").generation
        coarse = Path(folder) / "index" / generation / "coarse.faiss"
        ram_bytes = (coarse.stat().st_size / max(1, len(index)) if coarse.exists() else 0) + 1
        by_row = ids
    del by_row
    # batch 1: as many queries as fit in the time budget (at least 20)
    start, done = time.perf_counter(), 0
    while done < len(queries) and (done < 20 or time.perf_counter() - start < b1_budget):
        search(queries[done : done + 1])
        done += 1
    qps1 = done / (time.perf_counter() - start)
    # batch 64 over every query: this pass also gives the results for recall
    start = time.perf_counter()
    results = np.concatenate([search(queries[s : s + 64]) for s in range(0, len(queries), 64)])
    qps64 = len(queries) / (time.perf_counter() - start)
    np.save(Path(folder) / "results.npy", results)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    kib = {key: float(status[key].split()[0]) for key in ("VmHWM", "RssAnon", "RssFile")}
    print(
        json.dumps(
            {
                "qps1": qps1,
                "qps64": qps64,
                "rss_mb": kib["VmHWM"] / 1024,  # peak RSS of this process since exec
                "anon_mb": kib["RssAnon"] / 1024,
                "file_mb": kib["RssFile"] / 1024,
                "ram_bytes": ram_bytes,
            }
        )
    )


def run_config(
    config: Config, vectors: np.ndarray, queries_path: Path, truth: np.ndarray, b1_budget: float
) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-", dir=CACHE))
    try:
        row: dict[str, Any] = {"name": config.name}
        row.update(build(config, vectors, folder))
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--serve",
                config.kind,
                str(folder),
                str(queries_path),
                json.dumps(config.options),
                str(b1_budget),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            raise RuntimeError(f"{config.name}: serving failed\n{child.stderr[-3000:]}")
        row.update(json.loads(child.stdout.strip().splitlines()[-1]))
        results = np.load(folder / "results.npy")
        row["recall"] = float(
            np.mean([len(set(r) & set(t)) / K for r, t in zip(results, truth, strict=True)])
        )
        row["results"] = results
        return row
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ground_truth(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    rows = []
    for s in range(0, len(queries), 64):
        rows.append(
            faiss.knn(queries[s : s + 64], vectors, K, metric=faiss.METRIC_INNER_PRODUCT)[1]
        )
    return np.concatenate(rows)


def table(title: str, rows: list[dict[str, Any]], extra: dict[str, str] | None = None) -> str:
    flat = rows[0]
    head = (
        "| configuration | recall@10 | q/s b1 | x FlatIP b1 | q/s b64 | x FlatIP b64 | build s "
        "| adds/s | serve peak RSS MB (anon + file at end) | x FlatIP RSS | RAM B/vec |"
    )
    if extra:
        head += " " + " | ".join(extra) + " |"
    lines = [f"### {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [
            r["name"],
            f"{r['recall']:.4f}",
            f"{r['qps1']:.1f}",
            f"{r['qps1'] / flat['qps1']:.2f}",
            f"{r['qps64']:.1f}",
            f"{r['qps64'] / flat['qps64']:.2f}",
            f"{r['build_s']:.1f}",
            f"{r['adds_per_s']:,.0f}",
            f"{r['rss_mb']:,.0f} ({r['anon_mb']:,.0f} + {r['file_mb']:,.0f})",
            f"{r['rss_mb'] / flat['rss_mb']:.2f}",
            f"{r['ram_bytes']:,.0f}",
        ]
        if extra:
            cells += [r.get(key, "") for key in extra.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", choices=["synthetic", "manpages", "both"], default="both")
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic corpus size")
    parser.add_argument("--dim", type=int, default=768, help="synthetic dimension")
    parser.add_argument("--queries", type=int, default=1000, help="queries per data set")
    parser.add_argument("--b1-budget", type=float, default=20.0, help="seconds of batch-1 timing")
    parser.add_argument("--only", default=None, help="run only configurations containing this")
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], args.serve[1], args.serve[2], args.serve[3], float(args.serve[4]))
        return 0

    print(
        f"# bench_search: {' '.join(sys.argv[1:]) or '(defaults)'}; faiss {faiss.__version__}, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    outputs = []
    sets = ["synthetic", "manpages"] if args.data == "both" else [args.data]
    for data in sets:
        extra = None
        if data == "synthetic":
            path, queries = synthetic(args.n, args.dim, args.queries)
            title = f"synthetic {args.n:,} x {args.dim}, {len(queries)} queries, k={K}"
            doc_ids: list[str] | None = None
        else:
            path, queries, doc_ids, query_ids, qrels = manpages()
            title = (
                f"man pages ({len(doc_ids):,} docs, all-MiniLM-L6-v2 384d), "
                f"{len(queries)} queries, k={K}"
            )
            extra = {"hit@10 (qrels)": "hit10"}
        vectors = np.load(path, mmap_mode="r")
        queries_path = CACHE / f"{path.stem}-queries.npy"
        np.save(queries_path, queries)
        truth = ground_truth(vectors, queries)
        rows = []
        for config in configs(vectors.shape[1]):
            if args.only and args.only not in config.name and config.kind != "faiss-flat":
                continue
            print(f"  {data}: {config.name} ...", flush=True)
            row = run_config(config, vectors, queries_path, truth, args.b1_budget)
            if doc_ids is not None:
                wanted = [doc_ids.index(qrels[q]) for q in query_ids]
                found = [w in r for w, r in zip(wanted, row["results"], strict=True)]
                row["hit10"] = f"{np.mean(found):.3f}"
            rows.append(row)
            print(
                f"    recall {row['recall']:.4f}  q/s b1 {row['qps1']:.1f}  "
                f"b64 {row['qps64']:.1f}  "
                f"rss {row['rss_mb']:.0f} MB  build {row['build_s']:.1f}s",
                flush=True,
            )
        outputs.append(table(title, rows, extra))
        del vectors
    print()
    print("\n\n".join(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
