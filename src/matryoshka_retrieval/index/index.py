"""MatryoshkaIndex: coarse search on a short prefix, exact rescoring with the full vectors."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from numpy.typing import ArrayLike, NDArray

from .._twins import Steps, arun, blocking, encode, run
from .._validation import check_choice, check_ids, check_records, check_vectors, positive_int
from ..encoders.base import Encoder
from ..images import is_image
from ..quantization import Calibration
from ..truncation import as_float_matrix, unit_rows
from . import backends
from ._images import ImageMethods
from ._rwlock import RWLock
from .config import DEFAULTS, UNSET, Backend, CoarsePrecision, IndexConfig
from .filters import Filter
from .hits import Hits, Record
from .manifest import Manifest
from .opening import open_engine
from .protocol import CLOSED, ClosedEngine, Engine, EngineSettings, SavingEngine, TunableEngine
from .rerank import RerankPath
from .rotation import check_rotation
from .tune import TuneResult, tune
from .vectors import FullVectors

__all__ = ["MatryoshkaIndex", "UnknownIdError"]

OnConflict = Literal["error", "replace"]

_DEFAULT: dict[str, Any] = {
    "hnsw_m": DEFAULTS.hnsw_m,
    "ef_construction": DEFAULTS.ef_construction,
    "ef_search": DEFAULTS.ef_search,
    "collection": DEFAULTS.collection,
    "exact_below": DEFAULTS.exact_below,
    "torch_dtype": None,
    "calibration": None,
    "max_resident_bytes": None,
}
"""The defaults of the constructor's optional settings (a backend may not honour them all)."""


