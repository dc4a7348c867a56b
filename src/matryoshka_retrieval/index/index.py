"""MatryoshkaIndex: coarse search on a short prefix, exact rescoring with the full vectors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import faiss as _faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..encoders.base import Encoder
from ..quantization import Calibration
from ..truncation import as_float_matrix, check_finite, l2_normalize
from ._rwlock import RWLock
from .chroma_coarse import ChromaCoarse
from .coarse import Backend, CoarseIndex, CoarsePrecision, Selector
from .filters import Filter, compile_filter
from .hits import Hit, Hits, Record
from .manifest import MANIFEST_NAME, IndexCorruptedError, Manifest
from .rerank import NumpyReranker, TorchReranker, top_k
from .storage import RecordDB, VectorStore

logger = logging.getLogger(__name__)

faiss: Any = _faiss  # FAISS's bundled stubs are partial; treat it as untyped

__all__ = ["MatryoshkaIndex", "UnknownIdError"]

OnConflict = Literal["error", "replace"]
RerankPath = Literal["auto", "numpy", "torch"]
_VECTORS, _RECORDS, _COARSE = "vectors.npy", "records.sqlite", "coarse.faiss"
_PROJECTION = "projection.npz"
_BLOCK = 65536


class UnknownIdError(KeyError):
    """An id that is not in the index."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _cuda_available() -> bool:
    """Whether torch sees a GPU, without importing torch on machines that have no NVIDIA driver."""
    import sys

    if "torch" not in sys.modules and not os.path.exists("/proc/driver/nvidia/version"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


class MatryoshkaIndex:
    """Coarse-to-fine vector search over Matryoshka embeddings.

    Full vectors are stored once. A search scans a FAISS index over a short renormalised prefix
    (``coarse_dim``) for ``k * rescore_multiplier`` candidates, optionally narrows them through
    middle stages at longer prefixes, then rescores the shortlist exactly with the full vectors.
    Scores at every stage are cosine similarities of renormalised prefixes, so they compare.

    Args:
        encoder: Embeds texts for :meth:`add_texts` and string queries; optional when vectors
            are given directly. Any embedder :func:`~matryoshka_retrieval.as_encoder` accepts.
        coarse_dim: Prefix length of the coarse stage; ``None`` searches the full vectors
            exactly.
        rescore_multiplier: Shortlist size per wanted result in two-stage search.
        precision: Precision of the coarse prefix: ``float32``, ``int8`` (calibrated per
            dimension) or ``binary`` (sign bits; ``coarse_dim`` must be a multiple of 8).
        stages: A cascade ``[(dim, keep), ...]``, coarse stage first, for example
            ``[(64, 400), (256, 100)]``: 400 candidates from the 64-dim prefix, the best 100 of
            them by the 256-dim prefix, then the full-dim rescore. Overrides
            ``rescore_multiplier``; ``coarse_dim`` must match the first stage.
        backend: ``exact`` (brute-force scan with fused top-k), ``hnsw`` (approximate graph),
            or ``chroma``: the prefixes live in a Chroma collection (its HNSW and its ``where``
            filters do the coarse stage), the full vectors in this index's store.
        chroma_client: The ``chromadb`` client for ``backend="chroma"`` (``PersistentClient``
            or ``HttpClient`` to a ``chroma run`` server).
        collection: Name of the Chroma collection for ``backend="chroma"``.
        device: Where the rerank runs: ``auto`` (a GPU when torch sees one, else the CPU),
            ``cpu``, ``cuda`` or ``cuda:N``.
        rerank: ``auto`` (torch on a GPU, NumPy on the CPU), ``numpy`` or ``torch`` (also on
            ``device="cpu"``).
        dim: Dimension of the full vectors; taken from the encoder, or from the first add.
        calibration: int8 ranges for the coarse prefix; computed from the first add if omitted.
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build beam width.
        ef_search: HNSW search beam width (raised to the shortlist size when smaller).
        torch_dtype: Precision of the vectors resident on the torch device (``float16`` by
            default on a GPU, ``float32`` on the CPU).
        max_resident_bytes: Largest copy of the full vectors kept on the torch device; beyond
            it, candidates are streamed in chunks.

    Raises:
        ValueError: For a configuration that cannot work (the message names the value and the
            limit).

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
        coarse_dim: int | None = 64,
        rescore_multiplier: int = 10,
        precision: CoarsePrecision = "float32",
        stages: Sequence[tuple[int, int]] | None = None,
        backend: Backend = "exact",
        device: str = "auto",
        rerank: RerankPath = "auto",
        dim: int | None = None,
        calibration: Calibration | Mapping[str, Any] | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        torch_dtype: Literal["float16", "float32"] | None = None,
        max_resident_bytes: int | None = None,
        chroma_client: Any = None,
        collection: str | None = None,
    ) -> None:
        from ..encoders.callable import as_encoder

        self._encoder: Encoder | None = as_encoder(encoder) if encoder is not None else None
        if precision not in get_args(CoarsePrecision):
            raise ValueError(
                f"precision={precision!r} is not supported; choose one of "
                f"{get_args(CoarsePrecision)}"
            )
        if backend not in get_args(Backend):
            raise ValueError(
                f"backend={backend!r} is not supported; choose one of {get_args(Backend)}"
            )
        if backend == "chroma":
            if chroma_client is None or not collection:
                raise ValueError(
                    "backend='chroma' needs chroma_client= (a chromadb client) and collection= "
                    "(a collection name)"
                )
            if precision != "float32" or coarse_dim is None:
                raise ValueError(
                    f"backend='chroma' stores float32 prefixes: precision={precision!r} and "
                    f"coarse_dim={coarse_dim!r} are not supported with it"
                )
        self.chroma_client = chroma_client
        self.collection = collection
        if rerank not in get_args(RerankPath):
            raise ValueError(
                f"rerank={rerank!r} is not supported; choose one of {get_args(RerankPath)}"
            )
        self.rescore_multiplier = _positive_int("rescore_multiplier", rescore_multiplier)
        self.stages = self._check_stages(stages, coarse_dim)
        self.coarse_dim = self.stages[0][0] if self.stages else coarse_dim
        self.precision: CoarsePrecision = precision
        self.backend: Backend = backend
        self.hnsw = {
            "m": _positive_int("hnsw_m", hnsw_m),
            "ef_construction": _positive_int("ef_construction", ef_construction),
            "ef_search": _positive_int("ef_search", ef_search),
        }
        if isinstance(calibration, Mapping):
            calibration = Calibration.from_dict(calibration)
        self._calibration = calibration
        self.device = device
        self.rerank_path = rerank
        self.torch_dtype = torch_dtype
        self.max_resident_bytes = max_resident_bytes
        self.model_name = self._encoder.model_name if self._encoder is not None else None

        if self._encoder is not None:
            if dim is not None and dim != self._encoder.dim:
                raise ValueError(
                    f"dim={dim} does not match the encoder's output dimension {self._encoder.dim}"
                )
            dim = self._encoder.dim
        self._lock = RWLock()
        self._db = RecordDB.memory()
        self._alive = np.zeros(0, dtype=bool)
        self._n_alive = 0
        self._selector: Selector | None = None
        self._path: Path | None = None
        self._saved_projection: Any = None  # kept when loaded without an encoder
        self._mmap = True
        self.dim: int | None = None
        self._store: VectorStore | None = None
        self._coarse: CoarseIndex | ChromaCoarse | None = None
        self._reranker: NumpyReranker | TorchReranker | None = None
        if dim is not None:
            self._init_dim(_positive_int("dim", dim))

    # -- configuration ------------------------------------------------------------------------
    @staticmethod
    def _check_stages(
        stages: Sequence[tuple[int, int]] | None, coarse_dim: int | None
    ) -> list[tuple[int, int]]:
        if stages is None:
            return []
        checked: list[tuple[int, int]] = []
        for i, stage in enumerate(stages):
            if not isinstance(stage, Sequence) or len(stage) != 2:
                raise ValueError(f"stages[{i}] must be a (dim, keep) pair, got {stage!r}")
            dim = _positive_int(f"stages[{i}] dim", stage[0])
            keep = _positive_int(f"stages[{i}] keep", stage[1])
            if checked and dim < checked[-1][0]:
                raise ValueError(
                    f"stage dims must not decrease: stages[{i}] has dim {dim} after "
                    f"{checked[-1][0]}"
                )
            if checked and keep > checked[-1][1]:
                raise ValueError(
                    f"a stage cannot keep more candidates than it receives: stages[{i}] keeps "
                    f"{keep} of {checked[-1][1]}"
                )
            checked.append((dim, keep))
        if not checked:
            raise ValueError("stages must hold at least one (dim, keep) pair, or be None")
        if coarse_dim not in (None, 64, checked[0][0]):
            raise ValueError(
                f"coarse_dim={coarse_dim} disagrees with the first stage's dim {checked[0][0]}; "
                "leave coarse_dim out when giving stages"
            )
        return checked

    def _init_dim(self, dim: int) -> None:
        """Fix the full dimension and build the parts that depend on it."""
        limit_dims = [self.coarse_dim] if self.coarse_dim is not None else []
        limit_dims += [d for d, _ in self.stages]
        for d in limit_dims:
            if d > dim:
                raise ValueError(
                    f"coarse_dim / stage dim {d} is out of range: it must be between 1 and the "
                    f"vectors' dimension {dim}"
                )
        if self.coarse_dim is not None and not isinstance(self.coarse_dim, (int, np.integer)):
            raise ValueError(f"coarse_dim must be an int or None, got {self.coarse_dim!r}")
        if self.coarse_dim is not None and self.coarse_dim < 1:
            raise ValueError(f"coarse_dim={self.coarse_dim} must be at least 1")
        if self.precision == "binary" and self.coarse_dim is not None and self.coarse_dim % 8:
            raise ValueError(
                f"binary precision packs 8 dims per byte: coarse_dim={self.coarse_dim} must be "
                "a multiple of 8"
            )
        if self.coarse_dim is None and self.precision != "float32":
            raise ValueError(
                f"precision={self.precision!r} needs a coarse_dim; exact full-dim search "
                "(coarse_dim=None) scores float32 vectors"
            )
        self.dim = dim
        self._store = VectorStore(dim)
        if self.backend == "chroma":
            assert self.coarse_dim is not None and self.collection
            self._coarse = self._chroma_coarse()
            if self._coarse.ntotal:
                raise ValueError(
                    f"the Chroma collection {self.collection!r} already holds "
                    f"{self._coarse.ntotal} vectors; open the index they belong to with "
                    "MatryoshkaIndex.load(path, chroma_client=...) or use another collection"
                )
        elif self.coarse_dim is not None:
            self._coarse = CoarseIndex(
                self.coarse_dim, self.precision, self.backend, **self._coarse_options()
            )
        self._reranker = self._make_reranker(self._store)

    def _coarse_options(self) -> dict[str, Any]:
        """Settings of the FAISS coarse index (calibration, HNSW parameters)."""
        calibration = self._coarse.calibration if self._coarse is not None else None
        return {
            "calibration": calibration or self._calibration,
            "hnsw_m": self.hnsw["m"],
            "ef_construction": self.hnsw["ef_construction"],
            "ef_search": self.hnsw["ef_search"],
        }

    def _chroma_coarse(self) -> ChromaCoarse:
        assert self.coarse_dim is not None and self.collection
        return ChromaCoarse(
            self.chroma_client,
            self.collection,
            self.coarse_dim,
            model_name=self.model_name,
            rows_of=lambda ids: self._db.rows_of(ids),
        )

    def _make_reranker(self, store: VectorStore) -> NumpyReranker | TorchReranker:
        device = self.device
        if device == "auto":
            device = "cuda" if self.rerank_path != "numpy" and _cuda_available() else "cpu"
        use_torch = self.rerank_path == "torch" or (
            self.rerank_path == "auto" and device.startswith("cuda")
        )
        if not use_torch:
            if device != "cpu":
                raise ValueError(f"rerank='numpy' runs on the CPU, but device={self.device!r}")
            return NumpyReranker(store)
        dtype = self.torch_dtype or ("float32" if device == "cpu" else "float16")
        return TorchReranker(
            store, device=device, dtype=dtype, max_resident_bytes=self.max_resident_bytes
        )

    @property
    def encoder(self) -> Encoder | None:
        """The encoder for texts; setting it checks it against the index."""
        return self._encoder

    @encoder.setter
    def encoder(self, encoder: Any) -> None:
        from ..encoders.callable import as_encoder

        enc = as_encoder(encoder) if encoder is not None else None
        if enc is not None:
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
        return getattr(self._encoder, "projection", None) or self._saved_projection

    @property
    def rerank_device(self) -> str:
        """Where the rerank runs, for example ``numpy:cpu`` or ``torch:cuda``."""
        if isinstance(self._reranker, TorchReranker):
            return f"torch:{self._reranker.device}"
        return "numpy:cpu"

    @property
    def manifest(self) -> Manifest:
        """The current manifest (what :meth:`save` writes)."""
        calibration = self._coarse.calibration if self._coarse is not None else None
        return Manifest(
            full_dim=self.dim or 0,
            coarse_dim=self.coarse_dim,
            stages=[list(s) for s in self.stages],
            rescore_multiplier=self.rescore_multiplier,
            precision=self.precision,
            backend=self.backend,
            calibration=calibration.to_dict() if calibration is not None else None,
            model_name=self.model_name,
            projection=self._projection().to_manifest() if self._projection() else None,
            hnsw=dict(self.hnsw),
            count=self._n_alive,
            collection=self.collection if self.backend == "chroma" else None,
        )

    def __len__(self) -> int:
        return self._n_alive

    def __repr__(self) -> str:
        stages: Any = self.stages or [(self.coarse_dim, self.rescore_multiplier)]
        return (
            f"MatryoshkaIndex(n={len(self)}, dim={self.dim}, stages={stages!r}, "
            f"precision={self.precision!r}, backend={self.backend!r}, "
            f"rerank={self.rerank_device!r})"
        )

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
        encoder = self._require_encoder("add_texts")
        texts = list(texts)
        self._check_records(len(texts), ids, texts, metadatas)  # fail before embedding
        vectors = encoder.encode_documents(texts)
        return self.add_vectors(
            vectors, ids=ids, texts=texts, metadatas=metadatas, on_conflict=on_conflict
        )

    async def aadd_texts(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        on_conflict: OnConflict = "error",
    ) -> list[str]:
        """Async twin of :meth:`add_texts`: embeds with the encoder's async path."""
        encoder = self._require_encoder("aadd_texts")
        texts = list(texts)
        self._check_records(len(texts), ids, texts, metadatas)
        vectors = await encoder.aencode_documents(texts)
        return await asyncio.to_thread(
            self.add_vectors,
            vectors,
            ids=ids,
            texts=texts,
            metadatas=metadatas,
            on_conflict=on_conflict,
        )

    def _require_encoder(self, method: str) -> Encoder:
        if self._encoder is None:
            raise ValueError(
                f"{method} needs an encoder: pass one to MatryoshkaIndex(encoder=...), or use "
                "add_vectors / search_vectors with vectors you computed"
            )
        return self._encoder

    @staticmethod
    def _check_records(
        n: int,
        ids: Sequence[str] | None,
        texts: Sequence[str | None] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
    ) -> tuple[list[str], list[str | None], list[str | None]]:
        """Validate ids, texts and metadata; return them with metadata as JSON."""
        if ids is None:
            id_list = [uuid.uuid4().hex for _ in range(n)]
        else:
            if isinstance(ids, str):
                raise TypeError("ids must be a list of strings, got a single str")
            id_list = list(ids)
            if len(id_list) != n:
                raise ValueError(f"got {len(id_list)} ids for {n} vectors")
            seen: set[str] = set()
            for i, id_ in enumerate(id_list):
                if not isinstance(id_, str):
                    raise TypeError(f"ids[{i}] must be a str, got {type(id_).__name__}: {id_!r}")
                if not id_:
                    raise ValueError(f"ids[{i}] is an empty string")
                if id_ in seen:
                    raise ValueError(f"duplicate id {id_!r} in this batch (ids[{i}])")
                seen.add(id_)
        text_list: list[str | None] = [None] * n if texts is None else list(texts)
        if len(text_list) != n:
            raise ValueError(f"got {len(text_list)} texts for {n} vectors")
        for i, text in enumerate(text_list):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str or None, got {type(text).__name__}")
        meta_list = [None] * n if metadatas is None else list(metadatas)
        if len(meta_list) != n:
            raise ValueError(f"got {len(meta_list)} metadatas for {n} vectors")
        meta_json: list[str | None] = []
        for i, meta in enumerate(meta_list):
            if meta is None or (isinstance(meta, Mapping) and not meta):
                meta_json.append(None)
                continue
            if not isinstance(meta, Mapping):
                raise TypeError(f"metadatas[{i}] must be a dict or None, got {type(meta).__name__}")
            for key, value in meta.items():
                if not isinstance(key, str) or key.startswith("$"):
                    raise ValueError(
                        f"metadatas[{i}] key {key!r} must be a str not starting with '$'"
                    )
                if value is not None and not isinstance(value, (str, int, float, bool)):
                    raise TypeError(
                        f"metadatas[{i}][{key!r}] must be a str, int, float, bool or None, got "
                        f"{type(value).__name__}"
                    )
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"metadatas[{i}][{key!r}] must be finite, got {value}")
            meta_json.append(json.dumps(dict(meta), ensure_ascii=False))
        return id_list, text_list, meta_json

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
        """
        if on_conflict not in ("error", "replace"):
            raise ValueError(f"on_conflict={on_conflict!r} must be 'error' or 'replace'")
        matrix, _ = as_float_matrix(vectors)
        n = matrix.shape[0]
        if self.dim is not None and matrix.shape[1] != self.dim:
            raise ValueError(
                f"vectors have {matrix.shape[1]} dims but this index stores {self.dim}-dim vectors"
            )
        check_finite(matrix)
        id_list, text_list, meta_json = self._check_records(n, ids, texts, metadatas)
        if n == 0:
            return []
        with self._lock.write():
            if self.dim is None:
                self._init_dim(int(matrix.shape[1]))
            store, db = self._store, self._db
            assert store is not None  # set by _init_dim
            existing = db.rows_of(id_list)
            if existing and on_conflict == "error":
                shown = sorted(existing)[:5]
                raise ValueError(
                    f"{len(existing)} id(s) already in the index, for example {shown}; pass "
                    "on_conflict='replace' to overwrite them"
                )
            start = len(store)
            rows = range(start, start + n)
            db.writable()
            conn = db.conn
            try:
                conn.execute("BEGIN")
                if existing:
                    db.delete_rows(list(existing.values()))
                db.insert(rows, id_list, text_list, meta_json)
                full = l2_normalize(store.append(matrix))  # normalised in place, in the store
                if self._coarse is not None:
                    prefix = l2_normalize(np.array(full[:, : self.coarse_dim], copy=True))
                    if isinstance(self._coarse, ChromaCoarse):
                        self._coarse.add(prefix, id_list, meta_json)
                    else:
                        self._coarse.add(prefix)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                store.truncate_to(start)
                raise
            self._alive = np.concatenate([self._alive, np.ones(n, dtype=bool)])
            if existing:
                self._alive[list(existing.values())] = False
            self._n_alive += n - len(existing)
            self._selector = None
        return id_list

    # -- removing and reading -------------------------------------------------------------------
    def delete(self, ids: Sequence[str], *, missing: Literal["error", "ignore"] = "error") -> int:
        """Remove records by id.

        Args:
            ids: The ids to remove.
            missing: ``error`` rejects the call if any id is not in the index; ``ignore``
                removes the ids that are there.

        Returns:
            The number of records removed.

        Raises:
            UnknownIdError: With ``missing="error"``, if any id is not in the index (naming
                them); nothing is removed.
        """
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, got a single str")
        if missing not in ("error", "ignore"):
            raise ValueError(f"missing={missing!r} must be 'error' or 'ignore'")
        id_list = list(ids)
        with self._lock.write():
            found = self._db.rows_of(id_list)
            unknown = [i for i in id_list if i not in found]
            if unknown and missing == "error":
                raise UnknownIdError(
                    f"{len(unknown)} id(s) not in the index, for example {unknown[:5]}; "
                    "nothing was deleted"
                )
            if not found:
                return 0
            self._db.writable()
            with self._db.conn:
                self._db.delete_rows(list(found.values()))
                if isinstance(self._coarse, ChromaCoarse):
                    self._coarse.remove(list(found))
            self._alive[list(found.values())] = False
            self._n_alive -= len(found)
            self._selector = None
            return len(found)

    def get(self, ids: Sequence[str], *, include_vectors: bool = False) -> list[Record]:
        """The records for ``ids``, in input order; ids not in the index are skipped."""
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, got a single str")
        with self._lock.read():
            found = self._db.rows_of(list(ids))
            rows = [found[i] for i in ids if i in found]
            records = self._db.fetch(rows)
            vectors = (
                self._store.take(np.asarray(rows, dtype=np.int64))
                if include_vectors and self._store is not None and rows
                else None
            )
        out = []
        for j, row in enumerate(rows):
            id_, text, meta = records[row]
            out.append(Record(id_, text, meta, None if vectors is None else vectors[j]))
        return out

    # -- searching ------------------------------------------------------------------------------
    def search(self, query: str | ArrayLike, k: int = 10, *, filter: Filter | None = None) -> Hits:
        """The ``k`` best records for one query (a text, with an encoder, or a full vector).

        Args:
            query: Query text or vector.
            k: Number of hits.
            filter: A Chroma-style ``where`` filter on metadata, applied before candidates are
                cut, so ``k`` hits come back whenever ``k`` records match.

        Raises:
            ValueError: For ``k < 1``, a query of the wrong width, or a bad filter.
        """
        if isinstance(query, str):
            vectors = self._require_encoder("search with a text query").encode_queries([query])
        else:
            vectors, single = as_float_matrix(query, name="query")
            if not single:
                raise ValueError(
                    f"search takes one query; got {vectors.shape[0]} rows: use search_vectors"
                )
        return self.search_vectors(vectors, k, filter=filter)[0]

    async def asearch(
        self, query: str | ArrayLike, k: int = 10, *, filter: Filter | None = None
    ) -> Hits:
        """Async twin of :meth:`search`: embeds with the encoder's async path."""
        if isinstance(query, str):
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
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int of at least 1, got {k!r}")
        k = int(k)
        matrix, _ = as_float_matrix(query_vectors, name="query_vectors")
        if self.dim is not None and matrix.shape[1] != self.dim:
            raise ValueError(
                f"queries have {matrix.shape[1]} dims but this index stores {self.dim}-dim vectors"
            )
        check_finite(matrix, name="query_vectors")
        queries = l2_normalize(np.array(matrix, dtype=np.float32, copy=True))
        with self._lock.read():
            if self._n_alive == 0 or matrix.shape[0] == 0:
                if filter is not None:
                    self._db.matching_rows(filter)  # still reject a bad filter
                return [Hits() for _ in range(matrix.shape[0])]
            if isinstance(self._coarse, ChromaCoarse):
                if filter is not None:
                    compile_filter(filter)  # our checks and messages, before Chroma sees it
                scores, rows, coarse_scores = self._search_rows(queries, k, None, filter)
                return self._hits(scores, rows, coarse_scores)
            selector = self._selection(filter)
            if selector is not None and selector.count == 0:
                return [Hits() for _ in range(matrix.shape[0])]
            scores, rows, coarse_scores = self._search_rows(queries, k, selector)
            return self._hits(scores, rows, coarse_scores)

    def _selection(self, where: Filter | None) -> Selector | None:
        """The rows a search may return: live rows matching the filter (None: all rows)."""
        if where is None:
            if self._n_alive == len(self._alive):
                return None
            if self._selector is None:
                self._selector = Selector(self._alive.copy())
            return self._selector
        allowed = np.zeros(len(self._alive), dtype=bool)
        allowed[self._db.matching_rows(where)] = True
        return Selector(allowed & self._alive)

    def _search_rows(
        self,
        queries: NDArray[np.float32],
        k: int,
        selector: Selector | None,
        where: Filter | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
        assert self._store is not None and self._reranker is not None
        if self._coarse is None:
            scores, rows = self._exact(queries, k, selector)
            return scores, rows, scores
        stages = self.stages or [(self.coarse_dim or 0, k * self.rescore_multiplier)]
        coarse_dim, keep = stages[0]
        prefix = l2_normalize(np.array(queries[:, :coarse_dim], copy=True))
        keep = max(keep, k)
        if isinstance(self._coarse, ChromaCoarse):
            coarse_scores, rows = self._coarse.search(prefix, keep, where)
        else:
            coarse_scores, rows = self._coarse.search(prefix, keep, selector)
        if selector is not None and self.backend == "hnsw":
            wanted = min(keep, selector.count)
            if (rows[:, :wanted] < 0).any():  # the graph walk ran dry under a tight filter
                coarse_scores, rows = self._exact(prefix, keep, selector, dims=coarse_dim)
        candidates = rows
        for dim, stage_keep in stages[1:]:
            stage_q = l2_normalize(np.array(queries[:, :dim], copy=True))
            _, candidates = self._reranker.rescore(stage_q, candidates, max(stage_keep, k), dim)
        scores, final = self._reranker.rescore(queries, candidates, k)
        return scores, final, self._lookup(coarse_scores, rows, final)

    @staticmethod
    def _lookup(
        coarse_scores: NDArray[np.float32], coarse_rows: NDArray[np.int64], rows: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        """The coarse score of each final row."""
        out = np.full(rows.shape, np.nan, dtype=np.float32)
        for i in range(rows.shape[0]):
            position = {int(r): j for j, r in enumerate(coarse_rows[i]) if r >= 0}
            for j, row in enumerate(rows[i]):
                if row >= 0:
                    out[i, j] = coarse_scores[i, position[int(row)]]
        return out

    def _exact(
        self,
        queries: NDArray[np.float32],
        k: int,
        selector: Selector | None,
        dims: int | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Brute-force top-k over the stored vectors (or their renormalised prefixes)."""
        assert self._store is not None
        store = self._store
        full_width = dims is None or dims == store.dim
        best_scores = np.full((queries.shape[0], 0), -np.inf, dtype=np.float32)
        best_rows = np.full((queries.shape[0], 0), -1, dtype=np.int64)
        if selector is None and full_width:
            parts = [(0, store.base), (int(store.base.shape[0]), store.extra)]
            for offset, part in parts:
                if part.shape[0] == 0:
                    continue
                kk = min(k, part.shape[0])
                scores, rows = faiss.knn(queries, part, kk, metric=faiss.METRIC_INNER_PRODUCT)
                best_scores = np.concatenate([best_scores, scores.astype(np.float32)], axis=1)
                best_rows = np.concatenate([best_rows, rows.astype(np.int64) + offset], axis=1)
        else:
            allowed = (
                np.flatnonzero(selector.mask) if selector is not None else np.arange(len(store))
            )
            for start in range(0, allowed.shape[0], _BLOCK):
                block_rows = allowed[start : start + _BLOCK]
                block = store.take(block_rows, dims)
                if not full_width:
                    l2_normalize(block)
                scores = queries @ block.T
                rows = np.broadcast_to(block_rows, scores.shape)
                best_scores = np.concatenate([best_scores, scores], axis=1)
                best_rows = np.concatenate([best_rows, rows], axis=1)
                best_scores, best_rows = top_k(best_scores, best_rows, k)
        return top_k(best_scores, best_rows, k)

    def _hits(
        self,
        scores: NDArray[np.float32],
        rows: NDArray[np.int64],
        coarse_scores: NDArray[np.float32],
    ) -> list[Hits]:
        records = self._db.fetch([int(r) for r in rows.reshape(-1) if r >= 0])
        out = []
        for i in range(rows.shape[0]):
            hits = []
            for j in range(rows.shape[1]):
                row = int(rows[i, j])
                if row < 0 or row not in records:
                    continue
                id_, text, meta = records[row]
                hits.append(Hit(id_, float(scores[i, j]), float(coarse_scores[i, j]), text, meta))
            out.append(Hits(hits))
        return out

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to a folder, atomically.

        The files go to a new generation sub-folder; the manifest, written to a temporary file
        and renamed into place, commits the save. A crash at any point leaves the previously
        saved index loadable. Deleted records are dropped from the saved files, and the open
        index switches to the saved files (full vectors memory-mapped).

        Raises:
            ValueError: If the index has no vectors yet and so no dimension.
        """
        folder = Path(path)
        with self._lock.write():
            if self.dim is None or self._store is None:
                raise ValueError("cannot save an index with no dimension: add vectors first")
            folder.mkdir(parents=True, exist_ok=True)
            generation = f"gen-{time.time_ns():x}-{uuid.uuid4().hex[:6]}"
            staging = folder / f"{generation}.tmp"
            staging.mkdir()
            compact = self._n_alive != len(self._alive)
            rows = np.flatnonzero(self._alive).astype(np.int64) if compact else None

            self._store.write_npy(staging / _VECTORS, rows)
            if self._projection() is not None:
                self._projection().save(staging / _PROJECTION)
            self._db.save(staging / _RECORDS)
            if compact:
                renumber = sqlite3.connect(staging / _RECORDS)
                try:
                    with renumber:
                        RecordDB(renumber).renumber(rows)  # type: ignore[arg-type]
                finally:
                    renumber.close()
            coarse = self._coarse
            if isinstance(coarse, CoarseIndex):  # a Chroma collection persists itself
                if compact:
                    coarse = self._rebuilt_coarse(rows)  # type: ignore[arg-type]
                coarse.write(staging / _COARSE)
            for file in staging.iterdir():
                _fsync_file(file)
            _fsync_dir(staging)
            final = folder / generation
            os.replace(staging, final)

            manifest = self.manifest
            manifest.generation = generation
            manifest.files = {f.name: f.stat().st_size for f in sorted(final.iterdir())}
            manifest.vectors_sha256 = _sha256(final / _VECTORS)
            tmp_manifest = folder / f"{MANIFEST_NAME}.tmp"
            with open(tmp_manifest, "w", encoding="utf-8") as handle:
                handle.write(manifest.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_manifest, folder / MANIFEST_NAME)  # the commit point
            _fsync_dir(folder)
            self._remove_stale(folder, keep=generation)

            self._open_generation(folder, manifest, coarse, mmap=self._mmap)

    def _rebuilt_coarse(self, rows: NDArray[np.int64]) -> CoarseIndex:
        assert self._store is not None and self.coarse_dim
        assert isinstance(self._coarse, CoarseIndex)
        coarse = CoarseIndex(
            self.coarse_dim, self.precision, self.backend, **self._coarse_options()
        )
        for start in range(0, rows.shape[0], _BLOCK):
            prefix = self._store.take(rows[start : start + _BLOCK], self.coarse_dim)
            coarse.add(l2_normalize(prefix))
        return coarse

    @staticmethod
    def _remove_stale(folder: Path, keep: str) -> None:
        for entry in folder.iterdir():
            if entry.name != keep and entry.name.startswith("gen-") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    def _open_generation(
        self,
        folder: Path,
        manifest: Manifest,
        coarse: CoarseIndex | ChromaCoarse | None,
        *,
        mmap: bool,
    ) -> None:
        """Point the index at a saved generation (vectors, records, coarse index)."""
        gen = folder / manifest.generation
        try:
            base = np.load(gen / _VECTORS, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise IndexCorruptedError(
                f"cannot read the vectors of the index at {folder}: {exc}"
            ) from exc
        if base.shape != (manifest.count, manifest.full_dim) or base.dtype != np.float32:
            raise IndexCorruptedError(
                f"the vectors file of the index at {folder} holds {base.dtype} {base.shape}, "
                f"expected float32 {(manifest.count, manifest.full_dim)}"
            )
        db = RecordDB.open_read_only(gen / _RECORDS)
        try:
            db.check()
            count = db.count()
        except sqlite3.DatabaseError as exc:
            db.conn.close()
            raise IndexCorruptedError(
                f"the records database of the index at {folder} is damaged: {exc}"
            ) from exc
        if count != manifest.count:
            db.conn.close()
            raise IndexCorruptedError(
                f"the records database of the index at {folder} holds {count} records, the "
                f"manifest says {manifest.count}"
            )
        if isinstance(coarse, ChromaCoarse):
            self._reconcile(coarse, db, base, manifest)
        if coarse is not None and coarse.ntotal != manifest.count:
            raise IndexCorruptedError(
                f"the coarse index at {folder} holds {coarse.ntotal} vectors, the manifest says "
                f"{manifest.count}"
            )
        old_db = self._db
        self._store = VectorStore(manifest.full_dim, base)
        self._db = db
        self._coarse = coarse
        self._alive = np.ones(manifest.count, dtype=bool)
        self._n_alive = manifest.count
        self._selector = None
        self._path = folder
        self._mmap = mmap
        self._reranker = self._make_reranker(self._store)
        if old_db is not db:
            old_db.conn.close()

    def _reconcile(
        self, coarse: ChromaCoarse, db: RecordDB, base: NDArray[np.float32], manifest: Manifest
    ) -> None:
        """Make the Chroma collection hold exactly the saved records' prefixes.

        Writes to Chroma take effect at once, while the index commits at :meth:`save`; after a
        crash or an unsaved session the collection may hold prefixes the saved index does not,
        or lack some it does. Extras are removed, missing ones rebuilt from the full vectors.
        """
        saved = {id_: row for id_, row in db.conn.execute("SELECT id, row FROM records").fetchall()}
        in_chroma = set(coarse.all_ids())
        extra = sorted(in_chroma - set(saved))
        missing = sorted(set(saved) - in_chroma)
        if extra:
            logger.warning("removing %d unsaved prefixes from Chroma", len(extra))
            coarse.remove(extra)
        if missing:
            logger.warning("restoring %d prefixes to Chroma from the full vectors", len(missing))
            rows = np.asarray([saved[i] for i in missing], dtype=np.int64)
            prefix = l2_normalize(np.array(base[rows, : coarse.dim], dtype=np.float32))
            metas = db.fetch(rows.tolist())
            meta_json = [json.dumps(metas[int(r)][2]) if metas[int(r)][2] else None for r in rows]
            coarse.add(prefix, missing, meta_json)

    def _projected(self, path: Path, manifest: Manifest, encoder: Any) -> Any:
        """The encoder with the index's projection applied (checked against the manifest)."""
        from ..projection import ProjectedEncoder, Projection

        assert manifest.projection is not None
        projection = Projection.load(path)
        if projection.fingerprint != manifest.projection.get("fingerprint"):
            raise IndexCorruptedError(f"the projection file at {path} does not match the manifest")
        self._saved_projection = projection
        if encoder is None:
            return None
        if isinstance(encoder, ProjectedEncoder):
            if encoder.projection.fingerprint != projection.fingerprint:
                raise ValueError(
                    "the encoder's projection is not the one this index was built with "
                    f"({manifest.projection['method']}, fingerprint "
                    f"{projection.fingerprint[:12]})"
                )
            return encoder
        return ProjectedEncoder(encoder, projection)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Any = None,
        mmap: bool | None = None,
        device: str = "auto",
        rerank: RerankPath = "auto",
        verify: bool = False,
        chroma_client: Any = None,
        **options: Any,
    ) -> MatryoshkaIndex:
        """Open a saved index.

        Args:
            path: The folder given to :meth:`save`.
            encoder: Encoder for text queries and :meth:`add_texts`; it must output vectors of
                the index's dimension, from the model recorded in the manifest.
            mmap: Keep the full vectors on disk, memory-mapped: RAM then holds the coarse
                index, and each search reads just its candidates' rows. ``False`` reads them into
                RAM. ``None`` (default) memory-maps them unless the index is in exact mode
                (``coarse_dim=None``), which scans every vector on every query and so runs
                faster with them in RAM.
            device: Where the rerank runs (as in the constructor).
            rerank: Rerank path (as in the constructor).
            verify: Check the vectors file against its SHA-256 (reads the whole file).
            chroma_client: The ``chromadb`` client, for an index with ``backend="chroma"``.
            **options: Search settings to override (``ef_search``, ``torch_dtype``,
                ``max_resident_bytes``).

        Raises:
            FileNotFoundError: If there is no index at ``path``.
            IndexCorruptedError: If files are missing, truncated or damaged.
            ValueError: If the encoder does not match the manifest.
        """
        folder = Path(path)
        manifest = Manifest.read(folder)
        gen = folder / manifest.generation
        for name, size in manifest.files.items():
            file = gen / name
            if not file.is_file():
                raise IndexCorruptedError(f"the index at {folder} is missing {name}")
            actual = file.stat().st_size
            if actual != size:
                raise IndexCorruptedError(
                    f"the index file {name} at {folder} is truncated or damaged: expected "
                    f"{size} bytes, found {actual}"
                )
        if verify and manifest.vectors_sha256 != _sha256(gen / _VECTORS):
            raise IndexCorruptedError(f"the vectors of the index at {folder} fail their checksum")

        if manifest.backend == "chroma" and chroma_client is None:
            raise ValueError(
                f"the index at {folder} keeps its prefixes in the Chroma collection "
                f"{manifest.collection!r}: pass chroma_client= to load it"
            )
        index = cls(
            None,
            chroma_client=chroma_client,
            collection=manifest.collection,
            coarse_dim=manifest.coarse_dim,
            rescore_multiplier=manifest.rescore_multiplier,
            precision=manifest.precision,  # type: ignore[arg-type]
            stages=[(int(d), int(keep)) for d, keep in manifest.stages] or None,
            backend=manifest.backend,  # type: ignore[arg-type]
            device=device,
            rerank=rerank,
            calibration=manifest.calibration,
            hnsw_m=manifest.hnsw.get("m", 32),
            ef_construction=manifest.hnsw.get("ef_construction", 80),
            ef_search=options.pop("ef_search", manifest.hnsw.get("ef_search", 128)),
            **options,
        )
        index.model_name = manifest.model_name
        index.dim = manifest.full_dim
        coarse: CoarseIndex | ChromaCoarse | None = None
        if manifest.backend == "chroma":
            coarse = index._chroma_coarse()
        elif manifest.coarse_dim is not None:
            try:
                coarse = CoarseIndex.read(
                    gen / _COARSE,
                    manifest.coarse_dim,
                    index.precision,
                    index.backend,
                    **index._coarse_options(),
                )
            except RuntimeError as exc:
                raise IndexCorruptedError(
                    f"the coarse index of the index at {folder} is damaged: {exc}"
                ) from exc
        if mmap is None:
            mmap = manifest.coarse_dim is not None
        index._open_generation(folder, manifest, coarse, mmap=mmap)
        if manifest.projection is not None:
            encoder = index._projected(gen / _PROJECTION, manifest, encoder)
        if encoder is not None:
            index.encoder = encoder
        return index
