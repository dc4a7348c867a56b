"""Equal-recall benchmark: the tuned funnel against the peers a user would pick instead.

For each recall@10 target (0.95, 0.99) every contender is set to its cheapest setting that
reaches the target on calibration queries (half of the queries, drawn at random; "reaches":
the lower 95% confidence bound of the mean, the rule of ``index.tune``), then measured on the
other half:
recall@10 against exact full-dim search, queries/s at batch 1 and 64, the RAM it holds
(anonymous) and what it reads from the page cache (file-backed), build time.

Contenders:
  FAISS IndexFlatIP         exact scan of the full vectors (the baseline of every ratio)
  FAISS IndexHNSWFlat       over the full vectors, M=32, efConstruction=80 (and 200), efSearch
                            swept, then bisected twice between the last short and first met
  semantic_search_faiss     sentence-transformers' quantized search (uint8 / ubinary codes,
                            exact scan, rescored), rescore_multiplier swept
  ours                      MatryoshkaIndex per coarse stage (dim x precision x backend, on the
                            stored prefixes or, "pca", through ``coarse_rotation="pca"``), tuned
                            by ``index.tune(target, queries=calibration)``; timed with the full
                            vectors in RAM, mapped from the file (``mmap``: page cache, counted
                            as file-backed) and read per candidate row (``pread``)
  bare                      the same kernels as the fastest "ours" row, called directly (its
                            FAISS coarse index, the adaptive cut, NumPy rerank from an in-RAM
                            array aligned as ours, ids from a list; or, where the tuner chose a
                            full scan, the library's BLAS scan function called directly): the
                            overhead ratio of our search call

Usage:
  python benchmarks/bench_recall.py --data manpages
  python benchmarks/bench_recall.py --data docstrings     # embeds once: benchmarks/docstrings.py
  python benchmarks/bench_recall.py --data manpages-mrl   # trains once: benchmarks/mrl_manpages.py
  python benchmarks/bench_recall.py --data synthetic --n 100000
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import ground_truth, manpages, synthetic

from matryoshka_retrieval.index.tune import lower_bound, narrowest

K = 10
TARGETS = (0.95, 0.99)
EF_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072)
MULT_SWEEP = (1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def timed(
    search: Any, queries: np.ndarray, batch: int, budget: float = 4.0, warm: float = 1.0
) -> float:
    """Queries/s at ``batch``: at least one pass over 64 queries, up to ``budget`` seconds,
    after ``warm`` seconds of the same calls untimed (a search just loaded or built runs up to
    1.7x slower over its first thousand queries)."""
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < warm:
        s = done % len(queries)
        search(queries[s : s + batch])
        done += batch
    start, done = time.perf_counter(), 0
    while done < 64 or (time.perf_counter() - start < budget and done < len(queries) * 4):
        s = done % len(queries)
        search(queries[s : s + batch])
        done += min(batch, len(queries) - s)
    return done / (time.perf_counter() - start)


def measure(name: str, search: Any, ev: np.ndarray, truth: np.ndarray, **facts: Any) -> dict:
    found = np.concatenate([search(ev[s : s + 64]) for s in range(0, len(ev), 64)])
    row = {"name": name, "recall": recall(found, truth), **facts}
    row["qps1"] = timed(search, ev, 1)
    row["qps64"] = timed(search, ev, 64)
    return row


def bound(found: np.ndarray, truth: np.ndarray) -> float:
    """The lower 95% confidence bound of the mean recall@10 over the queries: ``index.tune``'s
    own rule (``lower_bound``, at its default ``confidence=0.95``)."""
    per_query = np.array([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])
    return lower_bound(per_query)


def cheapest(settings: Any, search_at: Any, cal: np.ndarray, truth: np.ndarray, target: float):
    """The first setting (cheapest first) whose calibration recall meets ``target`` by the
    same rule as our tuner's (its lower confidence bound), so every contender is set alike."""
    for setting in settings:
        found = np.concatenate(
            [search_at(setting, cal[s : s + 64]) for s in range(0, len(cal), 64)]
        )
        if bound(found, truth) >= target:
            return setting
    return None


