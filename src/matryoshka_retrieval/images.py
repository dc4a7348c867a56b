"""Image inputs: what counts as an image, and reading one into a checked ``PIL.Image``.

An image is a ``PIL.Image.Image``, a path (``pathlib.Path`` or any ``os.PathLike``; a plain
``str`` only where a call takes images alone, such as ``encode_images`` and ``add_images``),
encoded bytes (``bytes``, ``bytearray``, ``memoryview``) or a binary file object. Everything is
read and checked before any embedding starts, and a bad item raises an error that names it.
Pillow is the ``images`` extra; it is imported only when an image is read.

Example:
    >>> from PIL import Image
    >>> from matryoshka_retrieval.images import is_image, load_image
    >>> picture = load_image(Image.new("L", (4, 3)), "images[0]")
    >>> picture.mode, picture.size, is_image(picture), is_image("a text")
    ('RGB', (4, 3), True, False)
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ._optional import require

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["ImageInput", "image_source", "is_image", "load_image"]

ImageInput = Union["PILImage", "os.PathLike[str]", bytes, bytearray, memoryview, io.IOBase]
"""What an image may be given as (a plain ``str`` is a path only where images alone are taken)."""

_BYTES = (bytes, bytearray, memoryview)


def _is_pil(value: Any) -> bool:
    module = sys.modules.get("PIL.Image")  # no PIL image can exist before Pillow is imported
    return module is not None and isinstance(value, module.Image)


def is_image(value: Any) -> bool:
    """Whether ``value`` is given as an image (a str is text here: see the module's note)."""
    return (
        _is_pil(value)
        or isinstance(value, (os.PathLike, *_BYTES))
        or (isinstance(value, io.IOBase) and hasattr(value, "read"))
    )


def image_source(value: Any) -> str | None:
    """The path or URI an image came from (to store as its record's text), if it has one."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value) if isinstance(os.fspath(value), str) else None
    name = getattr(value, "filename", None) or getattr(value, "name", None)
    return name if isinstance(name, str) and name else None


def _describe(value: Any) -> str:
    if isinstance(value, _BYTES):
        data = bytes(value[:16])
        return f"{len(value)} bytes starting {data!r}"
    if isinstance(value, (str, os.PathLike)):
        return repr(os.fspath(value))
    return repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:77]}..."


def _open(value: Any, where: str) -> Any:
    """``value`` opened by Pillow (not yet decoded)."""
    pil = require("PIL.Image", "images")
    if _is_pil(value):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"{where}: no image file at {os.fspath(value)!r}")
        source: Any = path
    elif isinstance(value, _BYTES):
        if not len(value):
            raise ValueError(f"{where} is empty: 0 bytes are not an image")
        source = io.BytesIO(bytes(value))
    elif isinstance(value, io.IOBase) and hasattr(value, "read"):
        source = value
    else:
        raise TypeError(
            f"{where} must be an image (a PIL.Image, a path, or bytes), got "
            f"{type(value).__name__}: {_describe(value)}"
        )
    try:
        return pil.open(source)
    except pil.DecompressionBombError as exc:
        raise ValueError(
            f"{where} ({_describe(value)}) is too large to read safely: {exc}"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        reason = str(exc).split(" <")[0]  # drop the repr of our in-memory buffer
        raise ValueError(
            f"{where} ({_describe(value)}) is not an image Pillow can read: {reason}"
        ) from None


def load_image(value: Any, where: str, *, max_pixels: int | None = None) -> PILImage:
    """Read ``value`` into a fully decoded RGB ``PIL.Image``.

    Args:
        value: A ``PIL.Image``, a path (``str`` or ``os.PathLike``), bytes or a binary file.
        where: How to name the item in errors, for example ``"images[3]"``.
        max_pixels: Largest width x height accepted (a model's or an API's limit).

    Raises:
        TypeError: If ``value`` is none of those types (naming ``where`` and the type).
        ValueError: For a missing file, data Pillow cannot decode, an empty (0-pixel) image,
            or an image over ``max_pixels`` (naming ``where``, the value and the limit).
        ImportError: If Pillow is not installed (naming the ``images`` extra).
    """
    image = _open(value, where)
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(
            f"{where} ({_describe(value)}) is {width}x{height} pixels: an image needs at least "
            "1x1 pixel to be embedded"
        )
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"{where} ({_describe(value)}) is {width}x{height} = {width * height:,} pixels, over "
            f"the limit of {max_pixels:,} pixels"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:  # a truncated or corrupt file
        raise ValueError(
            f"{where} ({_describe(value)}) is not an image Pillow can read: {exc}"
        ) from None
    converted: PILImage = image if image.mode == "RGB" else image.convert("RGB")
    return converted
