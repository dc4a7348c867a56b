"""Saving and opening an index folder: generations, fsync, a folder lock, the manifest commit.

Layout of an index folder::

    manifest.json      the commit point: names the current generation and its files' sizes
    gen-<t>-<r>/       one generation: vectors.npy, records.sqlite, the coarse stage's files
    .lock              taken exclusively by a save, shared by a load (across processes)
    .generations       every generation folder this index created here, for cleanup

A save writes a new generation into ``gen-....tmp``, fsyncs it, renames it into place, then
replaces the manifest (written to a temporary file, fsynced): a crash at any point leaves the
previous save loadable. Only folders listed in ``.generations`` are ever deleted, so a folder
holding other data is never touched; a save into a non-empty folder that holds no index of
this library is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import GENERATION, MANIFEST_NAME, IndexCorruptedError, Manifest
from .records import FILE_NAME as RECORDS_FILE
from .records import RecordDB
from .stores import CoarseStage
from .vectors import FILE_NAME as VECTORS_FILE
from .vectors import VectorStore, residency

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: saves from several processes are not locked
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = [
    "LOCK_NAME",
    "Opened",
    "open_index",
    "reopen",
    "save_index",
    "saved_projection",
    "saved_rotation",
]

LOCK_NAME = ".lock"
JOURNAL_NAME = ".generations"
PROJECTION_FILE = "projection.npz"
ROTATION_FILE = "coarse_rotation.npz"
_OURS = {MANIFEST_NAME, LOCK_NAME, JOURNAL_NAME, f"{MANIFEST_NAME}.tmp", f"{JOURNAL_NAME}.tmp"}


@dataclass
class Opened:
    """The parts of a saved index, opened."""

    manifest: Manifest
    vectors: VectorStore
    records: RecordDB
    coarse: CoarseStage | None
    generation: Path


# -- the folder lock ---------------------------------------------------------------------------
@contextlib.contextmanager
def folder_lock(folder: Path, *, exclusive: bool) -> Iterator[bool]:
    """Hold the folder's lock file (``flock``): exclusive for a save, shared for a load.

    Yields whether the lock is held (a read-only folder without a lock file cannot be locked;
    nothing can save there either).
    """
    if fcntl is None:
        yield False
        return
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
        except OSError:
            yield False
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# -- files -------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- the journal of generations ----------------------------------------------------------------
def _journal(folder: Path) -> list[str]:
    try:
        lines = (folder / JOURNAL_NAME).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return []
    return [name for name in lines if GENERATION.fullmatch(name)]


def _clean(folder: Path, keep: str | None) -> None:
    """Remove every generation this index created here except ``keep`` (and their staging)."""
    listed = _journal(folder)
    for name in listed:
        if name != keep:
            shutil.rmtree(folder / name, ignore_errors=True)
            shutil.rmtree(folder / f"{name}.tmp", ignore_errors=True)
    if listed != ([keep] if keep else []):
        _write_atomic(folder / JOURNAL_NAME, f"{keep}\n" if keep else "")


def _current_generation(folder: Path) -> str | None:
    try:
        return Manifest.read(folder).generation
    except (FileNotFoundError, IndexCorruptedError):
        return None


def _check_ours(folder: Path) -> None:
    """Refuse to save into a folder that holds anything but an index of this library."""
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return
    if MANIFEST_NAME in entries:
        try:
            Manifest.read(folder)
            return
        except IndexCorruptedError as exc:
            raise ValueError(
                f"cannot save into {folder}: its {MANIFEST_NAME} is not the manifest of an "
                f"index this library can read ({exc}); choose an empty or new folder"
            ) from None
    journal = set(_journal(folder))
    foreign = [e for e in entries if e not in _OURS and e.removesuffix(".tmp") not in journal]
    if foreign:
        raise ValueError(
            f"cannot save into {folder}: it is not empty and holds no index of this library "
            f"(it holds {foreign[:5]}); choose an empty or new folder"
        )


# -- save --------------------------------------------------------------------------------------
def _write_generation(
    staging: Path, parts: dict[str, Callable[[Path], list[str] | None]]
) -> dict[str, int]:
    staging.mkdir()
    for writer in parts.values():
        writer(staging)
    for file in staging.iterdir():
        _fsync_file(file)
    _fsync_dir(staging)
    return {f.name: f.stat().st_size for f in sorted(staging.iterdir())}


def save_index(
    folder: Path,
    manifest: Manifest,
    *,
    vectors: VectorStore,
    records: RecordDB,
    coarse: CoarseStage | None,
    rows: Any,
    projection: Any,
    rotation: Any = None,
) -> Manifest:
    """Write a new generation and commit it with the manifest; returns the manifest written.

    Args:
        folder: The index folder (created when missing).
        manifest: The manifest to write (generation, files and checksum are filled in).
        vectors: The full vectors; only ``rows`` are written when given.
        records: The records; renumbered to follow ``rows`` when given.
        coarse: The coarse stage, already compacted to ``rows``.
        rows: The live rows in order, or ``None`` when every row is live.
        projection: The projection the vectors went through, or ``None``.
        rotation: The coarse stage's rotation (a ``Projection``), ``"pca"`` or ``None``.

    Raises:
        ValueError: If the folder is not empty and holds no index of this library.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _check_ours(folder)  # before the lock file is made: a folder not ours stays untouched
    with folder_lock(folder, exclusive=True):
        _check_ours(folder)
        current = _current_generation(folder)
        _clean(folder, current)
        generation = f"gen-{time.time_ns():x}-{uuid.uuid4().hex[:6]}"
        listed = [current] if current else []  # an index saved before the journal existed
        _write_atomic(folder / JOURNAL_NAME, "\n".join([*listed, generation]) + "\n")
        parts: dict[str, Callable[[Path], Any]] = {
            VECTORS_FILE: lambda d: vectors.write_npy(d / VECTORS_FILE, rows),
            RECORDS_FILE: lambda d: records.save(d / RECORDS_FILE, rows),
        }
        if projection is not None:
            parts[PROJECTION_FILE] = lambda d: projection.save(d / PROJECTION_FILE)
        if rotation is not None and not isinstance(rotation, str):
            parts[ROTATION_FILE] = lambda d: rotation.save(d / ROTATION_FILE)
        if coarse is not None:
            parts["coarse"] = coarse.write
        staging = folder / f"{generation}.tmp"
        manifest.files = _write_generation(staging, parts)
        os.replace(staging, folder / generation)
        manifest.generation = generation
        manifest.vectors_sha256 = sha256(folder / generation / VECTORS_FILE)
        _write_atomic(folder / MANIFEST_NAME, manifest.to_json())  # the commit point
        _clean(folder, generation)
    return manifest


