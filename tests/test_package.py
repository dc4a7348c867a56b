"""Packaging contract: light imports, a guarded public surface, extras named in errors."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import matryoshka_retrieval

HEAVY = (
    "torch",
    "sentence_transformers",
    "transformers",
    "datasets",
    "accelerate",
    "langchain_core",
    "llama_index",
    "chromadb",
)
SDKS = ("openai", "cohere", "voyageai")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_pulls_in_no_framework_or_sdk() -> None:
    result = _run(
        f"""
        import sys
        import matryoshka_retrieval
        import matryoshka_retrieval.encoders, matryoshka_retrieval.quantization
        import matryoshka_retrieval.truncation, matryoshka_retrieval.cli
        import matryoshka_retrieval.train, matryoshka_retrieval.projection
        import matryoshka_retrieval.datasets, matryoshka_retrieval.eval
        import numpy as np
        encoder = matryoshka_retrieval.CallableEncoder(lambda t: np.ones((len(t), 4)), dim=4)
        encoder.encode_documents(["x"])
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY + SDKS!r}))
        print(",".join(loaded))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_public_names_resolve() -> None:
    expected = {
        "truncate",
        "quantize",
        "calibrate",
        "dequantize",
        "int8_scores",
        "bytes_per_vector",
        "Calibration",
        "Precision",
        "Encoder",
        "EncoderError",
        "RetryPolicy",
        "SentenceTransformerEncoder",
        "OpenAIEncoder",
        "CohereEncoder",
        "VoyageEncoder",
        "JinaEncoder",
        "CallableEncoder",
        "as_encoder",
        "DEFAULT_MODEL",
        "MatryoshkaIndex",
        "Hit",
        "Hits",
        "Record",
        "UnknownIdError",
        "IndexCorruptedError",
        "copy_index",
        "__version__",
    }
    assert set(matryoshka_retrieval.__all__) == expected
    for name in expected:
        assert getattr(matryoshka_retrieval, name) is not None


def test_package_is_typed() -> None:
    assert importlib.resources.files("matryoshka_retrieval").joinpath("py.typed").is_file()


@pytest.mark.parametrize(
    ("module", "construct", "extra"),
    [
        ("sentence_transformers", "SentenceTransformerEncoder()", "sentence-transformers"),
        ("openai", "OpenAIEncoder(api_key='x')", "openai"),
        ("cohere", "CohereEncoder(api_key='x')", "cohere"),
        ("voyageai", "VoyageEncoder(api_key='x')", "voyage"),
    ],
)
def test_missing_extra_names_the_install_command(module: str, construct: str, extra: str) -> None:
    result = _run(
        f"""
        import sys
        sys.modules[{module!r}] = None  # as if the package were not installed
        import matryoshka_retrieval as mr
        try:
            mr.{construct}
        except ImportError as exc:
            print(exc)
        else:
            print("no error")
        """
    )
    assert result.returncode == 0, result.stderr
    assert f'pip install "matryoshka-retrieval[{extra}]"' in result.stdout


def test_training_without_its_extra_names_the_install_command(tmp_path: Path) -> None:
    result = _run(
        f"""
        import sys
        sys.modules["datasets"] = None  # as if the package were not installed
        from matryoshka_retrieval.train import train_matryoshka
        try:
            train_matryoshka([("a", "b"), ("c", "d")], {str(tmp_path / "m")!r})
        except ImportError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "matryoshka-retrieval[train]"' in result.stdout
    assert not (tmp_path / "m").exists()


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "matryoshka_retrieval.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("matryoshka ")
