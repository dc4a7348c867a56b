"""The manifest: one JSON file that describes a saved index and commits a save."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .config import IndexConfig

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "IndexCorruptedError", "Manifest"]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
GENERATION = re.compile(r"gen-[0-9a-f]{1,24}-[0-9a-f]{6}")
"""A generation folder's name: the only folder names a manifest may point to."""
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class IndexCorruptedError(ValueError):
    """A saved index is incomplete, damaged, or not an index of this library."""


def _int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum}, got {value!r:.60}")


@dataclass
class Manifest:
    """Everything needed to reopen an index and to check that it is used consistently.

    The configuration fields are :meth:`IndexConfig.to_manifest`'s, read back by
    :meth:`IndexConfig.from_manifest`; the rest describe the saved data.

    Attributes:
        full_dim: Dimension of the stored (full) vectors.
        coarse_dim: Prefix length of the coarse stage; ``None`` for exact full-dim search.
        stages: ``[[dim, keep], ...]`` of the cascade, the coarse stage first (empty: two-stage).
        rescore_multiplier: Coarse shortlist size per result, for two-stage search.
        precision: Precision of the coarse prefix.
        backend: The coarse stage's backend.
        calibration: int8 ranges of the coarse prefix (``Calibration.to_dict()``), if any.
        calibrated_on: Rows the int8 calibration was computed from (``None``: final).
        model_name: Model of the encoder that made the vectors, when known.
        normalized: Vectors are L2-normalised at every stage (must be true).
        metric: Similarity (must be ``cosine``).
        projection: Projection applied before truncation, if any.
        coarse_rotation: The rotation the coarse stage sees the vectors through
            (``Projection.to_manifest()``; ``"pca"`` while it waits for rows), if any.
            Left out of the file when there is none, so earlier versions read the manifest.
        hnsw: HNSW parameters.
        collection: Name of the Chroma collection holding the prefixes (``chroma`` backend).
        adaptive_margin: The coarse-score margin of the adaptive funnel (``None``: fixed).
        exact_below: Up to how many rows a search is exact (``"auto"``: by size; 0 in the
            manifests of 0.1, which had no such setting).
        count: Number of records.
        generation: Folder of the saved files, inside the index folder.
        files: Byte size of each saved file, checked on load.
        vectors_sha256: Checksum of the vectors file, checked by ``load(..., verify=True)``.
        format_version: Version of this layout.
    """

    full_dim: int
    coarse_dim: int | None
    stages: list[list[int]]
    rescore_multiplier: int
    precision: str
    backend: str
    calibration: dict[str, list[float]] | None = None
    calibrated_on: int | None = None
    model_name: str | None = None
    normalized: bool = True
    metric: str = "cosine"
    projection: dict[str, Any] | None = None
    coarse_rotation: dict[str, Any] | str | None = None
    hnsw: dict[str, int] = field(default_factory=dict)
    collection: str | None = None
    adaptive_margin: float | None = None
    exact_below: int | str = 0
    count: int = 0
    generation: str = ""
    files: dict[str, int] = field(default_factory=dict)
    vectors_sha256: str | None = None
    format_version: int = FORMAT_VERSION

    @classmethod
    def build(cls, config: IndexConfig, **facts: Any) -> Manifest:
        """The manifest of an index with ``config`` and the given facts (``full_dim``, ...)."""
        return cls(**config.to_manifest(), **facts)

    @property
    def config(self) -> IndexConfig:
        """The index configuration this manifest records."""
        return IndexConfig.from_manifest(asdict(self))

    def to_json(self) -> str:
        """The manifest as JSON text, as saved in ``manifest.json``."""
        data = asdict(self)
        if data["coarse_rotation"] is None:
            del data["coarse_rotation"]
        return json.dumps(data, indent=2, sort_keys=True)

    def check(self) -> IndexConfig:
        """Check every field a load relies on; returns the configuration.

        Raises:
            ValueError: Naming the first bad field.
        """
        _int("full_dim", self.full_dim, 1)
        _int("count", self.count, 0)
        if self.calibrated_on is not None:
            _int("calibrated_on", self.calibrated_on, 1)
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
            _int(f"files[{name!r}]", size, 0)
        config = self.config
        config.check_full_dim(self.full_dim)
        return config

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
        if not isinstance(data, dict):
            raise IndexCorruptedError(f"the manifest {path} is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexCorruptedError(
                f"the index at {folder} has format version {version!r}; this library reads "
                f"version {FORMAT_VERSION}: rebuild it with this version (add its vectors to a "
                "new MatryoshkaIndex and save that)"
            )
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise IndexCorruptedError(f"the manifest {path} has unexpected fields: {unknown}")
        try:
            manifest = cls(**data)
            manifest.check()
        except (TypeError, KeyError, ValueError) as exc:
            raise IndexCorruptedError(f"the manifest {path} is invalid: {exc}") from exc
        return manifest
