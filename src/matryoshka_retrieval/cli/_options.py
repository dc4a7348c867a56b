"""What the commands share: options declared once, argument types that name the value and the
limit, the default encoder, and reading a folder or JSONL file of documents."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._validation import MAX_FILTER_DEPTH, check_int64, int_text
from ..index.config import LOCAL_PRECISIONS

PRECISIONS: tuple[str, ...] = LOCAL_PRECISIONS

if TYPE_CHECKING:
    from numpy.typing import NDArray


# -- argument types ---------------------------------------------------------------------------
def _parse(text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError:
        name = "an int" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'above' if low_open else 'at least'} {low}")
    if high is not None:
        parts.append(f"{'below' if high_open else 'at most'} {high}")
    return " and ".join(parts)


def _in_range(
    value: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    return above and below


def int_arg(low: int | None = 1, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int (``10_000`` too) between ``low`` and ``high`` inclusive."""

    def parse(text: str) -> int:
        value: int = _parse(text, int)
        if not _in_range(value, low, high, False, False):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range: it must be {_range(low, high, False, False)}"
            )
        return value

    return parse


def float_arg(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """An argparse type: a finite number in a range (open at an end with ``*_open``)."""

    def parse(text: str) -> float:
        value: float = _parse(text, float)
        if not math.isfinite(value) or not _in_range(value, low, high, low_open, high_open):
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: it must be a finite number "
                f"{_range(low, high, low_open, high_open)}".rstrip()
            )
        return value

    return parse


def comma_list(value: str) -> list[str]:
    """Split a comma list; the names are checked by the command, which reports one line."""
    return [p.strip() for p in value.split(",") if p.strip()]


def _items(value: str, item: Callable[[str], Any], what: str) -> list[Any]:
    try:
        return [item(part) for part in comma_list(value)]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}: {exc}") from None


def dim_list(value: str) -> list[int]:
    """Positive dims in the order given (repeats are left for the library to refuse)."""
    dims = _items(value, int_arg(1), "ints")
    if not dims:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {value!r}")
    return dims


def dims(value: str) -> list[int]:
    """Distinct positive dims, smallest first."""
    return sorted(set(dim_list(value)))


def eval_dims(value: str) -> list[int]:
    """Like :func:`dims`, where ``full`` (always measured) may be named too."""
    named = ",".join(p for p in comma_list(value) if p != "full")
    return dims(named) if named else []


def weights(value: str) -> list[float]:
    """Positive finite numbers in the order given."""
    return _items(value, float_arg(0, low_open=True), "numbers")


def where_filter(value: str) -> dict[str, Any]:
    """A JSON object, at most :data:`MAX_FILTER_DEPTH` deep, ints within 64 bits."""
    try:
        parsed = json.loads(value)
    except RecursionError:
        raise argparse.ArgumentTypeError(
            f"the filter is nested too deep: the limit is {MAX_FILTER_DEPTH} levels"
        ) from None
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {value!r:.80}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(
            f"a filter is a JSON object, got {type(parsed).__name__}: {value!r:.80}"
        )
    _check_filter_value(parsed, 1)
    return parsed


def _check_filter_value(value: Any, depth: int) -> None:
    if depth > MAX_FILTER_DEPTH:
        raise argparse.ArgumentTypeError(
            f"the filter is nested more than {MAX_FILTER_DEPTH} levels deep"
        )
    children = value.values() if isinstance(value, dict) else value
    if isinstance(value, (dict, list)):
        for child in children:
            _check_filter_value(child, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            check_int64(value, int_text(value))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


def check_precisions(items: list[str]) -> None:
    """Refuse a precision the coarse stage does not have (one line, from the command)."""
    for item in items:
        if item not in PRECISIONS:
            raise ValueError(f"unknown precision {item!r}: choose from {', '.join(PRECISIONS)}")


# -- options ----------------------------------------------------------------------------------
def add_model(parser: argparse.ArgumentParser, default_help: str = "MiniLM") -> None:
    parser.add_argument(
        "--model", default=None, help=f"model name or path (default: {default_help})"
    )


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="hide progress bars")


