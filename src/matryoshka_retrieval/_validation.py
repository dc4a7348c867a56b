"""Checks of user input shared by every layer: one message shape for each kind of mistake."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_FILTER_DEPTH",
    "MAX_ID_BYTES",
    "check_choice",
    "check_id",
    "check_int64",
    "check_ids",
    "check_metadata",
    "check_records",
    "check_text",
    "check_vectors",
    "int_at_least",
    "int_text",
    "int_in_range",
    "number_in_range",
    "number_in_span",
    "positive_int",
    "positive_number",
]

INT64_MIN = -(2**63)
"""The smallest int a metadata value or a filter value may be (a signed 64-bit integer)."""
INT64_MAX = 2**63 - 1
"""The largest int a metadata value or a filter value may be."""
MAX_FILTER_DEPTH = 32
"""How deep ``$and`` / ``$or`` may nest in a filter (``{"$and": [{"a": 1}]}`` is one level)."""
MAX_ID_BYTES = 2048
"""The longest record id, in UTF-8 bytes: what every backend can store and index (a
PostgreSQL b-tree entry holds at most about 2700 bytes)."""


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


def int_at_least(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (a seed: ``minimum=0``).

    Raises:
        TypeError: For a bool, float or anything else that is not an int, naming ``name``.
        ValueError: For an int below ``minimum``, naming ``name``, the value and the limit.

    Example:
        >>> int_at_least("seed", 0, 0)
        0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be an int of at least {minimum}, got {type(value).__name__}: {value!r}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum}, got {value!r}")
    return int(value)


def positive_number(name: str, value: Any) -> float:
    """``value`` as a finite float above 0 (bools are refused).

    Raises:
        TypeError: For a bool or anything else that is not a number, naming ``name``.
        ValueError: For 0, a negative number, NaN or infinity, naming ``name`` and the value.

    Example:
        >>> positive_number("temperature", 0.05)
        0.05
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}: {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return float(value)


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


def number_in_span(name: str, value: Any, span: str) -> float:
    """``value`` as a float inside ``span``, an interval written as in mathematics (``"(0, 1]"``:
    the brackets say which ends count).

    Raises:
        ValueError: Naming ``name``, the span and the value (a str or bool is no number).

    Example:
        >>> number_in_span("target_recall", 0.9, "(0, 1]")
        0.9
    """
    low, high = (float(x) for x in span[1:-1].split(","))
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    if number:
        above = low <= value if span[0] == "[" else low < value
        below = value <= high if span[-1] == "]" else value < high
        number = above and below
    if not number:
        raise ValueError(f"{name} must be in {span}, got {value!r:.40}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``; else a ValueError naming both."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be {' or '.join(map(repr, choices))}")
    return value


def check_text(value: str, where: str, *, nul: bool = True) -> str:
    """Refuse a string that cannot be stored as UTF-8 (a lone surrogate), naming ``where``.

    Args:
        value: The string.
        where: How to name it in the error, for example ``"texts[3]"``.
        nul: Whether U+0000 is allowed (no backend stores it in an id or a text: PostgreSQL's
            ``text`` refuses it, so the local index refuses it too).

    Raises:
        ValueError: For a lone surrogate, or a NUL where ``nul`` is false (naming the position).
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where} is not valid Unicode: it holds a lone surrogate {value[exc.start]!r} at "
            f"position {exc.start}"
        ) from None
    if not nul and "\x00" in value:
        raise ValueError(
            f"{where} holds a NUL character (U+0000) at position {value.index(chr(0))}, which "
            "no backend can store"
        )
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
    check_text(value, where, nul=False)
    size = len(value.encode("utf-8"))
    if size > MAX_ID_BYTES:
        raise ValueError(
            f"{where} is {size:,} bytes long in UTF-8 ({value[:20]!r}...): the limit is "
            f"MAX_ID_BYTES = {MAX_ID_BYTES} bytes"
        )
    return value


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


def int_text(value: int) -> str:
    """``value`` in decimal, or its size in bits when it is too long to print in a message."""
    return f"<an int of {value.bit_length()} bits>" if value.bit_length() > 200 else str(value)


def check_int64(value: int, what: str) -> int:
    """``value`` if it fits in a signed 64-bit integer; else a ValueError naming ``what``.

    Example:
        >>> check_int64(-(2**63), "x")
        -9223372036854775808
    """
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(
            f"{what} is out of range: ints must fit in 64 bits "
            f"(INT64_MIN = -2**63 <= value <= INT64_MAX = 2**63 - 1)"
        )
    return value


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
        if isinstance(value, int) and not isinstance(value, bool):
            check_int64(value, f"{where}[{key!r}] = {int_text(value)}")
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
            check_text(text, f"texts[{i}]", nul=False)
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