# -- open --------------------------------------------------------------------------------------
def _check_files(folder: Path, manifest: Manifest, verify: bool) -> Path:
    gen = folder / manifest.generation
    for name, size in manifest.files.items():
        file = gen / name
        if not file.is_file():
            raise IndexCorruptedError(f"the index at {folder} is missing {name}")
        actual = file.stat().st_size
        if actual != size:
            raise IndexCorruptedError(
                f"the index file {name} at {folder} is truncated or damaged: expected "
                f"{size} bytes, found {actual}"
            )
    if verify and manifest.vectors_sha256 != sha256(gen / VECTORS_FILE):
        raise IndexCorruptedError(f"the vectors of the index at {folder} fail their checksum")
    return gen


def _open_records(folder: Path, gen: Path, count: int) -> RecordDB:
    db = RecordDB.open_read_only(gen / RECORDS_FILE)
    try:
        db.check()
        have = db.count()
        db.keep_resident(gen / RECORDS_FILE)
    except Exception as exc:
        db.conn.close()
        raise IndexCorruptedError(
            f"the records database of the index at {folder} is damaged: {exc}"
        ) from exc
    if have != count:
        db.conn.close()
        raise IndexCorruptedError(
            f"the records database of the index at {folder} holds {have} records, the "
            f"manifest says {count}"
        )
    return db


def _tidy(folder: Path) -> None:
    """Remove what a killed save left behind, when no save or load holds the folder."""
    if fcntl is None or not os.access(folder, os.W_OK):
        return
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return
    try:
        current = _current_generation(folder)
        if current is not None:
            _clean(folder, current)
    except OSError as exc:  # pragma: no cover - a read-only file in a writable folder
        logger.debug("could not tidy %s: %s", folder, exc)
    finally:
        os.close(fd)


