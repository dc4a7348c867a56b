"""The local engine: the stores of one index in this process and the row-level work on them.

:class:`~.index.MatryoshkaIndex` checks input, embeds texts and takes the locks; the
:class:`LocalEngine` holds the three stores (:mod:`.stores`), the live-row mask and the rerank
path, runs the funnel, and implements the engine protocol (:mod:`.protocol`), including what
the tuner measures (:meth:`LocalEngine.trial`). It knows no backend name: the coarse stage
comes from :mod:`.backends`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..truncation import prefix
from . import backends
from .config import IndexConfig
from .filters import Filter, compile_filter
from .funnel import exact_search, funnel_search
from .hits import Hit, Hits, Record
from .manifest import Manifest
from .persistence import Opened, open_index, reopen, save_index, saved_projection, saved_rotation
from .protocol import EngineSettings
from .records import RecordDB
from .rerank import Reranker, make_reranker
from .stores import CoarseStage, Selector, StageContext
from .trial import LocalTrial
from .vectors import VectorStore, residency

if TYPE_CHECKING:
    from ..projection import Projection

__all__ = ["Engine", "LocalEngine", "one_thread_product", "rotation_rows"]

_BLOCK = 65536
_ONE_THREAD_MACS = 1 << 18  # OpenBLAS runs a product up to this size on the calling thread
_ONE_THREAD_ROWS = 4096
_STAGE_FIELDS = ("coarse_dim", "precision", "backend", "hnsw_m", "ef_construction")
"""The settings a coarse stage is built with (the others are read at search time)."""

Rotation = Any  # None, "pca" (waiting for rows) or a Projection


class LocalEngine:
    """Vectors, records and the coarse stage of one index, kept row-aligned, in this process.

    Made by :meth:`create` (a new index) or :meth:`open` (a saved folder); the facade calls
    the operations of :class:`~.protocol.Engine`, :meth:`persist` and the tuner's
    :meth:`trial` / :meth:`adopt`.

    Args:
        config: The index configuration.
        settings: Model name, runtime options (a Chroma client) and the rerank path.
    """

    def __init__(self, config: IndexConfig, settings: EngineSettings) -> None:
        self.config = config
        self.model_name = settings.model_name
        self.settings = settings
        self.records = RecordDB.memory()
        self.alive = np.zeros(0, dtype=bool)
        self.n_alive = 0
        self.selector: Selector | None = None
        self.dim: int | None = None
        self.vectors: VectorStore | None = None
        self.coarse: CoarseStage | None = None
        self.reranker: Reranker | None = None
        self.full_vectors = "auto"
        self.saved_projection: Projection | None = None
        self._turn: tuple[Any, int, NDArray[np.float32]] | None = None
        self._pca: Projection | None = None
        self.rotation: Rotation = None
        """The coarse rotation (see :meth:`coarse_prefix`); ``"pca"``: to be fitted once the
        index holds :func:`rotation_rows` rows (it searches exactly until then)."""

    @classmethod
    def create(
        cls,
        config: IndexConfig,
        settings: EngineSettings,
        *,
        dim: int | None = None,
        rotation: Rotation = None,
        calibration: Any = None,
    ) -> LocalEngine:
        """A new, empty index (``rotation`` checked by :func:`~.rotation.check_rotation`)."""
        engine = cls(config, settings)
        engine.rotation = rotation
        if config.coarse_dim is not None:
            engine.coarse = engine._stage_class(config).create(
                config, engine.context(), calibration=calibration
            )
        if dim is not None:
            engine.init_dim(dim)
        return engine

    @classmethod
    def open(
        cls,
        folder: Path,
        settings: EngineSettings,
        *,
        full_vectors: str,
        verify: bool,
        overrides: dict[str, Any],
    ) -> LocalEngine:
        """The index saved in ``folder`` (``overrides``: config settings to change, such as
        ``ef_search``).

        Raises:
            FileNotFoundError, IndexCorruptedError: As :func:`~.persistence.open_index`.
        """
        made: list[LocalEngine] = []

        def open_coarse(gen: Path, manifest: Manifest) -> CoarseStage | None:
            config = manifest.config.replace(**overrides)
            engine = cls(config, replace(settings, model_name=manifest.model_name))
            made.append(engine)
            engine.rotation = saved_rotation(gen, manifest, config)
            if config.coarse_dim is None:
                return None
            stage: CoarseStage = engine._stage_class(config).open(
                gen, config, engine.context(), manifest.to_dict()
            )
            return stage

        opened = open_index(
            folder, full_vectors=full_vectors, verify=verify, open_coarse=open_coarse
        )
        engine = made[0]
        engine.attach(opened)
        engine.saved_projection = saved_projection(opened)
        return engine

    @staticmethod
    def _stage_class(config: IndexConfig) -> Any:
        return backends.coarse_stage_class(config.backend)

    # -- parts ----------------------------------------------------------------------------------
    @property
    def rerank_device(self) -> str:
        """Where the rerank runs, for example ``numpy:cpu`` or ``torch:cuda``."""
        return self.reranker.device_name if self.reranker is not None else "numpy:cpu"

    read_only = False
    """An index in this process takes writes (the protocol's ``read_only``)."""

    def count(self) -> int:
        """The number of live records."""
        return self.n_alive

    def close(self) -> None:
        """Close the record store (the index cannot be used after)."""
        self.records.conn.close()

    def context(
        self, rotation: Rotation = ..., rows: NDArray[np.int64] | None = None
    ) -> StageContext:
        """What a coarse stage may ask of this engine; for a stage built over some ``rows``
        (numbered from 0) with a ``rotation`` of its own, its prefixes are theirs."""
        prefixes: Any = self.prefixes
        if rotation is not ... or rows is not None:

            def prefixes(dim: int, wanted: NDArray[np.int64] | None) -> Any:
                if rows is not None:
                    wanted = rows if wanted is None else rows[wanted]
                return self.prefixes(dim, wanted, rotation)

        return StageContext(
            model_name=self.model_name,
            rows_of=lambda ids: self.records.rows_of(ids),
            prefixes=prefixes,
            fetch=lambda rows: self.records.fetch(rows),
            options=dict(self.settings.options),
        )

    def coarse_prefix(
        self, matrix: NDArray[np.float32], dim: int, rotation: Rotation = ...
    ) -> NDArray[np.float32]:
        """What the coarse stage sees of full vectors (or queries): the renormalised
        ``dim``-prefix, after the coarse rotation (the engine's, unless ``rotation`` is given).

        An orthogonal rotation fitted to the corpus (PCA) moves its variance into the first
        dims, so a short prefix of a model that was not Matryoshka-trained shortlists far better;
        only the coarse stage uses it, the rerank scores the stored vectors as they are.
        """
        if rotation is ...:
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

    def settle(self) -> None:
        """Fit a pending ``"pca"`` rotation on the stored rows and feed the coarse stage,
        which holds nothing while the rotation waits."""
        if not isinstance(self.rotation, str):
            return
        self.rotation = self.fit_rotation()
        if self.coarse is not None:  # empty while the rotation waited: fed now
            for first, block in self.prefixes(self.coarse.dim, None):
                span = range(first, first + block.shape[0])
                self.coarse.add(block, span, [""] * len(span), [None] * len(span))

    def prefixes(
        self, dim: int, rows: NDArray[np.int64] | None, rotation: Rotation = ...
    ) -> Iterator[tuple[int, NDArray[np.float32]]]:
        """The coarse stage's view (:meth:`coarse_prefix`) of ``rows`` (all rows when
        ``None``), block by block."""
        assert self.vectors is not None
        if rotation is ...:
            rotation = self.rotation
        if rows is None:
            for first, block in self.vectors.blocks(_BLOCK):
                yield first, self.coarse_prefix(block, dim, rotation)
            return
        width = dim if rotation is None else None
        for start in range(0, rows.shape[0], _BLOCK):
            block = self.vectors.take(rows[start : start + _BLOCK], width)
            yield start, self.coarse_prefix(block, dim, rotation)

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
        s = self.settings
        self.reranker = make_reranker(
            vectors,
            device=s.device,
            rerank=s.rerank,
            torch_dtype=s.torch_dtype,
            max_resident_bytes=s.max_resident_bytes,
        )

    def attach(self, opened: Opened) -> None:
        """Point the engine at a saved generation (vectors, records, coarse stage)."""
        old_records = self.records
        self.dim = opened.manifest.full_dim
        self._attach_vectors(opened.vectors)
        self.full_vectors = opened.vectors.mode
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
            self.settle()

    def remove(self, found: dict[str, int]) -> int:
        """Remove the records ``{id: row}`` from every store; returns how many."""
        rows = list(found.values())
        with self.records.transaction():
            self.records.delete_rows(rows)
            if self.coarse is not None:
                self.coarse.remove(rows, list(found))
        self.alive[rows] = False
        self.n_alive -= len(found)
        self.selector = None
        return len(found)

    def persist(self, folder: Path, projection: Any) -> None:
        """Save the live rows to ``folder`` and switch to the saved files (the full vectors
        read as :attr:`full_vectors` says)."""
        assert self.vectors is not None
        if self.n_alive:
            self.settle()  # a saved coarse stage holds every row
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
        mode = residency(self.full_vectors, nbytes, exact=self.config.coarse_dim is None)
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
        coarse = self._coarse_in_use(self.config, self.coarse, self.rotation)
        allowed = None
        if coarse is None or coarse.filters_rows:
            allowed = self.selection(where)
            if allowed is not None and allowed.count == 0:
                return [Hits() for _ in range(queries.shape[0])]
        found = self._funnel(queries, k, self.config, coarse, self.rotation, allowed, where)
        return self.hits(*found)

    def _coarse_in_use(
        self, config: IndexConfig, coarse: CoarseStage | None, rotation: Rotation
    ) -> CoarseStage | None:
        """The coarse stage a search with ``config`` takes (``None``: an exact scan)."""
        assert self.dim is not None
        if config.searches_exactly(self.n_alive, self.dim) or isinstance(rotation, str):
            return None
        return coarse

    def _funnel(
        self,
        queries: NDArray[np.float32],
        k: int,
        config: IndexConfig,
        coarse: CoarseStage | None,
        rotation: Rotation,
        allowed: Selector | None,
        where: Filter | None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
        assert self.vectors is not None and self.reranker is not None
        return funnel_search(
            queries,
            k,
            config=config,
            coarse=coarse,
            vectors=self.vectors,
            reranker=self.reranker,
            allowed=allowed,
            where=where,
            coarse_prefix=lambda m, dim: self.coarse_prefix(m, dim, rotation),
        )

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

    # -- what the tuner measures ----------------------------------------------------------------
    def sample_rows(self, sample: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Up to ``sample`` live rows at random, in row order: ``(vectors, rows)``."""
        assert self.vectors is not None
        live = np.flatnonzero(self.alive)
        picks = np.sort(np.random.default_rng(seed).choice(live, min(sample, live.shape[0]), False))
        return self.vectors.take(picks), picks

    def _allowed_but(self, exclude: NDArray[np.int64] | None) -> Selector | None:
        if exclude is None or exclude.shape[0] == 0:
            return self.selection(None)
        mask = self.alive.copy()
        mask[exclude] = False
        return Selector(mask)

    def exact_rows(
        self, queries: NDArray[np.float32], k: int, exclude: NDArray[np.int64] | None
    ) -> NDArray[np.int64]:
        """Rows of each query's exact full-dim top ``k`` among the live rows but ``exclude``."""
        assert self.vectors is not None
        return exact_search(queries, k, self.vectors, self._allowed_but(exclude))[1]

    def trial(
        self,
        config: IndexConfig,
        *,
        rotation: Rotation = ...,
        exclude: NDArray[np.int64] | None = None,
        seed: int = 0,
    ) -> LocalTrial:
        """``config`` over the live rows but ``exclude``, in force nowhere (see
        :class:`~.protocol.TunableEngine`).

        The current coarse stage serves when ``config`` builds the same stage with the same
        rotation and no excluded row would bias it; otherwise a stage is built from the stored
        vectors. Excluded rows are never candidates, and a stage whose search walks a graph is
        built without them: a held-out row that is still a node draws the walk to its own
        neighbours, and the measured recall would be too high.
        """
        if rotation is ...:
            rotation = self.rotation
        elif rotation == "pca":
            if self._pca is None:
                self._pca = self.fit_rotation(seed=seed)
            rotation = self._pca
        allowed = self._allowed_but(exclude)
        caps = backends.spec(config.backend).capabilities
        kept = None
        if exclude is not None and caps.beam:
            kept = np.flatnonzero(allowed.mask) if allowed is not None else None
        same = all(getattr(config, f) == getattr(self.config, f) for f in _STAGE_FIELDS)
        if config.coarse_dim is None:
            coarse = None
        elif same and rotation is self.rotation and kept is None:
            coarse = self.coarse
        else:
            coarse = self.build_stage(config, rotation, kept)
        return LocalTrial(self, config, coarse, rotation, allowed, kept)

    def build_stage(
        self, config: IndexConfig, rotation: Rotation, rows: NDArray[np.int64] | None = None
    ) -> CoarseStage:
        """A new coarse stage of ``config`` over the prefixes of ``rows`` (all rows when
        ``None``; the stage numbers them from 0), built from the stored vectors.

        Raises:
            ValueError: For a backend whose stage is not built from the stored vectors.
        """
        if not backends.spec(config.backend).capabilities.builds_stages:
            raise ValueError(
                f"backend={config.backend!r} keeps its coarse stage outside this process: "
                "tune(coarse=...) cannot build trial stages of it"
            )
        context = self.context(rotation, rows)
        stage: CoarseStage = self._stage_class(config).create(config, context)
        for first, block in context.prefixes(stage.dim, None):
            span = range(first, first + block.shape[0])
            stage.add(block, span, [""] * len(span), [None] * len(span))
        return stage

    def end_trials(self) -> None:
        """Nothing to release: a trial's stage is dropped with the trial."""

    def adopt(self, trial: LocalTrial) -> None:
        """Put ``trial`` in force: its config, its rotation and its coarse stage (rebuilt over
        every row when it was built without some)."""
        coarse = trial.stage()
        if trial.kept is not None and trial.config.coarse_dim is not None:
            coarse = self.build_stage(trial.config, trial.rotation)
        self.coarse, self.rotation, self.config = coarse, trial.rotation, trial.config


Engine = LocalEngine
"""The local engine's earlier name."""


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
