"""Small real corpora that can be built offline on any machine."""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .eval import BeirData

__all__ = ["Document", "corpus_pairs", "python_docs", "python_docs_task"]

# Modules present in every CPython 3.10+ build, in a fixed order so the corpus is reproducible.
_MODULES = [
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmath",
    "codecs",
    "collections",
    "colorsys",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "email",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "http.server",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keyword",
    "linecache",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "math",
    "mimetypes",
    "operator",
    "os",
    "os.path",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "queue",
    "quopri",
    "random",
    "re",
    "reprlib",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "stat",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "symtable",
    "sysconfig",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "token",
    "tokenize",
    "trace",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "webbrowser",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zlib",
]

_MIN_CHARS = 60


@dataclass(frozen=True)
class Document:
    """A text with an id and a title."""

    id: str
    title: str
    text: str


def _clean(doc: str) -> str:
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    return re.sub(r"\s+", " ", paragraph).strip()


def python_docs(limit: int | None = None) -> list[Document]:
    """The docstrings of the Python standard library, one document per public function or class.

    A real corpus of a few thousand short technical texts that needs no download: the id is the
    dotted name (``"json.dumps"``), the text the first paragraph of its docstring.

    Args:
        limit: Keep at most this many documents (in a fixed order).

    Returns:
        The documents, deduplicated by text.

    Example:
        >>> from matryoshka_retrieval.datasets import python_docs
        >>> docs = python_docs(limit=5)
        >>> len(docs), docs[0].id.split(".")[0]
        (5, 'abc')
    """
    seen: set[str] = set()
    docs: list[Document] = []
    for doc_id, title, obj in _candidates():
        with warnings.catch_warnings():  # deprecated aliases warn when touched
            warnings.simplefilter("ignore")
            text = _clean(getattr(obj, "__doc__", None) or "")
        if len(text) >= _MIN_CHARS and text not in seen:
            seen.add(text)
            docs.append(Document(id=doc_id, title=title, text=text))
        if limit is not None and len(docs) >= limit:
            break
    return docs


def _candidates() -> Iterator[tuple[str, str, object]]:
    """``(id, title, object)`` of each public function, class and method, in a fixed order."""
    for module_name in _MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # pragma: no cover - a stripped-down build
            continue
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not _defined_in(obj, module.__name__):
                continue
            if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj):
                yield f"{module_name}.{name}", name, obj
            if inspect.isclass(obj):
                for attr, member in sorted(vars(obj).items()):
                    if not attr.startswith("_") and callable(member):
                        yield f"{module_name}.{name}.{attr}", f"{name}.{attr}", member


def _defined_in(obj: object, module_name: str) -> bool:
    """Whether ``obj`` belongs to ``module_name`` (or to its C accelerator, ``_json`` for json)."""
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str):
        return False
    leaf = module_name.rsplit(".", 1)[-1]
    return owner in (module_name, f"_{leaf}", "posix", "nt") and not owner.startswith("__")


def python_docs_task(limit: int | None = None) -> BeirData:
    """A known-item retrieval task over :func:`python_docs`, in the BEIR layout.

    For each docstring of at least two sentences, the first sentence (the summary) becomes a
    query and the rest of the paragraph its one relevant document, like a manual page's NAME line
    and its DESCRIPTION. Docstrings of one sentence stay in the corpus as distractors.

    Example:
        >>> from matryoshka_retrieval.datasets import python_docs_task
        >>> task = python_docs_task()
        >>> len(task.queries) > 100 and all(len(rel) == 1 for rel in task.qrels.values())
        True
    """
    from .eval import BeirData

    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for doc in python_docs(limit=limit):
        pair = _first_sentence_and_rest(doc.text, 25, 40)
        if pair is not None:
            corpus[doc.id] = pair[1]
            queries[f"q:{doc.id}"] = pair[0]
            qrels[f"q:{doc.id}"] = {doc.id: 1}
        else:
            corpus[doc.id] = doc.text
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


def _first_sentence_and_rest(text: str, min_first: int, min_rest: int) -> tuple[str, str] | None:
    parts = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)
    if len(parts) == 2 and len(parts[0]) >= min_first and len(parts[1]) >= min_rest:
        return parts[0], parts[1]
    return None


def corpus_pairs(
    texts: Iterable[str], *, min_query_chars: int = 20, min_document_chars: int = 40
) -> list[tuple[str, str]]:
    """Pseudo ``(query, document)`` pairs made from documents alone, no queries or labels.

    Each text's first sentence becomes a query and the rest of the text its document, the way a
    summary line finds the page it sums up. Texts whose first sentence or rest is shorter than
    the minimums are skipped. Use them as the optional pairs of
    :func:`~matryoshka_retrieval.projection.fit_projection` or for
    :func:`~matryoshka_retrieval.train.train_matryoshka` when there are no real queries.

    Example:
        >>> from matryoshka_retrieval.datasets import corpus_pairs
        >>> corpus_pairs(["The ls command lists files. It prints one name a line, sorted by name."])
        [('The ls command lists files.', 'It prints one name a line, sorted by name.')]
    """
    pairs = []
    for text in texts:
        pair = _first_sentence_and_rest(text, min_query_chars, min_document_chars)
        if pair is not None:
            pairs.append(pair)
    return pairs
