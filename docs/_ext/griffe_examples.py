"""A griffe extension for the documentation build: read the package's docstrings as written.

The package's docstrings follow Google style with two habits griffe's parser does not know:

* a runnable example is titled ``Example:`` (one example each), which griffe would render as
  a plain admonition, turning the ``>>>`` lines into Markdown quotes; it becomes ``Examples:``.
* cross-references are Sphinx roles (``:func:`~matryoshka_retrieval.as_encoder` ``), which
  Markdown would show as typed; each becomes inline code of the name (its last part after
  ``~``, as Sphinx shows it).
* parameters that share a description are listed together (``hnsw_m, ef_construction: ...``);
  each name gets its own entry with the shared description, so griffe can still check every
  documented name against the signature.

The docstrings are rewritten before griffe parses them; nothing in the package changes.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_TITLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
_PARAMETER_TITLES = ("Args:", "Arguments:", "Parameters:", "Params:", "Keyword Args:")
_SECTION_TITLE = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
_SHARED_ENTRY = re.compile(r"^(\s+)(\*{0,2}\w+(?:,\s*\*{0,2}\w+)+):(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _entry_end(lines: list[str], start: int, indent: int) -> int:
    """Index just past the entry opened at ``start``: its more-indented continuation lines."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def plain_roles(text: str) -> str:
    """Replace each Sphinx cross-reference role with inline code of the name it shows.

    Args:
        text: A docstring.

    Returns:
        The docstring with ``:role:`~a.b` `` as `` `b` `` and ``:role:`a.b` `` as `` `a.b` ``.
    """

    def shown(match: re.Match[str]) -> str:
        target = match.group(2)
        return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"

    return _SPHINX_ROLE.sub(shown, text)


def split_shared_parameters(text: str) -> str:
    """Give each name of a ``a, b: description`` entry its own entry with that description.

    Args:
        text: A Google-style docstring.

    Returns:
        The docstring with every shared entry of a parameters section split.
    """
    lines = text.split("\n")
    out: list[str] = []
    i, in_parameters = 0, False
    while i < len(lines):
        line = lines[i]
        if _SECTION_TITLE.match(line):
            in_parameters = line.strip() in _PARAMETER_TITLES
        match = _SHARED_ENTRY.match(line) if in_parameters else None
        if match is None:
            out.append(line)
            i += 1
            continue
        end = _entry_end(lines, i, _indent(line))
        indent, names, first = match.groups()
        for name in re.split(r",\s*", names):
            out.extend([f"{indent}{name}:{first}", *lines[i + 1 : end]])
        i = end
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """Rewrite each docstring as the module's docstring describes, before griffe parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring, if it has one.

        Args:
            obj: The object griffe has just loaded.
            **kwargs: griffe's other hook arguments (unused).
        """
        if obj.docstring is not None:
            text = _EXAMPLE_TITLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = plain_roles(split_shared_parameters(text))
