"""How small can I go? Retrieval quality, speed and size of each prefix dim and precision.

Embeds a corpus once at full dim, derives every prefix from it, and measures each configuration
with a maintained IR metrics library (``ir-measures``, backed by trec_eval):

- single-stage search on the prefix alone (float32, int8 or binary codes), and
- coarse-to-fine search: the prefix finds ``k * rescore_multiplier`` candidates, the full vectors
  rerank them (a :class:`~matryoshka_retrieval.MatryoshkaIndex`).

Example:
    >>> from matryoshka_retrieval.eval import load_beir, evaluate_dims, recommend
    >>> data = load_beir("../shared/data/manpages")  # doctest: +SKIP
    >>> results = evaluate_dims(encoder, data.corpus, data.queries, data.qrels)  # doctest: +SKIP
    >>> recommend(results, min_quality=0.98).row.name  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ._optional import require
from .encoders.base import Encoder
from .index.config import LOCAL_PRECISIONS, CoarsePrecision
from .quantization import bytes_per_vector, calibrate, int8_scores, quantize
from .truncation import truncate

logger = logging.getLogger(__name__)

__all__ = [
    "BeirData",
    "EvalResults",
    "EvalRow",
    "Recommendation",
    "evaluate_dims",
    "load_beir",
    "read_jsonl",
    "recommend",
]

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
#: What :func:`recommend` can judge by: the IR metrics and top-10 agreement with exact search.
RECOMMEND_METRICS = (*METRICS, "agreement@10")
#: Codes of a coarse prefix: those of the index's coarse stage.
EvalPrecision = CoarsePrecision
EVAL_PRECISIONS: tuple[str, ...] = LOCAL_PRECISIONS


@dataclass(frozen=True)
class BeirData:
    """A BEIR-layout data set: ``corpus`` and ``queries`` map ids to texts, ``qrels`` maps query
    ids to ``{doc_id: relevance}``."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of a JSONL file (``.gz`` too).

    Raises:
        ValueError: For a line that is not JSON, naming the file and line.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number} is not JSON: {exc.msg}") from None


def _open_jsonl(folder: Path, stem: str) -> Iterator[dict[str, Any]]:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        path = folder / name
        if path.is_file():
            for _, record in read_jsonl(path):
                yield record
            return
    raise FileNotFoundError(f"{folder} has no {stem}.jsonl or {stem}.jsonl.gz")


def load_beir(path: str | Path, *, split: str = "test") -> BeirData:
    """Read a BEIR-layout folder: ``corpus.jsonl``, ``queries.jsonl`` (gzipped or not) and
    ``qrels/<split>.tsv`` (``query-id  corpus-id  score``, with a header line).

    A document's text is its ``title`` and ``text`` joined by a space. Only queries that have
    qrels are kept.

    Raises:
        FileNotFoundError: If a file is missing (the message names it).
        ValueError: If a line cannot be read.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"no data folder at {folder}")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise FileNotFoundError(f"{folder} has no qrels/{split}.tsv")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(qrels_path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if number == 1 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header
        if len(parts) != 3:
            raise ValueError(f"{qrels_path}:{number} needs 3 tab-separated columns: {line!r}")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    corpus = {
        str(doc["_id"]): f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()
        for doc in _open_jsonl(folder, "corpus")
    }
    queries = {
        str(q["_id"]): str(q["text"]) for q in _open_jsonl(folder, "queries") if q["_id"] in qrels
    }
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


@dataclass
class EvalRow:
    """One configuration's measurements."""

    name: str
    dim: int
    precision: str
    rerank: bool
    bytes_per_vector: int
    metrics: dict[str, float]
    agreement_at_10: float
    queries_per_s: float

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain dict of its fields."""
        return asdict(self)

    def value(self, metric: str) -> float:
        """This row's ``metric``: one of :data:`METRICS` or ``agreement@10``."""
        return float(self.agreement_at_10 if metric == "agreement@10" else self.metrics[metric])


