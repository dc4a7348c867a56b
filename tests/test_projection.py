from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval import CallableEncoder, MatryoshkaIndex, truncate
from matryoshka_retrieval.datasets import corpus_pairs, python_docs, python_docs_task
from matryoshka_retrieval.eval import evaluate_dims
from matryoshka_retrieval.projection import (
    ProjectedEncoder,
    Projection,
    fit_projection,
    top_k_agreement,
)
from matryoshka_retrieval.train import split_beir


@pytest.fixture(scope="module")
def rotated() -> np.ndarray:
    """Power-law variance hidden behind a random rotation: raw prefixes are poor."""
    rng = np.random.default_rng(0)
    dim = 48
    std = np.arange(1, dim + 1) ** -0.8
    centroids = rng.normal(size=(30, dim)) * std
    x = centroids[rng.integers(0, 30, 1200)] + 0.3 * rng.normal(size=(1200, dim)) * std
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (x @ q).astype(np.float32)


def agreement(x: np.ndarray, y: np.ndarray, dim: int, k: int = 10) -> float:
    """Top-k overlap of prefix search on y with full-dim search on x (first 100 rows as queries)."""
    xn = truncate(x, x.shape[1])
    full = np.argsort(-(xn[:100] @ xn.T), axis=1)[:, 1 : k + 1]
    p = truncate(y, dim)
    pre = np.argsort(-(p[:100] @ p.T), axis=1)[:, 1 : k + 1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(full, pre, strict=True)]))


def test_pca_keeps_full_dim_scores_and_improves_prefixes(rotated: np.ndarray) -> None:
    pca = fit_projection(rotated, method="pca")
    y = pca.apply(rotated)
    unit = truncate(rotated, rotated.shape[1])
    np.testing.assert_allclose(y @ y[:50].T, unit @ unit[:50].T, atol=1e-5)
    assert agreement(rotated, y, 8) > agreement(rotated, rotated, 8) + 0.2
    variances = y.var(axis=0)
    assert variances[:8].sum() > variances[-8:].sum() * 5


def test_learned_rotation_keeps_full_dim_scores_and_improves_prefixes(rotated: np.ndarray) -> None:
    pytest.importorskip("torch")
    learned = fit_projection(
        rotated, method="learned", dims=[8, 16], epochs=4, show_progress_bar=False
    )
    y = learned.apply(rotated)
    unit = truncate(rotated, rotated.shape[1])
    assert learned.method == "learned"
    np.testing.assert_allclose(y @ y[:50].T, unit @ unit[:50].T, atol=1e-4)  # orthogonal
    rotation = learned.rotation.astype(np.float64)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(48), atol=1e-4)
    assert agreement(rotated, y, 8) > agreement(rotated, rotated, 8) + 0.2


def test_pairs_made_from_the_corpus_improve_prefix_retrieval(minilm_encoder: Any) -> None:
    """Real MiniLM vectors of the stdlib docstrings: pseudo pairs (a docstring's first sentence
    and the rest) from one half of the documents, scored on known-item queries of the other."""
    pytest.importorskip("torch")
    task = python_docs_task()
    _, test = split_beir(task, test_fraction=0.5, seed=0)
    held_out = {doc for relevant in test.qrels.values() for doc in relevant}
    asked = set(test.queries.values())  # a few docstrings share a first sentence: leave those out
    pairs = [
        (q, d)
        for q, d in corpus_pairs(doc.text for doc in python_docs() if doc.id not in held_out)
        if q not in asked
    ]
    assert len(pairs) > 100
    docs = minilm_encoder.encode_documents(list(task.corpus.values()))
    queries = minilm_encoder.encode_queries(list(test.queries.values()))
    pair_vectors = (
        minilm_encoder.encode_queries([q for q, _ in pairs]),
        minilm_encoder.encode_documents([d for _, d in pairs]),
    )

    def ndcg(projection: Projection) -> dict[int, float]:
        vectors = (projection.apply(docs), projection.apply(queries))
        results = evaluate_dims(
            vectors, test.corpus, test.queries, test.qrels, dims=[16, 32, 64], rescore=()
        )
        return {row.dim: row.metrics["ndcg@10"] for row in results}

    plain = ndcg(fit_projection(docs, method="learned", show_progress_bar=False))
    paired_projection = fit_projection(
        docs, method="learned", pairs=pair_vectors, show_progress_bar=False
    )
    paired = ndcg(paired_projection)
    # both rotations: the same full-dim ranking, but for 20 duplicated docstrings whose exact
    # ties the two rotations' float32 rounding breaks either way (about 0.0008 a flip)
    assert paired[384] == pytest.approx(plain[384], abs=0.01)
    gain = sum(paired[d] - plain[d] for d in (16, 32, 64))
    assert gain > 0.05 and all(paired[d] > plain[d] for d in (16, 32, 64)), (plain, paired)
    assert paired_projection.info["pairs"] == len(pairs)


