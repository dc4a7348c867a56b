"""The stores of one index and the row-level work on them: append, remove, search, save.

:class:`~.index.MatryoshkaIndex` checks input, embeds texts and takes the locks; the engine
holds the three stores (:mod:`.stores`), the live-row mask and the rerank path, and runs the
funnel. It knows no backend: the coarse stage comes from :mod:`.backends`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..truncation import prefix
from .backends import coarse_stage_class
from .config import IndexConfig
from .filters import Filter, compile_filter
from .funnel import funnel_search
from .hits import Hit, Hits, Record
from .manifest import Manifest
from .persistence import Opened, reopen, save_index
from .records import RecordDB
from .rerank import Reranker, RerankPath, make_reranker
from .stores import CoarseStage, Selector, StageContext
from .vectors import VectorStore, residency

if TYPE_CHECKING:
    from ..projection import Projection

__all__ = ["Engine"]

_BLOCK = 65536
_ONE_THREAD_MACS = 1 << 18  # OpenBLAS runs a product up to this size on the calling thread
_ONE_THREAD_ROWS = 4096


class Engine:
    """Vectors, records and the coarse stage of one index, kept row-aligned.

    A server backend subclasses it (:class:`~.postgres.PostgresEngine`) and overrides the
    row-level methods the index calls: ``init_dim``, ``rows_of``, ``append``, ``remove``,
    ``get``, ``ids``, ``search``, ``save``, ``manifest`` and ``n_alive``.

    Args:
        config: The index configuration.
        model_name: The model that made the vectors, when known.
        chroma_client: Runtime client of a Chroma coarse stage.
        device: Where the rerank runs.
        rerank: The rerank path.
        runtime: Rerank settings (``torch_dtype``, ``max_resident_bytes``).
        dsn, table: Only for ``backend="postgres"`` (refused here, naming the backend).
    """

    tunable = True
    """Whether :func:`~.tune.tune` can calibrate this engine's funnel."""

    def __init__(
        self,
        config: IndexConfig,
        *,
        model_name: str | None,
        chroma_client: Any,
        device: str,
        rerank: RerankPath,
        runtime: dict[str, Any],
        dsn: str | None = None,
        table: str | None = None,
    ) -> None:
        if dsn is not None or table is not None:
            raise ValueError(
                f"dsn= and table= are for backend='postgres'; this index has "
                f"backend={config.backend!r}"
            )
        self.config = config
        self.model_name = model_name
        self.device = device
        self.rerank_path = rerank
        self.runtime = runtime
        self.options = {"chroma_client": chroma_client}
        self.records = RecordDB.memory()
        self.alive = np.zeros(0, dtype=bool)
        self.n_alive = 0
        self.selector: Selector | None = None
        self.dim: int | None = None
        self.vectors: VectorStore | None = None
        self.coarse: CoarseStage | None = None
        self.reranker: Reranker | None = None
        self._turn: tuple[Any, int, NDArray[np.float32]] | None = None
        self.rotation: Projection | Literal["pca"] | None = None
        """The coarse rotation (see :meth:`coarse_prefix`); ``"pca"``: to be fitted once the
        index holds :func:`rotation_rows` rows (it searches exactly until then)."""

    @property
    def config(self) -> IndexConfig:
        """The configuration; setting it (as ``tune`` does) reaches the coarse stage too."""
        return self._config

    @config.setter
    def config(self, config: IndexConfig) -> None:
        self._config = config
        coarse = getattr(self, "coarse", None)
        if coarse is not None and hasattr(coarse, "config"):
            coarse.config = config

    def use_stage(self, config: IndexConfig, coarse: CoarseStage | None, rotation: Any) -> None:
        """Switch to another coarse stage (with its rotation) and its config: the stage first,
        so that the config reaches the stage it belongs to."""
        self.coarse, self.rotation = coarse, rotation
        self.config = config

    # -- parts ----------------------------------------------------------------------------------
    def context(self) -> StageContext:
        """What the coarse stage may ask of this engine."""
        return StageContext(
            model_name=self.model_name,
            rows_of=lambda ids: self.records.rows_of(ids),
            prefixes=self.prefixes,
            fetch=lambda rows: self.records.fetch(rows),
            options=self.options,
        )

    def create_coarse(self, **state: Any) -> None:
        """Make a new coarse stage (none in exact mode)."""
        if self.config.coarse_dim is not None:
            stage_class = coarse_stage_class(self.config.backend)
            self.coarse = stage_class.create(self.config, self.context(), **state)

    def open_coarse(self, gen: Path, manifest: Manifest) -> CoarseStage | None:
        """Open the coarse stage saved in a generation folder."""
        if self.config.coarse_dim is None:
            return None
        stage_class = coarse_stage_class(self.config.backend)
        stage: CoarseStage = stage_class.open(gen, self.config, self.context(), asdict(manifest))
        return stage

    def coarse_prefix(self, matrix: NDArray[np.float32], dim: int) -> NDArray[np.float32]:
        """What the coarse stage sees of full vectors (or queries): the renormalised
        ``dim``-prefix, after the coarse rotation when the index has one.

        An orthogonal rotation fitted to the corpus (PCA) moves its variance into the first
        dims, so a short prefix of a model that was not Matryoshka-trained shortlists far better;
        only the coarse stage uses it, the rerank scores the stored vectors as they are.
        """
        rotation = self.rotation
        if rotation is None:
            return prefix(matrix, dim)
        assert not isinstance(rotation, str), "a waiting rotation feeds no coarse stage"
        cached = self._turn
        if cached is None or cached[0] is not rotation or cached[1] != dim:
            # the first dim columns, contiguous, kept for the next query
            cached = self._turn = (rotation, dim, np.ascontiguousarray(rotation.rotation[:, :dim]))
        rotated = one_thread_product(matrix, cached[2])
        return prefix(rotated, dim, out=rotated)

    def fit_rotation(self, sample: int = 50_000, seed: int = 0) -> Projection:
        """A PCA rotation of (up to ``sample`` of) the stored live rows (the identity while
        fewer than two are stored)."""
        from ..projection import Projection, fit_projection

        assert self.vectors is not None and self.dim is not None
        live = np.flatnonzero(self.alive)
        if live.shape[0] < 2:
            return Projection("pca", np.eye(self.dim, dtype=np.float32), {"rows": 0})
        if live.shape[0] > sample:
            live = np.sort(np.random.default_rng(seed).choice(live, sample, replace=False))
        return fit_projection(self.vectors.take(live), method="pca", show_progress_bar=False)

    def settle_rotation(self) -> None:
        """Fit a pending ``"pca"`` rotation on the stored rows and feed the coarse stage,
        which holds nothing while the rotation waits."""
        if not isinstance(self.rotation, str):
            return
        self.rotation = self.fit_rotation()
        if self.coarse is not None:
            self.fill(self.coarse)

    def fill(self, stage: CoarseStage) -> None:
        """Add every stored row's coarse prefix to an empty FAISS ``stage`` (which needs no
        ids or metadata), as a rotation change or ``tune`` needs."""
        for first, block in self.prefixes(stage.dim, None):
            span = range(first, first + block.shape[0])
            stage.add(block, span, [""] * len(span), [None] * len(span))

    def prefixes(
        self, dim: int, rows: NDArray[np.int64] | None
    ) -> Iterator[tuple[int, NDArray[np.float32]]]:
        """The coarse stage's view (:meth:`coarse_prefix`) of ``rows`` (all rows when
        ``None``), block by block."""
        assert self.vectors is not None
        if rows is None:
            for first, block in self.vectors.blocks(_BLOCK):
                yield first, self.coarse_prefix(block, dim)
            return
        width = dim if self.rotation is None else None
        for start in range(0, rows.shape[0], _BLOCK):
            block = self.vectors.take(rows[start : start + _BLOCK], width)
            yield start, self.coarse_prefix(block, dim)

    def init_dim(self, dim: int) -> None:
        """Fix the full dimension and build the parts that depend on it."""
        self.config.check_full_dim(dim)
        rotation_dim = getattr(self.rotation, "dim", dim)
        if rotation_dim != dim:
            raise ValueError(
                f"coarse_rotation maps {rotation_dim}-dim vectors but these vectors have {dim} dims"
            )
        self.dim = dim
        self._attach_vectors(VectorStore(dim))

    def _attach_vectors(self, vectors: VectorStore) -> None:
        self.vectors = vectors
        self.reranker = make_reranker(
            vectors, device=self.device, rerank=self.rerank_path, **self.runtime
        )

    def attach(self, opened: Opened) -> None:
        """Point the engine at a saved generation (vectors, records, coarse stage)."""
        old_records = self.records
        self.dim = opened.manifest.full_dim
        self._attach_vectors(opened.vectors)
        self.records = opened.records
        self.coarse = opened.coarse
        self.alive = np.ones(opened.manifest.count, dtype=bool)
        self.n_alive = opened.manifest.count
        self.selector = None
        if old_records is not opened.records:
            old_records.conn.close()

    def manifest(self, projection: Any, coarse: CoarseStage | None = None) -> Manifest:
        """The manifest of the current state (with ``coarse`` instead of the stage, if given)."""
        coarse = coarse or self.coarse
        return Manifest.build(
            self.config,
            full_dim=self.dim or 0,
            model_name=self.model_name,
            projection=projection.to_manifest() if projection else None,
            count=self.n_alive,
            coarse_rotation=getattr(self.rotation, "to_manifest", lambda: self.rotation)(),
            **(coarse.manifest() if coarse is not None else {}),
        )

    # -- writing --------------------------------------------------------------------------------
    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """The rows of the ids that exist."""
        return self.records.rows_of(ids)

    def append(
        self,
        matrix: NDArray[Any],
        ids: list[str],
        texts: list[str | None],
        meta_json: list[str | None],
        replaced: list[int],
    ) -> None:
        """Store new rows in every store, all or nothing; ``replaced`` rows stop being live."""
        assert self.vectors is not None
        start = len(self.vectors)
        rows = range(start, start + matrix.shape[0])
        pending = isinstance(self.rotation, str)
        try:
            with self.records.transaction():
                self.records.delete_rows(replaced)
                self.records.insert(rows, ids, texts, meta_json)
                full = self.vectors.append(matrix)
                prefix(full, full.shape[1], out=full)  # normalised in place, in the store
                if self.coarse is not None and not pending:
                    self.coarse.add(self.coarse_prefix(full, self.coarse.dim), rows, ids, meta_json)
        except BaseException:
            self.vectors.truncate_to(start)
            raise
        self.alive = np.concatenate([self.alive, np.ones(len(rows), dtype=bool)])
        self.alive[replaced] = False
        self.n_alive += len(rows) - len(replaced)
        self.selector = None
        if pending and self.n_alive >= rotation_rows(full.shape[1]):
            self.settle_rotation()

    def remove(self, found: dict[str, int]) -> None:
        """Remove the records ``{id: row}`` from every store."""
        rows = list(found.values())
        with self.records.transaction():
            self.records.delete_rows(rows)
            if self.coarse is not None:
                self.coarse.remove(rows, list(found))
        self.alive[rows] = False
        self.n_alive -= len(found)
        self.selector = None

    def save(self, folder: Path, projection: Any, *, full_vectors: str) -> None:
        """Save the live rows to ``folder`` and switch to the saved files (read as
        ``full_vectors`` says)."""
        assert self.vectors is not None
        if self.n_alive:
            self.settle_rotation()  # a saved coarse stage holds every row
        compact = self.n_alive != len(self.alive)
        rows = np.flatnonzero(self.alive).astype(np.int64) if compact else None
        coarse = self.coarse
        if coarse is not None and rows is not None:
            coarse = coarse.compacted(rows)
        manifest = save_index(
            folder,
            self.manifest(projection, coarse),
            vectors=self.vectors,
            records=self.records,
            coarse=coarse,
            rows=rows,
            projection=projection,
            rotation=self.rotation,
        )
        nbytes = 4 * manifest.count * manifest.full_dim
        mode = residency(full_vectors, nbytes, exact=self.config.coarse_dim is None)
        self.attach(reopen(folder, manifest, coarse, mode=mode))

    # -- reading --------------------------------------------------------------------------------
    def get(self, ids: Sequence[str], include_vectors: bool) -> list[Record]:
        """The records of the ids that exist, in input order."""
        found = self.records.rows_of(ids)
        rows = [found[i] for i in ids if i in found]
        records = self.records.fetch(rows)
        vectors = (
            self.vectors.take(np.asarray(rows, dtype=np.int64))
            if include_vectors and self.vectors is not None and rows
            else None
        )
        return [
            Record(*records[row], None if vectors is None else vectors[j])
            for j, row in enumerate(rows)
        ]

    def ids(self, where: Filter | None) -> list[str]:
        """The ids of the records that match ``where`` (all when ``None``), in row order."""
        if where is None:
            return [i for i, _ in sorted(self.records.all_ids().items(), key=lambda p: p[1])]
        rows = self.records.matching_rows(where).tolist()
        records = self.records.fetch(rows)
        return [records[r][0] for r in sorted(rows)]

    def search(self, queries: NDArray[np.float32], k: int, where: Filter | None) -> list[Hits]:
        """The ``k`` best live records per unit-length query, under an optional filter."""
        if self.n_alive == 0 or queries.shape[0] == 0:
            if where is not None:
                compile_filter(where)  # a bad filter is an error on an empty index too
            return [Hits() for _ in range(queries.shape[0])]
        assert self.vectors is not None and self.reranker is not None and self.dim
        exact = self.config.searches_exactly(self.n_alive, self.dim)
        coarse = None if exact or isinstance(self.rotation, str) else self.coarse
        allowed = None
        if coarse is None or coarse.filters_rows:
            allowed = self.selection(where)
            if allowed is not None and allowed.count == 0:
                return [Hits() for _ in range(queries.shape[0])]
        scores, rows, coarse_scores, reranked = funnel_search(
            queries,
            k,
            config=self.config,
            coarse=coarse,
            vectors=self.vectors,
            reranker=self.reranker,
            allowed=allowed,
            where=where,
            coarse_prefix=self.coarse_prefix,
        )
        return self.hits(scores, rows, coarse_scores, reranked)

    def selection(self, where: Filter | None) -> Selector | None:
        """The rows a search may return: live rows matching the filter (None: all rows)."""
        if where is None:
            if self.n_alive == len(self.alive):
                return None
            if self.selector is None:
                self.selector = Selector(self.alive.copy())
            return self.selector
        allowed = np.zeros(len(self.alive), dtype=bool)
        allowed[self.records.matching_rows(where)] = True
        return Selector(allowed & self.alive)

    def hits(
        self,
        scores: NDArray[np.float32],
        rows: NDArray[np.int64],
        coarse_scores: NDArray[np.float32],
        reranked: NDArray[np.int64],
    ) -> list[Hits]:
        """One :class:`Hits` per query row, with each record's id, text and metadata."""
        row_lists = rows.tolist()
        records = self.records.fetch([r for row in row_lists for r in row if r >= 0])
        make = Hit.unchecked
        out = []
        for row, score, coarse, n in zip(
            row_lists, scores.tolist(), coarse_scores.tolist(), reranked.tolist(), strict=True
        ):
            triples = zip(row, score, coarse, strict=True)
            found = [(records[r], s, c) for r, s, c in triples if r in records]
            hits = [make(id_, s, c, text, meta) for (id_, text, meta), s, c in found]
            out.append(Hits(hits, reranked=n))
        return out


def one_thread_product(
    matrix: NDArray[np.float32], turn: NDArray[np.float32]
) -> NDArray[np.float32]:
    """``matrix @ turn``, for a batch of queries in row blocks that BLAS runs on the calling
    thread.

    OpenBLAS splits a product of more than ``_ONE_THREAD_MACS`` multiply-adds over worker
    threads, which then spin waiting for more work while FAISS's OpenMP threads search the
    coarse stage: on 2 cores that made a batch of 64 rotated queries 5x slower per query than
    one query at a time. Blocks under the threshold cost about 2 us a row; a matrix of more
    than ``_ONE_THREAD_ROWS`` rows (rows being added) is one product.
    """
    rows, (inner, outer) = matrix.shape[0], turn.shape
    step = max(1, _ONE_THREAD_MACS // (inner * outer))
    if rows <= step or rows > _ONE_THREAD_ROWS:
        return matrix @ turn
    return np.concatenate([matrix[s : s + step] @ turn for s in range(0, rows, step)])


def rotation_rows(dim: int) -> int:
    """Rows a pending ``"pca"`` coarse rotation waits for: enough for a fair covariance."""
    return max(1024, 2 * dim)
