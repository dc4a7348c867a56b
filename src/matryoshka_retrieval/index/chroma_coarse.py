"""A coarse stage whose prefix vectors live in a Chroma collection (embedded or a server)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._optional import require
from ..truncation import prefix
from .config import IndexConfig
from .filters import Filter, compile_filter
from .manifest import IndexCorruptedError
from .stores import FullVectorStore, RecordStore, Selector, StageContext

logger = logging.getLogger(__name__)

__all__ = ["ChromaCoarse", "DIM_KEY", "MODEL_KEY"]

DIM_KEY = "matryoshka:coarse_dim"
MODEL_KEY = "matryoshka:model"


def _chroma_metadata(meta_json: str | None) -> dict[str, Any] | None:
    """Chroma takes str / int / float / bool values and no empty dict."""
    if not meta_json:
        return None
    meta = {k: v for k, v in json.loads(meta_json).items() if v is not None}
    return meta or None


class ChromaCoarse:
    """Prefix vectors in a Chroma collection (cosine HNSW), keyed by record id.

    Chroma holds the ``coarse_dim`` prefixes with their metadata, so its ``where`` filters and HNSW
    graph do the coarse stage; rows are mapped back through the index's records.

    Args:
        client: A ``chromadb`` client (``PersistentClient``, ``HttpClient``, ...).
        name: Collection name; created when missing.
        dim: Prefix length stored in the collection.
        model_name: Model that made the vectors, recorded on the collection.
        rows_of: Maps record ids to index rows.

    Raises:
        ValueError: If the collection exists with another prefix dim or model (naming both).
    """

    filters_rows = False

    def __init__(
        self,
        client: Any,
        name: str,
        dim: int,
        *,
        model_name: str | None,
        rows_of: Callable[[Sequence[str]], dict[str, int]],
        context: StageContext | None = None,
    ) -> None:
        require("chromadb", "chroma")
        self.client = client
        self.name = name
        self.dim = dim
        self.model_name = model_name
        self.rows_of = rows_of
        self.context = context
        metadata: dict[str, Any] = {"hnsw:space": "cosine", DIM_KEY: dim}
        if model_name:
            metadata[MODEL_KEY] = model_name
        self.collection = client.get_or_create_collection(
            name, metadata=metadata, embedding_function=None
        )
        existing = self.collection.metadata or {}
        have_dim = existing.get(DIM_KEY)
        if have_dim is None and self.collection.count():
            sample = self.collection.peek(1).get("embeddings")
            have_dim = len(sample[0]) if sample is not None and len(sample) else None
        if have_dim is not None and int(have_dim) != dim:
            raise ValueError(
                f"the Chroma collection {name!r} holds {have_dim}-dim prefix vectors, but this "
                f"index uses coarse_dim={dim}; open it with coarse_dim={have_dim} or use another "
                "collection"
            )
        have_model = existing.get(MODEL_KEY)
        if have_model and model_name and have_model != model_name:
            raise ValueError(
                f"the Chroma collection {name!r} was built with model {have_model!r}, not "
                f"{model_name!r}; use another collection for this model"
            )
        if existing.get("hnsw:space", "cosine") != "cosine":
            raise ValueError(
                f"the Chroma collection {name!r} uses distance {existing.get('hnsw:space')!r}; "
                "coarse-to-fine search needs 'cosine'"
            )

    @classmethod
    def _from_config(cls, config: IndexConfig, context: StageContext) -> ChromaCoarse:
        client = context.options.get("chroma_client")
        if client is None or not config.collection or not isinstance(config.collection, str):
            raise ValueError(
                "backend='chroma' needs chroma_client= (a chromadb client) and collection= "
                f"(a collection name), got chroma_client={client!r:.40} and "
                f"collection={config.collection!r}"
            )
        if config.precision != "float32" or config.coarse_dim is None:
            raise ValueError(
                f"backend='chroma' stores float32 prefixes: precision={config.precision!r} and "
                f"coarse_dim={config.coarse_dim!r} are not supported with it"
            )
        return cls(
            client,
            config.collection,
            config.coarse_dim,
            model_name=context.model_name,
            rows_of=context.rows_of,
            context=context,
        )

    @classmethod
    def create(cls, config: IndexConfig, context: StageContext, **state: Any) -> ChromaCoarse:
        """The stage of a new index: its collection must hold no prefixes yet."""
        stage = cls._from_config(config, context)
        if stage.ntotal:
            raise ValueError(
                f"the Chroma collection {config.collection!r} already holds {stage.ntotal} "
                "vectors; open the index they belong to with MatryoshkaIndex.load(path, "
                "chroma_client=...) or use another collection"
            )
        return stage

    @classmethod
    def open(
        cls, folder: Path, config: IndexConfig, context: StageContext, manifest: dict[str, Any]
    ) -> ChromaCoarse:
        """The stage of a saved index (reconciled with its records by :meth:`check_saved`)."""
        if context.options.get("chroma_client") is None:
            raise ValueError(
                f"the index at {folder.parent} keeps its prefixes in the Chroma collection "
                f"{config.collection!r}: pass chroma_client= to load it"
            )
        return cls._from_config(config, context)

    @property
    def ntotal(self) -> int:
        return int(self.collection.count())

    def _batches(self, n: int) -> list[slice]:
        size = (
            int(self.client.get_max_batch_size())
            if hasattr(self.client, "get_max_batch_size")
            else 5000
        )
        size = max(1, min(size, 5000))
        return [slice(s, s + size) for s in range(0, n, size)]

    def add(
        self,
        prefix: NDArray[np.float32],
        rows: range,
        ids: Sequence[str],
        metadatas: Sequence[str | None],
    ) -> None:
        """Upsert prefix rows with their ids and metadata (JSON strings)."""
        for part in self._batches(len(ids)):
            metas = [_chroma_metadata(m) for m in metadatas[part]]
            self.collection.upsert(
                ids=list(ids[part]),
                embeddings=prefix[part],
                metadatas=metas if any(m is not None for m in metas) else None,
            )

    def remove(self, rows: Sequence[int], ids: Sequence[str]) -> None:
        for part in self._batches(len(ids)):
            self.collection.delete(ids=list(ids[part]))

    def all_ids(self) -> list[str]:
        ids: list[str] = []
        offset, page = 0, 10000
        while True:
            got = self.collection.get(include=[], limit=page, offset=offset)["ids"]
            ids.extend(got)
            if len(got) < page:
                return ids
            offset += page

    def search(
        self,
        prefix: NDArray[np.float32],
        k: int,
        *,
        allowed: Selector | None = None,
        where: Filter | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top ``k`` rows per query by cosine similarity of the prefix; rows -1 past the end.

        Chroma evaluates ``where`` itself (checked by this library first, for its messages).
        """
        if where is not None:
            compile_filter(where)
        total = self.ntotal
        m = prefix.shape[0]
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        rows = np.full((m, k), -1, dtype=np.int64)
        if total == 0:
            return scores, rows
        result = self.collection.query(
            query_embeddings=prefix,
            n_results=min(k, total),
            where=dict(where) if where else None,
            include=["distances"],
        )
        all_ids = [i for found in result["ids"] for i in found]
        row_of = self.rows_of(all_ids)
        for q, (found, distances) in enumerate(
            zip(result["ids"], result["distances"], strict=True)
        ):
            j = 0
            for id_, distance in zip(found, distances, strict=True):
                row = row_of.get(id_)
                if row is None:  # in Chroma but not (or no longer) in the index
                    continue
                rows[q, j] = row
                scores[q, j] = 1.0 - float(distance)
                j += 1
        return scores, rows

    def manifest(self) -> dict[str, Any]:
        return {}

    def compacted(self, rows: NDArray[np.int64]) -> ChromaCoarse:
        """Unchanged: Chroma keys prefixes by id, and ids keep their records across a save."""
        return self

    def write(self, folder: Path) -> list[str]:
        """Nothing to write: the collection persists itself."""
        return []

    def check_saved(self, count: int, records: RecordStore, vectors: FullVectorStore) -> None:
        """Make the collection hold exactly the saved records' prefixes.

        Writes to Chroma take effect at once, while the index commits at ``save``; after a crash
        or an unsaved session the collection may hold prefixes the saved index does not, or
        lack some it does. Extras are removed, missing ones rebuilt from the full vectors.
        """
        saved = records.all_ids()
        in_chroma = set(self.all_ids())
        extra = sorted(in_chroma - set(saved))
        missing = sorted(set(saved) - in_chroma)
        if extra:
            logger.warning("removing %d unsaved prefixes from Chroma", len(extra))
            self.remove([], extra)
        if missing:
            logger.warning("restoring %d prefixes to Chroma from the full vectors", len(missing))
            rows = np.asarray([saved[i] for i in missing], dtype=np.int64)
            block = vectors.take(rows, self.dim)
            prefix(block, self.dim, out=block)
            metas = records.fetch(rows.tolist())
            meta_json = [json.dumps(metas[int(r)][2]) if metas[int(r)][2] else None for r in rows]
            self.add(block, range(0), missing, meta_json)
        if self.ntotal != count:
            raise IndexCorruptedError(
                f"the Chroma collection holds {self.ntotal} prefixes, expected {count}"
            )
