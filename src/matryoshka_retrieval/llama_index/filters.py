"""LlamaIndex ``MetadataFilters`` translated into the index's Chroma-style ``where`` filter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = ["SUPPORTED_FILTER_OPERATORS", "metadata_filters_to_where"]

SUPPORTED_FILTER_OPERATORS: tuple[str, ...] = ("EQ", "NE", "GT", "GTE", "LT", "LTE", "IN", "NIN")
"""The ``FilterOperator`` names :func:`metadata_filters_to_where` maps (``EQ`` to ``$eq``, ...)."""


def _filter_clause(item: MetadataFilter) -> dict[str, Any]:
    operator, value = FilterOperator(item.operator), item.value
    name = f"FilterOperator.{operator.name}"
    if operator.name not in SUPPORTED_FILTER_OPERATORS:
        raise ValueError(
            f"{name} ({operator.value!r}) on key {item.key!r} is not supported by the index's "
            f"filters; supported operators are {', '.join(SUPPORTED_FILTER_OPERATORS)}"
        )
    if operator in (FilterOperator.IN, FilterOperator.NIN):
        if not isinstance(value, list) or not value:
            raise ValueError(f"{name} on key {item.key!r} needs a non-empty list, got {value!r}")
    elif value is None or isinstance(value, list):
        raise ValueError(
            f"{name} on key {item.key!r} needs a single str, int or float value, got {value!r}"
        )
    return {item.key: {f"${operator.name.lower()}": value}}


def _filters_clause(filters: MetadataFilters, path: str) -> dict[str, Any]:
    condition = filters.condition or FilterCondition.AND
    if condition not in (FilterCondition.AND, FilterCondition.OR):
        raise ValueError(
            f"FilterCondition.{FilterCondition(condition).name} in {path} is not supported by "
            "the index's filters; supported conditions are AND, OR"
        )
    if not filters.filters:
        raise ValueError(f"{path} holds no filters; remove the empty MetadataFilters")
    clauses = [
        _filters_clause(item, f"{path}.filters[{i}]")
        if isinstance(item, MetadataFilters)
        else _filter_clause(item)
        for i, item in enumerate(filters.filters)
    ]
    return clauses[0] if len(clauses) == 1 else {f"${condition.value.lower()}": clauses}


def metadata_filters_to_where(
    filters: MetadataFilters | Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """Translate LlamaIndex ``MetadataFilters`` into the index's Chroma-style ``where`` filter.

    ``EQ`` becomes ``$eq`` (and so on), ``AND`` / ``OR`` ``$and`` / ``$or``, nested to any
    depth; comparisons are type-strict. A ``where`` dict comes back as a copy; ``None`` or no
    filters mean no filter.

    Raises:
        ValueError: For an operator or condition the index cannot evaluate (named), a bad value
            for the operator, or an empty nested ``MetadataFilters``.
        TypeError: If ``filters`` is none of the accepted types.

    Example:
        >>> from llama_index.core.vector_stores import (
        ...     FilterCondition, FilterOperator, MetadataFilter, MetadataFilters)
        >>> from matryoshka_retrieval.llama_index import metadata_filters_to_where
        >>> metadata_filters_to_where(MetadataFilters(
        ...     filters=[
        ...         MetadataFilter(key="year", value=2020, operator=FilterOperator.GTE),
        ...         MetadataFilter(key="lang", value=["en", "de"], operator=FilterOperator.IN),
        ...     ],
        ...     condition=FilterCondition.OR,
        ... ))
        {'$or': [{'year': {'$gte': 2020}}, {'lang': {'$in': ['en', 'de']}}]}
    """
    if isinstance(filters, MetadataFilters):
        return _filters_clause(filters, "filters") if filters.filters else None
    if filters is None or isinstance(filters, Mapping):
        return None if filters is None else dict(filters)
    raise TypeError(
        "filters must be a llama_index MetadataFilters, a where dict or None, got "
        f"{type(filters).__name__}"
    )
