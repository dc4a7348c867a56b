"""Exact rescoring of shortlists with stored vectors: NumPy on the CPU, batched torch on a GPU."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from .._optional import require
from ..truncation import prefix, prefix_tensor
from .stores import FullVectorStore

logger = logging.getLogger(__name__)

__all__ = [
    "NumpyReranker",
    "RerankPath",
    "Reranker",
    "TorchReranker",
    "make_reranker",
    "pick",
    "top_k",
    "top_positions",
]

RerankPath = Literal["auto", "numpy", "torch"]

NEG_INF = np.float32(-np.inf)


def top_positions(
    scores: NDArray[np.float32], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Best ``k`` of each row of ``scores``, best first: ``(scores, column positions)``.

    ``-inf`` marks an empty slot; a position is -1 where fewer than ``k`` slots were filled.

    Example:
        >>> s = np.array([[0.1, 0.9, -np.inf, 0.5]], dtype=np.float32)
        >>> top_positions(s, 3)[1].tolist()
        [[1, 3, 0]]
    """
    m, c = scores.shape
    k = min(k, c)
    if c <= 256:  # a short row: one sort beats a partition and a sort
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out_scores = _along(scores, order)
        return out_scores, np.where(np.isfinite(out_scores), order, -1)
    lines = np.arange(m)[:, None]
    if k < c:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = scores[lines, part]
    else:
        part = np.broadcast_to(np.arange(c), scores.shape)
        part_scores = scores
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = part[lines, order]
    out_scores = part_scores[lines, order]
    return out_scores, np.where(np.isfinite(out_scores), best, -1)


