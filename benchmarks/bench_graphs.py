"""Graph kernels alone: what an HNSW walk on a rotated prefix plus a full-dim rerank can gain
over an HNSW walk on the full vectors, at equal recall, with no library around either.

This is the measurement behind the question "why is the funnel only level with HNSW at 75k
documents?": every contender here is bare FAISS (or hnswlib / usearch, where installed) and a
NumPy rerank, so what it shows is the limit of the kernels, not of our search call.

For each recall@10 target every contender is set on calibration queries (half, drawn at
random) by the rule of ``index.tune`` (the lower 95% confidence bound of the mean recall at the
target), then timed at batch 1 on the other half. A prefix graph has two settings, the
shortlist it returns and its beam (``efSearch``): for each shortlist in ``SHORTLISTS`` the
narrowest beam that meets the target is found (the sweep's step, then bisected twice, as
``index.tune`` narrows ours), and of those pairs the fastest on the calibration queries is kept.

Columns: recall@10 and q/s at batch 1 on the evaluation half; distance computations per query
(FAISS's HNSW counters, walk only); microseconds per query and nanoseconds per distance; RAM
per vector (graph and codes; the full vectors of a prefix graph's rerank come on top, in RAM or
mapped); build seconds.

Usage:
  python benchmarks/bench_graphs.py --data docstrings        # ~10 min
  python benchmarks/bench_graphs.py --data manpages --targets 0.99
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_recall import EF_SWEEP, K, bound, data_arguments, prepared, recall, timed

from matryoshka_retrieval.index.tune import narrowest

SHORTLISTS = (10, 20, 30, 50, 80, 130, 200, 300)
# (name, dims of the rotated prefix or None for the full vectors, precision, M, efConstruction)
CONFIGS: list[tuple[str, int | None, str, int, int]] = [
    ("faiss", None, "float32", 32, 80),
    ("faiss", None, "float32", 32, 200),
    ("faiss", 128, "int8", 32, 80),
    ("faiss", 128, "int8", 32, 200),
    ("faiss", 128, "int8", 16, 200),
    ("faiss", 128, "float16", 32, 80),
    ("faiss", 128, "float32", 32, 80),
    ("faiss", 96, "int8", 32, 80),
    ("faiss", 192, "int8", 32, 80),
    ("faiss", 256, "int8", 32, 80),
    ("faiss", 256, "int8", 16, 200),
    ("faiss", 384, "int8", 32, 80),
    ("hnswlib", None, "float32", 16, 200),
    ("hnswlib", 128, "float32", 16, 200),
    ("usearch", None, "float32", 16, 128),
    ("usearch", 128, "int8", 16, 128),
]
Search = Callable[[np.ndarray, int, int], np.ndarray]  # (queries, shortlist, beam) -> rows


def faiss_graph(data: np.ndarray, precision: str, m: int, efc: int) -> tuple[Search, Any]:
    ip = faiss.METRIC_INNER_PRODUCT
    if precision == "float32":
        index = faiss.IndexHNSWFlat(data.shape[1], m, ip)
    else:
        kind = {"int8": faiss.ScalarQuantizer.QT_8bit, "float16": faiss.ScalarQuantizer.QT_fp16}
        index = faiss.IndexHNSWSQ(data.shape[1], kind[precision], m, ip)
        index.train(data)
    index.hnsw.efConstruction = efc
    index.add(data)

    def search(q: np.ndarray, shortlist: int, ef: int) -> np.ndarray:
        index.hnsw.efSearch = ef
        return index.search(q, shortlist)[1]

    return search, faiss.serialize_index(index).nbytes


def hnswlib_graph(data: np.ndarray, precision: str, m: int, efc: int) -> tuple[Search, Any]:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=data.shape[1])
    index.init_index(data.shape[0], M=m, ef_construction=efc)
    index.add_items(data, num_threads=os.cpu_count() or 1)
    index.set_num_threads(1)

    def search(q: np.ndarray, shortlist: int, ef: int) -> np.ndarray:
        index.set_ef(ef)
        return index.knn_query(q, shortlist)[0].astype(np.int64)

    return search, data.shape[0] * (data.shape[1] * 4 + m * 2 * 4 + 16)


def usearch_graph(data: np.ndarray, precision: str, m: int, efc: int) -> tuple[Search, Any]:
    from usearch.index import Index

    dtype = {"float32": "f32", "int8": "i8", "float16": "f16"}[precision]
    index = Index(ndim=data.shape[1], metric="ip", dtype=dtype, connectivity=m, expansion_add=efc)
    index.add(np.arange(data.shape[0]), data, threads=os.cpu_count() or 1)

    def search(q: np.ndarray, shortlist: int, ef: int) -> np.ndarray:
        index.expansion_search = ef
        return index.search(q, shortlist, threads=1).keys.astype(np.int64).reshape(len(q), -1)

    return search, index.memory_usage


GRAPHS = {"faiss": faiss_graph, "hnswlib": hnswlib_graph, "usearch": usearch_graph}


def contender(
    vectors: np.ndarray, turn: np.ndarray, config: tuple
) -> tuple[dict[str, Any], Search] | None:
    """Facts (name, build time, RAM) and a ``(queries, shortlist, beam) -> rows`` search
    over the config's graph, reranked over the full vectors when the graph holds a prefix;
    None where the library is not installed."""
    lib, dims, precision, m, efc = config
    data_name = "full dim" if dims is None else f"{dims}d pca"
    name = f"{lib} HNSW {data_name} {precision} M={m} efC={efc}"
    try:
        build = GRAPHS[lib]
        if lib != "faiss":
            __import__(lib)
    except ImportError:
        print(f"  {name}: {lib} not installed, left out", flush=True)
        return None
    data = vectors if dims is None else vectors @ turn[:, :dims]
    data = np.ascontiguousarray(data / np.linalg.norm(data, axis=1, keepdims=True))
    start = time.perf_counter()
    graph, size = build(data, precision, m, efc)
    facts = {"name": name, "build_s": time.perf_counter() - start, "ram_b": size / len(vectors)}
    if dims is None:
        return facts, lambda q, shortlist, ef: graph(q, K, ef)
    part = np.ascontiguousarray(turn[:, :dims])

    def search(q: np.ndarray, shortlist: int, ef: int) -> np.ndarray:
        qp = q @ part
        rows = graph(qp / np.linalg.norm(qp, axis=1, keepdims=True), shortlist, ef)
        scores = np.matmul(vectors[np.maximum(rows, 0)], q[:, :, None])[:, :, 0]
        scores[rows < 0] = -np.inf
        return np.take_along_axis(rows, np.argsort(-scores, axis=1)[:, :K], axis=1)

    return facts, search


def pca_turn(vectors: np.ndarray, sample: int = 50_000, seed: int = 0) -> np.ndarray:
    """The rotation ``coarse_rotation="pca"`` fits on these rows (the index's own fit, on the
    same seeded sample)."""
    from matryoshka_retrieval.projection import fit_projection

    rows = np.arange(vectors.shape[0])
    if rows.shape[0] > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    fitted = fit_projection(vectors[rows], method="pca", show_progress_bar=False)
    return np.asarray(fitted.rotation, dtype=np.float32)


def settle(search: Search, full: bool, cal: np.ndarray, truth: np.ndarray, target: float):
    """The fastest (shortlist, beam) pair meeting ``target`` on the calibration queries."""

    def low(shortlist: int, ef: int) -> float:
        found = np.concatenate(
            [search(cal[s : s + 64], shortlist, ef) for s in range(0, len(cal), 64)]
        )
        return bound(found, truth)

    pairs = []
    for shortlist in (K,) if full else SHORTLISTS:
        last, fails = -1.0, shortlist
        for ef in (e for e in EF_SWEEP if e >= shortlist):
            now = low(shortlist, ef)
            if now >= target:
                reaches = lambda e, n=shortlist: low(n, e) >= target  # noqa: E731
                pairs.append((shortlist, narrowest(fails, ef, reaches)))
                break
            if now - last < 1e-3 and ef >= 4 * shortlist:  # the shortlist, not the beam, limits
                break
            last, fails = now, ef
    if not pairs:
        return None
    speed = {p: timed(lambda q, p=p: search(q, *p), cal, 1, budget=0.5, warm=0.2) for p in pairs}
    return max(pairs, key=speed.__getitem__)


def walk_distances(search: Search, pair: tuple[int, int], ev: np.ndarray) -> float | None:
    """FAISS's count of distance computations per query over the evaluation queries (None
    for the other libraries, which keep no count)."""
    stats = faiss.cvar.hnsw_stats
    stats.reset()
    for s in range(len(ev)):
        search(ev[s : s + 1], *pair)
    return stats.ndis / len(ev) if stats.ndis else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    data_arguments(parser, default="docstrings")
    parser.add_argument("--targets", default="0.95,0.99", help="recall@10 targets")
    args = parser.parse_args(argv)
    print(f"# bench_graphs {' '.join(sys.argv[1:])}; faiss {faiss.__version__}, "
          f"{os.cpu_count()} cores", flush=True)  # fmt: skip
    vectors, cal, ev, truth_cal, truth_ev, title = prepared(args)  # the halves of bench_recall
    turn = pca_turn(vectors)
    targets = [float(t) for t in args.targets.split(",")]
    rows: list[dict[str, Any]] = []
    for config in CONFIGS:
        if config[1] is not None and config[1] > vectors.shape[1]:
            continue
        made = contender(vectors, turn, config)
        if made is None:
            continue
        facts, search = made
        print(f"  {facts['name']} built in {facts['build_s']:.1f} s", flush=True)
        for target in targets:
            pair = settle(search, config[1] is None, cal, truth_cal, target)
            if pair is None:
                rows.append({**facts, "target": target})
                continue
            found = np.concatenate([search(ev[s : s + 64], *pair) for s in range(0, len(ev), 64)])
            row = {**facts, "target": target, "pair": pair, "recall": recall(found, truth_ev)}
            row["qps1"] = timed(lambda q, p=pair, f=search: f(q, *p), ev, 1)
            row["ndis"] = walk_distances(search, pair, ev) if config[0] == "faiss" else None
            rows.append(row)
    print()
    print(table(title, rows, targets))
    return 0


def table(title: str, rows: list[dict[str, Any]], targets: list[float]) -> str:
    head = (
        "| target | graph | shortlist / efSearch | recall@10 | q/s b1 | x full-dim HNSW efC=80 "
        "| distances / query | us / query | ns / distance | RAM B/vec | build s |"
    )
    lines = [f"### {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for target in targets:
        mine = [r for r in rows if r["target"] == target]
        base = next((r for r in mine if "qps1" in r), None)  # the first config: FAISS full dim
        for r in sorted(mine, key=lambda r: -r.get("qps1", 0)):
            if "qps1" not in r:
                lines.append(f"| {target} | {r['name']} | not reached | " + "| " * 8)
                continue
            us = 1e6 / r["qps1"]
            cells = [
                f"{target}", r["name"], f"{r['pair'][0]} / {r['pair'][1]}", f"{r['recall']:.4f}",
                f"{r['qps1']:,.0f}", f"{r['qps1'] / base['qps1']:.2f}" if base else "",
                f"{r['ndis']:,.0f}" if r["ndis"] else "", f"{us:,.0f}",
                f"{1e3 * us / r['ndis']:.0f}" if r["ndis"] else "", f"{r['ram_b']:,.0f}",
                f"{r['build_s']:.1f}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