@dataclass
class EvalResults:
    """All rows of an evaluation, with the full-dim reference first."""

    rows: list[EvalRow]
    full_dim: int
    model_name: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> EvalRow:
        return self.rows[index]

    def __iter__(self) -> Iterator[EvalRow]:
        return iter(self.rows)

    @property
    def reference(self) -> EvalRow:
        """Exact full-dim float32 search."""
        return self.rows[0]

    def to_list(self) -> list[dict[str, Any]]:
        """Every row as a plain dict, the full-dim reference first."""
        return [row.to_dict() for row in self.rows]

    def to_markdown(self) -> str:
        """The table: one row per configuration."""
        ref = self.reference.metrics["ndcg@10"]
        head = (
            "| configuration | dim | precision | rerank | bytes/vector | nDCG@10 | % of full "
            "| recall@10 | recall@100 | MRR@10 | top-10 agreement | queries/s |"
        )
        lines = [head, "|" + "---|" * 12]
        for r in self.rows:
            m = r.metrics
            lines.append(
                f"| {r.name} | {r.dim} | {r.precision} | {'yes' if r.rerank else 'no'} | "
                f"{r.bytes_per_vector} | {m['ndcg@10']:.4f} | {m['ndcg@10'] / ref:.1%} | "
                f"{m['recall@10']:.4f} | {m['recall@100']:.4f} | {m['mrr@10']:.4f} | "
                f"{r.agreement_at_10:.3f} | {r.queries_per_s:,.0f} |"
            )
        return "\n".join(lines)


def _metrics(
    qrels: Mapping[str, Mapping[str, int]],
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    rows: NDArray[np.int64],
    scores: NDArray[np.float32],
) -> dict[str, float]:
    ir = require("ir_measures", "eval")
    run = {
        qid: {doc_ids[int(r)]: float(s) for r, s in zip(row, score, strict=True) if r >= 0}
        for qid, row, score in zip(query_ids, rows, scores, strict=True)
    }
    measures = {
        "ndcg@10": ir.nDCG @ 10,
        "recall@10": ir.R @ 10,
        "recall@100": ir.R @ 100,
        "mrr@10": ir.RR @ 10,
    }
    qrels_used = {q: dict(qrels[q]) for q in query_ids}
    values = ir.calc_aggregate(list(measures.values()), qrels_used, run)
    return {name: float(values[measure]) for name, measure in measures.items()}


#: The speed of a configuration is measured warm, over at least this many queries ...
MIN_TIMED_QUERIES = 200
#: ... and at least this many seconds, whichever takes longer.
MIN_TIMED_SECONDS = 0.5

T = TypeVar("T")
Search = Callable[[], tuple[NDArray[np.float32], NDArray[np.int64]]]


def _timed(search: Callable[[], T], n_queries: int) -> tuple[T, float]:
    """``search()``'s result and its queries per second: one warm-up call, then repeated calls
    until :data:`MIN_TIMED_QUERIES` queries and :data:`MIN_TIMED_SECONDS` have both passed."""
    result = search()  # warm-up: first-touch allocations, lazy structures, caches
    runs = 0
    start = time.perf_counter()
    while True:
        search()
        runs += 1
        elapsed = time.perf_counter() - start
        if runs * n_queries >= MIN_TIMED_QUERIES and elapsed >= MIN_TIMED_SECONDS:
            return result, runs * n_queries / elapsed


def _prefix_search(
    docs: NDArray[np.float32], queries: NDArray[np.float32], dim: int, precision: str, depth: int
) -> Search:
    """Build the single-stage search on the prefix alone; it returns top ``depth`` scores, rows."""
    import faiss

    d, q = truncate(docs, dim), truncate(queries, dim)
    depth = min(depth, d.shape[0])
    if precision == "int8":
        cal = calibrate(d)
        codes = quantize(d, "int8", calibration=cal)

        def int8_search() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
            full = int8_scores(q, codes, calibration=cal)
            rows = np.argsort(-full, axis=1, kind="stable")[:, :depth]
            return np.take_along_axis(full, rows, axis=1).astype(np.float32), rows

        return int8_search
    if precision == "binary":
        index = faiss.IndexBinaryFlat(dim)
        index.add(np.packbits(d > 0, axis=1))
        q_codes = np.packbits(q > 0, axis=1)

        def binary_search() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
            hamming, rows = index.search(q_codes, depth)
            scores = 1.0 - 2.0 * hamming.astype(np.float32) / dim
            return scores.astype(np.float32), rows.astype(np.int64)

        return binary_search

    def float_search() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        scores, rows = faiss.knn(q, d, depth, metric=faiss.METRIC_INNER_PRODUCT)
        return scores.astype(np.float32), rows.astype(np.int64)

    return float_search