def flat_rows(vectors, ev, truth_ev) -> dict:
    start = time.perf_counter()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    built = time.perf_counter() - start
    return measure(
        "FAISS IndexFlatIP, full dim",
        lambda q: index.search(q, K)[1],
        ev,
        truth_ev,
        build_s=built,
        anon_b=vectors.shape[1] * 4,
        file_b=0,
    )


def hnsw_rows(vectors, cal, truth_cal, ev, truth_ev, efc: int = 80) -> list[dict]:
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = efc
    index.add(vectors)
    built = time.perf_counter() - start
    size = faiss.serialize_index(index).nbytes / vectors.shape[0]

    def at(ef: int, q: np.ndarray) -> np.ndarray:
        index.hnsw.efSearch = ef
        return index.search(q, K)[1]

    rows = []
    for target in TARGETS:
        ef = cheapest(EF_SWEEP, at, cal, truth_cal, target)
        if ef is not None and ef > EF_SWEEP[0]:
            below = EF_SWEEP[EF_SWEEP.index(ef) - 1]
            reaches = lambda e, t=target: cheapest([e], at, cal, truth_cal, t) is not None  # noqa: E731
            ef = narrowest(below, ef, reaches)  # as tune narrows ours
        if ef is None:
            note = f"efSearch up to {EF_SWEEP[-1]}"
            name = f"FAISS IndexHNSWFlat M=32 efConstruction={efc}"
            rows.append({"name": name, "target": target, "note": note})
            continue
        index.hnsw.efSearch = ef
        rows.append(
            measure(
                f"FAISS IndexHNSWFlat M=32 efConstruction={efc} efSearch={ef}, full dim",
                lambda q: index.search(q, K)[1],
                ev,
                truth_ev,
                target=target,
                build_s=built,
                anon_b=size,
                file_b=0,
            )
        )
    return rows


def sst_rows(vectors, cal, truth_cal, ev, truth_ev) -> list[dict]:
    from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_faiss

    rows = []
    for precision in ("uint8", "ubinary"):
        start = time.perf_counter()
        ranges = np.stack([vectors.min(axis=0), vectors.max(axis=0)])
        codes = quantize_embeddings(vectors, precision=precision, ranges=ranges)
        _, _, index = semantic_search_faiss(
            vectors[:1], corpus_embeddings=codes, corpus_precision=precision,
            ranges=ranges, output_index=True,
        )  # fmt: skip
        built = time.perf_counter() - start

        def search(
            q: np.ndarray, mult: int, index: Any = index, precision: str = precision,
            ranges: np.ndarray = ranges,
        ) -> np.ndarray:  # fmt: skip
            hits, _, _ = semantic_search_faiss(
                q, corpus_index=index, corpus_precision=precision, top_k=K,
                ranges=ranges, rescore_multiplier=mult, output_index=True,
            )  # fmt: skip
            return np.array([[h["corpus_id"] for h in row] + [-1] * (K - len(row)) for row in hits])

        for target in TARGETS:
            mult = cheapest(MULT_SWEEP, lambda m, q: search(q, m), cal, truth_cal, target)
            if mult is None:
                rows.append({"name": f"semantic_search_faiss {precision}", "target": target})
                continue
            rows.append(
                measure(
                    f"semantic_search_faiss {precision} rescore x{mult}",
                    lambda q, m=mult: search(q, m),
                    ev,
                    truth_ev,
                    target=target,
                    build_s=built,
                    anon_b=codes.nbytes / vectors.shape[0],
                    file_b=0,
                )
            )
    return rows


