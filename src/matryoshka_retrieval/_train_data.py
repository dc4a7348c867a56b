"""The texts of a training run: ``(query, positive)`` pairs from JSONL or BEIR, a held-out
split of a BEIR set, and the checks of the pairs and corpus a loss is given."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._train_settings import SEED, Loss
from .eval import BeirData, load_beir, read_jsonl

Pair = tuple[str, str]

_QUERY_KEYS = ("query", "anchor")
_POSITIVE_KEYS = ("positive", "document", "passage")


def pairs_from_beir(data: BeirData) -> list[Pair]:
    """``(query text, document text)`` for every qrel with a relevance above 0."""
    pairs = []
    for query_id, relevant in data.qrels.items():
        query = data.queries.get(query_id)
        if query is None:
            continue
        for doc_id, relevance in relevant.items():
            if relevance > 0 and doc_id in data.corpus:
                pairs.append((query, data.corpus[doc_id]))
    return pairs


def _field(record: dict[str, Any], keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        value = record.get(key)
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
            return value
    raise ValueError(f"{where} needs one of the keys {list(keys)}, got {sorted(record)}")


def load_pairs(path: str | Path, *, split: str = "train") -> list[Pair]:
    """Read ``(query, positive)`` training pairs.

    Args:
        path: A ``.jsonl`` / ``.jsonl.gz`` file with one object a line holding ``query`` (or
            ``anchor``) and ``positive`` (or ``document`` / ``passage``), or a BEIR folder, whose
            qrels of ``split`` with a relevance above 0 become pairs.
        split: The qrels file of a BEIR folder (``qrels/<split>.tsv``).

    Returns:
        The pairs, in file order.

    Raises:
        FileNotFoundError: If the path, or a file of the BEIR folder, does not exist.
        ValueError: For a line that is not JSON or lacks a field (the message names the line),
            or a source with no pairs.
    """
    source = Path(path)
    if source.is_dir():
        pairs = pairs_from_beir(load_beir(source, split=split))
    elif source.is_file():
        pairs = []
        for number, record in read_jsonl(source):
            where = f"{source}:{number}"
            if not isinstance(record, dict):
                raise ValueError(f"{where} must be a JSON object, got {type(record).__name__}")
            pairs.append(
                (_field(record, _QUERY_KEYS, where), _field(record, _POSITIVE_KEYS, where))
            )
    else:
        raise FileNotFoundError(f"no pairs file or BEIR folder at {source}")
    if not pairs:
        raise ValueError(f"{source} holds no (query, positive) pairs")
    return pairs


def split_beir(
    data: BeirData, *, test_fraction: float = 0.5, seed: int = 0
) -> tuple[BeirData, BeirData]:
    """Split a BEIR set by query into a training part and a held-out evaluation part.

    Both parts keep the whole corpus (the evaluation searches all of it); the queries and their
    qrels are divided at random, ``test_fraction`` of them held out. Queries with the same text
    are kept on the same side.

    Raises:
        ValueError: If ``test_fraction`` is not between 0 and 1, ``seed`` is not an int from 0
            to 2**32 - 1 (the range a training run's seed has), or a part would be empty.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    SEED.check("seed", seed)
    ids = sorted(q for q in data.queries if q in data.qrels)
    random.Random(seed).shuffle(ids)
    n_test = round(len(ids) * test_fraction)
    # queries with the same text stay on one side, so no held-out query is trained on
    held_out_texts = {data.queries[q] for q in ids[:n_test]}
    test_ids = {q for q in ids if data.queries[q] in held_out_texts}
    if not test_ids or len(test_ids) == len(ids):
        raise ValueError(
            f"test_fraction={test_fraction} of {len(ids)} queries leaves one part empty"
        )
    parts = []
    for chosen in (set(ids) - test_ids, test_ids):
        parts.append(
            BeirData(
                corpus=data.corpus,
                queries={q: t for q, t in data.queries.items() if q in chosen},
                qrels={q: r for q, r in data.qrels.items() if q in chosen},
            )
        )
    return parts[0], parts[1]


def check_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """The pairs as a list of ``(query, positive)`` tuples of non-empty strings.

    Raises:
        ValueError: Naming the first pair that is not two non-empty strings.
    """
    checked = []
    for number, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"pair {number} must be a (query, positive) pair, got {pair!r}")
        query, positive = pair
        for name, text in (("query", query), ("positive", positive)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"pair {number}: the {name} must be a non-empty string")
        checked.append((query, positive))
    return checked


def check_texts(loss: Loss, pairs: list[Pair], corpus: Sequence[str] | None) -> list[str]:
    """The corpus texts of a ``distill`` run (none for ``mnrl``), after checking that ``loss``
    has the texts it needs.

    Raises:
        ValueError: For a corpus with ``mnrl``, fewer than 2 pairs for ``mnrl``, an empty corpus
            text, or fewer than 2 distinct texts (or pairs) for ``distill``.
    """
    if loss == "mnrl":
        if corpus is not None:
            raise ValueError("corpus is used by loss='distill' only")
        if len(pairs) < 2:
            raise ValueError(f"training needs at least 2 pairs, got {len(pairs)}")
        return []
    texts = []
    for number, text in enumerate(corpus or ()):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"corpus text {number} must be a non-empty string, got {text!r}")
        texts.append(text)
    if len(set(texts)) < 2 and len(pairs) < 2:
        raise ValueError(
            f"loss='distill' needs at least 2 corpus texts or 2 pairs, got {len(set(texts))} "
            f"and {len(pairs)}"
        )
    return texts