def test_bad_pairs_are_named(rotated: np.ndarray) -> None:
    good = (rotated[:10], rotated[10:20])
    with pytest.raises(ValueError, match=r"pairs are used by method='learned' or 'adapter' only"):
        fit_projection(rotated, method="pca", pairs=good)
    cases = [
        (
            (rotated[:10], rotated[:10, :5]),
            r"the document vectors must be \[m, 48\], got shape \(10, 5\)",
        ),
        (
            (rotated[:10], rotated[:9]),
            r"as many query as document vectors, at least 2; got 10 and 9",
        ),
        ((rotated[0], rotated[1]), r"the query vectors must be \[m, 48\]"),
        ((rotated[:10],), r"pairs must be \(query_vectors, document_vectors\)"),
    ]
    for pairs, message in cases:
        with pytest.raises(ValueError, match=message):
            fit_projection(rotated, method="learned", pairs=pairs)
    with pytest.raises(ValueError, match=r"pair_weight must be a positive number, got 0"):
        fit_projection(rotated, method="learned", pairs=good, pair_weight=0)


def test_corpus_pairs_split_each_text_after_its_first_sentence() -> None:
    texts = [
        "The cp utility copies files. It keeps modes with -p and follows links with -L.",
        "Too short. Rest of it is long enough to count as a document text here.",
        "One sentence only, long enough to be a query but with nothing after it",
    ]
    assert corpus_pairs(texts) == [
        ("The cp utility copies files.", "It keeps modes with -p and follows links with -L.")
    ]
    assert len(corpus_pairs(texts, min_query_chars=5)) == 2


@pytest.mark.parametrize("method", ["pca", "learned"])
def test_save_and_load_without_pickle(rotated: np.ndarray, tmp_path: Path, method: str) -> None:
    if method == "learned":
        pytest.importorskip("torch")
    fitted = fit_projection(rotated, method=method, epochs=1, show_progress_bar=False)
    fitted.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as data:
        assert json.loads(str(data["header"]))["method"] == method
    loaded = Projection.load(tmp_path / "p.npz")
    assert loaded.fingerprint == fitted.fingerprint
    np.testing.assert_array_equal(loaded.apply(rotated[:5]), fitted.apply(rotated[:5]))


def test_bad_inputs(rotated: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"method='svd' is not supported"):
        fit_projection(rotated, method="svd")
    with pytest.raises(ValueError, match=r"dims holds 99, out of range 1..48"):
        fit_projection(rotated, method="learned", dims=[99])
    pca = fit_projection(rotated)
    with pytest.raises(ValueError, match=r"vectors have 10 dims but this projection maps 48"):
        pca.apply(rotated[:, :10])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"is not a saved projection"):
        Projection.load(tmp_path / "bad.npz")


def _encoder(rotated: np.ndarray, model_name: str = "rotated") -> CallableEncoder:
    table = {f"t{i}": rotated[i] for i in range(len(rotated))}
    return CallableEncoder(
        lambda texts: np.stack([table[t] for t in texts]), dim=48, model_name=model_name
    )


