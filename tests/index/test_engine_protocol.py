"""The engine protocol, the capability registry and what they replace."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.index import backends
from matryoshka_retrieval.index.engine import LocalEngine
from matryoshka_retrieval.index.manifest import IndexCorruptedError
from matryoshka_retrieval.index.protocol import Engine, SavingEngine, TunableEngine

SRC = Path(__file__).resolve().parents[2] / "src" / "matryoshka_retrieval"
BACKEND_MODULES = {"backends.py", "faiss_coarse.py", "chroma_coarse.py", "postgres_filters.py"}


def _protocol_members(protocol: type) -> set[str]:
    return {
        name
        for cls in protocol.__mro__
        if cls.__module__.endswith("protocol")
        for name in vars(cls)
        if not name.startswith("_")
    } | set(getattr(protocol, "__annotations__", {}))


@pytest.mark.parametrize("protocol", [Engine, SavingEngine, TunableEngine])
def test_the_local_engine_implements_every_operation_of_the_protocols(protocol) -> None:
    missing = sorted(n for n in _protocol_members(protocol) if not hasattr(LocalEngine, n))
    attributes = {"config", "model_name", "dim", "full_vectors", "saved_projection"}
    missing = [n for n in missing if n not in attributes]
    assert missing == []


def test_the_postgres_engine_is_a_peer_not_a_subclass_of_the_local_engine() -> None:
    pytest.importorskip("psycopg")
    from matryoshka_retrieval.index.postgres import PostgresEngine

    assert not issubclass(PostgresEngine, LocalEngine)
    for name in _protocol_members(Engine) - {"config", "model_name", "dim"}:
        assert hasattr(PostgresEngine, name), name
    # no operation exists only to satisfy a protocol by raising
    for name in ("save", "persist", "create_coarse", "settle_rotation"):
        assert not hasattr(PostgresEngine, name), name
    # the tuner's seam is implemented on the server (trials measured by its own searches)
    for name in _protocol_members(TunableEngine) - _protocol_members(Engine):
        assert callable(getattr(PostgresEngine, name, None)), name


def test_no_module_outside_the_backend_modules_compares_a_backend_name() -> None:
    names = "|".join(backends.names())
    compare = re.compile(rf"(==|!=|\bin\b|\bnot in\b)\s*\(?[\"']({names})[\"']")
    found = []
    for path in SRC.rglob("*.py"):
        if path.name in BACKEND_MODULES or "postgres" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if compare.search(line) and "mode" not in line:
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert found == []


def test_nothing_below_the_facade_builds_it_or_writes_its_private_fields() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "index.py" and path.parent.name == "index":
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in (r"MatryoshkaIndex\.__new__|cls\.__new__\(cls\)", r"\bindex\._\w+\s*=[^=]"):
            found += [f"{path.relative_to(SRC)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert found == []


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert long == {}


def test_the_tuner_assigns_no_engine_config() -> None:
    from matryoshka_retrieval.index import tune

    source = inspect.getsource(tune)
    assert not re.search(r"engine\.config\s*=[^=]", source)
    assert "use_stage" not in source


def test_capabilities_are_what_the_config_and_the_facade_refuse_by() -> None:
    for name in backends.names():
        caps = backends.spec(name).capabilities
        for precision in ("float32", "float16", "int8", "binary"):
            if precision in caps.precisions:
                backends.check_precision(name, precision)
            else:
                with pytest.raises(ValueError, match=rf"precision={precision!r}"):
                    backends.check_precision(name, precision)
    with pytest.raises(ValueError, match=r"dsn= and table= are for backend='postgres'"):
        MatryoshkaIndex(dim=8, coarse_dim=4, dsn="postgresql://x", table="t")
    with pytest.raises(ValueError, match=r"chroma_client= is for backend='chroma'"):
        MatryoshkaIndex(dim=8, coarse_dim=4, chroma_client=object())


def _saved(tmp_path: Path) -> Path:
    index = MatryoshkaIndex(coarse_dim=4)
    index.add_vectors(np.eye(8, dtype=np.float32), ids=[f"r{i}" for i in range(8)])
    index.save(tmp_path / "idx")
    return tmp_path / "idx"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("backend", "postgres", r"backend='postgres' keeps its index on a server"),
        ("model_name", 123, r"model_name must be a str or null, got 123"),
    ],
)
def test_a_folder_manifest_a_folder_cannot_hold_is_a_corrupted_index(
    tmp_path, field, value, message
) -> None:
    # D24: backend "postgres" in a folder said "needs dsn=", and model_name 123 loaded
    folder = _saved(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest[field] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptedError, match=message):
        MatryoshkaIndex.load(folder)


def test_saving_a_server_index_names_where_it_is_kept() -> None:
    caps = backends.spec("postgres").capabilities
    assert caps.persists == "server" and caps.location is not None
    assert caps.rotation  # the coarse column holds the rotated prefix
