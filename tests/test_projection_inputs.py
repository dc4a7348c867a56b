"""Bad input to the projections and to ``matryoshka fit-projection`` is named, with its limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval._validation import int_at_least, positive_number
from matryoshka_retrieval.cli import main
from matryoshka_retrieval.projection import Projection, fit_projection, top_k_agreement


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.normal(size=(120, 12)) * np.linspace(0.1, 2.0, 12)).astype(np.float32)


def test_the_projection_modules_stay_importable_from_the_package() -> None:
    from matryoshka_retrieval import projection
    from matryoshka_retrieval.projection.adapter import _mine_neighbours
    from matryoshka_retrieval.projection.base import Projection as BaseProjection

    assert projection.Projection is BaseProjection
    assert projection._mine_neighbours is _mine_neighbours  # used by the distillation trainer
    assert callable(projection._agreement)  # used by the projection benchmark


@pytest.mark.parametrize("method", ["pca", "learned", "adapter"])
def test_a_negative_seed_is_named_with_its_limit(vectors: np.ndarray, method: str) -> None:
    with pytest.raises(ValueError, match=r"seed must be an int of at least 0, got -1"):
        fit_projection(vectors, method=method, seed=-1)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [1.5, "3", True, None])
def test_a_seed_that_is_not_an_int_is_a_type_error(vectors: np.ndarray, seed: Any) -> None:
    with pytest.raises(TypeError, match=r"seed must be an int of at least 0, got \w+: "):
        fit_projection(vectors, method="learned", seed=seed)


def test_a_numpy_int_seed_is_accepted(vectors: np.ndarray) -> None:
    assert fit_projection(vectors, seed=np.int64(7)).dim == 12


def test_the_seed_drives_the_learned_rotation(vectors: np.ndarray) -> None:
    pytest.importorskip("torch")

    def fit(seed: int) -> Projection:
        options: dict[str, Any] = {"epochs": 1, "batch_size": 32, "show_progress_bar": False}
        return fit_projection(vectors, method="learned", dims=[4], seed=seed, **options)

    assert fit(1).fingerprint == fit(1).fingerprint != fit(2).fingerprint


def test_a_learned_map_of_16_dims_or_less_trains_at_small_powers_of_two(
    vectors: np.ndarray,
) -> None:
    pytest.importorskip("torch")
    learned = fit_projection(vectors, method="learned", epochs=1, show_progress_bar=False)
    assert learned.info["dims"] == [2, 4, 8]


@pytest.mark.parametrize("method", ["learned", "adapter"])
def test_a_learned_map_without_prefix_dims_is_refused(vectors: np.ndarray, method: str) -> None:
    message = (
        rf"method='{method}' trains at prefix dims, but dims holds none \(give some in 1..12\)"
    )
    with pytest.raises(ValueError, match=message):
        fit_projection(vectors, method=method, dims=[])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"seed": -3}, ValueError, r"seed must be an int of at least 0, got -3"),
        ({"seed": 0.5}, TypeError, r"seed must be an int of at least 0, got float: 0.5"),
        ({"k": 0}, ValueError, r"k must be a positive int, got 0"),
        ({"queries": -5}, ValueError, r"queries must be a positive int, got -5"),
    ],
)
def test_top_k_agreement_names_a_bad_setting(
    vectors: np.ndarray, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        top_k_agreement(vectors, vectors, **options)


def test_top_k_agreement_seed_picks_the_query_rows(vectors: np.ndarray) -> None:
    noisy = vectors + np.random.default_rng(0).normal(size=vectors.shape).astype(np.float32)
    picks = {top_k_agreement(vectors, noisy, queries=5, seed=s) for s in range(6)}
    assert len(picks) > 1  # a different seed, different rows
    assert top_k_agreement(vectors, noisy, queries=5, seed=4) == top_k_agreement(
        vectors, noisy, queries=5, seed=4
    )


def test_a_weight_of_the_wrong_type_is_named(vectors: np.ndarray) -> None:
    with pytest.raises(TypeError, match=r"temperature must be a positive number, got str: '0.1'"):
        fit_projection(vectors, method="learned", temperature="0.1")  # type: ignore[arg-type]


def test_the_shared_checks_name_the_value_and_the_limit() -> None:
    assert int_at_least("seed", 0, 0) == 0 and int_at_least("batch_size", np.int32(2), 2) == 2
    with pytest.raises(ValueError, match=r"batch_size must be an int of at least 2, got 1"):
        int_at_least("batch_size", 1, 2)
    with pytest.raises(TypeError, match=r"seed must be an int of at least 0, got bool: False"):
        int_at_least("seed", False, 0)
    assert positive_number("temperature", np.float32(0.5)) == 0.5
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(
            ValueError, match=rf"learning_rate must be a positive number, got {bad}"
        ):
            positive_number("learning_rate", bad)


def _fit_from(path: Path, tmp_path: Path, *extra: str) -> list[str]:
    """``matryoshka fit-projection --vectors PATH --out TMP/p.npz EXTRA...``."""
    return ["fit-projection", "--vectors", str(path), "--out", str(tmp_path / "p.npz"), *extra]


def test_cli_vectors_that_are_a_text_file_are_named_not_npy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("these are notes, not vectors\n")
    assert main(_fit_from(notes, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"matryoshka fit-projection: error: --vectors {notes} is not a NumPy .npy array file "
        "(numpy.save writes one)"
    )
    assert not (tmp_path / "p.npz").exists()


def test_cli_vectors_in_an_npz_archive_are_named_not_npy(
    tmp_path: Path, vectors: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "docs.npz"
    np.savez(archive, docs=vectors)
    assert main(_fit_from(archive, tmp_path)) == 2
    assert f"--vectors {archive} is not a NumPy .npy array file" in capsys.readouterr().err


def test_cli_vectors_cut_short_are_named(
    tmp_path: Path, vectors: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = tmp_path / "docs.npy"
    np.save(whole, vectors)
    cut = tmp_path / "cut.npy"
    cut.write_bytes(whole.read_bytes()[:200])
    assert main(_fit_from(cut, tmp_path)) == 2
    assert f"--vectors {cut} is not a readable .npy array file" in capsys.readouterr().err


def test_cli_eval_names_a_vectors_folder_holding_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from beir_files import write_beir as write_beir_data
    from matryoshka_retrieval.eval import BeirData

    data = BeirData(corpus={"d0": "doc"}, queries={"q0": "query"}, qrels={"q0": {"d0": 1}})
    folder = write_beir_data(tmp_path / "data", data)
    (tmp_path / "vectors").mkdir()
    (tmp_path / "vectors" / "docs.npy").write_text("0.1 0.2\n")
    argv = ["eval", "--data", str(folder), "--vectors", str(tmp_path / "vectors"), "-q"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    docs = tmp_path / "vectors" / "docs.npy"
    assert f"--vectors {docs} is not a NumPy .npy array file" in capsys.readouterr().err


def test_cli_seed_out_of_range_is_named(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit-projection", "--vectors", "v.npy", "--out", "p.npz", "--seed", "-1"])
    assert "--seed: -1 is out of range: it must be at least 0" in capsys.readouterr().err


def test_cli_seed_reaches_the_fit(
    tmp_path: Path, vectors: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    np.save(tmp_path / "docs.npy", vectors)
    fingerprints = []
    for seed in ("1", "2"):
        argv = _fit_from(tmp_path / "docs.npy", tmp_path, "--method", "learned", "--seed", seed)
        assert main([*argv, "--epochs", "1", "-q"]) == 0
        fingerprints.append(Projection.load(tmp_path / "p.npz").fingerprint)
    expected = fit_projection(
        vectors, method="learned", epochs=1, seed=1, show_progress_bar=False
    ).fingerprint
    assert fingerprints[0] == expected != fingerprints[1]
