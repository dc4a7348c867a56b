"""The coarse stage: a FAISS index over the renormalised prefix, float32, int8 or binary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import faiss as _faiss
import numpy as np
from numpy.typing import NDArray

from ..quantization import Calibration, calibrate

faiss: Any = _faiss  # FAISS's bundled stubs are partial; treat it as untyped

__all__ = ["Backend", "CoarseIndex", "CoarsePrecision", "Selector"]

Backend = Literal["exact", "hnsw", "chroma"]  # "chroma" is handled by ChromaCoarse
CoarsePrecision = Literal["float32", "int8", "binary"]


class Selector:
    """The rows a search may return, as a FAISS ``IDSelectorBitmap`` over a boolean mask."""

    def __init__(self, allowed: NDArray[np.bool_]) -> None:
        self.mask = allowed
        self.count = int(allowed.sum())
        self._bits = np.packbits(allowed, bitorder="little")
        self.faiss = faiss.IDSelectorBitmap(allowed.shape[0], faiss.swig_ptr(self._bits))


class CoarseIndex:
    """Prefix vectors in a FAISS index; row ``i`` of the index is row ``i`` of the vector store.

    Args:
        dim: Prefix length.
        precision: ``float32`` (inner product), ``int8`` (8-bit scalar quantizer, calibrated
            per dimension) or ``binary`` (packed sign bits, Hamming distance).
        backend: ``exact`` (brute-force scan with fused top-k) or ``hnsw`` (graph, approximate).
        calibration: int8 ranges; computed from the first batch added when not given.
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build beam width.
        ef_search: HNSW search beam width (raised to the shortlist size when smaller).
    """

    def __init__(
        self,
        dim: int,
        precision: CoarsePrecision,
        backend: Backend,
        *,
        calibration: Calibration | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        index: Any = None,
    ) -> None:
        self.dim = dim
        self.precision = precision
        self.backend = backend
        self.calibration = calibration
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.index = index if index is not None else self._new()
        if calibration is not None and index is None:
            self._set_calibration(calibration)

    @property
    def binary(self) -> bool:
        return self.precision == "binary"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _new(self) -> Any:
        ip = faiss.METRIC_INNER_PRODUCT
        qt8 = faiss.ScalarQuantizer.QT_8bit
        if self.backend == "exact":
            if self.precision == "float32":
                return faiss.IndexFlatIP(self.dim)
            if self.precision == "int8":
                return faiss.IndexScalarQuantizer(self.dim, qt8, ip)
            return faiss.IndexBinaryFlat(self.dim)
        if self.precision == "float32":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, ip)
        elif self.precision == "int8":
            index = faiss.IndexHNSWSQ(self.dim, qt8, self.hnsw_m, ip)
        else:
            index = faiss.IndexBinaryHNSW(self.dim, self.hnsw_m)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _set_calibration(self, calibration: Calibration) -> None:
        if calibration.dim != self.dim:
            raise ValueError(
                f"int8 calibration covers {calibration.dim} dims but the coarse prefix has "
                f"{self.dim}"
            )
        sq_index = (
            self.index if self.backend == "exact" else faiss.downcast_index(self.index.storage)
        )
        trained = np.concatenate([calibration.lower, calibration.upper - calibration.lower])
        faiss.copy_array_to_vector(trained.astype(np.float32), sq_index.sq.trained)
        sq_index.is_trained = True
        self.index.is_trained = True
        self.calibration = calibration

    def encode_queries(self, prefix: NDArray[np.float32]) -> NDArray[Any]:
        """What the FAISS index takes as queries: the prefix, or its packed sign bits."""
        if self.binary:
            return np.packbits(prefix > 0, axis=1)
        return np.ascontiguousarray(prefix, dtype=np.float32)

    def add(self, prefix: NDArray[np.float32]) -> None:
        """Add renormalised prefix rows (their rows follow the current ``ntotal``)."""
        if self.precision == "int8" and self.calibration is None:
            self._set_calibration(calibrate(prefix))
        self.index.add(self.encode_queries(prefix))

    def search(
        self, prefix: NDArray[np.float32], k: int, selector: Selector | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top ``k`` rows per query: ``(scores, rows)``; rows are -1 past the last match.

        Scores approximate cosine similarity at the prefix dim: the inner product for float32
        and int8, ``1 - 2 * hamming / dim`` for binary codes.
        """
        k = max(1, min(k, self.ntotal))
        kwargs: dict[str, Any] = {}
        if self.backend == "hnsw":
            ef = max(self.ef_search, k)
            sel = selector.faiss if selector is not None else None
            kwargs["params"] = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
        elif selector is not None:
            kwargs["params"] = faiss.SearchParameters(sel=selector.faiss)
        distances, rows = self.index.search(self.encode_queries(prefix), k, **kwargs)
        if self.binary:
            scores = 1.0 - 2.0 * distances.astype(np.float32) / self.dim
        else:
            scores = distances.astype(np.float32, copy=False)
        return scores, rows.astype(np.int64, copy=False)

    def write(self, path: Path) -> None:
        if self.binary:
            faiss.write_index_binary(self.index, str(path))
        else:
            faiss.write_index(self.index, str(path))

    @classmethod
    def read(
        cls,
        path: Path,
        dim: int,
        precision: CoarsePrecision,
        backend: Backend,
        **kwargs: Any,
    ) -> CoarseIndex:
        reader = faiss.read_index_binary if precision == "binary" else faiss.read_index
        index = reader(str(path))
        if index.d != dim:
            raise ValueError(f"the coarse index file holds {index.d}-dim codes, expected {dim}")
        return cls(dim, precision, backend, index=index, **kwargs)
