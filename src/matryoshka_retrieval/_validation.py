"""Checks of user input shared by every layer: one message shape for each kind of mistake."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "check_choice",
    "check_id",
    "check_ids",
    "check_metadata",
    "check_records",
    "check_text",
    "check_vectors",
    "int_in_range",
    "number_in_range",
    "positive_int",
]


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int of at least 1 (bools and floats are refused).

    Raises:
        ValueError: Naming ``name`` and the value.

    Example:
        >>> positive_int("k", 3)
        3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def int_in_range(name: str, value: Any, low: int, high: int | None = None, *, why: str = "") -> int:
    """``value`` as an int from ``low`` to ``high`` inclusive (bools and floats are refused).

    Args:
        name: The setting's name, for the message.
        value: What was given.
        low: The smallest value allowed.
        high: The largest value allowed; ``None`` for no upper limit.
        why: Said after the limit in the message (e.g. ``" (in-batch negatives)"``).

    Raises:
        ValueError: Naming ``name``, the limit and the value.

    Example:
        >>> int_in_range("seed", 7, 0, 2**32 - 1)
        7
        >>> int_in_range("batch_size", 1, 2)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an int of at least 2, got 1
    """
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        if high is not None:
            kind = f"an int between {low} and {high}"
        else:
            kind = "a positive int" if low == 1 else f"an int of at least {low}"
        raise ValueError(f"{name} must be {kind}{why}, got {value!r}")
    return int(value)


def number_in_range(
    name: str,
    value: Any,
    low: float = 0.0,
    high: float | None = None,
    *,
    low_open: bool = True,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float above ``low`` (at least, unless ``low_open``) and below
    ``high`` (at most, unless ``high_open``); the defaults ask for a positive number.

    Raises:
        ValueError: Naming ``name``, the limit and the value (bools and non-numbers too).

    Example:
        >>> number_in_range("epochs", 2)
        2.0
        >>> number_in_range("warmup_ratio", 1, 0, 1, low_open=False, high_open=True)
        Traceback (most recent call last):
        ...
        ValueError: warmup_ratio must be a finite number at least 0 and below 1, got 1
    """
    is_number = isinstance(value, (int, float, np.integer, np.floating))
    above = is_number and (value > low if low_open else value >= low)
    below = high is None or (is_number and (value < high if high_open else value <= high))
    if isinstance(value, bool) or not (above and below and math.isfinite(value)):
        if low == 0 and low_open and high is None:
            kind = "a positive number"
        else:
            limits = [f"{'above' if low_open else 'at least'} {low:g}"]
            if high is not None:
                limits.append(f"{'below' if high_open else 'at most'} {high:g}")
            kind = f"a finite number {' and '.join(limits)}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``; else a ValueError naming both."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be {' or '.join(map(repr, choices))}")
    return value


