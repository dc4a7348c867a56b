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
from collections.abc import Callable
from typing import Any

import numpy as np

from ._optional import require
from .index import backends
from .index.index import MatryoshkaIndex

__all__ = ["embed", "ingest"]


class _Embedder:
    """One actor of the pool: an encoder made once, applied to each batch."""

    def __init__(self, encoder_factory: Callable[[], Any], text_column: str) -> None:
        from .encoders.callable import as_encoder

        self.encoder = as_encoder(encoder_factory())
        self.text_column = text_column

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [str(t) for t in batch[self.text_column]]
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


def _add(
    index: MatryoshkaIndex, batch: dict[str, Any], columns: tuple[str, str, str | None]
) -> list[str]:
    id_column, text_column, metadata_column = columns
    metadatas = None
    if metadata_column is not None:
        metadatas = [
            json.loads(m) if isinstance(m, str) else (dict(m) if m else None)
            for m in batch[metadata_column]
        ]
    return index.add_vectors(
        np.stack(list(batch["vector"])),
        ids=[str(i) for i in batch[id_column]],
        texts=[str(t) for t in batch[text_column]],
        metadatas=metadatas,
    )


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
    transaction per batch; any other index by this process, batch by batch. Ids must be unique
    and new (an id already in the index fails its batch, as :meth:`MatryoshkaIndex.add_vectors`
    does; batches written before it stay).

    Args:
        dataset: A ``ray.data.Dataset`` with id and text columns (and optionally metadata, as
            dicts or JSON strings).
        index: The index to fill; its dimension must be the encoder's.
        encoder_factory: As in :func:`embed`.
        workers, batch_size, num_gpus, text_column: As in :func:`embed`.
        id_column, metadata_column: The columns holding the ids and the metadata.
    """
    ray = require("ray", "ray")
    columns = (id_column, text_column, metadata_column)
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