def ours_configs(dim: int) -> list[dict[str, Any]]:
    half = min(128, dim // 2)
    plain = [
        {"coarse_dim": 64, "precision": "int8"},
        {"coarse_dim": half, "precision": "int8"},
        {"coarse_dim": 2 * half, "precision": "binary"},
        {"coarse_dim": 64, "backend": "hnsw", "ef_search": 16},
        {"coarse_dim": half, "backend": "hnsw", "ef_search": 16},
    ]
    rotated = [
        {"coarse_dim": 64, "precision": "int8"},
        {"coarse_dim": 32, "backend": "hnsw", "ef_search": 16},
        {"coarse_dim": 64, "backend": "hnsw", "ef_search": 16},
        {"coarse_dim": 64, "backend": "hnsw", "ef_search": 16, "hnsw_m": 16},
        {"coarse_dim": half, "backend": "hnsw", "ef_search": 16},
        {"coarse_dim": half, "backend": "hnsw", "precision": "int8", "ef_search": 16},
        {"coarse_dim": half, "backend": "hnsw", "precision": "int8", "ef_search": 16,
         "ef_construction": 200},
        {"coarse_dim": 2 * half, "backend": "hnsw", "precision": "int8", "ef_search": 16,
         "hnsw_m": 16, "ef_construction": 200},
    ]  # fmt: skip
    return plain + [{**c, "coarse_rotation": "pca"} for c in rotated]


def _ids(hits: list[Any]) -> np.ndarray:
    return np.array([[int(i) for i in h.ids] + [-1] * (K - len(h)) for h in hits])


def ours_rows(vectors, cal, ev, truth_ev, folder: Path, only: str | None = None) -> list[dict]:
    from matryoshka_retrieval import MatryoshkaIndex
    from matryoshka_retrieval.index.tune import describe

    rows: list[dict] = []
    kept: dict[float, dict] = {}  # per target: the fastest ram row so far, with its kernels
    ids = [str(i) for i in range(vectors.shape[0])]
    configs = ours_configs(vectors.shape[1])
    if only:  # a comma list of positions in ours_configs
        configs = [configs[int(i)] for i in only.split(",")]
    for options in configs:
        start = time.perf_counter()
        index = MatryoshkaIndex(device="cpu", exact_below=0, **options)
        index.add_vectors(vectors, ids=ids)
        built = time.perf_counter() - start
        name = (
            f"ours {options.get('backend', 'exact')} {options.get('precision', 'float32')} "
            f"{options['coarse_dim']}d"
            + (f" M={options['hnsw_m']}" if "hnsw_m" in options else "")
            + (f" efC={options['ef_construction']}" if "ef_construction" in options else "")
            + (" pca" if options.get("coarse_rotation") else "")
        )
        index.save(folder / "i")
        coarse = next((folder / "i").glob("gen-*/coarse.faiss"), None)
        coarse_b = coarse.stat().st_size / vectors.shape[0] if coarse else 0.0
        for target in TARGETS:
            try:
                result = index.tune(target_recall=target, k=K, queries=cal)
            except ValueError as exc:
                rows.append({"name": name, "target": target, "note": str(exc).split(":")[0]})
                continue
            index.save(folder / "i")
            chosen = result.chosen
            setting = describe(chosen)
            for mode in ("ram", "mmap", "pread"):
                loaded = MatryoshkaIndex.load(folder / "i", full_vectors=mode, device="cpu")
                full_b = vectors.shape[1] * 4
                row = measure(
                    f"{name} {setting} [{mode}]",
                    lambda q, ix=loaded: _ids(ix.search_vectors(q, K)),
                    ev,
                    truth_ev,
                    target=target,
                    build_s=built,
                    anon_b=coarse_b + (full_b if mode == "ram" else 0),
                    file_b=0 if mode == "ram" else full_b,
                    reranked=float(np.mean([h.reranked for h in loaded.search_vectors(ev, K)])),
                    options=options,
                    config=loaded.config,
                    chosen=chosen["mode"],
                    mode=mode,
                )
                rows.append(row)
                if mode == "ram":  # keep the kernels of the fastest per target, for bare_row
                    engine, held = loaded._engine, kept.get(target)
                    if held is None or _rank(row, target) > _rank(held, target):
                        if held is not None:
                            del held["_kernels"]
                        row["_kernels"] = (engine.config, engine.coarse, engine.rotation)
                        kept[target] = row
                del loaded
        del index
    return rows


def _rank(row: dict, target: float) -> tuple[bool, float]:
    """How ``main`` picks the row whose kernels it measures bare: reaching the target first."""
    return row["recall"] >= target, row["qps1"]


def bare_row(vectors, ev, truth_ev, best: dict[str, Any]) -> dict | None:
    """The fastest "ours" configuration's kernels without the library around them: the same
    FAISS coarse index searched directly, the adaptive cut, a NumPy rerank from an in-RAM
    array, ids from a list."""
    from matryoshka_retrieval.index.engine import one_thread_product
    from matryoshka_retrieval.index.vectors import aligned_empty

    config, coarse_stage, rotation = best["_kernels"]
    vectors, unaligned = aligned_empty(*vectors.shape), vectors  # as our RAM store holds them
    vectors[:] = unaligned
    id_list = [str(i) for i in range(vectors.shape[0])]
    name = f"bare kernels of: {best['name']}"
    if best["chosen"] == "exact":  # the exact scan: our BLAS scan called directly, ids from a list
        from matryoshka_retrieval.index.funnel import scan as exact_scan

        def scan(q: np.ndarray) -> np.ndarray:
            rows = exact_scan(q, vectors, K)[1]
            return np.array([[int(id_list[r]) for r in row] for row in rows])

        return measure(name, scan, ev, truth_ev, target=best["target"])
    d, keep = config.coarse_dim, K * config.rescore_multiplier
    coarse = coarse_stage.index
    if config.backend == "hnsw":
        coarse.hnsw.efSearch = max(config.ef_search, keep)
    turn = None if rotation is None else np.ascontiguousarray(rotation.rotation[:, :d])
    binary, margin = config.precision == "binary", config.adaptive_margin

    def search(q: np.ndarray) -> np.ndarray:
        qp = q[:, :d] if turn is None else one_thread_product(q, turn)  # as ours rotates
        qp = qp / np.linalg.norm(qp, axis=1, keepdims=True)
        distances, rows = coarse.search(np.packbits(qp > 0, axis=1) if binary else qp, keep)
        if margin is not None:
            coarse_scores = 1 - 2 * distances / d if binary else distances
            kth = coarse_scores[:, K - 1 : K]
            rows = np.where(coarse_scores >= kth - margin, rows, -1)
        scores = np.matmul(vectors[np.maximum(rows, 0)], q[:, :, None])[:, :, 0]  # as ours
        scores[rows < 0] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :K]
        rows = np.take_along_axis(rows, top, axis=1)
        return np.array([[int(id_list[r]) for r in row] for row in rows])

    return measure(name, search, ev, truth_ev, target=best["target"])


