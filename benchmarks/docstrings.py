"""A real corpus of about 100,000 texts: the docstrings of the installed Python packages.

Every module, class and function docstring of the packages installed beside this one (and of
the standard library) is read
with ``ast`` (nothing is imported), cleaned with ``inspect.cleandoc``, and kept when it has a
first sentence and a body. The document is the body (everything after the first sentence,
prefixed with the object's name); the known-item query is the first sentence, so each
query has exactly one relevant document. Duplicated bodies (re-exported or copied docstrings)
are dropped. Embedded once with all-MiniLM-L6-v2 and cached in ``benchmarks/.cache`` with the
package versions it was made from.

Usage:
  python benchmarks/docstrings.py            # build (or show) the cache
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import inspect
import json
import os
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
LIMIT = 100_000
N_QUERIES = 2_000
_SENTENCE = re.compile(r"^(.{20,300}?(?:[.!?](?=\s|$)|(?=\n\s*\n)))\s*", re.S)


def _docstrings(path: Path, module: str):
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return
    stack: list[tuple[ast.AST, str]] = [(tree, module)]
    while stack:
        node, name = stack.pop()
        doc = ast.get_docstring(node, clean=False) if hasattr(node, "body") else None
        if isinstance(doc, str):
            yield name, inspect.cleandoc(doc)
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                stack.append((child, f"{name}.{child.name}"))


def collect(limit: int = LIMIT) -> tuple[list[str], list[str], list[str]]:
    """``(ids, documents, first_sentences)`` from the installed packages, in a fixed order."""
    roots = [Path(sysconfig.get_paths()[key]) for key in ("purelib", "stdlib")]
    seen: set[str] = set()
    ids, docs, firsts = [], [], []
    files = [(root, path) for root in roots for path in sorted(root.rglob("*.py"))]
    for root, path in files:
        rel = path.relative_to(root)
        if "site-packages" in rel.parts:
            continue
        if any(part.startswith(".") or part in ("tests", "test") for part in rel.parts):
            continue
        module = ".".join(rel.with_suffix("").parts)
        for name, doc in _docstrings(path, module):
            match = _SENTENCE.match(doc)
            if not match:
                continue
            first, body = " ".join(match.group(1).split()), doc[match.end() :].strip()
            if len(body) < 20:
                continue
            key = hashlib.sha1(body.encode()).hexdigest()
            if key in seen:
                continue
            seen.add(key)
            ids.append(name)
            docs.append(f"{name.rsplit('.', 1)[-1]}: {body[:500]}")
            firsts.append(first)
            if len(ids) >= limit:
                return ids, docs, firsts
    return ids, docs, firsts


def docstrings(limit: int = LIMIT) -> tuple[Path, np.ndarray, dict]:
    """The embedded corpus (path of the ``.npy``), query vectors, and facts (versions, counts)."""
    CACHE.mkdir(exist_ok=True)
    path, qpath, facts_path = (
        CACHE / f"docstrings-{limit}-{p}" for p in ("corpus.npy", "queries.npy", "facts.json")
    )
    if path.exists() and qpath.exists() and facts_path.exists():
        return path, np.load(qpath), json.loads(facts_path.read_text())
    ids, docs, firsts = collect(limit)
    rng = np.random.default_rng(0)
    picks = np.sort(rng.choice(len(ids), min(N_QUERIES, len(ids)), replace=False))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from matryoshka_retrieval import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder(show_progress_bar=True, batch_size=128)
    queries = encoder.encode_queries([firsts[i] for i in picks])
    np.save(path.with_suffix(".tmp.npy"), encoder.encode_documents(docs))
    os.replace(path.with_suffix(".tmp.npy"), path)
    np.save(qpath, queries)
    packages = sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()}
    )
    facts = {
        "documents": len(ids),
        "queries": len(picks),
        "relevant": [int(i) for i in picks],  # query i's one relevant document
        "model": encoder.model_name,
        "python": sys.version.split()[0],
        "packages": packages,
    }
    facts_path.write_text(json.dumps(facts))
    return path, queries, facts


if __name__ == "__main__":
    corpus_path, query_vectors, made = docstrings()
    print(f"{made['documents']:,} documents, {made['queries']:,} queries, {made['model']}")
    print(f"from {len(made['packages'])} packages; cached at {corpus_path}")
