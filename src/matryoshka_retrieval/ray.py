"""Bulk ingest on Ray Data: embed a dataset of texts on an actor pool and write it into an index.

The embedding runs in ``map_batches`` on a pool of actors, each holding its own encoder (made
once per actor by ``encoder_factory``, on a GPU where the cluster has them). A PostgreSQL index
is written from the workers in parallel (each batch one binary COPY, one transaction); a local
index is written by the driver, batch by batch, as the embedded batches arrive.

Example:
    >>> import ray  # doctest: +SKIP
    >>> from matryoshka_retrieval import MatryoshkaIndex, SentenceTransformerEncoder
    >>> from matryoshka_retrieval.ray import ingest
    >>> ds = ray.data.from_items([{"id": "a", "text": "ls lists files"}])  # doctest: +SKIP
    >>> index = MatryoshkaIndex(backend="postgres", dsn=DSN, table="t", dim=384)  # doctest: +SKIP
    >>> ingest(ds, index, SentenceTransformerEncoder, workers=2)  # doctest: +SKIP
    1
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ._optional import require
from ._validation import check_id, check_metadata, check_text
from .index import backends
from .index.index import MatryoshkaIndex

__all__ = ["check_dataset", "embed", "ingest"]


class _Embedder:
    """One actor of the pool: an encoder made once, applied to each batch."""

    def __init__(self, encoder_factory: Callable[[], Any], text_column: str) -> None:
        from .encoders.callable import as_encoder

        self.encoder = as_encoder(encoder_factory())
        self.text_column = text_column

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [
            _text(t, f"row {i} of a batch", self.text_column)
            for i, t in enumerate(batch[self.text_column])
        ]
        batch["vector"] = np.asarray(self.encoder.encode_documents(texts), dtype=np.float32)
        return batch


class _Writer:
    """One actor writing embedded batches into a PostgreSQL index (a transaction per batch)."""

    def __init__(self, dsn: str, table: str, columns: tuple[str, str, str | None]) -> None:
        self.index = MatryoshkaIndex.load(dsn, table=table)
        self.columns = columns

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        ids = _add(self.index, batch, self.columns)
        return {"written": np.asarray([len(ids)])}


def _text(value: Any, row: str, column: str) -> str:
    """A row's text, as the encoder takes it: a non-empty str (never ``None`` made ``"None"``)."""
    if not isinstance(value, str):
        raise TypeError(
            f"{row}: column {column!r} must be a str to embed, got {type(value).__name__}: "
            f"{value!r:.60}"
        )
    if not value.strip():
        raise ValueError(f"{row}: column {column!r} is an empty string; every text needs content")
    return str(check_text(value, f"{row}: column {column!r}", nul=False))