def table(
    title: str, rows: list[dict], flat: dict, graphs: list[tuple[int, dict[float, dict]]]
) -> str:
    """The markdown table; ``graphs`` are ``(efConstruction, {target: HNSW row})``, a speed
    column each, the RAM ratio against the first."""
    ratios = " | ".join(f"x HNSW efC={efc} b1" for efc, _ in graphs)
    head = (
        f"| target | contender | recall@10 | q/s b1 | x FlatIP b1 | {ratios} | q/s b64 "
        "| x FlatIP b64 | RAM B/vec (anon) | x HNSW RAM | page cache B/vec | build s |"
    )
    lines = [f"### {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "qps1" not in r:
            why = f" ({r['note']})" if "note" in r else ""
            blank = "| " * (head.count("|") - 3)
            lines.append(f"| {r.get('target', '')} | {r['name']} | not reached{why} " + blank)
            continue
        by = [g.get(r.get("target", -1)) for _, g in graphs]
        h = by[0] if by else None
        cells = [
            f"{r.get('target', '-')}",
            r["name"],
            f"{r['recall']:.4f}",
            f"{r['qps1']:,.0f}",
            f"{r['qps1'] / flat['qps1']:.1f}",
            *(f"{r['qps1'] / g['qps1']:.2f}" if g else "" for g in by),
            f"{r['qps64']:,.0f}",
            f"{r['qps64'] / flat['qps64']:.1f}",
            f"{r['anon_b']:,.0f}" if "anon_b" in r else "",
            f"{r['anon_b'] / h['anon_b']:.2f}" if h and "anon_b" in r else "",
            f"{r['file_b']:,.0f}" if "file_b" in r else "",
            f"{r['build_s']:.1f}" if "build_s" in r else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_data(args: argparse.Namespace) -> tuple[Path, np.ndarray, str]:
    """The corpus file, the query vectors and a title for ``--data``."""
    if args.data == "synthetic":
        path, queries = synthetic(args.n, args.dim, args.queries)
        title = f"synthetic {args.n:,} x {args.dim}"
    elif args.data == "manpages-mrl":
        from mrl_manpages import mrl_manpages

        path, queries = mrl_manpages()
        title = "man pages (5,322 docs, all-MiniLM-L6-v2 made Matryoshka by train_matryoshka)"
    elif args.data == "docstrings":
        from docstrings import docstrings

        path, queries, facts = docstrings()
        title = (
            f"docstrings ({facts['documents']:,} docs from {len(facts['packages'])} packages, "
            f"{facts['model']} 384d)"
        )
    else:
        path, queries, *_ = manpages()
        title = "man pages (5,322 docs, all-MiniLM-L6-v2 384d)"
    return path, queries, title


def data_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """The options :func:`prepared` reads: ``--data`` and the synthetic corpus's size."""
    parser.add_argument(
        "--data", choices=["synthetic", "manpages", "manpages-mrl", "docstrings"], default=default
    )
    parser.add_argument("--n", type=int, default=100_000, help="synthetic corpus size")
    parser.add_argument("--dim", type=int, default=768, help="synthetic dimension")
    parser.add_argument("--queries", type=int, default=1000, help="synthetic queries")


def prepared(args: argparse.Namespace) -> tuple[Any, ...]:
    """``(vectors, cal, ev, truth_cal, truth_ev, title)``: the unit-length corpus, the two
    query halves (a seeded shuffle before the split: the data sets list their queries in corpus
    order, the docstrings package by package, and halves cut from that order differ in kind),
    their exact top 10, and a title."""
    path, queries, title = load_data(args)
    vectors = np.ascontiguousarray(np.load(path), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # cosine = inner product for all
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    queries = queries[np.random.default_rng(0).permutation(len(queries))]
    half = len(queries) // 2
    cal, ev = queries[:half], queries[half:]
    title += f", {len(cal)} calibration + {len(ev)} evaluation queries, k={K}"
    return vectors, cal, ev, ground_truth(vectors, cal), ground_truth(vectors, ev), title


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    data_arguments(parser, default="manpages")
    parser.add_argument(
        "--hnsw-efc", type=lambda v: v.split(","), default=["80", "200"],
        help="efConstruction of the HNSW graphs over the full vectors (every ratio is to the "
        "first)",
    )  # fmt: skip
    parser.add_argument("--skip-sst", action="store_true", help="leave out semantic_search_faiss")
    parser.add_argument(
        "--ours", help="only these of our coarse stages: positions in ours_configs, e.g. 9,10"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    print(f"# bench_recall {' '.join(sys.argv[1:])}; faiss {faiss.__version__}, "
          f"{os.cpu_count()} cores", flush=True)  # fmt: skip
    vectors, cal, ev, truth_cal, truth_ev, title = prepared(args)
    print("  FlatIP ...", flush=True)
    flat = flat_rows(vectors, ev, truth_ev)
    print("  HNSW ...", flush=True)
    graphs = [hnsw_rows(vectors, cal, truth_cal, ev, truth_ev, int(e)) for e in args.hnsw_efc]
    hnsw = [row for rows_ in graphs for row in rows_]
    sst = [] if args.skip_sst else sst_rows(vectors, cal, truth_cal, ev, truth_ev)
    print("  ours ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ours = ours_rows(vectors, cal, ev, truth_ev, Path(tmp), args.ours)
    rows: list[dict] = [flat]
    for target in TARGETS:
        mine = [r for r in ours if r.get("target") == target and "qps1" in r]
        rows += [r for r in hnsw + sst if r.get("target") == target]
        rows += sorted(mine, key=lambda r: -r["qps1"])
        rows += [r for r in ours if r.get("target") == target and "qps1" not in r]
        best = next((r for r in mine if "_kernels" in r), None)  # see _rank
        bare = bare_row(vectors, ev, truth_ev, best) if best else None
        if bare:
            bare["name"] += f" (ours / bare b1 time: {bare['qps1'] / best['qps1']:.2f}x)"
            rows.append(bare)
    by_target = [
        (int(e), {r["target"]: r for r in g if "qps1" in r})
        for e, g in zip(args.hnsw_efc, graphs, strict=True)
    ]
    print()
    print(table(title, rows, flat, by_target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
