"""The FAISS coarse stage: the renormalised prefix in a flat or HNSW index, float32/int8/binary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np
from numpy.typing import NDArray

from ..quantization import Calibration, calibrate
from .config import IndexConfig
from .filters import Filter
from .manifest import IndexCorruptedError
from .stores import Selector, StageContext

faiss: Any = _faiss  # FAISS's bundled stubs are partial; treat it as untyped

__all__ = ["CALIBRATION_ROWS", "FaissCoarse"]

FILE_NAME = "coarse.faiss"
CALIBRATION_ROWS = 20_000
"""An int8 calibration made from fewer rows is redone, from every stored row, each time the
index doubles, until it rests on this many; so quality does not depend on how adds were batched."""


class FaissCoarse:
    """Prefix codes in a FAISS index; row ``i`` of the index is row ``i`` of the vector store.

    ``exact`` scans every code with a fused top-k; ``hnsw`` walks a graph. Precisions: float32
    (inner product), int8 (8-bit scalar quantizer calibrated per dimension), binary (sign bits,
    Hamming distance). Removed rows stay in the FAISS index, never allowed, until a save
    compacts them away.

    Args:
        config: The index configuration (prefix dim, precision, backend, HNSW settings).
        context: Access to the index's stored prefixes, for recalibration and compaction.
        calibration: int8 ranges; ``None`` computes them from the stored rows.
        calibrated_on: Rows the calibration was computed from; ``None`` when it was given and
            is final.
        index: An existing FAISS index (read from a file).
    """

    filters_rows = True

    def __init__(
        self,
        config: IndexConfig,
        context: StageContext,
        *,
        calibration: Calibration | None = None,
        calibrated_on: int | None = None,
        index: Any = None,
    ) -> None:
        assert config.coarse_dim is not None
        self.dim = config.coarse_dim
        self.config = config
        self.context = context
        self.calibration = calibration
        self.calibrated_on = calibrated_on
        self.index = index if index is not None else self._new()
        self._beams: dict[int, Any] = {}
        if calibration is not None and index is None:
            self._set_calibration(calibration)

    @classmethod
    def create(cls, config: IndexConfig, context: StageContext, **state: Any) -> FaissCoarse:
        """A new, empty stage (``state``: the ``calibration`` a user gave, if any)."""
        calibration = state.get("calibration")
        if isinstance(calibration, dict):
            calibration = Calibration.from_dict(calibration)
        return cls(config, context, calibration=calibration)

    @classmethod
    def open(
        cls, folder: Path, config: IndexConfig, context: StageContext, manifest: dict[str, Any]
    ) -> FaissCoarse:
        """The stage saved in a generation folder.

        Raises:
            RuntimeError: If FAISS cannot read the file.
            IndexCorruptedError: If the file holds codes of another dim.
        """
        reader = faiss.read_index_binary if config.precision == "binary" else faiss.read_index
        index = reader(str(folder / FILE_NAME))
        if index.d != config.coarse_dim:
            raise IndexCorruptedError(
                f"the coarse index file holds {index.d}-dim codes, expected {config.coarse_dim}"
            )
        calibration = manifest.get("calibration")
        return cls(
            config,
            context,
            calibration=Calibration.from_dict(calibration) if calibration else None,
            calibrated_on=manifest.get("calibrated_on"),
            index=index,
        )

    @property
    def binary(self) -> bool:
        return self.config.precision == "binary"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _new(self) -> Any:
        ip, qt8 = faiss.METRIC_INNER_PRODUCT, faiss.ScalarQuantizer.QT_8bit
        precision, m = self.config.precision, self.config.hnsw_m
        if self.config.backend == "exact":
            if precision == "float32":
                return faiss.IndexFlatIP(self.dim)
            if precision == "int8":
                return faiss.IndexScalarQuantizer(self.dim, qt8, ip)
            return faiss.IndexBinaryFlat(self.dim)
        if precision == "float32":
            index = faiss.IndexHNSWFlat(self.dim, m, ip)
        elif precision == "int8":
            index = faiss.IndexHNSWSQ(self.dim, qt8, m, ip)
        else:
            index = faiss.IndexBinaryHNSW(self.dim, m)
        index.hnsw.efConstruction = self.config.ef_construction
        return index

    def _storage(self) -> Any:
        """The flat codes of the index (the index itself, or an HNSW graph's storage)."""
        if self.config.backend == "exact":
            return self.index
        if self.binary:
            return faiss.downcast_IndexBinary(self.index.storage)
        return faiss.downcast_index(self.index.storage)

    def _set_calibration(self, calibration: Calibration) -> None:
        if calibration.dim != self.dim:
            raise ValueError(
                f"int8 calibration covers {calibration.dim} dims but the coarse prefix has "
                f"{self.dim}"
            )
        trained = np.concatenate([calibration.lower, calibration.upper - calibration.lower])
        sq_index = self._storage()
        faiss.copy_array_to_vector(trained.astype(np.float32), sq_index.sq.trained)
        sq_index.is_trained = True
        self.index.is_trained = True
        self.calibration = calibration

    def codes(self, prefix: NDArray[np.float32]) -> NDArray[Any]:
        """What the FAISS index takes: the prefix, or its packed sign bits."""
        if self.binary:
            return np.packbits(prefix > 0, axis=1)
        return np.ascontiguousarray(prefix, dtype=np.float32)

    def _needs_calibration(self, total: int) -> bool:
        if self.config.precision != "int8":
            return False
        if self.calibration is None:
            return True
        done = self.calibrated_on
        return done is not None and done < CALIBRATION_ROWS and total >= 2 * done

    def _recalibrate(self, total: int) -> None:
        """Calibrate on (up to CALIBRATION_ROWS of) the first ``total`` stored rows, and
        re-encode them all (rows past ``total`` are added by the calls that bring them)."""
        sample: list[NDArray[np.float32]] = []
        taken, wanted = 0, min(CALIBRATION_ROWS, total)
        for _, block in self.context.prefixes(self.dim, None):
            sample.append(block[: wanted - taken])
            taken += sample[-1].shape[0]
            if taken >= wanted:
                break
        self.index = self._new()
        self._set_calibration(calibrate(np.concatenate(sample)))
        self.calibrated_on = wanted
        for first, block in self.context.prefixes(self.dim, None):
            if first >= total:
                break
            self.index.add(self.codes(block[: total - first]))

    def add(
        self,
        prefix: NDArray[np.float32],
        rows: range,
        ids: Sequence[str],
        meta: Sequence[str | None],
    ) -> None:
        """Add the prefixes of ``rows`` (the next rows of the store, already stored there)."""
        if self._needs_calibration(rows.stop):
            self._recalibrate(rows.stop)
        else:
            self.index.add(self.codes(prefix))

    def remove(self, rows: Sequence[int], ids: Sequence[str]) -> None:
        """Nothing to do: removed rows are left out of every allowed set."""

    def search(
        self,
        prefix: NDArray[np.float32],
        k: int,
        *,
        allowed: Selector | None = None,
        where: Filter | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top ``k`` rows per query among the allowed rows: ``(scores, rows)``, -1 past the end.

        Scores approximate cosine similarity at the prefix dim: the inner product for float32
        and int8, ``1 - 2 * hamming / dim`` for binary codes. Under a filter so tight that the
        graph walk runs dry, the allowed rows' codes are scanned instead.
        """
        k = max(1, min(k, self.ntotal))
        queries = self.codes(prefix)
        sel = self._faiss_selector(allowed)
        if self.config.backend == "hnsw":
            ef = max(self.config.ef_search, k)
            if sel is None:  # read-only during a search, so one per beam width is shared
                params = self._beams.get(ef)
                if params is None:
                    params = self._beams[ef] = faiss.SearchParametersHNSW(efSearch=ef)
            else:
                params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
            distances, rows = self.index.search(queries, k, params=params)
            if allowed is not None and (rows[:, : min(k, allowed.count)] < 0).any():
                params = faiss.SearchParameters(sel=sel)
                distances, rows = self._storage().search(queries, k, params=params)
        elif sel is not None:
            distances, rows = self.index.search(queries, k, params=faiss.SearchParameters(sel=sel))
        else:
            distances, rows = self.index.search(queries, k)
        if self.binary:
            scores = 1.0 - 2.0 * distances.astype(np.float32) / self.dim
        else:
            scores = distances.astype(np.float32, copy=False)
        return scores, rows.astype(np.int64, copy=False)

    @staticmethod
    def _faiss_selector(allowed: Selector | None) -> Any:
        if allowed is None:
            return None
        return faiss.IDSelectorBitmap(allowed.mask.shape[0], faiss.swig_ptr(allowed.bits))

    def manifest(self) -> dict[str, Any]:
        calibration = self.calibration.to_dict() if self.calibration is not None else None
        return {"calibration": calibration, "calibrated_on": self.calibrated_on}

    def compacted(self, rows: NDArray[np.int64]) -> FaissCoarse:
        """A new stage over the prefixes of ``rows``, in order (same calibration)."""
        stage = FaissCoarse(
            self.config,
            self.context,
            calibration=self.calibration,
            calibrated_on=self.calibrated_on,
        )
        for _, block in self.context.prefixes(self.dim, rows):
            stage.index.add(stage.codes(block))
        return stage

    def write(self, folder: Path) -> list[str]:
        if self.binary:
            faiss.write_index_binary(self.index, str(folder / FILE_NAME))
        else:
            faiss.write_index(self.index, str(folder / FILE_NAME))
        return [FILE_NAME]

    def check_saved(self, count: int, records: Any, vectors: Any) -> None:
        if self.ntotal != count:
            raise IndexCorruptedError(
                f"the coarse index holds {self.ntotal} vectors, expected {count}"
            )
