"""Metadata filters in Chroma's ``where`` syntax: parsed to a small tree, compiled to SQLite.

:func:`parse_filter` checks a filter and turns it into :class:`Comparison` and :class:`Logical`
nodes, independent of any database; :func:`compile_filter` turns that tree into a SQLite
condition over a JSON ``metadata`` column. Another backend (PostgreSQL ``jsonb``) compiles the same
tree.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._validation import MAX_FILTER_DEPTH, check_int64, int_text

__all__ = [
    "COMPARISON_OPERATORS",
    "LOGICAL_OPERATORS",
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_DEPTH",
    "MAX_VALUE_BYTES",
    "Comparison",
    "Filter",
    "Logical",
    "compile_filter",
    "parse_filter",
]

Filter = Mapping[str, Any]
"""A ``where`` filter: ``{"genre": "jazz"}``, ``{"year": {"$gte": 2000}}``,
``{"$and": [{...}, {...}]}``, ``{"tag": {"$in": ["a", "b"]}}``."""

COMPARISON_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
LOGICAL_OPERATORS = ("$and", "$or")
MAX_FILTER_CONDITIONS = 1000
"""How many key conditions one filter may hold (use ``$in`` for long lists of values). With
at most three SQL parameters each this stays far below SQLite's 32,766 bound variables."""
MAX_VALUE_BYTES = 1_000_000_000
"""The largest string value, or encoded ``$in`` / ``$nin`` list, in UTF-8 bytes: SQLite's
default ``SQLITE_MAX_LENGTH``."""

Scalar = str | int | float | bool
ComparisonOp = Literal["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"]
LogicalOp = Literal["$and", "$or"]
_ORDERING = ("$gt", "$gte", "$lt", "$lte")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlevel = 3


@dataclass(frozen=True)
class Comparison:
    """One condition on one metadata key.

    ``values`` holds one value, or the values of ``$in`` / ``$nin``. Types are strict: a bool
    matches only that bool, a number (int or float) only numbers, a str only strings. ``$ne`` and
    ``$nin`` are the negations of ``$eq`` and ``$in``, so they match records without the key and
    records whose value has another type.
    """

    key: str
    op: ComparisonOp
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Logical:
    """``$and`` / ``$or`` over one or more filters (several keys in one dict are an ``$and``)."""

    op: LogicalOp
    filters: tuple[Comparison | Logical, ...]


FilterNode = Comparison | Logical