def test_projected_encoder_projects_then_truncates(rotated: np.ndarray) -> None:
    pca = fit_projection(rotated)
    encoder = ProjectedEncoder(_encoder(rotated), pca, truncate_dim=8)
    out = encoder.encode_documents(["t0", "t1"])
    np.testing.assert_allclose(out, truncate(pca.apply(rotated[:2]), 8), atol=1e-6)
    assert encoder.dim == 8 and encoder.full_dim == 48 and encoder.model_name == "rotated"
    with pytest.raises(ValueError, match=r"maps 48-dim vectors but the encoder .* outputs 16"):
        ProjectedEncoder(CallableEncoder(lambda t: np.ones((len(t), 16)), dim=16), pca)


def test_index_records_and_reapplies_the_projection(rotated: np.ndarray, tmp_path: Path) -> None:
    pca = fit_projection(rotated)
    index = MatryoshkaIndex(ProjectedEncoder(_encoder(rotated), pca), coarse_dim=8, device="cpu")
    texts = [f"t{i}" for i in range(len(rotated))]
    index.add_texts(texts, ids=texts)
    expected = index.search("t5", k=5).ids
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["projection"] == pca.to_manifest()
    reopened = MatryoshkaIndex.load(tmp_path / "idx", encoder=_encoder(rotated))  # raw encoder
    assert isinstance(reopened.encoder, ProjectedEncoder)
    assert reopened.search("t5", k=5).ids == expected
    other = fit_projection(rotated[:600])
    with pytest.raises(ValueError, match=r"projection is not the one this index was built with"):
        MatryoshkaIndex.load(tmp_path / "idx", encoder=ProjectedEncoder(_encoder(rotated), other))


def test_cli_fit_projection_from_vectors(rotated: np.ndarray, tmp_path: Path, capsys) -> None:
    from matryoshka_retrieval.cli import main

    np.save(tmp_path / "docs.npy", rotated)
    out = tmp_path / "p.npz"
    assert main(["fit-projection", "--vectors", str(tmp_path / "docs.npy"), "--out", str(out)]) == 0
    assert "fitted the pca projection of 48 dims" in capsys.readouterr().out
    assert Projection.load(out).fingerprint == fit_projection(rotated).fingerprint


def test_cli_fit_projection_from_texts(tmp_path: Path, capsys) -> None:
    from matryoshka_retrieval.cli import main

    source = tmp_path / "docs.jsonl"
    source.write_text(
        "\n".join(
            json.dumps({"_id": str(i), "text": f"page number {i} about files"}) for i in range(20)
        )
    )
    assert main(["fit-projection", str(source), "--out", str(tmp_path / "p.npz"), "-q"]) == 0
    assert Projection.load(tmp_path / "p.npz").dim == 384
    assert main(["fit-projection", "--out", str(tmp_path / "x.npz")]) == 2
    assert "give a folder or JSONL file" in capsys.readouterr().err


def test_projection_survives_a_save_without_its_encoder(
    rotated: np.ndarray, tmp_path: Path
) -> None:
    pca = fit_projection(rotated)
    index = MatryoshkaIndex(ProjectedEncoder(_encoder(rotated), pca), coarse_dim=8, device="cpu")
    index.add_texts([f"t{i}" for i in range(50)], ids=[f"t{i}" for i in range(50)])
    index.save(tmp_path / "a")
    MatryoshkaIndex.load(tmp_path / "a").save(tmp_path / "b")  # no encoder on this round trip
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["projection"] == pca.to_manifest()
    reopened = MatryoshkaIndex.load(tmp_path / "b", encoder=_encoder(rotated))
    assert isinstance(reopened.encoder, ProjectedEncoder)
    assert reopened.search("t7", k=1).ids == ["t7"]


