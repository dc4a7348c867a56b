"""The whole index in PostgreSQL + pgvector: one table, one prefix index, one statement per search.

Layout of an index named ``docs``::

    docs                 id text PRIMARY KEY, seq bigint (insertion order), text, metadata jsonb,
                         embedding vector(D) (the full, L2-normalised vector; STORAGE PLAIN up
                         to 1,500 dims, so the rerank reads it from the row, not from TOAST)
    docs_prefix          HNSW on the renormalised coarse prefix:
                         (l2_normalize(subvector(embedding, 1, d))::vector(d)) vector_ip_ops;
                         ::halfvec(d) halfvec_ip_ops for float16;
                         binary_quantize(subvector(...))::bit(d) bit_hamming_ops for binary
                         (inner product of unit prefixes: a zero prefix is indexed too, where
                         cosine ops would leave it out)
    docs_metadata        GIN (metadata jsonb_path_ops), for ``$eq`` filters
    matryoshka_indexes   one row per index: its name and its manifest (configuration, full dim,
                         model), so a client needs only the DSN and the table's name

A search is one SQL statement: the coarse shortlist from the prefix index (with the filter, and
pgvector's iterative scan so a filtered search still fills its shortlist), each middle stage a
further CTE that re-sorts by a longer prefix, and the rerank by the full vectors. Writes are
transactions; several processes can share one index.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._optional import require
from ..truncation import prefix
from .config import IndexConfig
from .engine import Engine
from .filters import Filter
from .hits import Hit, Hits, Record
from .manifest import FORMAT_VERSION, Manifest
from .postgres_filters import compile_pg_filter

__all__ = [
    "META_TABLE",
    "MIN_PGVECTOR",
    "PostgresEngine",
    "drop_index",
    "open_postgres_index",
    "read_manifest",
    "server_location",
]

META_TABLE = "matryoshka_indexes"
MIN_PGVECTOR = (0, 8, 0)
"""pgvector 0.8 brings iterative index scans (filtered searches that fill their shortlist)."""
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_MAX_FULL_DIM = 16000  # a vector column
_MAX_INDEX_DIM = {"float32": 2000, "float16": 4000, "binary": 64000}  # HNSW per type
_MAX_PLAIN_DIM = 1500  # 6 KB: a full vector up to this width stays in its heap row
_MAX_EF_SEARCH = 1000  # hnsw.ef_search's range is 1..1000
_STRUCTURE = ("full_dim", "coarse_dim", "precision", "model_name")


def _psycopg() -> Any:
    return require("psycopg", "postgres")


def check_table(table: Any) -> str:
    """``table`` if it is a plain lower-case SQL name, else a ValueError naming the rule."""
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise ValueError(
            f"table={table!r:.80} is not a usable table name: use 1 to 48 lower-case letters, "
            "digits and '_', starting with a letter or '_'"
        )
    return table


class _Sql:
    """The SQL of one index's table, built once from its configuration (names quoted)."""

    def __init__(self, table: str, config: IndexConfig, full_dim: int) -> None:
        self.table = f'"{table}"'
        self.config = config
        self.full_dim = full_dim
        d = config.coarse_dim
        self.prefix_expr, self.ops, self.op, self.query_cast = "", "", "", ""
        if d is not None:
            self.prefix_expr, self.ops, self.op, self.query_cast = {
                "float32": (
                    f"(l2_normalize(subvector(embedding, 1, {d}))::vector({d}))",
                    "vector_ip_ops",
                    "<#>",
                    f"%s::vector({d})",
                ),
                "float16": (
                    f"(l2_normalize(subvector(embedding, 1, {d}))::halfvec({d}))",
                    "halfvec_ip_ops",
                    "<#>",
                    f"%s::vector({d})::halfvec({d})",
                ),
                "binary": (
                    f"(binary_quantize(subvector(embedding, 1, {d}))::bit({d}))",
                    "bit_hamming_ops",
                    "<~>",
                    f"%s::bit({d})",
                ),
            }[config.precision]

    def create(self, m: int, ef_construction: int) -> list[str]:
        """The statements that make the table and its indexes."""
        t = self.table
        statements = [
            f"CREATE TABLE {t} (id text PRIMARY KEY, "
            "seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE, text text, "
            f"metadata jsonb NOT NULL DEFAULT '{{}}', embedding vector({self.full_dim}) NOT NULL)",
            f"CREATE INDEX {self.index_name('metadata')} ON {t} USING gin "
            "(metadata jsonb_path_ops)",
        ]
        if self.full_dim <= _MAX_PLAIN_DIM:  # kept in the row: a rerank reads no TOAST chunks
            statements.append(f"ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE PLAIN")
        if self.prefix_expr:
            statements.append(
                f"CREATE INDEX {self.index_name('prefix')} ON {t} USING hnsw "
                f"({self.prefix_expr} {self.ops}) WITH (m = {m}, ef_construction = "
                f"{ef_construction})"
            )
        return statements

    def index_name(self, part: str) -> str:
        return f'"{self.table.strip(chr(34))}_{part}"'

    def search(self, stages: list[tuple[int, int]], where: str) -> tuple[str, list[Any]]:
        """One statement for one query: shortlist, middle stages, full-dim rerank, records.

        The stages nest as subqueries, each cutting its input to its ``keep`` by a longer
        prefix; only the last computes the full-dim score, and only the ``k`` hits are joined
        back for their text and metadata (and coarse score). Returns the SQL and the names of
        its parameters in order, which :meth:`query_params` fills for each query.
        """
        t = self.table
        if not self.prefix_expr:
            sql = (
                "SELECT f.id, r.text, r.metadata, -f.nd, -f.nd, f.n FROM (SELECT id, nd, "
                "count(*) OVER () AS n FROM (SELECT id, embedding <#> %s AS nd FROM "
                f"{t} WHERE {where}) s ORDER BY nd LIMIT %s) f JOIN {t} r USING (id) "
                "ORDER BY f.nd"
            )
            return sql, ["query", "filter", "k"]
        last = len(stages) - 1
        expr, op, cast = self.prefix_expr, self.op, self.query_cast
        inner, names = f"{t} WHERE {where}", ["filter"]
        for i, (dim, _) in enumerate(stages):
            columns, head = (
                ("id, embedding <#> %s AS nd", ["query"])
                if i == last
                else (
                    "id, embedding",
                    [],
                )
            )
            order = (
                f"{expr} {op} {cast}"
                if i == 0
                else f"l2_normalize(subvector(embedding, 1, {dim})) <#> %s::vector({dim})"
            )
            source = inner if i == 0 else f"({inner}) c{i}"
            inner = f"SELECT {columns} FROM {source} ORDER BY {order} LIMIT %s"
            names = [*head, *names, f"prefix{i}", f"keep{i}"]
        sql = (
            f"SELECT f.id, r.text, r.metadata, -f.nd, {self.coarse_score()}, f.n FROM "
            f"(SELECT id, nd, count(*) OVER () AS n FROM ({inner}) s ORDER BY nd LIMIT %s) f "
            f"JOIN {t} r USING (id) ORDER BY f.nd"
        )
        return sql, ["prefix0", *names, "k"]

    def coarse_score(self) -> str:
        """The coarse stage's similarity for a hit: the unit prefixes' dot product (``<#>`` is
        its negative), or the sign agreement ``1 - 2 * hamming / d`` for binary."""
        distance = f"({self.prefix_expr} {self.op} {self.query_cast})"
        if self.config.precision == "binary":
            return f"1 - 2 * {distance} / {self.config.coarse_dim}"
        return f"-{distance}"

    def query_params(
        self,
        query: NDArray[np.float32],
        stages: list[tuple[int, int]],
        k: int,
        filter_params: list[Any],
        names: list[str],
    ) -> list[Any]:
        """The parameters ``names`` of a :meth:`search` statement, for one unit-length query."""
        values: dict[str, Any] = {"query": query, "k": k}
        for i, (dim, keep) in enumerate(stages):
            values[f"prefix{i}"] = prefix(query[None, :], dim)[0]
            values[f"keep{i}"] = keep
        if stages and self.config.precision == "binary":
            dim = stages[0][0]
            values["prefix0"] = "".join("1" if x > 0 else "0" for x in query[:dim].tolist())
        params: list[Any] = []
        for name in names:
            if name == "filter":
                params.extend(filter_params)
            else:
                params.append(values[name])
        return params