class UnknownIdError(KeyError):
    """An id that is not in the index."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MatryoshkaIndex(ImageMethods):
    """Coarse-to-fine vector search over Matryoshka embeddings.

    Full vectors are stored once. A search scans a coarse stage over a short renormalised prefix
    (``coarse_dim``) for ``k * rescore_multiplier`` candidates, optionally narrows them through
    middle stages at longer prefixes, then rescores the shortlist exactly with the full vectors.
    Scores at every stage are cosine similarities of renormalised prefixes, so they compare.
    With a multimodal encoder, :meth:`add_images` and image queries take the same funnel.

    Args:
        encoder: Embeds texts for :meth:`add_texts` and string queries; optional when vectors
            are given directly. Any embedder :func:`~matryoshka_retrieval.as_encoder` accepts.
        coarse_dim: Prefix length of the coarse stage (64 unless ``stages`` gives it); ``None``
            searches the full vectors exactly.
        rescore_multiplier: Shortlist size per wanted result in two-stage search.
        precision: Precision of the coarse prefix: ``float32``, ``int8`` (calibrated per
            dimension) or ``binary`` (sign bits; ``coarse_dim`` must be a multiple of 8).
        stages: A cascade ``[(dim, keep), ...]``, coarse stage first, for example
            ``[(64, 400), (256, 100)]``: 400 candidates from the 64-dim prefix, the best 100 of
            them by the 256-dim prefix, then the full-dim rescore. Overrides
            ``rescore_multiplier``; an explicit ``coarse_dim`` must match the first stage.
        backend: ``exact`` (brute-force scan with fused top-k), ``hnsw`` (approximate graph),
            ``chroma``: the prefixes live in a Chroma collection (its HNSW and its ``where``
            filters do the coarse stage), the full vectors in this index's store; or ``postgres``:
            all in PostgreSQL table ``table`` at ``dsn`` (reopen: ``load(dsn, table=...)``).
        device: Where the rerank runs: ``auto`` (a GPU if torch sees one), ``cpu``, ``cuda:N``.
        rerank: ``auto`` (torch on a GPU, else NumPy), ``numpy`` or ``torch`` (also on a CPU).
        dim: Dimension of the full vectors; taken from the encoder, or from the first add.
        calibration: int8 ranges for the coarse prefix; computed from the stored vectors if
            omitted (and computed again as the index grows, up to 20,000 rows).
        hnsw_m, ef_construction, ef_search: HNSW graph degree, build and search beam widths
            (``ef_search`` is raised to the shortlist size when smaller; on PostgreSQL, left at
            its default, to twice the shortlist; at most 1000 there).
        torch_dtype: Precision of the vectors on the torch device (GPU default ``float16``).
        max_resident_bytes: Largest copy of the full vectors kept on the torch device.
        chroma_client, collection: For ``backend="chroma"``: a ``chromadb`` client (embedded,
            or ``HttpClient`` to ``chroma run``) and the collection's name.
        exact_below: Search exactly up to this many rows (0: never); ``auto``: up to 4M floats
            of full vectors (16 MiB), where a scan is about as fast as the funnel, and exact.
        coarse_rotation: ``"pca"`` or a fitted ``Projection``: the coarse stage indexes
            prefixes of the rotated vectors, and the rerank scores the stored vectors as they
            are. Makes a short prefix of a model that was not Matryoshka-trained a far better
            shortlister (``exact``, ``hnsw`` and ``postgres`` backends; on PostgreSQL it is kept
            in the registry for every client). ``"pca"`` is fitted once the index holds
            max(1024, 2 x dim) rows (or at ``save``/``tune``); it searches exactly until.

    Raises:
        ValueError: For a configuration that cannot work (naming the value and the limit).

    Example:
        >>> import numpy as np
        >>> from matryoshka_retrieval import MatryoshkaIndex
        >>> rng = np.random.default_rng(0)
        >>> vectors = rng.normal(size=(1000, 128)).astype(np.float32)
        >>> index = MatryoshkaIndex(coarse_dim=32, rescore_multiplier=10)
        >>> ids = index.add_vectors(vectors, ids=[f"doc{i}" for i in range(1000)])
        >>> hits = index.search_vectors(vectors[:2], k=3)
        >>> [h[0].id for h in hits], len(index)
        (['doc0', 'doc1'], 1000)
    """

    def __init__(
        self,
        encoder: Any = None,
        *,
        coarse_dim: int | None = UNSET,
        rescore_multiplier: int = DEFAULTS.rescore_multiplier,
        precision: CoarsePrecision = DEFAULTS.precision,
        stages: Sequence[tuple[int, int]] | None = None,
        backend: Backend = DEFAULTS.backend,
        device: str = "auto",
        rerank: RerankPath = "auto",
        dim: int | None = None,
        calibration: Calibration | Mapping[str, Any] | None = None,
        hnsw_m: int = DEFAULTS.hnsw_m,
        ef_construction: int = DEFAULTS.ef_construction,
        ef_search: int = DEFAULTS.ef_search,
        torch_dtype: Literal["float16", "float32"] | None = None,
        max_resident_bytes: int | None = None,
        chroma_client: Any = None,
        collection: str | None = None,
        exact_below: int | Literal["auto"] = DEFAULTS.exact_below,
        coarse_rotation: Any = None,
        dsn: str | None = None,
        table: str | None = None,
        timeout: float | None = None,
    ) -> None:
        from ..encoders.callable import as_encoder

        coarse: dict[str, Any] = dict(
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            collection=collection,
            exact_below=exact_below,
        )
        optional = dict(
            coarse,
            torch_dtype=torch_dtype,
            calibration=calibration,
            max_resident_bytes=max_resident_bytes,
        )
        given = {name: value for name, value in optional.items() if value != _DEFAULT[name]}
        config = IndexConfig.create(
            coarse_dim=coarse_dim,
            stages=stages,
            rescore_multiplier=rescore_multiplier,
            precision=precision,
            backend=backend,
            **coarse,
        )
        backends.check_settings(config.backend, given)
        options = {"chroma_client": chroma_client, "dsn": dsn, "table": table, "timeout": timeout}
        enc = as_encoder(encoder) if encoder is not None else None
        if enc is not None:
            if dim is not None and dim != enc.dim:
                raise ValueError(f"dim={dim} does not match the encoder's output dim {enc.dim}")
            dim = enc.dim
        if isinstance(calibration, Mapping):
            calibration = Calibration.from_dict(calibration)
        rotation = check_rotation(coarse_rotation, config, dim)
        if coarse_rotation is not None and calibration is not None:
            raise ValueError("calibration= ranges are of stored prefixes: not with coarse_rotation")
        settings = EngineSettings(
            model_name=enc.model_name if enc else None,
            options=backends.check_options(config.backend, options),
            device=device,
            rerank=rerank,
            torch_dtype=torch_dtype,
            max_resident_bytes=max_resident_bytes,
        )
        engine = backends.engine_class(config.backend).create(
            config,
            settings,
            dim=None if dim is None else positive_int("dim", dim),
            rotation=rotation,
            calibration=calibration,
        )
        self._attach(engine, enc)

    def _attach(self, engine: Engine, encoder: Encoder | None) -> None:
        """The one way an index comes to be: wrap ``engine`` (made by the constructor, or opened
        by :meth:`load`) with ``encoder``, checked against what the engine stores."""
        self._engine = engine
        self._lock = RWLock()
        self._encoder: Encoder | None = None
        if encoder is not None:
            self.encoder = encoder

    # -- configuration, read-only -----------------------------------------------------------
    config = property(lambda self: self._engine.config, doc="The validated configuration.")
    dim = property(lambda self: self._engine.dim, doc="Dimension of the full vectors.")
    model_name = property(lambda self: self._engine.model_name, doc="Model of the vectors.")
    coarse_dim = property(lambda self: self.config.coarse_dim, doc="The coarse stage's prefix dim.")
    rescore_multiplier = property(
        lambda self: self.config.rescore_multiplier, doc="Shortlist size as a multiple of k."
    )
    precision = property(lambda self: self.config.precision, doc="The coarse prefix's codes.")
    backend = property(lambda self: self.config.backend, doc="Where the coarse stage runs.")
    hnsw = property(lambda self: self.config.to_manifest()["hnsw"], doc="HNSW settings (a dict).")

    @property
    def stages(self) -> list[tuple[int, int]]:
        """The cascade ``[(dim, keep), ...]`` (empty for two-stage search)."""
        return list(self.config.stages)

    @property
    def coarse_rotation(self) -> Any:
        """The rotation the coarse stage sees the vectors through: ``None``, ``"pca"`` while
        it waits for rows, or the fitted ``Projection`` (the rerank scores the stored vectors)."""
        return getattr(self._engine, "rotation", None)

    @property
    def encoder(self) -> Encoder | None:
        """The encoder for texts; setting it checks it against the index."""
        return self._encoder

    @encoder.setter
    def encoder(self, encoder: Any) -> None:
        from ..encoders.callable import as_encoder

        enc = as_encoder(encoder) if encoder is not None else None
        if enc is not None:
            saved = self._projection()
            if saved is not None:  # the vectors went through it: so must every query
                from ..projection import ProjectedEncoder

                enc = ProjectedEncoder.applying(saved, enc)
            self._check_encoder(enc)
        self._encoder = enc

    def _check_encoder(self, encoder: Encoder) -> None:
        if self.dim is not None and encoder.dim != self.dim:
            raise ValueError(
                f"the encoder {encoder.model_name!r} outputs {encoder.dim}-dim vectors but this "
                f"index stores {self.dim}-dim vectors"
            )
        if self.model_name is not None and encoder.model_name != self.model_name:
            raise ValueError(
                f"the encoder's model {encoder.model_name!r} is not the model this index was "
                f"built with ({self.model_name!r})"
            )

    def _projection(self) -> Any:
        """The projection the stored vectors went through: the encoder's, or the saved one."""
        return getattr(self._encoder, "projection", None) or self._engine.saved_projection

    @property
    def read_only(self) -> bool:
        """Whether this handle only searches: ``True`` on a read replica of a PostgreSQL index,
        where a write raises ``ReadOnlyReplicaError`` before anything is sent."""
        return self._engine.read_only

    @property
    def rerank_device(self) -> str:
        """Where the rerank runs, for example ``numpy:cpu``, ``torch:cuda`` or
        ``postgres:server``."""
        return self._engine.rerank_device

    @property
    def manifest(self) -> Manifest:
        """The current manifest (what :meth:`save` writes)."""
        return self._engine.manifest(self._projection())

    def __len__(self) -> int:
        return self._engine.count()

    def __repr__(self) -> str:
        if isinstance(self._engine, ClosedEngine):
            return "MatryoshkaIndex(closed)"
        stages: Any = self.stages or [(self.coarse_dim, self.rescore_multiplier)]
        return (
            f"MatryoshkaIndex(n={len(self)}, dim={self.dim}, stages={stages!r}, "
            f"precision={self.precision!r}, backend={self.backend!r}, "
            f"rerank={self.rerank_device!r})"
        )

    def close(self) -> None:
        """Release its record store or server connection (``with`` closes it at its end);
        closing again does nothing, any other use afterwards raises ``ValueError``."""
        with self._lock.write():
            self._engine.close()
            self._engine = cast(Engine, ClosedEngine())

    def __enter__(self) -> MatryoshkaIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- adding ---------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        on_conflict: OnConflict = "error",
    ) -> list[str]:
        """Embed texts with the encoder and add them.

        Args:
            texts: The documents.
            ids: One unique id per text; generated (UUID4 hex) when omitted.
            metadatas: One metadata dict (or ``None``) per text: str / int / float / bool values.
            on_conflict: ``error`` rejects ids already in the index; ``replace`` overwrites them.

        Returns:
            The ids, in input order.

        Raises:
            ValueError: Without an encoder, or for bad ids / metadata (nothing is stored).
        """
        return run(self._adding_texts("add_texts", texts, ids, metadatas, on_conflict))

    async def aadd_texts(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        on_conflict: OnConflict = "error",
    ) -> list[str]:
        """Async twin of :meth:`add_texts`: embeds with the encoder's async path."""
        return await arun(self._adding_texts("aadd_texts", texts, ids, metadatas, on_conflict))

    def _adding_texts(
        self,
        method: str,
        texts: Sequence[str],
        ids: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        on_conflict: OnConflict,
    ) -> Steps[list[str]]:
        """The body of :meth:`add_texts` and its async twin: check, embed, add."""
        encoder = self._require_encoder(method)
        texts = list(texts)
        check_records(len(texts), ids, texts, metadatas)  # fail before embedding
        vectors = yield encode(encoder, "documents", texts)
        options: dict[str, Any] = {"ids": ids, "texts": texts, "metadatas": metadatas}
        added: list[str] = yield blocking(
            self.add_vectors, vectors, **options, on_conflict=on_conflict
        )
        return added

    def _require_encoder(self, method: str) -> Encoder:
        if isinstance(self._engine, ClosedEngine):  # said before anything is embedded
            raise ValueError(CLOSED)
        if self._encoder is None:
            hint = "or use add_vectors / search_vectors with vectors you computed"
            raise ValueError(
                f"{method} needs an encoder: pass MatryoshkaIndex(encoder=...), {hint}"
            )
        return self._encoder

    def add_vectors(
        self,
        vectors: ArrayLike,
        *,
        ids: Sequence[str] | None = None,
        texts: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        on_conflict: OnConflict = "error",
    ) -> list[str]:
        """Add full vectors you computed (they are L2-normalised on the way in).

        Args:
            vectors: ``[n, dim]`` (or one ``[dim]`` vector).
            ids: One unique id per vector; generated when omitted.
            texts: Optional text per vector, returned with hits.
            metadatas: One metadata dict (or ``None``) per vector, for filters.
            on_conflict: ``error`` rejects ids already in the index; ``replace`` overwrites them.

        Returns:
            The ids, in input order.

        Raises:
            ValueError: For vectors of the wrong width, NaN / infinity (naming the row),
                duplicate or existing ids (naming them), or mismatched lengths. Nothing from a
                failed call is stored.
            TypeError: For an id that is not a str, or metadata of another type (named).
        """
        check_choice("on_conflict", on_conflict, ("error", "replace"))
        matrix = check_vectors(vectors, self.dim, name="vectors")
        n = matrix.shape[0]
        id_list, text_list, metas = check_records(n, ids, texts, metadatas)
        if n == 0:
            return []
        with self._lock.write():
            if self.dim is None:
                self._engine.init_dim(int(matrix.shape[1]))
            existing = self._engine.rows_of(id_list)
            if existing and on_conflict == "error":
                raise ValueError(
                    f"{len(existing)} id(s) already in the index, for example "
                    f"{sorted(existing)[:5]}; pass on_conflict='replace' to overwrite them"
                )
            meta_json = [json.dumps(m, ensure_ascii=False) if m else None for m in metas]
            self._engine.append(matrix, id_list, text_list, meta_json, list(existing.values()))
        return id_list

    # -- removing and reading -------------------------------------------------------------------
    def delete(self, ids: Sequence[str], *, missing: Literal["error", "ignore"] = "error") -> int:
        """Remove records by id.

        Args:
            ids: The ids to remove (str; an int is refused, never taken for its digits).
            missing: ``error`` rejects the call if any id is not in the index; ``ignore``
                removes the ids that are there.

        Returns:
            The number of records removed.

        Raises:
            UnknownIdError: With ``missing="error"``, if any id is not in the index (naming
                them); nothing is removed.
            TypeError: For an id that is not a str (nothing is removed).
        """
        check_choice("missing", missing, ("error", "ignore"))
        id_list = check_ids(ids, unique=False)
        with self._lock.write():
            found = self._engine.rows_of(id_list)
            unknown = [i for i in id_list if i not in found]
            if unknown and missing == "error":
                raise UnknownIdError(
                    f"{len(unknown)} id(s) not in the index, for example {unknown[:5]}; "
                    "nothing was deleted"
                )
            return self._engine.remove(found) if found else 0

    def get(self, ids: Sequence[str], *, include_vectors: bool = False) -> list[Record]:
        """The records for ``ids``, in input order; ids not in the index are skipped."""
        id_list = check_ids(ids, unique=False)
        with self._lock.read():
            return self._engine.get(id_list, include_vectors)

    def ids(self, *, filter: Filter | None = None) -> list[str]:
        """The ids of the records that match ``filter`` (all when ``None``), oldest first."""
        with self._lock.read():
            return self._engine.ids(filter)

    # -- searching ------------------------------------------------------------------------------
    def search(self, query: Any, k: int = 10, *, filter: Filter | None = None) -> Hits:
        """The ``k`` best records for one query (a text or image, with an encoder, or a vector).

        Args:
            query: Query text, image (a ``PIL.Image``, ``pathlib.Path`` or bytes) or vector.
            k: Number of hits.
            filter: A Chroma-style ``where`` filter on metadata, applied before candidates are
                cut, so ``k`` hits come back whenever ``k`` records match.

        Raises:
            ValueError: For ``k < 1``, a query of the wrong width, or a bad filter.
        """
        if isinstance(query, str) or is_image(query):
            vectors = self._require_encoder("search with a text query").encode_queries([query])
        else:
            vectors, single = as_float_matrix(query, name="query")
            if not single:
                raise ValueError(
                    f"search takes one query; got {vectors.shape[0]} rows: use search_vectors"
                )
        return self._search(vectors, k, filter)[0]

    async def asearch(self, query: Any, k: int = 10, *, filter: Filter | None = None) -> Hits:
        """Async twin of :meth:`search`: embeds with the encoder's async path."""
        if isinstance(query, str) or is_image(query):
            encoder = self._require_encoder("search with a text query")
            query = (await encoder.aencode_queries([query]))[0]
        return (await asyncio.to_thread(self.search_vectors, query, k, filter=filter))[0]

    def search_texts(
        self, queries: Sequence[str], k: int = 10, *, filter: Filter | None = None
    ) -> list[Hits]:
        """Batched :meth:`search` for text queries."""
        vectors = self._require_encoder("search_texts").encode_queries(queries)
        return self.search_vectors(vectors, k, filter=filter)

    def search_vectors(
        self, query_vectors: ArrayLike, k: int = 10, *, filter: Filter | None = None
    ) -> list[Hits]:
        """Batched search: one :class:`Hits` per query row.

        Args:
            query_vectors: ``[m, dim]`` full-dim query vectors (or one ``[dim]`` vector).
            k: Hits per query.
            filter: A Chroma-style ``where`` filter on metadata.
        """
        return self._search(as_float_matrix(query_vectors, name="query_vectors")[0], k, filter)

    def _search(self, matrix: NDArray[Any], k: int, filter: Filter | None) -> list[Hits]:
        k, queries = positive_int("k", k), unit_rows(matrix, self.dim, name="query_vectors")
        with self._lock.read():
            return self._engine.search(queries, k, filter)

    def tune(self, target_recall: float = 0.99, k: int = 10, **options: Any) -> TuneResult:
        """Set (and save with the index) the fastest measured of the adaptive rule, the best
        fixed shortlist and an exact scan meeting mean recall@``k`` >= ``target_recall`` (at
        ``confidence=0.95``). Options: ``queries`` (default: ``sample=200`` held-out rows),
        ``max_candidates=2000``, ``seed=0``, ``coarse`` (stages to build and try,
        ``[{"coarse_dim": 64}, ...]`` or ``"search"``). On PostgreSQL the server's own searches
        measure it (no adaptive rule there), and its registry row keeps it for every client."""
        if not backends.spec(self.backend).capabilities.tunable:
            raise ValueError(f"backend={self.backend!r} is not tunable: set rescore_multiplier")
        with self._lock.write():
            return tune(
                cast(TunableEngine, self._engine), target_recall=target_recall, k=k, **options
            )

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to a folder, atomically.

        The files go to a new generation sub-folder; the manifest, written to a temporary file
        and renamed into place, commits the save. A crash at any point leaves the previously
        saved index loadable; saves from several processes to one folder take turns (a lock
        file). Deleted records are dropped from the saved files, and the open index switches to
        the saved files (full vectors read as in :meth:`load`).

        Raises:
            ValueError: If the index has no vectors yet and so no dimension, or the folder is
                not empty and holds no index of this library (nothing there is touched).
        """
        folder = Path(path)
        caps = backends.spec(self.backend).capabilities
        if caps.persists != "folder":
            named = caps.location[1] if caps.location else "server"
            raise ValueError(
                f"an index with backend={self.backend!r} is stored in {named} "
                f"{getattr(self._engine, named, '')!r} as it is written; open it again with "
                f"MatryoshkaIndex.load(dsn, {named}=...), no save needed"
            )
        with self._lock.write():
            if self.dim is None:
                raise ValueError("cannot save an index with no dimension: add vectors first")
            cast(SavingEngine, self._engine).persist(folder, self._projection())

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Any = None,
        full_vectors: FullVectors = "auto",
        device: str = "auto",
        rerank: RerankPath = "auto",
        verify: bool = False,
        chroma_client: Any = None,
        **options: Any,
    ) -> MatryoshkaIndex:
        """Open a saved index.

        Args:
            path: The folder given to :meth:`save`, or a PostgreSQL DSN with ``table=``.
            encoder: Encoder for text queries and :meth:`add_texts`; it must output vectors of
                the index's dimension, from the model recorded in the manifest.
            full_vectors: ``ram`` (read into RAM), ``mmap`` (mapped: a search's rows come from
                the page cache, counted as file-backed RSS), ``pread`` (one read per candidate
                row; RAM holds only the coarse index) or ``auto``: RAM up to 1 GiB or in exact
                mode, else ``mmap``. Kept for the files of later saves.
            device: Where the rerank runs (as in the constructor).
            rerank: Rerank path (as in the constructor).
            verify: Check the vectors file against its SHA-256 (reads the whole file).
            chroma_client: The ``chromadb`` client, for an index with ``backend="chroma"``.
            **options: Search settings to override (``ef_search``, ``torch_dtype``,
                ``max_resident_bytes``).

        Raises:
            FileNotFoundError: If there is no index at ``path``.
            IndexCorruptedError: If files are missing, truncated or damaged, or the manifest
                is invalid (a load racing a save sees the old or the new index, never this).
            ValueError: If the encoder does not match the manifest.
        """
        settings = EngineSettings(
            options={"chroma_client": chroma_client}, device=device, rerank=rerank
        )
        engine = open_engine(
            path, full_vectors=full_vectors, verify=verify, settings=settings, options=options
        )
        index = cls.__new__(cls)
        index._attach(engine, encoder)
        return index
