"""Metadata filters in Chroma's ``where`` syntax, compiled to SQLite over JSON metadata."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["COMPARISON_OPERATORS", "LOGICAL_OPERATORS", "Filter", "compile_filter"]

Filter = Mapping[str, Any]
"""A ``where`` filter: ``{"genre": "jazz"}``, ``{"year": {"$gte": 2000}}``,
``{"$and": [{...}, {...}]}``, ``{"tag": {"$in": ["a", "b"]}}``."""

COMPARISON_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
LOGICAL_OPERATORS = ("$and", "$or")
_SQL = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
Scalar = str | int | float | bool


def _check_scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"filter value for {where} must be finite, got {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise TypeError(
            f"filter value for {where} must be a str, int, float or bool, got "
            f"{type(value).__name__}: {value!r:.60}"
        )
    return value


def _key_sql(key: str) -> str:
    if not isinstance(key, str) or not key or key.startswith("$"):
        raise ValueError(
            f"unknown filter operator {key!r}: use a metadata key, or one of "
            f"{LOGICAL_OPERATORS + COMPARISON_OPERATORS}"
        )
    return "json_extract(metadata, ?)"


def _json_path(key: str) -> str:
    return "$." + json.dumps(key)


def _comparison(key: str, condition: Any, params: list[Any]) -> str:
    column = _key_sql(key)
    if not isinstance(condition, Mapping):
        params.extend([_json_path(key), _check_scalar(condition, repr(key))])
        return f"{column} = ?"
    if len(condition) != 1:
        raise ValueError(
            f"the condition on {key!r} must hold exactly one operator, got {sorted(condition)}"
        )
    ((op, value),) = condition.items()
    if op in _SQL:
        params.extend([_json_path(key), _check_scalar(value, f"{key!r} {op}")])
        if op == "$ne":  # a record without the key is "not equal" too
            params.append(_json_path(key))
            return f"({column} != ? OR json_type(metadata, ?) IS NULL)"
        return f"{column} {_SQL[op]} ?"
    if op in ("$in", "$nin"):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            raise ValueError(f"{op} on {key!r} needs a non-empty list of values, got {value!r}")
        values = [_check_scalar(v, f"{key!r} {op}") for v in value]
        marks = ", ".join("?" * len(values))
        params.append(_json_path(key))
        params.extend(values)
        if op == "$in":
            return f"{column} IN ({marks})"
        params.append(_json_path(key))
        return f"({column} NOT IN ({marks}) OR json_type(metadata, ?) IS NULL)"
    raise ValueError(
        f"unknown filter operator {op!r} on {key!r}: supported operators are {COMPARISON_OPERATORS}"
    )


def _clause(where: Any, params: list[Any]) -> str:
    if not isinstance(where, Mapping):
        raise TypeError(f"a filter must be a dict, got {type(where).__name__}: {where!r:.60}")
    if not where:
        raise ValueError("a filter must not be empty: pass None to search without one")
    parts: list[str] = []
    for key, condition in where.items():
        if key in LOGICAL_OPERATORS:
            if not isinstance(condition, Sequence) or isinstance(condition, (str, bytes)):
                raise ValueError(f"{key} needs a list of filters, got {condition!r:.60}")
            if not condition:
                raise ValueError(f"{key} needs at least one filter")
            joiner = " AND " if key == "$and" else " OR "
            parts.append("(" + joiner.join(_clause(sub, params) for sub in condition) + ")")
        else:
            parts.append(_comparison(key, condition, params))
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def compile_filter(where: Filter) -> tuple[str, list[Any]]:
    """Compile a ``where`` filter to a SQL condition over a JSON ``metadata`` column.

    Semantics follow Chroma: a plain value means equality, several keys in one dict must all
    hold, ``$and`` / ``$or`` combine lists of filters. Comparisons are type-strict (the number
    ``5`` does not equal the string ``"5"``). A record without the key matches only ``$ne`` and
    ``$nin``.

    Returns:
        ``(sql, params)``: a condition for a ``WHERE`` clause and its parameters.

    Raises:
        ValueError: For an unknown operator (named in the message), an empty filter or list.
        TypeError: For a value that is not a str, int, float or bool.

    Example:
        >>> sql, params = compile_filter({"year": {"$gte": 2000}})
        >>> sql, params
        ('json_extract(metadata, ?) >= ?', ['$."year"', 2000])
    """
    params: list[Any] = []
    return _clause(where, params), params