def _rerank_search(
    docs: NDArray[np.float32],
    queries: NDArray[np.float32],
    dim: int,
    precision: EvalPrecision,
    depth: int,
    multiplier: int,
) -> Search:
    """Build the coarse-to-fine search: the prefix shortlists ``depth * multiplier`` candidates,
    the full vectors rerank them; it returns the top ``depth``."""
    from .index import MatryoshkaIndex

    index = MatryoshkaIndex(
        coarse_dim=dim,
        precision=precision,
        rescore_multiplier=multiplier,
        device="cpu",
        rerank="numpy",
        exact_below=0,  # the funnel at every size: this is what is measured
    )
    index.add_vectors(docs, ids=[str(i) for i in range(docs.shape[0])])

    def search() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        found = np.full((queries.shape[0], depth), -1, dtype=np.int64)
        scores = np.full((queries.shape[0], depth), -np.inf, dtype=np.float32)
        for i, hit in enumerate(index.search_vectors(queries, depth)):
            found[i, : len(hit)] = [int(h.id) for h in hit]
            scores[i, : len(hit)] = hit.scores
        return scores, found

    return search


def _agreement(rows: NDArray[np.int64], exact: NDArray[np.int64]) -> float:
    return float(
        np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(rows, exact, strict=True)])
    )


def _vectors(
    encoder_or_vectors: Any,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    query_ids: list[str],
) -> tuple[NDArray[np.float32], NDArray[np.float32], str | None]:
    """Document and query vectors (the queries with qrels only), unit-norm, and the model."""
    from .encoders.callable import as_encoder

    if isinstance(encoder_or_vectors, tuple):
        docs, qs = (np.asarray(v, dtype=np.float32) for v in encoder_or_vectors)
        if docs.shape[0] != len(corpus) or qs.shape[0] != len(queries):
            raise ValueError(
                f"got {docs.shape[0]} document and {qs.shape[0]} query vectors for "
                f"{len(corpus)} documents and {len(queries)} queries"
            )
        wanted = set(query_ids)
        keep = [i for i, q in enumerate(queries) if q in wanted]
        return truncate(docs, docs.shape[1]), truncate(qs[keep], qs.shape[1]), None
    encoder: Encoder = as_encoder(encoder_or_vectors)
    docs = encoder.encode_documents(list(corpus.values()))
    return docs, encoder.encode_queries([queries[q] for q in query_ids]), encoder.model_name