def _show(value: Any) -> str:
    """A short repr for error messages, safe for huge ints and deeply nested containers."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int_text(value)
    try:
        return _short.repr(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__}>"


def _check_text(text: str, what: str) -> str:
    if "\x00" in text:
        raise ValueError(
            f"{what} {_show(text)} holds U+0000 at position {text.index(chr(0))}: filters "
            f"cannot match it (SQLite before 3.45 cuts JSON strings there, jsonb refuses it)"
        )
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {_show(text)} is not valid Unicode: it holds a lone surrogate "
            f"{text[exc.start]!r} at position {exc.start}"
        ) from None
    if size > MAX_VALUE_BYTES:
        raise ValueError(
            f"{what} {_show(text)} is {size} bytes long: the limit is {MAX_VALUE_BYTES} bytes"
        )
    return text


def _check_scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _check_text(value, f"filter value for {where}")
    if isinstance(value, int):
        return check_int64(value, f"filter value {_show(value)} for {where}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"filter value for {where} must be finite, got {value!r}")
        return value
    raise TypeError(
        f"filter value for {where} must be a str, int, float or bool, got "
        f"{type(value).__name__}: {_show(value)}"
    )


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"filter keys must be str, got {type(key).__name__}: {_show(key)}")
    if not key or key.startswith("$"):
        raise ValueError(
            f"unknown filter operator {_show(key)}: use a metadata key, or one of "
            f"{LOGICAL_OPERATORS + COMPARISON_OPERATORS}"
        )
    return _check_text(key, "filter key")


def _value_list(value: Any, where: str) -> tuple[Scalar, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{where} needs a non-empty list of values, got {_show(value)}")
    return tuple(_check_scalar(v, where) for v in value)


def _comparison(key: Any, condition: Any) -> Comparison:
    key = _check_key(key)
    if not isinstance(condition, Mapping):
        return Comparison(key, "$eq", (_check_scalar(condition, _show(key)),))
    if len(condition) != 1:
        raise ValueError(
            f"the condition on {_show(key)} must hold exactly one operator, got "
            f"{_show(sorted(map(str, condition)))}"
        )
    ((op, value),) = condition.items()
    where = f"{_show(key)} {op}"
    if op in ("$in", "$nin"):
        return Comparison(key, op, _value_list(value, f"{op} on {_show(key)}"))
    if op not in COMPARISON_OPERATORS:
        raise ValueError(
            f"unknown filter operator {_show(op)} on {_show(key)}: supported operators are "
            f"{COMPARISON_OPERATORS}"
        )
    scalar = _check_scalar(value, where)
    if op in _ORDERING and isinstance(scalar, bool):
        raise TypeError(f"{where} needs a number or a str, got bool: {scalar!r}")
    return Comparison(key, op, (scalar,))


class _Parser:
    """Walks a filter once, counting conditions and nesting against the stated limits."""

    def __init__(self) -> None:
        self.conditions = 0

    def node(self, where: Any, depth: int) -> FilterNode:
        if not isinstance(where, Mapping):
            raise TypeError(f"a filter must be a dict, got {type(where).__name__}: {_show(where)}")
        if not where:
            raise ValueError("a filter must not be empty: pass None to search without one")
        parts = [
            self.logical(key, condition, depth)
            if key in LOGICAL_OPERATORS
            else self.comparison(key, condition)
            for key, condition in where.items()
        ]
        return parts[0] if len(parts) == 1 else Logical("$and", tuple(parts))

    def comparison(self, key: Any, condition: Any) -> Comparison:
        self.conditions += 1
        if self.conditions > MAX_FILTER_CONDITIONS:
            raise ValueError(
                f"a filter may hold at most {MAX_FILTER_CONDITIONS} conditions; this one has "
                f"more (at {_show(key)}): use $in for long lists of values"
            )
        return _comparison(key, condition)

    def logical(self, op: LogicalOp, filters: Any, depth: int) -> Logical:
        if depth >= MAX_FILTER_DEPTH:
            raise ValueError(
                f"a filter may nest $and / $or at most {MAX_FILTER_DEPTH} levels deep; this one "
                f"goes deeper at {_show({op: filters})}"
            )
        if not isinstance(filters, Sequence) or isinstance(filters, (str, bytes)):
            raise ValueError(f"{op} needs a list of filters, got {_show(filters)}")
        if not filters:
            raise ValueError(f"{op} needs at least one filter")
        return Logical(op, tuple(self.node(sub, depth + 1) for sub in filters))


def parse_filter(where: Filter) -> Comparison | Logical:
    """Check a ``where`` filter and return it as a tree, for any backend to compile.

    Limits: ``$and`` / ``$or`` nest at most :data:`MAX_FILTER_DEPTH` levels; a filter holds at
    most :data:`MAX_FILTER_CONDITIONS` key conditions; ints fit in 64 bits; a string holds at
    most :data:`MAX_VALUE_BYTES` UTF-8 bytes and no U+0000.

    Raises:
        ValueError: For an unknown operator, an empty filter or list, a value out of range, or a
            filter past the limits above (the message names the value and the limit).
        TypeError: For a filter that is not a dict, a key that is not a str, a value that is not
            a str, int, float or bool, or a bool given to ``$gt`` / ``$gte`` / ``$lt`` / ``$lte``.

    Example:
        >>> parse_filter({"year": {"$gte": 2000}})
        Comparison(key='year', op='$gte', values=(2000,))
    """
    return _Parser().node(where, 0)


_NUMBER = "m.type IN ('integer', 'real')"
_TEXT = "m.type = 'text'"
_SQL = {"$eq": "=", "$ne": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _value_test(op: str, value: Scalar, params: list[Any]) -> str:
    """``$eq`` / ``$ne`` (as equality, negated by the caller) and the orderings, type-strict."""
    if isinstance(value, bool):
        return f"m.type = '{'true' if value else 'false'}'"
    params.append(value)
    return f"{_TEXT if isinstance(value, str) else _NUMBER} AND m.value {_SQL[op]} ?"


def _membership_test(values: tuple[Scalar, ...], params: list[Any], where: str) -> str:
    """``$in`` (negated by the caller for ``$nin``): each kind of value in its own test."""
    tests = [
        f"m.type = '{name}'"
        for name, flag in (("true", True), ("false", False))
        if any(v is flag for v in values)
    ]
    numbers = [v for v in values if not isinstance(v, (bool, str))]
    texts = [v for v in values if isinstance(v, str)]
    for kind, group in ((_NUMBER, numbers), (_TEXT, texts)):
        if group:
            encoded = json.dumps(group, ensure_ascii=False)
            if len(encoded) > MAX_VALUE_BYTES // 4 and len(encoded.encode()) > MAX_VALUE_BYTES:
                raise ValueError(
                    f"the values of {where} take {len(encoded.encode())} bytes as JSON: the "
                    f"limit is {MAX_VALUE_BYTES} bytes"
                )
            params.append(encoded)
            tests.append(f"({kind} AND m.value IN (SELECT j.value FROM json_each(?) AS j))")
    return tests[0] if len(tests) == 1 else "(" + " OR ".join(tests) + ")"


def _comparison_sql(node: Comparison, params: list[Any]) -> str:
    params.append(node.key)
    if node.op in ("$in", "$nin"):
        test = _membership_test(node.values, params, f"{node.op} on {_show(node.key)}")
    else:
        test = _value_test(node.op, node.values[0], params)
    exists = f"EXISTS (SELECT 1 FROM json_each(metadata) AS m WHERE m.key = ? AND {test})"
    return f"NOT {exists}" if node.op in ("$ne", "$nin") else exists


def _balanced(parts: list[str], joiner: str) -> str:
    """Join in a balanced tree, so SQLite's expression depth grows with log(len(parts))."""
    while len(parts) > 1:
        pairs = [parts[i : i + 2] for i in range(0, len(parts), 2)]
        parts = [f"({joiner.join(p)})" if len(p) == 2 else p[0] for p in pairs]
    return parts[0]


