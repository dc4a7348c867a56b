"""Search results."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

__all__ = ["Hit", "Hits", "Record"]


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: The record's id.
        score: Cosine similarity with the query at the index's full dimension.
        coarse_score: The similarity the coarse stage gave it (prefix dim, its precision).
        text: The stored text, if any.
        metadata: The stored metadata (empty dict when none).
    """

    id: str
    score: float
    coarse_score: float
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The hit as a plain dict of its fields."""
        return asdict(self)

    @classmethod
    def unchecked(
        cls,
        id: str,
        score: float,
        coarse_score: float,
        text: str | None,
        metadata: dict[str, Any],
    ) -> Hit:
        """The same hit, made without the frozen dataclass's ``__setattr__`` per field (the
        search path makes one per result)."""
        hit = object.__new__(cls)
        fields = hit.__dict__
        fields["id"], fields["score"], fields["coarse_score"] = id, score, coarse_score
        fields["text"], fields["metadata"] = text, metadata
        return hit


@dataclass(frozen=True)
class Record:
    """A stored record, as returned by :meth:`MatryoshkaIndex.get`."""

    id: str
    text: str | None
    metadata: dict[str, Any]
    vector: NDArray[np.float32] | None = None


class Hits(Sequence[Hit]):
    """The hits of one query, best first: iterate, index, slice, ``len()``, ``to_list()``.

    ``reranked`` is how many candidates the search scored with the full vectors for this query
    (the adaptive funnel varies it per query), when the index reports it.

    Example:
        >>> hits = Hits([Hit("a", 0.9, 0.8), Hit("b", 0.5, 0.6)])
        >>> len(hits), hits[0].id, hits.ids, hits.top_k(1).ids
        (2, 'a', ['a', 'b'], ['a'])
    """

    def __init__(self, hits: Sequence[Hit] = (), *, reranked: int | None = None) -> None:
        self._hits = list(hits)
        self.reranked = reranked

    @overload
    def __getitem__(self, index: int) -> Hit: ...
    @overload
    def __getitem__(self, index: slice) -> Hits: ...
    def __getitem__(self, index: int | slice) -> Hit | Hits:
        if isinstance(index, slice):
            return Hits(self._hits[index], reranked=self.reranked)
        return self._hits[index]

    def __len__(self) -> int:
        return len(self._hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self._hits)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hits):
            return self._hits == other._hits
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._hits))

    def __repr__(self) -> str:
        inner = ", ".join(f"{h.id!r}: {h.score:.4f}" for h in self._hits[:5])
        more = f", ... {len(self) - 5} more" if len(self) > 5 else ""
        return f"Hits([{inner}{more}])"

    @property
    def ids(self) -> list[str]:
        """The hits' ids, best first."""
        return [h.id for h in self._hits]

    @property
    def scores(self) -> list[float]:
        """The hits' full-dim scores, best first."""
        return [h.score for h in self._hits]

    def top_k(self, k: int) -> Hits:
        """The first ``k`` hits."""
        return Hits(self._hits[:k], reranked=self.reranked)

    def to_list(self) -> list[dict[str, Any]]:
        """Plain dicts, for JSON."""
        return [h.to_dict() for h in self._hits]
