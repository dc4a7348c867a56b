"""The SQL of one index's table, and the rule for its name.

The statements are built once per handle from the index's configuration; every name in them
is checked by :func:`check_table` and quoted, and every value is a parameter.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...truncation import prefix
from ..config import IndexConfig

__all__ = [
    "MAX_FULL_DIM",
    "MAX_INDEX_DIM",
    "MAX_LIMIT",
    "META_TABLE",
    "build_graph",
    "check_limits",
    "check_table",
]

META_TABLE = "matryoshka_indexes"
"""The registry: one row per index of this library in the database."""
MAX_LIMIT = 1 << 48
"""More rows than one PostgreSQL table can hold (2**32 pages of 8 kB): every ``LIMIT`` and
shortlist is clamped to it, so a huge ``k`` returns every row instead of overflowing."""
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,47}")
MAX_FULL_DIM = 16000  # a vector column
MAX_INDEX_DIM = {"float32": 2000, "float16": 4000, "binary": 64000}  # HNSW per type
_GUARD = (
    f"WITH guard AS (SELECT 1 FROM {META_TABLE} m WHERE name = %s AND {{identity}} "
    "IS NOT DISTINCT FROM %s AND manifest ->> 'revision' IS NOT DISTINCT FROM %s) "
)
_GUARDED = "WHERE EXISTS (SELECT FROM guard)"
_GUARD_NAMES = ("guard_name", "guard_identity", "guard_revision")
COARSE_TYPES = {"float32": "vector({d})", "float16": "halfvec({d})", "binary": "bit({d})"}
"""The pgvector type of the coarse column at each precision."""
_MAX_PLAIN_DIM = 1500  # 6 KB: a full vector up to this width stays in its heap row
_MAX_PLAIN_ROW = 7600  # bytes of vectors a heap row holds with its other columns (8 kB pages)


def check_table(table: Any) -> str:
    """``table`` if it is a plain lower-case SQL name of no system catalog and not the
    registry's, else a ValueError naming the rule.

    Example:
        >>> check_table("docs")
        'docs'
        >>> check_table("pg_class")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: table='pg_class' starts with 'pg_', ...
    """
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise ValueError(
            f"table={table!r:.80} is not a usable table name: use 1 to 48 lower-case letters, "
            "digits and '_', starting with a letter or '_'"
        )
    if table == META_TABLE:
        raise ValueError(
            f"table={table!r} is the registry of every index in this database, not an index: "
            "choose another name"
        )
    if table.startswith("pg_"):
        raise ValueError(
            f"table={table!r} starts with 'pg_', which PostgreSQL keeps for its system "
            "catalogs: choose another name"
        )
    return table


def check_limits(config: IndexConfig, dim: int) -> None:
    """Refuse vectors, a prefix index or HNSW settings past pgvector's limits (naming them)."""
    if dim > MAX_FULL_DIM:
        raise ValueError(
            f"{dim}-dim vectors do not fit a pgvector vector column: the limit is "
            f"{MAX_FULL_DIM} dims"
        )
    d, precision = config.coarse_dim, config.precision
    if d is not None and d > MAX_INDEX_DIM[precision]:
        raise ValueError(
            f"coarse_dim={d} is past pgvector's HNSW limit for precision={precision!r}: "
            f"{MAX_INDEX_DIM[precision]} dims"
        )
    m, ef = config.hnsw_m, config.ef_construction
    if not 2 <= m <= 100 or not 2 * m <= ef <= 1000:
        raise ValueError(
            f"hnsw_m={m}, ef_construction={ef}: pgvector needs 2 <= m <= 100 and "
            "2 * m <= ef_construction <= 1000"
        )


BUILD_MEMORY = "512MB"
"""``maintenance_work_mem`` of an HNSW build, at least: pgvector builds fastest with the graph
in memory (a server set higher keeps its own)."""


