"""The manifest: one JSON file that describes a saved index and commits a save."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .._validation import int_at_least
from . import backends
from .config import IndexConfig

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "IndexCorruptedError", "Manifest"]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
GENERATION = re.compile(r"gen-[0-9a-f]{1,24}-[0-9a-f]{6}")
"""A generation folder's name: the only folder names a manifest may point to."""
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class IndexCorruptedError(ValueError):
    """A saved index is incomplete, damaged, or not an index of this library."""


@dataclass
class Manifest:
    """Everything needed to reopen an index and to check that it is used consistently.

    It embeds the index's :class:`IndexConfig`; the other fields describe the saved data. The
    file holds the config's fields (:meth:`IndexConfig.to_manifest`) beside these, one flat
    JSON object (the layout of format version 1).

    Attributes:
        full_dim: Dimension of the stored (full) vectors.
        config: The index configuration.
        calibration: int8 ranges of the coarse prefix (``Calibration.to_dict()``), if any.
        calibrated_on: Rows the int8 calibration was computed from (``None``: final).
        model_name: Model of the encoder that made the vectors, when known.
        normalized: Vectors are L2-normalised at every stage (must be true).
        metric: Similarity (must be ``cosine``).
        projection: Projection applied before truncation, if any.
        coarse_rotation: The rotation the coarse stage sees the vectors through
            (``Projection.to_manifest()``; ``"pca"`` while it waits for rows), if any.
            Left out of the file when there is none, so earlier versions read the manifest.
        count: Number of records.
        generation: Folder of the saved files, inside the index folder.
        files: Byte size of each saved file, checked on load.
        vectors_sha256: Checksum of the vectors file, checked by ``load(..., verify=True)``.
        format_version: Version of this layout.
    """

    full_dim: int
    config: IndexConfig
    calibration: dict[str, list[float]] | None = None
    calibrated_on: int | None = None
    model_name: str | None = None
    normalized: bool = True
    metric: str = "cosine"
    projection: dict[str, Any] | None = None
    coarse_rotation: dict[str, Any] | str | None = None
    count: int = 0
    generation: str = ""
    files: dict[str, int] = field(default_factory=dict)
    vectors_sha256: str | None = None
    format_version: int = FORMAT_VERSION

    @classmethod
    def build(cls, config: IndexConfig, **facts: Any) -> Manifest:
        """The manifest of an index with ``config`` and the given facts (``full_dim``, ...)."""
        return cls(config=config, **facts)

    @classmethod
    def fact_fields(cls) -> frozenset[str]:
        """The fields that describe the saved data (all but the config)."""
        return frozenset(f.name for f in fields(cls) if f.name != "config")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Read back :meth:`to_dict`'s layout (the file's).

        Raises:
            ValueError, KeyError, TypeError: For a missing or invalid field.
        """
        facts = {name: data[name] for name in cls.fact_fields() if name in data}
        return cls(config=IndexConfig.from_manifest(data), **facts)

    def to_dict(self) -> dict[str, Any]:
        """The flat layout of the file: the config's fields beside the facts."""
        facts = {name: getattr(self, name) for name in self.fact_fields()}
        return {**self.config.to_manifest(), **copy.deepcopy(facts)}

    def to_json(self) -> str:
        """The manifest as JSON text, as saved in ``manifest.json``."""
        data = self.to_dict()
        if data["coarse_rotation"] is None:
            del data["coarse_rotation"]
        return json.dumps(data, indent=2, sort_keys=True)

    def check(self) -> IndexConfig:
        """Check every field a load relies on; returns the configuration.

        Raises:
            ValueError: Naming the first bad field.
        """
        int_at_least("full_dim", self.full_dim, 1)
        int_at_least("count", self.count, 0)
        if self.calibrated_on is not None:
            int_at_least("calibrated_on", self.calibrated_on, 1)
        if self.model_name is not None and not isinstance(self.model_name, str):
            raise ValueError(f"model_name must be a str or null, got {self.model_name!r:.60}")
        if backends.spec(self.config.backend).capabilities.persists != "folder":
            raise ValueError(
                f"backend={self.config.backend!r} keeps its index on a server, never in a folder"
            )
        if self.normalized is not True or self.metric != "cosine":
            raise ValueError(
                f"normalized={self.normalized!r} and metric={self.metric!r}: this library "
                "stores L2-normalised vectors compared by cosine"
            )
        if not isinstance(self.generation, str) or not GENERATION.fullmatch(self.generation):
            raise ValueError(f"generation {self.generation!r:.80} is not a generation folder name")
        rotation = self.coarse_rotation
        saved = isinstance(rotation, dict) and isinstance(rotation.get("fingerprint"), str)
        if rotation is not None and rotation != "pca" and not saved:
            raise ValueError(f"coarse_rotation {rotation!r:.80} is not a saved rotation")
        if not isinstance(self.files, dict):
            raise ValueError(f"files must be an object, got {self.files!r:.60}")
        for name, size in self.files.items():
            if not _FILE.fullmatch(name):
                raise ValueError(f"files names {name!r:.80}, which is not a plain file name")
            int_at_least(f"files[{name!r}]", size, 0)
        self.config.check_full_dim(self.full_dim)
        return self.config

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """Read and check ``folder/manifest.json``.

        Raises:
            FileNotFoundError: If there is no manifest.
            IndexCorruptedError: If it is not valid, names a path outside the folder, or has an
                unknown format version.
        """
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no index at {folder}: {MANIFEST_NAME} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexCorruptedError(f"the manifest {path} is not valid JSON: {exc}") from exc
        except RecursionError:  # arrays or objects nested thousands deep: no manifest of ours
            raise IndexCorruptedError(
                f"the manifest {path} is nested too deep to be a manifest (Python's recursion "
                "limit was reached while parsing it)"
            ) from None
        if not isinstance(data, dict):
            raise IndexCorruptedError(f"the manifest {path} is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexCorruptedError(
                f"the index at {folder} has format version {version!r}; this library reads "
                f"version {FORMAT_VERSION}: rebuild it with this version (add its vectors to a "
                "new MatryoshkaIndex and save that)"
            )
        unknown = sorted(set(data) - cls.fact_fields() - IndexConfig.manifest_fields())
        if unknown:
            raise IndexCorruptedError(f"the manifest {path} has unexpected fields: {unknown}")
        try:
            manifest = cls.from_dict(data)
            manifest.check()
        except (TypeError, KeyError, ValueError) as exc:
            raise IndexCorruptedError(f"the manifest {path} is invalid: {exc}") from exc
        except RecursionError:
            raise IndexCorruptedError(
                f"the manifest {path} is invalid: a field is nested too deep to be a manifest's"
            ) from None
        return manifest