def open_index(
    folder: Path,
    *,
    full_vectors: str,
    verify: bool,
    open_coarse: Callable[[Path, Manifest], CoarseStage | None],
) -> Opened:
    """Open the saved parts of the index at ``folder``, under the folder's shared lock.

    Args:
        folder: The index folder.
        full_vectors: How to read the full vectors (:data:`.vectors.FullVectors`).
        verify: Check the vectors file against its SHA-256 (reads the whole file).
        open_coarse: Opens the coarse stage of a generation folder.

    Raises:
        FileNotFoundError: If there is no index at ``folder``.
        IndexCorruptedError: If files are missing, truncated or damaged.
    """
    _tidy(folder)
    with folder_lock(folder, exclusive=False):
        manifest = Manifest.read(folder)
        gen = _check_files(folder, manifest, verify)
        nbytes = 4 * manifest.count * manifest.full_dim
        mode = residency(full_vectors, nbytes, exact=manifest.config.coarse_dim is None)
        try:
            vectors = VectorStore.open(
                gen / VECTORS_FILE, count=manifest.count, dim=manifest.full_dim, mode=mode
            )
        except ValueError as exc:
            raise IndexCorruptedError(f"the vectors of the index at {folder}: {exc}") from exc
        records = _open_records(folder, gen, manifest.count)
        try:
            coarse = open_coarse(gen, manifest)
            if coarse is not None:
                coarse.check_saved(manifest.count, records, vectors)
        except (RuntimeError, IndexCorruptedError) as exc:
            records.conn.close()
            raise IndexCorruptedError(
                f"the coarse index of the index at {folder} is damaged: {exc}"
            ) from exc
        except BaseException:
            records.conn.close()
            raise
    return Opened(manifest, vectors, records, coarse, gen)


def reopen(folder: Path, manifest: Manifest, coarse: CoarseStage | None, *, mode: str) -> Opened:
    """The files of the generation just saved, opened (the coarse stage is kept as it is)."""
    gen = folder / manifest.generation
    vectors = VectorStore.open(
        gen / VECTORS_FILE, count=manifest.count, dim=manifest.full_dim, mode=mode
    )
    records = RecordDB.open_read_only(gen / RECORDS_FILE)
    records.keep_resident(gen / RECORDS_FILE)
    return Opened(manifest, vectors, records, coarse, gen)


def _projection(path: Path, saved: dict[str, Any]) -> Any:
    """The projection (or coarse rotation) saved with an index, checked against the manifest's
    record of it, ``saved``."""
    from ..projection import Projection

    try:
        projection = Projection.load(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise IndexCorruptedError(f"{path.name} cannot be read: {exc}") from exc
    if projection.fingerprint != saved.get("fingerprint"):
        raise IndexCorruptedError(f"the file at {path} does not match the manifest")
    return projection


def saved_rotation(gen: Path, manifest: Manifest, config: Any) -> Any:
    """The coarse rotation saved with an index (``None``, ``"pca"`` or a ``Projection``)."""
    from .rotation import check_rotation

    rotation = manifest.coarse_rotation
    if rotation == "pca" and manifest.count:
        raise IndexCorruptedError(
            f"the manifest says the coarse rotation waits for rows, but it holds {manifest.count}"
        )
    if isinstance(rotation, dict):
        if ROTATION_FILE not in manifest.files:
            raise IndexCorruptedError(f"the manifest lists no {ROTATION_FILE}")
        rotation = _projection(gen / ROTATION_FILE, rotation)
    try:
        return check_rotation(rotation, config, manifest.full_dim)
    except ValueError as exc:
        raise IndexCorruptedError(f"the saved coarse rotation: {exc}") from exc


def saved_projection(opened: Opened) -> Any:
    """The projection the stored vectors went through, saved with the index (or ``None``)."""
    if opened.manifest.projection is None:
        return None
    return _projection(opened.generation / PROJECTION_FILE, opened.manifest.projection)