def add_max_seq_length(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-seq-length", type=int_arg(1), default=None, help="tokens per text")


def add_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id-field", default="_id", help="JSONL field with the id")
    parser.add_argument("--text-field", default="text", help="JSONL field with the text")


def add_precisions(parser: argparse.ArgumentParser, default: list[str]) -> None:
    parser.add_argument(
        "--precision",
        type=comma_list,
        default=default,
        help=f"comma list of {','.join(PRECISIONS)} (default: {','.join(default)})",
    )


# -- shared work ------------------------------------------------------------------------------
def encoder(args: argparse.Namespace, model: str | None = None, *, progress: bool = True) -> Any:
    """The command's sentence-transformers encoder: ``--model`` (or ``model``), offline by
    default, with ``--max-seq-length`` where the command has it."""
    from ..encoders import SentenceTransformerEncoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformerEncoder(
        model or args.model,
        max_seq_length=getattr(args, "max_seq_length", None),
        show_progress_bar=progress and not getattr(args, "quiet", False),
    )


Documents = tuple[list[str], list[str], list[dict[str, Any]]]
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def read_texts(source: str, id_field: str, text_field: str) -> Documents:
    """Ids, texts and metadata of the documents in a folder of text files or a JSONL file."""
    path = Path(source)
    if path.is_dir():
        docs = _read_folder(path)
    elif path.is_file():
        docs = _read_jsonl(path, id_field, text_field)
    else:
        raise FileNotFoundError(f"no file or folder at {path}")
    if not docs[1]:
        raise ValueError(f"found no documents in {path} (.txt/.md files, or JSONL lines)")
    return docs


def _read_folder(path: Path) -> Documents:
    ids: list[str] = []
    texts: list[str] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix.lower() in TEXT_SUFFIXES:
            text = file.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                ids.append(str(file.relative_to(path)))
                texts.append(text)
    return ids, texts, [{"path": i} for i in ids]


def _read_jsonl(path: Path, id_field: str, text_field: str) -> Documents:
    from ..eval import read_jsonl

    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    skip = {id_field, "id", text_field, "title"}
    for number, record in read_jsonl(path):
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number} must be a JSON object")
        text = f"{record.get('title') or ''} {record.get(text_field) or ''}".strip()
        if not text:
            raise ValueError(f"{path}:{number} has no {text_field!r} text")
        ids.append(str(record.get(id_field, record.get("id", number))))
        texts.append(text)
        scalars = (str, int, float, bool)
        metas.append({k: v for k, v in record.items() if k not in skip and isinstance(v, scalars)})
    return ids, texts, metas


#: The first bytes of every NumPy ``.npy`` file.
NPY_MAGIC = b"\x93NUMPY"


def read_npy(path: str | Path, option: str) -> NDArray[Any]:
    """The array in the NumPy ``.npy`` file at ``path``, given with ``option``; nothing is
    unpickled.

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        ValueError: If the file is not a ``.npy`` array file (a text or ``.npz`` file, say),
            or it is one that cannot be read; the message names ``option`` and ``path``.
    """
    import numpy as np

    with open(path, "rb") as handle:
        if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise ValueError(
                f"{option} {path} is not a NumPy .npy array file (numpy.save writes one)"
            )
        handle.seek(0)
        try:
            array: NDArray[Any] = np.load(handle, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{option} {path} is not a readable .npy array file: {exc}") from None
    return array


def add_command(
    commands: Any, name: str, run: Callable[[argparse.Namespace], int], doc: str | None
) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, run by ``run(args)``; its options are added to the parser
    returned. ``doc`` is the command module's docstring: its first line, after
    ``matryoshka NAME:``, is the one-line help, and the paragraph below it the description."""
    first, _, rest = (doc or name).strip().partition("\n")
    summary = first.split(": ", 1)[-1].rstrip(".")
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=" ".join(rest.split()) or summary
    )
    parser.set_defaults(handler=run)
    return parser
