"""Encode a few texts with the offline default model at several Matryoshka prefix lengths.

Run: python examples/encode_and_truncate.py
"""

from __future__ import annotations

import os

import numpy as np

from matryoshka_retrieval import (
    SentenceTransformerEncoder,
    calibrate,
    int8_scores,
    quantize,
    truncate,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

documents = [
    "List information about the files in the current directory.",
    "Copy files and directories from a source to a destination.",
    "Display a calendar for the current month.",
    "Report file system disk space usage.",
]
query = "how much free space is left on my disk?"


def main() -> None:
    encoder = SentenceTransformerEncoder()  # all-MiniLM-L6-v2, 384 dims, loaded offline
    docs = encoder.encode_documents(documents)
    q = encoder.encode_queries([query])[0]
    print(f"query: {query!r}")
    for dim in (32, 64, 128, encoder.full_dim):
        scores = truncate(docs, dim) @ truncate(q, dim)
        best = int(np.argmax(scores))
        print(f"{dim:>4} dims: best match {documents[best]!r} (score {scores[best]:.3f})")

    cal = calibrate(docs)
    codes = quantize(docs, "int8", calibration=cal)
    scores = int8_scores(q, codes, calibration=cal)
    print(
        f"int8 codes ({codes.nbytes // len(codes)} bytes/vector): best match "
        f"{documents[int(np.argmax(scores))]!r}"
    )


if __name__ == "__main__":
    main()