def test_cli_fit_projection_with_pairs(tmp_path: Path, capsys) -> None:
    from matryoshka_retrieval.cli import main

    pytest.importorskip("torch")
    source = tmp_path / "docs.jsonl"
    texts = [
        f"Page {i} describes the {w} command. It reads files and writes a {w} report to stdout."
        for i, w in enumerate(["sort", "uniq", "wc", "cut", "paste", "join", "tr", "fold"] * 3)
    ]
    source.write_text(
        "\n".join(json.dumps({"_id": str(i), "text": t}) for i, t in enumerate(texts))
    )
    out = tmp_path / "p.npz"
    argv = ["fit-projection", str(source), "--out", str(out), "--epochs", "2", "-q"]
    assert main([*argv, "--method", "learned", "--corpus-pairs"]) == 0
    assert "with 24 query/document pairs" in capsys.readouterr().out
    assert Projection.load(out).info["pairs"] == 24
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps({"query": f"the {w} command", "positive": t})
            for w, t in zip(["sort", "uniq", "wc"], texts, strict=False)
        )
    )
    assert main([*argv, "--method", "learned", "--pairs", str(pairs)]) == 0
    assert Projection.load(out).info["pairs"] == 3
    for extra, message in [
        (["--corpus-pairs"], "--pairs and --corpus-pairs need --method learned or adapter"),
        (["--method", "learned", "--pairs", str(tmp_path / "none.jsonl")], "no pairs file"),
    ]:
        assert main([*argv, *extra]) == 2
        assert message in capsys.readouterr().err
    np.save(tmp_path / "v.npy", np.eye(24, 8, dtype=np.float32) + 0.1)
    vec = ["fit-projection", "--vectors", str(tmp_path / "v.npy"), "--out", str(out)]
    assert main([*vec, "--method", "learned", "--corpus-pairs"]) == 2
    assert "give the documents" in capsys.readouterr().err


# -- the adapter: a rotation and a residual MLP, for embedders that cannot be trained ----------


@pytest.fixture(scope="module")
def curved() -> np.ndarray:
    """Clusters on a curved manifold behind a random rotation: no rotation alone makes a short
    prefix keep the full-dim neighbourhoods, a nonlinear map can."""
    rng = np.random.default_rng(1)
    dim = 32
    angle = rng.uniform(0, 2 * np.pi, 1500)
    radius = rng.integers(1, 4, 1500)
    plane = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    noise = 0.05 * rng.normal(size=(1500, dim - 2))
    x = np.concatenate([plane, noise], axis=1)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (x @ q).astype(np.float32)


@pytest.fixture(scope="module")
def adapter(rotated: np.ndarray) -> Projection:
    pytest.importorskip("torch")
    return fit_projection(rotated, method="adapter", dims=[4, 8], epochs=3, show_progress_bar=False)


def test_the_adapter_keeps_the_full_dim_top_10(rotated: np.ndarray, adapter: Projection) -> None:
    y = adapter.apply(rotated)
    assert adapter.method == "adapter" and adapter.residual is not None
    assert top_k_agreement(rotated, y, queries=None) >= 0.99
    assert adapter.info["full_dim_agreement"] >= 0.99
    assert 0 < adapter.info["residual_scale"] <= 1
    assert not np.allclose(y, fit_projection(rotated, method="pca").apply(rotated), atol=1e-3)


def test_the_adapter_raises_short_prefix_agreement(
    rotated: np.ndarray, adapter: Projection
) -> None:
    y = adapter.apply(rotated)
    assert agreement(rotated, y, 4) > agreement(rotated, rotated, 4) + 0.2
    assert agreement(rotated, y, 8) > agreement(rotated, rotated, 8) + 0.2


