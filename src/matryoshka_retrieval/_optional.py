"""Optional dependencies: import an integration's package, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

DISTRIBUTION = "matryoshka-retrieval"


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise an ImportError that names the extra providing it.

    Args:
        module: Dotted module name, for example ``"sentence_transformers"``.
        extra: The extra of this distribution that installs it, for example
            ``"sentence-transformers"``.

    Returns:
        The imported module.

    Raises:
        ImportError: If the module cannot be imported. The message holds the
            ``pip install`` command to run.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module!r} is required for this feature but could not be imported ({exc}). "
            f'Install it with: pip install "{DISTRIBUTION}[{extra}]"'
        ) from exc