def _metadata(value: Any, row: str, column: str) -> dict[str, Any] | None:
    """A row's metadata (a dict, a JSON object string or nothing), checked as add_vectors does."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{row}: column {column!r} is not a JSON object: {exc}") from None
    elif isinstance(value, Mapping) and not value:
        value = None
    return check_metadata(value, f"{row}: column {column!r}")


def _records(
    batch: dict[str, Any], columns: tuple[str, str, str | None], first_row: int | None
) -> tuple[list[str], list[str], list[dict[str, Any] | None] | None]:
    """A batch's ids, texts and metadata as Python values, each row checked.

    Rows are named by their number in the dataset where ``first_row`` is known, else by their
    place in the batch.

    Raises:
        TypeError, ValueError: For a row whose id, text or metadata ``add_vectors`` would
            refuse (naming the row, the column and the value).
    """
    id_column, text_column, metadata_column = columns
    ids: list[str] = []
    texts: list[str] = []
    metadatas: list[dict[str, Any] | None] = []
    for i, (id_, text) in enumerate(zip(batch[id_column], batch[text_column], strict=True)):
        row = f"row {i} of a batch" if first_row is None else f"dataset row {first_row + i}"
        ids.append(str(check_id(id_, f"{row}: column {id_column!r}")))
        row = f"{row} (id {ids[-1]!r})"
        texts.append(_text(text, row, text_column))
        if metadata_column is not None:
            metadatas.append(_metadata(batch[metadata_column][i], row, metadata_column))
    return ids, texts, (metadatas if metadata_column is not None else None)


def _add(
    index: MatryoshkaIndex, batch: dict[str, Any], columns: tuple[str, str, str | None]
) -> list[str]:
    ids, texts, metadatas = _records(batch, columns, None)
    return index.add_vectors(
        np.stack(list(batch["vector"])), ids=ids, texts=texts, metadatas=metadatas
    )


def check_dataset(
    dataset: Any,
    index: MatryoshkaIndex,
    *,
    id_column: str = "id",
    text_column: str = "text",
    metadata_column: str | None = None,
    batch_size: int = 4096,
) -> int:
    """Check every row of ``dataset`` as :meth:`MatryoshkaIndex.add_vectors` would, before
    anything is embedded; returns the number of rows.

    Reads only the id, text and metadata columns, and holds every id in memory to find
    duplicates. :func:`ingest` calls it first, so a bad row fails the whole ingest with nothing
    embedded or written.

    Raises:
        TypeError: For an id or text that is not a str (an int id is not the string of its
            digits; a missing text is not the text ``"None"``), or a bad metadata value.
        ValueError: For an empty, invalid or duplicate id, an id already in ``index``, an empty
            or invalid text, or bad metadata; each message names the dataset row and the value.
    """
    columns = (id_column, text_column, metadata_column)
    wanted = [c for c in columns if c is not None]
    seen: dict[str, int] = {}
    count = 0
    for batch in _in_order(dataset.select_columns(wanted), batch_size):
        ids, _, _ = _records(batch, columns, count)
        for i, id_ in enumerate(ids):
            if seen.setdefault(id_, count + i) != count + i:
                raise ValueError(f"duplicate id {id_!r}: dataset rows {seen[id_]} and {count + i}")
        stored = [record.id for record in index.get(ids)]
        if stored:
            raise ValueError(
                f"{len(stored)} id(s) of this dataset are already in the index, for example "
                f"{stored[:5]} (dataset row {seen[stored[0]]}); nothing was ingested"
            )
        count += len(ids)
    return count


def _in_order(dataset: Any, batch_size: int) -> Iterator[dict[str, Any]]:
    """The batches of ``dataset`` in its row order, so that a row number names a row.

    Ray's streaming executor yields blocks as they finish unless the dataset's context asks it
    to preserve their order; the flag is set for this one pass and put back afterwards.
    """
    options = dataset.context.execution_options
    kept = options.preserve_order
    options.preserve_order = True
    try:
        yield from dataset.iter_batches(batch_size=batch_size, batch_format="numpy")
    finally:
        options.preserve_order = kept


def embed(
    dataset: Any,
    encoder_factory: Callable[[], Any],
    *,
    workers: int = 1,
    batch_size: int = 256,
    num_gpus: float | None = None,
    text_column: str = "text",
) -> Any:
    """The dataset with a ``vector`` column: the texts embedded on a pool of ``workers`` actors.

    Args:
        dataset: A ``ray.data.Dataset`` with a ``text_column``.
        encoder_factory: Makes the encoder in each actor (an encoder class, or a function
            returning any embedder :func:`~matryoshka_retrieval.as_encoder` accepts), so the
            model is loaded where it runs instead of being shipped.
        workers: Actors in the pool.
        batch_size: Texts per batch.
        num_gpus: GPUs per actor; default 1 when the cluster has GPUs, else 0.
        text_column: The column holding the texts.

    Raises:
        ValueError: For ``workers`` or ``batch_size`` below 1.
    """
    ray = require("ray", "ray")
    for name, value in (("workers", workers), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if num_gpus is None:
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
    return dataset.map_batches(
        _Embedder,
        fn_constructor_args=(encoder_factory, text_column),
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=batch_size,
        batch_format="numpy",
        num_gpus=num_gpus,
    )


def ingest(
    dataset: Any,
    index: MatryoshkaIndex,
    encoder_factory: Callable[[], Any],
    *,
    workers: int = 1,
    batch_size: int = 256,
    num_gpus: float | None = None,
    id_column: str = "id",
    text_column: str = "text",
    metadata_column: str | None = None,
) -> int:
    """Embed ``dataset`` on Ray and add it to ``index``; returns the number of records written.

    A ``backend="postgres"`` index is written by ``workers`` writer actors in parallel, one
    transaction per batch; any other index by this process, batch by batch. Every row is first
    checked by :func:`check_dataset` (the rules of :meth:`MatryoshkaIndex.add_vectors`: ids
    unique, new and str; texts str; metadata flat), so a bad row fails the ingest before
    anything is embedded or written. A failure while writing (a full disk, a lost server, an id
    added by another writer meanwhile) fails its batch; batches written before it stay.

    Args:
        dataset: A ``ray.data.Dataset`` with id and text columns (and optionally metadata, as
            dicts or JSON strings).
        index: The index to fill; its dimension must be the encoder's.
        encoder_factory: As in :func:`embed`.
        workers, batch_size, num_gpus, text_column: As in :func:`embed`.
        id_column, metadata_column: The columns holding the ids and the metadata.

    Raises:
        TypeError, ValueError: For a bad row, as :func:`check_dataset` (naming the row).
    """
    ray = require("ray", "ray")
    columns = (id_column, text_column, metadata_column)
    if not check_dataset(
        dataset,
        index,
        id_column=id_column,
        text_column=text_column,
        metadata_column=metadata_column,
    ):
        return 0
    embedded = embed(
        dataset,
        encoder_factory,
        workers=workers,
        batch_size=batch_size,
        num_gpus=num_gpus,
        text_column=text_column,
    )
    location = None
    if backends.spec(index.backend).capabilities.persists == "server":
        from .index.postgres import server_location

        location = server_location(index)
    if location is not None:
        written = embedded.map_batches(
            _Writer,
            fn_constructor_args=(*location, columns),
            compute=ray.data.ActorPoolStrategy(size=workers),
            batch_size=batch_size,
            batch_format="numpy",
        )
        return int(sum(int(b["written"].sum()) for b in written.iter_batches(batch_format="numpy")))
    count = 0
    for batch in embedded.iter_batches(batch_size=batch_size, batch_format="numpy"):
        count += len(_add(index, batch, columns))
    return count