def test_a_strict_agreement_scales_the_residual_down(rotated: np.ndarray) -> None:
    pytest.importorskip("torch")
    loose = fit_projection(
        rotated, method="adapter", dims=[4], epochs=2, min_agreement=0.0, show_progress_bar=False
    )
    strict = fit_projection(
        rotated, method="adapter", dims=[4], epochs=2, min_agreement=1.0, show_progress_bar=False
    )
    assert loose.info["residual_scale"] == 1.0
    assert strict.info["residual_scale"] < 1.0 and strict.info["full_dim_agreement"] == 1.0
    assert loose.fingerprint != strict.fingerprint


def test_the_adapter_round_trips_through_npz_and_an_index(
    rotated: np.ndarray, adapter: Projection, tmp_path: Path
) -> None:
    adapter.save(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert {"residual_w1", "residual_b1", "residual_w2", "residual_b2"} <= set(data.files)
    loaded = Projection.load(tmp_path / "a.npz")
    assert loaded.fingerprint == adapter.fingerprint != fit_projection(rotated).fingerprint
    np.testing.assert_array_equal(loaded.apply(rotated[:5]), adapter.apply(rotated[:5]))
    index = MatryoshkaIndex(
        ProjectedEncoder(_encoder(rotated), adapter), coarse_dim=8, device="cpu"
    )
    texts = [f"t{i}" for i in range(200)]
    index.add_texts(texts, ids=texts)
    expected = index.search("t3", k=5).ids
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["projection"] == adapter.to_manifest()
    assert manifest["projection"]["method"] == "adapter"
    reopened = MatryoshkaIndex.load(tmp_path / "idx", encoder=_encoder(rotated))
    assert reopened.search("t3", k=5).ids == expected


def test_a_rotation_keeps_its_fingerprint_without_a_residual(rotated: np.ndarray) -> None:
    import hashlib

    pca = fit_projection(rotated)
    digest = hashlib.sha256(b"pca")
    digest.update(np.ascontiguousarray(pca.rotation).tobytes())
    assert pca.fingerprint == digest.hexdigest()  # indexes saved before adapters still load


def test_bad_adapter_settings_are_named(rotated: np.ndarray) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"min_agreement": 1.5}, r"min_agreement must be between 0 and 1, got 1.5"),
        ({"full_weight": 0}, r"full_weight must be a positive number, got 0"),
        ({"hidden": 0}, r"hidden must be an int of at least 1, got 0"),
        ({"epochs": 0}, r"epochs must be an int of at least 1, got 0"),
        ({"batch_size": 1}, r"batch_size must be an int of at least 2, got 1"),
        ({"temperature": -1.0}, r"temperature must be a positive number, got -1.0"),
        ({"dims": [4, 0]}, r"dims holds 0, out of range 1..48"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            fit_projection(rotated, method="adapter", **options)


def test_top_k_agreement_compares_neighbours_not_scores(rotated: np.ndarray) -> None:
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(48, 48)))
    assert top_k_agreement(rotated, rotated @ q, queries=None) == 1.0
    assert top_k_agreement(rotated, rotated[:, :4], queries=200) < 0.7
    with pytest.raises(ValueError, match=r"same number of rows in both, more than k=10; got 5"):
        top_k_agreement(rotated[:5], rotated[:5])


def test_cli_fits_an_adapter(rotated: np.ndarray, tmp_path: Path, capsys) -> None:
    from matryoshka_retrieval.cli import main

    pytest.importorskip("torch")
    np.save(tmp_path / "docs.npy", rotated)
    out = tmp_path / "a.npz"
    argv = ["fit-projection", "--vectors", str(tmp_path / "docs.npy"), "--out", str(out)]
    assert main([*argv, "--method", "adapter", "--epochs", "1", "-q"]) == 0
    assert "fitted the adapter projection of 48 dims" in capsys.readouterr().out
    loaded = Projection.load(out)
    assert loaded.method == "adapter" and loaded.residual is not None
    assert loaded.info["full_dim_agreement"] >= 0.99
    assert main([*argv, "--method", "pca", "--corpus-pairs"]) == 2
    assert "--pairs and --corpus-pairs need --method learned or adapter" in capsys.readouterr().err