class ServerRerank:
    """The rerank of a PostgreSQL index: part of its search statement, run by the server."""

    device_name = "postgres:server"

    def rescore(
        self,
        queries: NDArray[np.float32],
        candidates: NDArray[np.int64],
        k: int,
        dims: int | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Never called: the search statement reranks (kept for the ``Reranker`` protocol)."""
        raise NotImplementedError("a PostgreSQL index reranks inside its search statement")


class PostgresEngine(Engine):
    """The engine of a ``backend="postgres"`` index: every store is one PostgreSQL table.

    Args:
        config: The index configuration.
        model_name: The model that made the vectors, when known.
        dsn: A libpq connection string or URI.
        table: The index's table name.
        device, rerank, runtime, chroma_client: Accepted for the common constructor; the
            rerank runs in the server.
    """

    tunable = False

    def __init__(
        self,
        config: IndexConfig,
        *,
        model_name: str | None,
        dsn: str | None = None,
        table: str | None = None,
        **_local: Any,
    ) -> None:
        if not dsn or not isinstance(dsn, str):
            raise ValueError(
                f"backend='postgres' needs dsn= (a PostgreSQL connection string), got {dsn!r:.40}"
            )
        self.config = config
        self.model_name = model_name
        self.table = check_table(table)
        self.dsn = dsn  # kept in memory only: the manifest never holds it
        self.dim = None
        self.vectors = None
        self.coarse = None
        self.reranker = ServerRerank()
        self.selector = None
        self.alive = np.zeros(0, dtype=bool)
        self._lock = threading.Lock()
        self._gucs: tuple[int, ...] | None = None
        self._sql: _Sql | None = None
        self._conn = _connect(dsn)
        self.stored = read_manifest(self._conn, self.table)
        if self.stored is not None:
            self._check_stored(self.stored)

    # -- connection and the stored manifest --------------------------------------------------
    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with self._lock, self._conn.cursor() as cur:
            yield cur

    def _check_stored(self, stored: dict[str, Any]) -> None:
        """Refuse to use a table made with another model, dims or prefix index (naming both)."""
        mine = {**self.config.to_manifest(), "model_name": self.model_name}
        for name in _STRUCTURE[1:]:
            theirs, ours = stored.get(name), mine.get(name)
            if name == "model_name" and (ours is None or theirs is None):
                continue
            if theirs != ours:
                raise ValueError(
                    f"table {self.table!r} was made with {name}={theirs!r}; this index has "
                    f"{name}={ours!r}: open it with MatryoshkaIndex.load(dsn, table=...) or "
                    "choose another table"
                )
        self.model_name = stored.get("model_name")
        self._use_dim(int(stored["full_dim"]))

    def _use_dim(self, dim: int) -> None:
        self.dim = dim
        self._sql = _Sql(self.table, self.config, dim)

    def init_dim(self, dim: int) -> None:
        """Fix the full dimension: create the table and its indexes, or check the stored one."""
        self.config.check_full_dim(dim)
        if self.dim is not None:
            if dim != self.dim:
                raise ValueError(
                    f"table {self.table!r} stores {self.dim}-dim vectors; this index was given "
                    f"{dim}-dim ones"
                )
            return
        self._check_limits(dim)
        sql = _Sql(self.table, self.config, dim)
        manifest = asdict(self.manifest(None, full_dim=dim, count=0))
        for transient in ("count", "files", "vectors_sha256"):
            manifest.pop(transient)
        try:
            row = self._create(sql, manifest)
        except _psycopg().errors.DuplicateTable:
            raise ValueError(
                f"table {self.table!r} exists and holds no index of this library (it is not in "
                f"{META_TABLE}); it was left as it is: choose another table"
            ) from None
        if row is not None:  # another client made it meanwhile
            self.stored = dict(row[0])
            self._check_stored(self.stored)
            self.init_dim(dim)
            return
        self.stored = manifest
        self._use_dim(dim)

    def _create(self, sql: _Sql, manifest: dict[str, Any]) -> Any:
        """Make the table, its indexes and its manifest row in one transaction; returns the
        manifest row another client wrote first, if one did."""
        with self._cursor() as cur, self._conn.transaction():
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [META_TABLE])
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, "
                "manifest jsonb NOT NULL, created timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute(f"SELECT manifest FROM {META_TABLE} WHERE name = %s", [self.table])
            row = cur.fetchone()
            if row is None:
                for statement in sql.create(self.config.hnsw_m, self.config.ef_construction):
                    cur.execute(statement)
                cur.execute(
                    f"INSERT INTO {META_TABLE} (name, manifest) VALUES (%s, %s)",
                    [self.table, _jsonb(manifest)],
                )
        return row

    def _check_limits(self, dim: int) -> None:
        if dim > _MAX_FULL_DIM:
            raise ValueError(
                f"{dim}-dim vectors do not fit a pgvector vector column: the limit is "
                f"{_MAX_FULL_DIM} dims"
            )
        d, precision = self.config.coarse_dim, self.config.precision
        if d is not None and d > _MAX_INDEX_DIM[precision]:
            raise ValueError(
                f"coarse_dim={d} is past pgvector's HNSW limit for precision={precision!r}: "
                f"{_MAX_INDEX_DIM[precision]} dims"
            )
        m, ef = self.config.hnsw_m, self.config.ef_construction
        if not 2 <= m <= 100 or not 2 * m <= ef <= 1000:
            raise ValueError(
                f"hnsw_m={m}, ef_construction={ef}: pgvector needs 2 <= m <= 100 and "
                "2 * m <= ef_construction <= 1000"
            )

    def manifest(self, projection: Any, coarse: Any = None, **facts: Any) -> Manifest:
        """The manifest of this index (what the meta table holds, and the count)."""
        facts.setdefault("full_dim", self.dim or 0)
        facts.setdefault("count", self.n_alive)
        return Manifest.build(
            self.config,
            model_name=self.model_name,
            projection=projection.to_manifest() if projection else None,
            generation=f"postgres:{self.table}",
            **facts,
        )

    def create_coarse(self, **state: Any) -> None:
        """The prefix index is made with the table (:meth:`init_dim`)."""

    @property
    def n_alive(self) -> int:
        """The number of records (a count on the server)."""
        if self.dim is None:
            return 0
        with self._cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {self._table()}")
            return int(cur.fetchone()[0])

    @n_alive.setter
    def n_alive(self, value: int) -> None:
        """Counts live on the server; nothing to keep here."""

    def _table(self) -> str:
        assert self._sql is not None
        return self._sql.table

    # -- writing --------------------------------------------------------------------------------
    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """``{id: seq}`` of the ids that exist."""
        if self.dim is None or not ids:
            return {}
        with self._cursor() as cur:
            cur.execute(f"SELECT id, seq FROM {self._table()} WHERE id = ANY(%s)", [list(ids)])
            return {id_: int(seq) for id_, seq in cur.fetchall()}

    def append(
        self,
        matrix: NDArray[Any],
        ids: list[str],
        texts: list[str | None],
        meta_json: list[str | None],
        replaced: list[int],
    ) -> None:
        """Insert the rows (replacing ``replaced``) in one transaction, by binary COPY."""
        assert self.dim is not None
        full = prefix(np.asarray(matrix, dtype=np.float32), self.dim)
        errors = _psycopg().errors
        table = self._table()
        try:
            with self._cursor() as cur, self._conn.transaction():
                if replaced:
                    cur.execute(f"DELETE FROM {table} WHERE seq = ANY(%s)", [list(replaced)])
                copy_sql = (
                    f"COPY {table} (id, text, metadata, embedding) FROM STDIN (FORMAT BINARY)"
                )
                with cur.copy(copy_sql) as copy:
                    copy.set_types(["text", "text", "jsonb", "vector"])
                    for i, id_ in enumerate(ids):
                        copy.write_row(
                            [id_, texts[i], _jsonb(meta_json[i] or "{}", raw=True), full[i]]
                        )
        except errors.UniqueViolation as exc:
            raise ValueError(
                f"an id of this add is already in table {self.table!r} (another client added "
                f"it meanwhile): {exc.diag.message_detail}; nothing was stored"
            ) from None

    def remove(self, found: dict[str, int]) -> None:
        """Delete the records ``{id: seq}`` in one transaction."""
        with self._cursor() as cur, self._conn.transaction():
            cur.execute(f"DELETE FROM {self._table()} WHERE id = ANY(%s)", [list(found)])

    def save(self, folder: Any, projection: Any, *, full_vectors: str) -> None:
        """Every write is already committed on the server: there is nothing to save."""
        raise ValueError(
            f"an index with backend='postgres' is stored in table {self.table!r} as it is "
            "written; open it again with MatryoshkaIndex.load(dsn, table=...), no save needed"
        )

    # -- reading --------------------------------------------------------------------------------
    def get(self, ids: Sequence[str], include_vectors: bool) -> list[Record]:
        """The records of the ids that exist, in input order."""
        if self.dim is None or not ids:
            return []
        vector = ", embedding" if include_vectors else ", NULL"
        with self._cursor() as cur:
            cur.execute(
                f"SELECT id, text, metadata{vector} FROM {self._table()} WHERE id = ANY(%s)",
                [list(ids)],
            )
            found = {row[0]: row for row in cur.fetchall()}
        return [
            Record(i, found[i][1], dict(found[i][2]), _array(found[i][3]))
            for i in ids
            if i in found
        ]

    def ids(self, where: Filter | None) -> list[str]:
        """The ids matching ``where`` (all when ``None``), oldest first."""
        condition, params = compile_pg_filter(where) if where is not None else ("true", [])
        if self.dim is None:
            return []
        with self._cursor() as cur:
            cur.execute(f"SELECT id FROM {self._table()} WHERE {condition} ORDER BY seq", params)
            return [r[0] for r in cur.fetchall()]

    def search(self, queries: NDArray[np.float32], k: int, where: Filter | None) -> list[Hits]:
        """The ``k`` best records per unit-length query, one statement per query."""
        condition, filter_params = compile_pg_filter(where) if where is not None else ("true", [])
        if self.dim is None or queries.shape[0] == 0:
            return [Hits() for _ in range(queries.shape[0])]
        assert self._sql is not None
        stages = self.config.funnel(k) if self.config.coarse_dim is not None else []
        statement, names = self._sql.search(stages, condition)
        out: list[Hits] = []
        with self._cursor() as cur:
            self._set_search_gucs(cur, stages)
            for query in queries:
                params = self._sql.query_params(query, stages, k, filter_params, names)
                cur.execute(statement, params, prepare=True)
                out.append(_hits(cur.fetchall()))
        return out

    def _set_search_gucs(self, cur: Any, stages: list[tuple[int, int]]) -> None:
        """Session settings of this connection: ef_search from the shortlist, iterative scans."""
        keep = stages[0][1] if stages else 0
        ef = min(max(self.config.ef_search, keep), _MAX_EF_SEARCH)
        if self._gucs != (ef,):
            cur.execute(
                "SELECT set_config('hnsw.ef_search', %s, false), "
                "set_config('hnsw.iterative_scan', 'relaxed_order', false)",
                [str(ef)],
            )
            self._gucs = (ef,)


def _array(value: Any) -> NDArray[np.float32] | None:
    if value is None:
        return None
    vector = value.to_numpy() if hasattr(value, "to_numpy") else value  # pgvector's Vector
    return np.asarray(vector, dtype=np.float32)


def _hits(rows: list[tuple[Any, ...]]) -> Hits:
    reranked = int(rows[0][5]) if rows else 0
    return Hits(
        [
            Hit(id_, float(score), float(cs), text, dict(meta))
            for id_, text, meta, score, cs, _ in rows
        ],
        reranked=reranked,
    )


def _jsonb(value: Any, *, raw: bool = False) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value, dumps=_same) if raw else Jsonb(value)


def _same(text: Any) -> str:
    return str(text)


def _connect(dsn: str) -> Any:
    """A connection (autocommit) with pgvector's types registered, or a one-line error."""
    psycopg = _psycopg()
    require("pgvector", "postgres")
    from pgvector.psycopg import register_vector

    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot connect to PostgreSQL: {first}") from None
    version = _pgvector_version(conn)
    if version is None or version < MIN_PGVECTOR:
        conn.close()
        found = ".".join(map(str, version)) if version else "no vector extension"
        raise ValueError(
            f"backend='postgres' needs pgvector >= {'.'.join(map(str, MIN_PGVECTOR))} in the "
            f"database, found {found}: install pgvector and run CREATE EXTENSION vector"
        )
    register_vector(conn)
    return conn


def _pgvector_version(conn: Any) -> tuple[int, ...] | None:
    """The installed ``vector`` extension's version; created first when it is available."""
    psycopg = _psycopg()
    query = "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
    row = conn.execute(query).fetchone()
    if row is None:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error:
            return None
        row = conn.execute(query).fetchone()
    if row is None:
        return None
    return tuple(int(p) for p in re.findall(r"\d+", row[0])[:3])


def server_location(index: Any) -> tuple[str, str] | None:
    """``(dsn, table)`` of an index kept on PostgreSQL (for workers that open it themselves),
    or ``None`` for a local index."""
    engine = index._engine
    return (engine.dsn, engine.table) if isinstance(engine, PostgresEngine) else None


def read_manifest(conn: Any, table: str) -> dict[str, Any] | None:
    """The stored manifest of the index named ``table``, or ``None`` when there is none."""
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", [META_TABLE]).fetchone()[0]:
        return None
    query = f"SELECT manifest FROM {META_TABLE} WHERE name = %s"
    row = conn.execute(query, [table]).fetchone()
    return dict(row[0]) if row else None


def open_postgres_index(
    cls: Any,
    dsn: str,
    *,
    table: str,
    encoder: Any,
    device: str,
    rerank: Any,
    options: dict[str, Any],
) -> Any:
    """The body of ``MatryoshkaIndex.load(dsn, table=...)``: reads the manifest from the server.

    Raises:
        FileNotFoundError: If the database holds no index named ``table``.
        ValueError: If the encoder's model or dims differ from the index's.
    """
    unknown = sorted(set(options) - {"ef_search"})
    if unknown:
        raise TypeError(
            f"load(dsn, table=...) got unexpected options {unknown}; it takes ef_search"
        )
    check_table(table)
    conn = _connect(dsn)
    try:
        stored = read_manifest(conn, table)
    finally:
        conn.close()
    if stored is None:
        raise FileNotFoundError(f"no index named {table!r} in this database ({META_TABLE})")
    if stored.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"the index {table!r} has format version {stored.get('format_version')!r}; this "
            f"library reads version {FORMAT_VERSION}"
        )
    config = IndexConfig.from_manifest(stored)
    if "ef_search" in options:
        config = config.replace(ef_search=options["ef_search"])
    index = cls.__new__(cls)
    index._setup(
        config,
        rerank,
        model_name=stored.get("model_name"),
        chroma_client=None,
        device=device,
        runtime={},
        dsn=dsn,
        table=table,
    )
    if encoder is not None:
        index.encoder = encoder
    return index


def drop_index(dsn: str, table: str) -> bool:
    """Drop an index's table and its manifest row; returns whether there was one."""
    check_table(table)
    conn = _connect(dsn)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [META_TABLE])
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", [META_TABLE]).fetchone()[0]:
                gone = conn.execute(f"DELETE FROM {META_TABLE} WHERE name = %s", [table]).rowcount
            else:
                gone = 0
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        return bool(gone)
    finally:
        conn.close()
