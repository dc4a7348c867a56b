"""``where`` filters compiled to PostgreSQL: parameterised conditions on a ``jsonb`` column.

The tree comes from :func:`~matryoshka_retrieval.index.filters.parse_filter`, so the limits
and the errors are the SQLite path's; so are the semantics, type-strict: ``jsonb`` equality
never equates a string with a number or a bool with ``1``, ints and floats compare as numbers,
strings by code point (``COLLATE "C"`` over UTF-8). Keys and values are always parameters,
never part of the SQL text.
"""

from __future__ import annotations

import json
from typing import Any

from ..filters import Comparison, Filter, FilterNode, Scalar, parse_filter

__all__ = ["compile_pg_filter"]

_SQL = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def _ordering(node: Comparison, value: Scalar, params: list[Any]) -> str:
    """``$gt`` / ``$gte`` / ``$lt`` / ``$lte``: only values of the same kind can match."""
    op = _SQL[node.op]
    if isinstance(value, str):
        params.extend([node.key, node.key, value])
        return (
            "(jsonb_typeof(metadata -> %s::text) = 'string' AND "
            f'(metadata ->> %s::text) COLLATE "C" {op} (%s::text COLLATE "C"))'
        )
    params.extend([node.key, node.key, json.dumps(value)])
    return (
        f"(jsonb_typeof(metadata -> %s::text) = 'number' AND (metadata -> %s::text) {op} %s::jsonb)"
    )


def _comparison_sql(node: Comparison, params: list[Any]) -> str:
    if node.op in ("$eq", "$ne"):
        params.append(_jsonb({node.key: node.values[0]}))
        test = "metadata @> %s"  # containment: a GIN index on metadata serves it
        return test if node.op == "$eq" else f"NOT ({test})"
    if node.op in ("$in", "$nin"):
        params.extend([node.key, [json.dumps(v) for v in node.values]])
        test = "COALESCE((metadata -> %s::text) = ANY(%s::jsonb[]), false)"
        return test if node.op == "$in" else f"NOT {test}"
    return _ordering(node, node.values[0], params)


def _sql(node: FilterNode, params: list[Any]) -> str:
    if isinstance(node, Comparison):
        return _comparison_sql(node, params)
    joiner = " AND " if node.op == "$and" else " OR "
    return "(" + joiner.join(_sql(sub, params) for sub in node.filters) + ")"


def compile_pg_filter(where: Filter) -> tuple[str, list[Any]]:
    """Compile a ``where`` filter to a PostgreSQL condition over a ``jsonb`` ``metadata`` column.

    ``$eq`` / ``$ne`` are containment tests (``metadata @> '{"key": value}'``); ``$in`` /
    ``$nin`` compare ``metadata -> key`` with an array of ``jsonb`` values; orderings check the
    ``jsonb`` type first. ``$ne`` and ``$nin`` match records without the key and records whose
    value has another type, as in :func:`~matryoshka_retrieval.index.filters.compile_filter`.

    Returns:
        ``(sql, params)``: a condition with ``%s`` placeholders (psycopg style) and its values.

    Raises:
        ValueError, TypeError: As :func:`~matryoshka_retrieval.index.filters.parse_filter`.

    Example:
        >>> sql, params = compile_pg_filter({"year": {"$gte": 2000}})
        >>> print(sql)
        (jsonb_typeof(metadata -> %s::text) = 'number' AND (metadata -> %s::text) >= %s::jsonb)
        >>> params
        ['year', 'year', '2000']
    """
    params: list[Any] = []
    return _sql(parse_filter(where), params), params
