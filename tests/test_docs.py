"""The documentation: its code runs, its reference covers the public API, its commands hold.

Every fenced ``python`` block of the README and of the pages under ``docs/`` runs here, the
blocks of one page in order and in one namespace (a page builds on its earlier blocks), in a
temporary folder. A block that cannot run here on purpose (it needs a model download, a GPU or
a cluster) is marked with ``<!-- fragment -->`` on the line before it; it must still compile.
Pages whose text names ``DATABASE_URL`` get the tests' PostgreSQL server there; the provider
SDKs' environment variables point at the local fake API.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import matryoshka_retrieval
from fake_api import FakeEmbeddingAPI

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
#: Pages whose code is not checked here: the design notes (maintained with the code, not as a
#: guide) and a report that ``matryoshka eval`` writes.
NOT_GUIDES = {DOCS / "ARCHITECTURE.md", DOCS / "eval-manpages" / "report.md"}
PAGES = [README, *sorted(p for p in DOCS.rglob("*.md") if p not in NOT_GUIDES)]
FRAGMENT = "<!-- fragment -->"
FENCE = re.compile(r"^([ \t]*)```([\w+-]*)[^\n]*\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL)
DIRECTIVE = re.compile(r"^:::[ \t]+(\S+)[ \t]*\n((?:[ \t]+\S.*\n?)*)", re.MULTILINE)
MEMBERS = re.compile(r"^[ \t]+members:[ \t]*\[([^\]]*)\]", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    language: str
    code: str
    fragment: bool


def code_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, in order, each marked if a fragment comment precedes
    it (blank lines between are allowed)."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        fragment = bool(before) and before[-1].strip() == FRAGMENT
        line = text.count("\n", 0, match.start()) + 1
        code = textwrap.dedent(match.group(3))
        blocks.append(Block(page, line, match.group(2).lower(), code, fragment))
    return blocks


def python_blocks(page: Path) -> list[Block]:
    return [b for b in code_blocks(page) if b.language in ("python", "py")]


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.fixture
def doc_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_api: FakeEmbeddingAPI
) -> Iterator[Path]:
    """A temporary working folder, the offline model, and the SDKs pointed at the fake API."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for variable in ("OPENAI_API_KEY", "CO_API_KEY", "VOYAGE_API_KEY", "JINA_API_KEY"):
        monkeypatch.setenv(variable, "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_api.openai_base_url)
    yield tmp_path


def runnable_blocks(page: Path) -> list[Block]:
    return [b for b in python_blocks(page) if not b.fragment]


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=_name)
def test_every_python_block_of_the_page_runs(
    page: Path, doc_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "DATABASE_URL" in page.read_text(encoding="utf-8"):
        from pg_server import server_dsn

        monkeypatch.setenv("DATABASE_URL", server_dsn())
    namespace: dict[str, Any] = {"__name__": "__doc_page__"}
    for block in runnable_blocks(page):
        exec(compile(block.code, f"{_name(page)}:{block.line}", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_python_block_is_valid_python_fragments_included(page: Path) -> None:
    for block in python_blocks(page):
        compile(block.code, f"{_name(page)}:{block.line}", "exec")


def test_pages_are_found_and_hold_code() -> None:
    assert README in PAGES
    assert len(PAGES) > 15
    assert sum(len(python_blocks(p)) for p in PAGES) > 20


def test_a_fragment_marker_is_recognised(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n```python\nx = 1\n```\n\n<!-- fragment -->\n\n```python\nundefined()\n```\n"
        "\n  ```bash\n  ls\n  ```\n",
        encoding="utf-8",
    )
    blocks = code_blocks(page)
    assert [(b.language, b.fragment, b.code) for b in blocks] == [
        ("python", False, "x = 1\n"),
        ("python", True, "undefined()\n"),
        ("bash", False, "ls\n"),
    ]
    assert [b.line for b in blocks] == [3, 9, 13]


# -- the README's set-up commands -----------------------------------------------------------------
_SETUP = "python3 -m venv .venv && . .venv/bin/activate && pip install -q torch==2.13.0 && "
DEMO_COMMAND = _SETUP + 'pip install -q -e ".[demo]" && matryoshka demo'
TEST_COMMAND = _SETUP + 'pip install -q -e ".[dev]" && python -m pytest'


def test_the_readme_opens_with_the_demo_and_the_test_commands() -> None:
    commands = [b.code.strip() for b in code_blocks(README) if b.language in ("bash", "sh")]
    assert commands[:2] == [DEMO_COMMAND, TEST_COMMAND]
    assert [b.language for b in code_blocks(README)[:2]] == ["bash", "bash"]


def test_the_readme_links_point_at_files_of_the_repository() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    relative = [t for t in targets if "://" not in t]
    assert relative
    assert [t for t in relative if not (ROOT / t).exists()] == []


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in ci.splitlines()


def test_the_readme_stays_short_and_plugin_first() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first_code = python_blocks(README)[0].code
    assert "matryoshka_retrieval.langchain" in first_code
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings.index("Drop it into your chain") < headings.index("The index")


def test_the_cli_guide_has_a_section_for_every_command() -> None:
    from matryoshka_retrieval.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    guide = (DOCS / "guides" / "cli.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\S+)$", guide, re.MULTILINE))
    assert sections == set(commands)


# -- the API reference ----------------------------------------------------------------------------
def public_modules() -> list[ModuleType]:
    """The package and each of its modules or subpackages whose name has no leading ``_``."""
    names = [m.name for m in pkgutil.iter_modules(matryoshka_retrieval.__path__)]
    modules = [f"matryoshka_retrieval.{n}" for n in sorted(names) if not n.startswith("_")]
    return [matryoshka_retrieval, *(importlib.import_module(m) for m in modules)]


def public_objects() -> dict[str, Any]:
    """Every name in a public module's ``__all__`` (dunders aside), by its dotted path."""
    found = {}
    for module in public_modules():
        assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
        for name in module.__all__:
            if not name.startswith("__"):
                found[f"{module.__name__}.{name}"] = getattr(module, name)
    return found


def _resolve(path: str) -> Any:
    """The object at a dotted path: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise AssertionError(f"cannot import any part of {path!r}")


def documented_objects() -> list[Any]:
    """What the reference pages render: each ``:::`` object, or a module's listed members (its
    ``__all__`` when none are listed)."""
    rendered = []
    for page in sorted((DOCS / "reference").glob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            target = _resolve(match.group(1))
            members = MEMBERS.search(match.group(2))
            if isinstance(target, ModuleType):
                names = (
                    [n.strip() for n in members.group(1).split(",")]
                    if members
                    else [n for n in target.__all__ if not n.startswith("__")]
                )
                rendered.extend(getattr(target, n) for n in names)
            else:
                rendered.append(target)
    return rendered


def test_the_reference_renders_every_public_name() -> None:
    rendered = documented_objects()
    missing = [
        path
        for path, obj in public_objects().items()
        if not any(obj is r or (obj == r and type(obj) is type(r)) for r in rendered)
    ]
    assert not missing, f"public names absent from docs/reference: {missing}"


def test_the_reference_names_only_public_import_paths() -> None:
    for page in sorted((DOCS / "reference").glob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            path = match.group(1)
            assert not any(part.startswith("_") for part in path.split(".")), (page, path)
            module, _, name = path.rpartition(".")
            public = {m.__name__ for m in public_modules()}
            assert path in public or (module in public and name in _resolve(module).__all__), (
                f"{page.name}: {path} is not a public import path"
            )


def _undocumented_members(cls: type) -> list[str]:
    """Public methods and properties that ``cls`` or a base class of this package defines with
    no docstring of their own or of the base-class member they override (``inspect.getdoc``'s
    rule)."""
    own = [k for k in cls.__mro__ if k.__module__.split(".")[0] == cls.__module__.split(".")[0]]
    members = {name: m for k in reversed(own) for name, m in vars(k).items()}
    missing = []
    for name, member in members.items():
        function = getattr(member, "__func__", member)  # classmethod, staticmethod
        if name.startswith("_") or not (
            isinstance(member, property) or inspect.isfunction(function)
        ):
            continue
        if not (inspect.getdoc(getattr(cls, name)) or "").strip():
            missing.append(name)
    return missing


def test_every_public_class_and_function_has_a_docstring() -> None:
    undocumented = []
    for path, obj in public_objects().items():
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants and type aliases carry attribute docstrings
        if not (obj.__doc__ or "").strip():
            undocumented.append(path)
        if inspect.isclass(obj) and obj.__module__.startswith("matryoshka_retrieval"):
            undocumented += [f"{path}.{name}" for name in _undocumented_members(obj)]
    assert not undocumented, f"public names without a docstring: {undocumented}"


class _Base:
    def inherited(self) -> None:
        """Documented on the base."""


class _Mixin:
    def mixed_in(self) -> None:
        pass


class _Sample(_Mixin, _Base):
    size = property(lambda self: 1)
    shown = property(lambda self: 1, doc="Documented.")

    def inherited(self) -> None:
        pass

    def bare(self) -> None:
        pass

    def _private(self) -> None:
        pass


def test_an_undocumented_method_or_property_is_found() -> None:
    assert sorted(_undocumented_members(_Sample)) == ["bare", "mixed_in", "size"]


# -- the documentation build's griffe extension ---------------------------------------------------
def _griffe_extension() -> ModuleType:
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location(
        "griffe_examples", DOCS / "_ext" / "griffe_examples.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shared_parameter_entries_are_split_for_the_reference() -> None:
    docstring = textwrap.dedent(
        """\
        Summary.

        Args:
            dim: The width.
            hnsw_m, ef_search: Graph degree and beam,
                both ints.
            last: The end.

        Raises:
            ValueError, TypeError: Not split: not a parameters section.
        """
    )
    split = _griffe_extension().split_shared_parameters(docstring)
    assert split.splitlines()[3:10] == [
        "    dim: The width.",
        "    hnsw_m: Graph degree and beam,",
        "        both ints.",
        "    ef_search: Graph degree and beam,",
        "        both ints.",
        "    last: The end.",
        "",
    ]
    assert "    ValueError, TypeError: Not split" in split


def test_sphinx_roles_become_inline_code_for_the_reference() -> None:
    plain_roles = _griffe_extension().plain_roles
    assert plain_roles("See :func:`~matryoshka_retrieval.as_encoder`.") == "See `as_encoder`."
    assert plain_roles(":class:`numpy.ndarray` or :meth:`add_images`") == (
        "`numpy.ndarray` or `add_images`"
    )
    assert plain_roles("``code`` and :unknown:`x`") == "``code`` and :unknown:`x`"


def test_the_changelog_has_one_heading_per_version_and_the_package_is_its_latest() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert versions[0] == "Unreleased"
    assert len(versions) == len(set(versions))
    assert versions[1] == matryoshka_retrieval.__version__
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        kinds = re.findall(r"^### (\w+)", section, re.MULTILINE)
        assert len(kinds) == len(set(kinds)), f"a repeated heading under ## {section[:20]}"