def build_graph(cur: Any, sql: _Sql) -> None:
    """In the caller's transaction: build the HNSW index of the coarse prefixes of ``sql``'s
    table from the rows it holds, with at least :data:`BUILD_MEMORY` for the graph.

    A parallel build takes its graph in shared memory; where the server cannot have that much
    (a container's 64 MB ``/dev/shm``: pgvector fails with "could not resize shared memory
    segment"), the build runs again without parallel workers.
    """
    from psycopg import errors

    cur.execute(
        "SELECT set_config('maintenance_work_mem', %s, true) WHERE "
        "pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes(%s)",
        [BUILD_MEMORY, BUILD_MEMORY],
    )
    try:
        with cur.connection.transaction():  # a savepoint: the failed build alone is undone
            cur.execute(sql.index_statement())
    except errors.DiskFull:
        cur.execute("SELECT set_config('max_parallel_maintenance_workers', '0', true)")
        cur.execute(sql.index_statement())


def bits(vector: NDArray[np.float32]) -> str:
    """A ``bit`` value of a vector's signs (1 where positive), as ``binary_quantize`` gives."""
    return "".join("1" if x > 0 else "0" for x in vector.tolist())


class _Sql:
    """The SQL of one index's table, built once from its configuration (names quoted)."""

    def __init__(
        self,
        table: str,
        config: IndexConfig,
        full_dim: int,
        *,
        column: bool = False,
        identity: str = "m.identity",
    ) -> None:
        self.guard = _GUARD.format(identity=identity)
        """The search statement's guard: ``identity`` reads the registry's identity column
        (``NULL::text`` for a registry made before identities were kept)."""
        self.table = f'"{table}"'
        self.config = config
        self.full_dim = full_dim
        self.column = column and config.coarse_dim is not None
        d = config.coarse_dim
        self.prefix_expr, self.ops, self.op, self.query_cast = "", "", "", ""
        self.coarse_type = ""
        if d is not None:
            self.coarse_type = COARSE_TYPES[config.precision].format(d=d)
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
            if self.column:  # the client writes the (rotated) renormalised prefix itself
                self.prefix_expr = "coarse"

    def create(self) -> list[str]:
        """The statements that make the table and its metadata index (the coarse stage's HNSW
        index is built by :func:`build_graph` once the first add has loaded its rows)."""
        t = self.table
        statements = [
            f"CREATE TABLE {t} (id text PRIMARY KEY, "
            "seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE, text text, "
            f"metadata jsonb NOT NULL DEFAULT '{{}}', embedding vector({self.full_dim}) NOT NULL"
            + (f", coarse {self.coarse_type})" if self.column else ")"),
            f"CREATE INDEX {self.index_name('metadata')} ON {t} USING gin "
            "(metadata jsonb_path_ops)",
        ]
        if self.full_dim <= _MAX_PLAIN_DIM:  # kept in the row: a rerank reads no TOAST chunks
            statements.append(f"ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE PLAIN")
        statements.extend(self.storage())
        return statements

    def storage(self) -> list[str]:
        """The statement keeping the coarse column in its heap row, where the row has room."""
        room = 4 * self.full_dim + self.coarse_bytes() <= _MAX_PLAIN_ROW
        if self.column and room and self.full_dim <= _MAX_PLAIN_DIM:
            return [f"ALTER TABLE {self.table} ALTER COLUMN coarse SET STORAGE PLAIN"]
        return []

    def index_statement(self) -> str:
        """The statement that builds the HNSW index of the coarse prefixes."""
        m, ef_construction = self.config.hnsw_m, self.config.ef_construction
        return (
            f"CREATE INDEX {self.index_name('prefix')} ON {self.table} USING hnsw "
            f"({self.prefix_expr} {self.ops}) WITH (m = {m}, ef_construction = "
            f"{ef_construction})"
        )

    def coarse_bytes(self) -> int:
        """Bytes of one row's coarse column."""
        d = self.config.coarse_dim or 0
        return {"float32": 4 * d, "float16": 2 * d, "binary": (d + 7) // 8}[self.config.precision]

    def copy(self) -> tuple[str, list[str]]:
        """The COPY statement of an add and the types of its columns."""
        columns, types = "id, seq, text, metadata, embedding", ["text", "int8", "text", "jsonb"]
        types.append("vector")
        if self.column:
            columns += ", coarse"
            types.append(self.coarse_type.split("(")[0])
        return f"COPY {self.table} ({columns}) FROM STDIN (FORMAT BINARY)", types

    def count_upto(self) -> str:
        """A count of the rows that stops after its parameter's number of rows: what deciding
        on an exact scan needs, at a cost that does not grow with the table."""
        return f"SELECT count(*) FROM (SELECT 1 FROM {self.table} LIMIT %s) s"

    def index_name(self, part: str) -> str:
        return f'"{self.table.strip(chr(34))}_{part}"'

    def has_graph(self, cur: Any) -> bool:
        """Whether the table has its coarse prefixes' HNSW index (that index, on this table)."""
        found = cur.execute(
            "SELECT EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass(%s) "
            "AND indrelid = to_regclass(%s))",
            [self.index_name("prefix"), self.table],
        ).fetchone()
        return bool(found[0])

    def search(self, stages: list[tuple[int, int]], where: str) -> tuple[str, list[Any]]:
        """One statement for one query: shortlist, middle stages, full-dim rerank, records.

        The stages nest as subqueries, each cutting its input to its ``keep`` by a longer
        prefix; only the last computes the full-dim score, and only the ``k`` hits are joined
        back for their text and metadata (and coarse score). No stages: an exact scan of the
        full vectors. Returns the SQL and the names of its parameters in order, which
        :meth:`query_params` fills for each query.

        The statement answers only while the registry still holds the index the handle opened,
        at the revision it read (``guard``: its name, identity and revision): otherwise it
        returns no rows, having searched nothing, and the handle checks why. So a search is
        one round trip, bound to its index like every write.
        """
        t = self.table
        if not stages:
            sql = (
                f"{self.guard}SELECT f.id, r.text, r.metadata, -f.nd, -f.nd, f.n FROM (SELECT "
                "id, nd, count(*) OVER () AS n FROM (SELECT id, embedding <#> %s AS nd FROM "
                f"{t} WHERE {where}) s ORDER BY nd LIMIT %s) f JOIN {t} r USING (id) "
                f"{_GUARDED} ORDER BY f.nd"
            )
            return sql, [*_GUARD_NAMES, "query", "filter", "k"]
        last = len(stages) - 1
        expr, op, cast = self.prefix_expr, self.op, self.query_cast
        inner, names = f"{t} WHERE {where}", ["filter"]
        for i, (dim, _) in enumerate(stages):
            # the coarse distance, computed once by the shortlist and carried to the hits
            cd, head = (f"({expr} {op} {cast}) AS cd", ["prefix0"]) if i == 0 else ("cd", [])
            if i == last:
                columns, head = f"id, {cd}, embedding <#> %s AS nd", [*head, "query"]
            else:
                columns = f"id, {cd}, embedding"
            order = (
                f"{expr} {op} {cast}"
                if i == 0
                else f"l2_normalize(subvector(embedding, 1, {dim})) <#> %s::vector({dim})"
            )
            source = inner if i == 0 else f"({inner}) c{i}"
            inner = f"SELECT {columns} FROM {source} ORDER BY {order} LIMIT %s"
            names = [*head, *names, f"prefix{i}", f"keep{i}"]
        score = "-f.cd"
        if self.config.precision == "binary":
            score = f"1 - 2 * f.cd / {self.config.coarse_dim}"
        sql = (
            f"{self.guard}SELECT f.id, r.text, r.metadata, -f.nd, {score}, f.n FROM "
            f"(SELECT id, nd, cd, count(*) OVER () AS n FROM ({inner}) s ORDER BY nd LIMIT %s) "
            f"f JOIN {t} r USING (id) {_GUARDED} ORDER BY f.nd"
        )
        return sql, [*_GUARD_NAMES, *names, "k"]

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
        coarse: NDArray[np.float32] | None = None,
        guard: tuple[str, str | None, str | None] = ("", None, None),
    ) -> list[Any]:
        """The parameters ``names`` of a :meth:`search` statement, for one unit-length query
        (``coarse``: what the coarse stage sees of it, when a rotation turned its prefix)."""
        values: dict[str, Any] = {"query": query, "k": min(k, MAX_LIMIT)}
        values.update(zip(_GUARD_NAMES, guard, strict=True))
        for i, (dim, keep) in enumerate(stages):
            values[f"prefix{i}"] = prefix(query[None, :], dim)[0]
            values[f"keep{i}"] = min(keep, MAX_LIMIT)
        if stages and coarse is not None:
            values["prefix0"] = coarse
        if stages and self.config.precision == "binary":
            values["prefix0"] = bits(values["prefix0"][: stages[0][0]])
        params: list[Any] = []
        for name in names:
            if name == "filter":
                params.extend(filter_params)
            else:
                params.append(values[name])
        return params