def check_text(value: str, where: str) -> str:
    """Refuse a string that cannot be stored as UTF-8 (a lone surrogate), naming ``where``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where} is not valid Unicode: it holds a lone surrogate {value[exc.start]!r} at "
            f"position {exc.start}"
        ) from None
    return value


def check_id(value: Any, where: str) -> str:
    """One record id: a non-empty str of valid Unicode.

    Raises:
        TypeError: For anything but a str (an int id is not the string id of the same digits).
        ValueError: For an empty string or a lone surrogate.
    """
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a str, got {type(value).__name__}: {value!r:.60}")
    if not value:
        raise ValueError(f"{where} is an empty string")
    return check_text(value, where)


def check_ids(ids: Any, n: int | None = None, *, unique: bool = True) -> list[str]:
    """A list of record ids, each checked by :func:`check_id`.

    Args:
        ids: A sequence of str (a single str is refused: it would be read as its characters).
        n: The number of ids expected, when the ids go with ``n`` vectors.
        unique: Refuse an id given twice.

    Raises:
        TypeError: For a single str, a non-sequence, or an id that is not a str.
        ValueError: For a wrong count, an empty or invalid id, or a duplicate (named).
    """
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"ids must be a list of strings, got a single {type(ids).__name__}")
    if not isinstance(ids, Sequence) and not hasattr(ids, "__iter__"):
        raise TypeError(f"ids must be a list of strings, got {type(ids).__name__}")
    id_list = list(ids)
    if n is not None and len(id_list) != n:
        raise ValueError(f"got {len(id_list)} ids for {n} vectors")
    seen: set[str] = set()
    for i, id_ in enumerate(id_list):
        check_id(id_, f"ids[{i}]")
        if unique and id_ in seen:
            raise ValueError(f"duplicate id {id_!r} in this batch (ids[{i}])")
        seen.add(id_)
    return id_list


def check_metadata(meta: Any, where: str) -> dict[str, Any] | None:
    """One record's metadata: ``None`` or a flat dict of str keys to str / int / float / bool.

    Keys must not start with ``$`` (filter operators do); floats must be finite; strings must
    be valid Unicode. An empty dict is ``None``.

    Raises:
        TypeError: For a non-dict, or a value of another type (naming key and type).
        ValueError: For a bad key, a NaN / infinite float, or a lone surrogate.
    """
    if meta is None:
        return None
    if not isinstance(meta, Mapping):
        raise TypeError(f"{where} must be a dict or None, got {type(meta).__name__}")
    for key, value in meta.items():
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise ValueError(f"{where} key {key!r} must be a non-empty str not starting with '$'")
        check_text(key, f"{where} key {key!r}")
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            raise ValueError(
                f"{where}[{key!r}] holds a NUL character (U+0000), which filters cannot match"
            )
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise TypeError(
                f"{where}[{key!r}] must be a str, int, float, bool or None, got "
                f"{type(value).__name__}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}[{key!r}] must be finite, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 63:
            raise ValueError(
                f"{where}[{key!r}] = {value} is out of range: ints must fit in 64 bits "
                f"(|value| < 2**63)"
            )
        if isinstance(value, str):
            check_text(value, f"{where}[{key!r}]")
    return dict(meta) if meta else None


def check_records(
    n: int,
    ids: Sequence[str] | None,
    texts: Sequence[str | None] | None,
    metadatas: Sequence[Mapping[str, Any] | None] | None,
) -> tuple[list[str], list[str | None], list[dict[str, Any] | None]]:
    """Check the ids, texts and metadata of ``n`` new records; ids are generated when ``None``.

    Raises:
        TypeError: For an id or text that is not a str, or a metadata value of another type.
        ValueError: For a wrong count, a duplicate or empty id, or a bad metadata key / value
            (each message names the item).
    """
    id_list = [uuid.uuid4().hex for _ in range(n)] if ids is None else check_ids(ids, n)
    text_list: list[str | None] = [None] * n if texts is None else list(texts)
    if len(text_list) != n:
        raise ValueError(f"got {len(text_list)} texts for {n} vectors")
    for i, text in enumerate(text_list):
        if text is not None and not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str or None, got {type(text).__name__}")
        if text is not None:
            check_text(text, f"texts[{i}]")
    meta_list = [None] * n if metadatas is None else list(metadatas)
    if len(meta_list) != n:
        raise ValueError(f"got {len(meta_list)} metadatas for {n} vectors")
    return (
        id_list,
        text_list,
        [check_metadata(m, f"metadatas[{i}]") for i, m in enumerate(meta_list)],
    )


def check_vectors(vectors: Any, dim: int | None, *, name: str = "vectors") -> NDArray[Any]:
    """``vectors`` as a finite 2-D float matrix of width ``dim`` (any width when ``None``).

    Raises:
        TypeError: If they are not numeric.
        ValueError: For the wrong shape or width, or a row holding NaN or infinity (named).
    """
    from .truncation import as_float_matrix, check_finite, check_width

    matrix, _ = as_float_matrix(vectors, name=name)
    check_width(matrix, dim, name=name)
    check_finite(matrix, name=name)
    return matrix
