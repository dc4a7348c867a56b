"""Fine-tune a model that is not Matryoshka-trained so that its short prefixes work.

Trains all-MiniLM-L6-v2 (offline copy) with MatryoshkaLoss over MultipleNegativesRankingLoss
on known-item pairs built from the Python standard library's docstrings (a docstring's first
sentence finds the rest of it), half of the queries for training and half held out, then
prints nDCG@10 at each dim before and after, and searches with the saved model: a 64-dim
coarse stage, reranked with the full vectors.

A short CPU run by default; pass --epochs 3 for a real one (a GPU is used when present).

Run: python examples/finetune_matryoshka.py [--epochs 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from matryoshka_retrieval import MatryoshkaIndex, SentenceTransformerEncoder
from matryoshka_retrieval.datasets import python_docs_task
from matryoshka_retrieval.train import pairs_from_beir, split_beir, train_matryoshka


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--out", default=None, help="where to keep the model (default: temp)")
    args = parser.parse_args()

    task = python_docs_task()
    train, held_out = split_beir(task, test_fraction=0.5, seed=0)
    pairs = pairs_from_beir(train)
    print(f"{len(pairs)} training pairs, {len(held_out.queries)} held-out queries")
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or os.path.join(scratch, "minilm-matryoshka")
        result = train_matryoshka(
            pairs,
            out,
            dims=[384, 128, 64, 32],
            weights=[1, 1, 2, 2],
            epochs=args.epochs,
            batch_size=16,
            learning_rate=5e-5,
            max_seq_length=64,
            eval_data=held_out,
            overwrite=True,
            show_progress_bar=False,
        )
        print(result.to_markdown())
        print(f"{result.steps} steps in {result.seconds:.0f}s; model saved to {out}")

        # the saved model is an ordinary sentence-transformers folder
        encoder = SentenceTransformerEncoder(out)
        index = MatryoshkaIndex(encoder, coarse_dim=64)
        index.add_texts(list(held_out.corpus.values()), ids=list(held_out.corpus))
        query_id, query = next(iter(held_out.queries.items()))
        hit = index.search(query, k=1)[0]
        wanted = next(iter(held_out.qrels[query_id]))
        print(f"\n{query!r}\n  -> {hit.id} ({hit.score:.3f}); the relevant document is {wanted}")


if __name__ == "__main__":
    main()
