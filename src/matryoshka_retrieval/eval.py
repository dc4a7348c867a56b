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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ._optional import require
from .encoders.base import Encoder
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
EvalPrecision = Literal["float32", "int8", "binary"]


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
        return asdict(self)


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


def _single_stage(
    docs: NDArray[np.float32], queries: NDArray[np.float32], dim: int, precision: str, depth: int
) -> tuple[NDArray[np.float32], NDArray[np.int64], float]:
    """Top ``depth`` by the prefix alone; returns scores, rows, and seconds spent searching."""
    import faiss

    d, q = truncate(docs, dim), truncate(queries, dim)
    depth = min(depth, d.shape[0])
    start = time.perf_counter()
    scores: Any
    if precision == "float32":
        scores, rows = faiss.knn(q, d, depth, metric=faiss.METRIC_INNER_PRODUCT)
    elif precision == "int8":
        cal = calibrate(d)
        full = int8_scores(q, quantize(d, "int8", calibration=cal), calibration=cal)
        rows = np.argsort(-full, axis=1, kind="stable")[:, :depth]
        scores = np.take_along_axis(full, rows, axis=1)
    else:
        index = faiss.IndexBinaryFlat(dim)
        index.add(np.packbits(d > 0, axis=1))
        hamming, rows = index.search(np.packbits(q > 0, axis=1), depth)
        scores = 1.0 - 2.0 * hamming.astype(np.float32) / dim
    return scores.astype(np.float32), rows.astype(np.int64), time.perf_counter() - start


def _agreement(rows: NDArray[np.int64], exact: NDArray[np.int64]) -> float:
    return float(
        np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(rows, exact, strict=True)])
    )


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
    from .encoders.callable import as_encoder
    from .index import MatryoshkaIndex

    query_ids = [q for q in queries if q in qrels]
    doc_ids = list(corpus)
    if not query_ids:
        raise ValueError("no query has qrels: nothing to evaluate")
    for p in precisions:
        if p not in ("float32", "int8", "binary"):
            raise ValueError(f"precision {p!r} is not supported; choose float32, int8 or binary")
    model_name = None
    if isinstance(encoder_or_vectors, tuple):
        docs, qs = (np.asarray(v, dtype=np.float32) for v in encoder_or_vectors)
        if docs.shape[0] != len(doc_ids) or qs.shape[0] != len(queries):
            raise ValueError(
                f"got {docs.shape[0]} document and {qs.shape[0]} query vectors for "
                f"{len(doc_ids)} documents and {len(queries)} queries"
            )
        keep = [i for i, q in enumerate(queries) if q in qrels]
        docs, qs = truncate(docs, docs.shape[1]), truncate(qs[keep], qs.shape[1])
    else:
        encoder: Encoder = as_encoder(encoder_or_vectors)
        model_name = encoder.model_name
        docs = encoder.encode_documents([corpus[d] for d in doc_ids])
        qs = encoder.encode_queries([queries[q] for q in query_ids])
    full = docs.shape[1]
    for d in dims or ():
        if not 1 <= d <= full:
            raise ValueError(
                f"dim {d} is out of range: it must be between 1 and the full dim {full}"
            )
    dims = sorted({d for d in (dims or [2**i for i in range(5, 12)]) if d < full})
    depth = 100

    ref_scores, ref_rows, seconds = _single_stage(docs, qs, full, "float32", depth)

    def row(
        name: str, dim: int, precision: str, rerank: bool, rows: Any, scores: Any, seconds: float
    ) -> EvalRow:
        return EvalRow(
            name,
            dim,
            precision,
            rerank,
            bytes_per_vector(dim, precision),  # type: ignore[arg-type]
            _metrics(qrels, query_ids, doc_ids, rows, scores),
            _agreement(rows, ref_rows),
            len(query_ids) / max(seconds, 1e-9),
        )

    rows_out = [row("exact, full dim", full, "float32", False, ref_rows, ref_scores, seconds)]
    for dim in dims:
        for precision in precisions:
            if precision == "binary" and dim % 8:
                continue
            scores, rows, seconds = _single_stage(docs, qs, dim, precision, depth)
            rows_out.append(
                row(f"{dim}d {precision}", dim, precision, False, rows, scores, seconds)
            )
            for multiplier in rescore:
                shortlist = max(depth, multiplier * k)  # x10 at k=10: 100 candidates
                index = MatryoshkaIndex(
                    coarse_dim=dim,
                    precision=precision,
                    rescore_multiplier=-(-shortlist // depth),
                    device="cpu",
                    rerank="numpy",
                )
                index.add_vectors(docs, ids=[str(i) for i in range(len(doc_ids))])
                start = time.perf_counter()
                hits = index.search_vectors(qs, depth)
                seconds = time.perf_counter() - start
                found = np.full((len(query_ids), depth), -1, dtype=np.int64)
                found_scores = np.full((len(query_ids), depth), -np.inf, dtype=np.float32)
                for i, hit in enumerate(hits):
                    found[i, : len(hit)] = [int(h.id) for h in hit]
                    found_scores[i, : len(hit)] = hit.scores
                name = f"{dim}d {precision} -> rerank x{multiplier}"
                rows_out.append(row(name, dim, precision, True, found, found_scores, seconds))
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
    results: EvalResults,
    *,
    min_quality: float = 0.98,
    metric: str = "ndcg@10",
    relative_to: Literal["full"] | float = "full",
    optimize: Literal["bytes", "speed"] = "bytes",
) -> Recommendation:
    """The cheapest configuration whose ``metric`` reaches ``min_quality``.

    Args:
        results: From :func:`evaluate_dims`.
        min_quality: The bar: a fraction of the full-dim value (``relative_to="full"``) or of
            the given number.
        metric: ``ndcg@10``, ``recall@10``, ``recall@100``, ``mrr@10`` or ``agreement@10``.
        relative_to: ``"full"`` (exact full-dim search) or an absolute reference value.
        optimize: ``bytes`` (RAM per vector, then speed) or ``speed`` (queries/s, then bytes).

    Raises:
        ValueError: For an unknown metric or a bar outside (0, 1.5].
    """
    if metric not in (*METRICS, "agreement@10"):
        raise ValueError(f"metric={metric!r} is not one of {(*METRICS, 'agreement@10')}")
    if not 0 < min_quality <= 1.5:
        raise ValueError(f"min_quality={min_quality} must be in (0, 1.5]")

    def value(row: EvalRow) -> float:
        return row.agreement_at_10 if metric == "agreement@10" else row.metrics[metric]

    reference = value(results.reference) if relative_to == "full" else float(relative_to)
    bar = min_quality * reference
    passing = [row for row in results.rows if value(row) >= bar - 1e-12]
    if optimize == "bytes":
        best = min(passing, key=lambda r: (r.bytes_per_vector, -r.queries_per_s))
    else:
        best = min(passing, key=lambda r: (-r.queries_per_s, r.bytes_per_vector))
    full_bytes = results.reference.bytes_per_vector
    reason = (
        f"{best.name} reaches {metric} {value(best):.4f}, {value(best) / reference:.1%} of the "
        f"reference {reference:.4f} (bar {min_quality:.0%}), with {best.bytes_per_vector} bytes "
        f"per vector ({full_bytes / best.bytes_per_vector:.0f}x smaller than full-dim float32) "
        f"at {best.queries_per_s:,.0f} queries/s; {len(passing)} of {len(results.rows)} "
        f"configurations pass"
    )
    return Recommendation(best, reason)
