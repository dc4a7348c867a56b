"""Write JSONL files and BEIR-layout folders for tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from matryoshka_retrieval.eval import BeirData


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """One JSON value a line; gzipped when the name ends in ``.gz``."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def write_beir(
    folder: Path, data: BeirData, *, split: str = "test", gz: bool = False, qrels: bool = True
) -> Path:
    """``corpus.jsonl``, ``queries.jsonl`` (``.gz`` with ``gz``) and ``qrels/<split>.tsv``."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if gz else ".jsonl"
    write_jsonl(folder / f"corpus{suffix}", [{"_id": k, "text": v} for k, v in data.corpus.items()])
    write_jsonl(
        folder / f"queries{suffix}", [{"_id": k, "text": v} for k, v in data.queries.items()]
    )
    if qrels:
        (folder / "qrels").mkdir(exist_ok=True)
        rows = [f"{q}\t{d}\t{s}" for q, docs in data.qrels.items() for d, s in docs.items()]
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n"
        )
    return folder