def evaluate_dims(
    encoder_or_vectors: Any,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    dims: Sequence[int] | None = None,
    precisions: Sequence[EvalPrecision] = ("float32",),
    rescore: Sequence[int] = (10,),
    k: int = 10,
) -> EvalResults:
    """Measure each prefix dim and precision, single-stage and with a full-dim rerank.

    Queries per second are measured warm (after one untimed pass) over at least
    :data:`MIN_TIMED_QUERIES` queries and :data:`MIN_TIMED_SECONDS` seconds.

    Args:
        encoder_or_vectors: An encoder (anything :func:`~matryoshka_retrieval.as_encoder`
            accepts), or precomputed ``(doc_vectors, query_vectors)`` in the order of ``corpus``
            and ``queries``.
        corpus: Document id -> text.
        queries: Query id -> text (queries without qrels are skipped).
        qrels: Query id -> {document id: relevance}.
        dims: Prefix dims to test (the full dim is always the reference); default: powers of
            two from 32 below the full dim.
        precisions: Codes to test at each dim: ``float32``, ``int8``, ``binary``.
        rescore: Shortlist multipliers for coarse-to-fine rows (``k * m`` candidates, reranked
            with the full vectors); empty for single-stage rows only.
        k: Results per query for the agreement measure (metrics use their own cut-offs).

    Returns:
        :class:`EvalResults`, exact full-dim search first.

    Raises:
        ValueError: For a dim above the full dim, an unknown precision, or mismatched vectors.
    """
    query_ids = [q for q in queries if q in qrels]
    doc_ids = list(corpus)
    if not query_ids:
        raise ValueError("no query has qrels: nothing to evaluate")
    for p in precisions:
        if p not in EVAL_PRECISIONS:
            raise ValueError(
                f"precision {p!r} is not supported; choose {', '.join(EVAL_PRECISIONS)}"
            )
    docs, qs, model_name = _vectors(encoder_or_vectors, corpus, queries, query_ids)
    full = docs.shape[1]
    for d in dims or ():
        if not 1 <= d <= full:
            raise ValueError(
                f"dim {d} is out of range: it must be between 1 and the full dim {full}"
            )
    depth = 100

    def row(name: str, dim: int, precision: str, rerank: bool, search: Search) -> EvalRow:
        (scores, rows), per_second = _timed(search, len(query_ids))
        return EvalRow(
            name,
            dim,
            precision,
            rerank,
            bytes_per_vector(dim, precision),  # type: ignore[arg-type]
            _metrics(qrels, query_ids, doc_ids, rows, scores),
            _agreement(rows, reference_rows),
            per_second,
        )

    exact = _prefix_search(docs, qs, full, "float32", depth)
    _, reference_rows = exact()
    rows_out = [row("exact, full dim", full, "float32", False, exact)]
    for dim in sorted({d for d in (dims or [2**i for i in range(5, 12)]) if d < full}):
        for precision in precisions:
            if precision == "binary" and dim % 8:
                continue
            search = _prefix_search(docs, qs, dim, precision, depth)
            rows_out.append(row(f"{dim}d {precision}", dim, precision, False, search))
            for multiplier in rescore:
                shortlist = max(depth, multiplier * k)  # x10 at k=10: 100 candidates
                search = _rerank_search(docs, qs, dim, precision, depth, -(-shortlist // depth))
                name = f"{dim}d {precision} -> rerank x{multiplier}"
                rows_out.append(row(name, dim, precision, True, search))
    return EvalResults(
        rows_out,
        full,
        model_name,
        {"documents": len(doc_ids), "queries": len(query_ids), "precisions": list(precisions)},
    )


@dataclass(frozen=True)
class Recommendation:
    """The chosen configuration and why."""

    row: EvalRow
    reason: str


def recommend(
    results: EvalResults, *, min_quality: float = 0.98, metric: str = "ndcg@10"
) -> Recommendation:
    """The configuration with the fewest bytes per vector (then the fastest) whose ``metric``
    reaches ``min_quality`` of exact full-dim search.

    Args:
        results: From :func:`evaluate_dims`.
        min_quality: The bar, as a fraction of the full-dim value.
        metric: ``ndcg@10``, ``recall@10``, ``recall@100``, ``mrr@10`` or ``agreement@10``.

    Raises:
        ValueError: For an unknown metric or a bar outside (0, 1.5].
    """
    if metric not in RECOMMEND_METRICS:
        raise ValueError(f"metric={metric!r} is not one of {RECOMMEND_METRICS}")
    if not 0 < min_quality <= 1.5:
        raise ValueError(f"min_quality={min_quality} must be in (0, 1.5]")
    reference = results.reference.value(metric)
    bar = min_quality * reference
    passing = [row for row in results.rows if row.value(metric) >= bar - 1e-12]
    best = min(passing, key=lambda r: (r.bytes_per_vector, -r.queries_per_s))
    full_bytes = results.reference.bytes_per_vector
    reached = best.value(metric)
    reason = (
        f"{best.name} reaches {metric} {reached:.4f}, {reached / reference:.1%} of the "
        f"reference {reference:.4f} (bar {min_quality:.0%}), with {best.bytes_per_vector} bytes "
        f"per vector ({full_bytes / best.bytes_per_vector:.0f}x smaller than full-dim float32) "
        f"at {best.queries_per_s:,.0f} queries/s; {len(passing)} of {len(results.rows)} "
        f"configurations pass"
    )
    return Recommendation(best, reason)
