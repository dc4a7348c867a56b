"""The manifest: one JSON file that describes a saved index and commits a save."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "IndexCorruptedError", "Manifest"]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class IndexCorruptedError(ValueError):
    """A saved index is incomplete, damaged, or not an index of this library."""


@dataclass
class Manifest:
    """Everything needed to reopen an index and to check that it is used consistently.

    Attributes:
        full_dim: Dimension of the stored (full) vectors.
        coarse_dim: Prefix length of the coarse stage; ``None`` for exact full-dim search.
        stages: ``[[dim, keep], ...]`` of the cascade, the coarse stage first (empty: two-stage).
        rescore_multiplier: Coarse shortlist size per result, for two-stage search.
        precision: Precision of the coarse prefix.
        backend: ``exact`` or ``hnsw``.
        calibration: int8 ranges of the coarse prefix (``Calibration.to_dict()``), if any.
        model_name: Model of the encoder that made the vectors, when known.
        normalized: Vectors are L2-normalised at every stage (always true).
        metric: Similarity (``cosine``).
        projection: Projection applied before truncation, if any.
        hnsw: HNSW parameters.
        collection: Name of the Chroma collection holding the prefixes (``chroma`` backend).
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
    model_name: str | None = None
    normalized: bool = True
    metric: str = "cosine"
    projection: dict[str, Any] | None = None
    hnsw: dict[str, int] = field(default_factory=dict)
    collection: str | None = None
    count: int = 0
    generation: str = ""
    files: dict[str, int] = field(default_factory=dict)
    vectors_sha256: str | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """Read ``folder/manifest.json``.

        Raises:
            FileNotFoundError: If there is no manifest.
            IndexCorruptedError: If it is not valid or of an unknown format version.
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
                f"version {FORMAT_VERSION}"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise IndexCorruptedError(f"the manifest {path} has unexpected fields: {exc}") from exc