def _sql(node: FilterNode, params: list[Any]) -> str:
    if isinstance(node, Comparison):
        return _comparison_sql(node, params)
    joiner = " AND " if node.op == "$and" else " OR "
    return _balanced([_sql(sub, params) for sub in node.filters], joiner)


def compile_filter(where: Filter) -> tuple[str, list[Any]]:
    """Compile a ``where`` filter to a SQL condition over a JSON ``metadata`` column.

    Semantics follow Chroma: a plain value means equality, several keys in one dict must all
    hold, ``$and`` / ``$or`` combine lists of filters. Comparisons are type-strict: a bool equals
    only that bool (``True`` is not ``1``), ints and floats compare with each other, strings only
    with strings (by code point), and ``$gt`` / ``$gte`` / ``$lt`` / ``$lte`` never match a value
    of another type. ``$ne`` and ``$nin`` are the negations of ``$eq`` and ``$in``: they match a
    record without the key, and a record whose value has another type (``{"x": "5"}`` is not
    equal to ``5``). Any key that metadata can hold works, whatever its characters; keys are
    matched by SQLite's ``json_each``, never spliced into a JSON path.

    Returns:
        ``(sql, params)``: a condition for a ``WHERE`` clause and its parameters.

    Raises:
        ValueError: For an unknown operator (named in the message), an empty filter or list, or
            a filter past the limits of :func:`parse_filter`.
        TypeError: For a value that is not a str, int, float or bool.

    Example:
        >>> sql, params = compile_filter({"year": {"$gte": 2000}})
        >>> print(sql)
        EXISTS (SELECT 1 FROM json_each(metadata) AS m WHERE m.key = ? AND m.type IN ('integer', 'real') AND m.value >= ?)
        >>> params
        ['year', 2000]
    """  # noqa: E501
    params: list[Any] = []
    return _sql(parse_filter(where), params), params