def top_k(
    scores: NDArray[np.float32], rows: NDArray[np.int64], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Best ``k`` of each row of ``scores`` (``-inf`` marks empty slots), best first, as rows."""
    out_scores, positions = top_positions(scores, k)
    return out_scores, pick(rows, positions)


def _along(values: NDArray[Any], positions: NDArray[np.int64]) -> NDArray[Any]:
    """``values[i, positions[i, j]]`` for 2-D arrays: ``np.take_along_axis`` on axis 1, without
    its generic index building (a batch-1 search calls this three times)."""
    if values.shape[0] == 1:
        return values[:, positions[0]]
    return values[np.arange(values.shape[0])[:, None], positions]


def pick(values: NDArray[Any], positions: NDArray[np.int64], fill: Any = -1) -> NDArray[Any]:
    """``values[i, positions[i, j]]``, or ``fill`` where the position is -1."""
    if positions.min(initial=0) >= 0:
        return _along(values, positions)
    return np.where(positions >= 0, _along(values, np.maximum(positions, 0)), fill)


class Reranker(Protocol):
    """Scores shortlists exactly against the stored vectors (or their prefixes)."""

    device_name: str

    def rescore(
        self,
        queries: NDArray[np.float32],
        candidates: NDArray[np.int64],
        k: int,
        dims: int | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top ``k`` of ``candidates`` ``[m, c]`` (-1 = empty) per query ``[m, dims]``:
        ``(scores, positions)``, positions being columns of ``candidates`` (-1 past the end)."""


def _cuda_available() -> bool:
    """Whether torch sees a GPU, without importing torch on machines that have no NVIDIA driver."""
    if "torch" not in sys.modules and not os.path.exists("/proc/driver/nvidia/version"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def make_reranker(
    store: FullVectorStore,
    *,
    device: str = "auto",
    rerank: RerankPath = "auto",
    torch_dtype: Literal["float16", "float32"] | None = None,
    max_resident_bytes: int | None = None,
) -> Reranker:
    """The rerank path for a device: NumPy on the CPU, batched torch on a GPU (or when asked).

    Raises:
        ValueError: For NumPy on a non-CPU device.
    """
    if device == "auto":
        device = "cuda" if rerank != "numpy" and _cuda_available() else "cpu"
    if rerank == "torch" or (rerank == "auto" and device.startswith("cuda")):
        dtype = torch_dtype or ("float32" if device == "cpu" else "float16")
        return TorchReranker(
            store, device=device, dtype=dtype, max_resident_bytes=max_resident_bytes
        )
    if device != "cpu":
        raise ValueError(f"rerank='numpy' runs on the CPU, but device={device!r}")
    return NumpyReranker(store)


class NumpyReranker:
    """Gathers each query's candidates and scores them with one batched product on the CPU.

    A batch whose gathered candidates would exceed ``chunk_bytes`` is scored a block of
    queries at a time, so a large batch with a long shortlist needs no more memory than that.
    """

    device_name = "numpy:cpu"

    def __init__(self, store: FullVectorStore, *, chunk_bytes: int = 64 << 20) -> None:
        self.store = store
        self.chunk_bytes = chunk_bytes

    def rescore(
        self,
        queries: NDArray[np.float32],
        candidates: NDArray[np.int64],
        k: int,
        dims: int | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Score ``candidates`` ``[m, c]`` (-1 = empty) against ``queries`` ``[m, dims]``.

        At ``dims`` below the stored dim the candidates' prefixes are renormalised, so scores
        are cosine similarities at that dim. Returns the top ``k`` per query as
        ``(scores, positions in candidates)``.
        """
        m, c = candidates.shape
        step = max(1, self.chunk_bytes // max(1, 4 * c * (dims or self.store.dim)))
        if m <= step:
            return self._rescore(queries, candidates, k, dims)
        parts = [
            self._rescore(queries[s : s + step], candidates[s : s + step], k, dims)
            for s in range(0, m, step)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _rescore(
        self,
        queries: NDArray[np.float32],
        candidates: NDArray[np.int64],
        k: int,
        dims: int | None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        valid = candidates >= 0
        every = bool(valid.all())
        vectors = self.store.take(candidates if every else np.where(valid, candidates, 0), dims)
        if dims is not None and dims < self.store.dim:
            prefix(vectors, dims, out=vectors)
        scores = np.matmul(vectors, queries[:, :, None])[:, :, 0]  # [m, c]
        if not every:
            scores[~valid] = NEG_INF
        return top_positions(scores, k)


class TorchReranker:
    """The rerank on a torch device: gather the shortlists, one batched matmul, top-k on device.

    The stored vectors are copied to the device once (``float16`` or ``float32``) when they fit
    in ``max_resident_bytes``, and kept in sync as rows are appended; otherwise each batch's
    candidate rows are gathered on the host and streamed to the device in chunks.

    Args:
        store: The full vectors.
        device: A torch device name (``"cuda"``, ``"cuda:1"``, ``"cpu"``, ...).
        dtype: Precision of the resident copy; scores are accumulated in float32.
        max_resident_bytes: Largest resident copy; ``None`` means 80% of the free device memory
            (or always resident on the CPU device).
        chunk_bytes: Largest block of gathered candidates streamed at once.
    """

    def __init__(
        self,
        store: FullVectorStore,
        *,
        device: str = "cuda",
        dtype: Literal["float16", "float32"] = "float16",
        max_resident_bytes: int | None = None,
        chunk_bytes: int = 256 << 20,
    ) -> None:
        self.torch: Any = require("torch", "torch")
        self.store = store
        self.device = self.torch.device(device)
        self.device_name = f"torch:{self.device}"
        self.dtype = getattr(self.torch, dtype)
        self.chunk_bytes = chunk_bytes
        if max_resident_bytes is None:
            if self.device.type == "cuda":
                free, _ = self.torch.cuda.mem_get_info(self.device)
                max_resident_bytes = int(free * 0.8)
            else:
                max_resident_bytes = 1 << 62
        self.max_resident_bytes = max_resident_bytes
        self._resident: Any = None

    @property
    def resident(self) -> bool:
        """Whether the stored vectors are (or will be) held on the device."""
        item = int(self.torch.tensor([], dtype=self.dtype).element_size())
        return len(self.store) * self.store.dim * item <= self.max_resident_bytes

    def _sync(self) -> Any:
        n = len(self.store)
        have = 0 if self._resident is None else int(self._resident.shape[0])
        if have < n:
            new_rows = np.arange(have, n, dtype=np.int64)
            parts = [] if self._resident is None else [self._resident]
            for start in range(0, new_rows.shape[0], 65536):
                block = self.store.take(new_rows[start : start + 65536])
                parts.append(self.torch.from_numpy(block).to(self.device, self.dtype))
            self._resident = self.torch.cat(parts) if len(parts) > 1 else parts[0]
            logger.info("torch rerank: %d vectors resident on %s", n, self.device)
        elif have > n:  # rows were dropped: rebuild
            self._resident = None
            return self._sync()
        return self._resident

    def rescore(
        self,
        queries: NDArray[np.float32],
        candidates: NDArray[np.int64],
        k: int,
        dims: int | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Same contract as :meth:`NumpyReranker.rescore`."""
        torch = self.torch
        m, c = candidates.shape
        width = dims or self.store.dim
        per_query = max(1, c * width * 4)
        step = max(1, self.chunk_bytes // per_query)
        resident = self._sync() if self.resident else None
        out_scores, out_rows = [], []
        with torch.inference_mode():
            for start in range(0, m, step):
                cand = candidates[start : start + step]
                valid = cand >= 0
                safe = np.where(valid, cand, 0)
                if resident is not None:
                    idx = torch.from_numpy(safe).to(self.device)
                    vectors = resident[idx][..., :width].float()
                else:
                    vectors = torch.from_numpy(self.store.take(safe, width)).to(self.device)
                if width < self.store.dim:
                    vectors = prefix_tensor(vectors, width)
                q = torch.from_numpy(np.ascontiguousarray(queries[start : start + step]))
                q = q.to(self.device, torch.float32)
                scores = torch.bmm(vectors, q[:, :, None])[:, :, 0]
                scores[~torch.from_numpy(valid).to(self.device)] = float("-inf")
                kk = min(k, c)
                best_scores, best = torch.topk(scores, kk, dim=1)
                best = torch.where(torch.isfinite(best_scores), best, torch.full_like(best, -1))
                out_scores.append(best_scores.cpu().numpy())
                out_rows.append(best.cpu().numpy())
        return np.concatenate(out_scores), np.concatenate(out_rows).astype(np.int64)
