from __future__ import annotations

import numpy as np
import pytest

from matryoshka_retrieval import truncate


def test_batch_is_sliced_and_renormalised() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 32))
    out = truncate(x, 8)
    expected = x[:, :8] / np.linalg.norm(x[:, :8], axis=1, keepdims=True)
    assert out.shape == (5, 8)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_single_vector_stays_one_dimensional() -> None:
    out = truncate([3.0, 4.0, 12.0], 2)
    assert out.shape == (2,)
    np.testing.assert_allclose(out, [0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_float_width_returns_float32(dtype: type) -> None:
    out = truncate(np.ones((2, 4), dtype=dtype), 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.full((2, 2), 2**-0.5), rtol=1e-3)


def test_nested_lists_are_accepted() -> None:
    out = truncate([[1.0, 0.0, 5.0], [0.0, 2.0, 5.0]], 2)
    np.testing.assert_allclose(out, [[1.0, 0.0], [0.0, 1.0]])


def test_normalize_false_keeps_raw_prefix() -> None:
    out = truncate([[3.0, 4.0, 12.0]], 2, normalize=False)
    np.testing.assert_allclose(out, [[3.0, 4.0]])


def test_full_dim_is_allowed() -> None:
    out = truncate([[3.0, 4.0]], 2)
    np.testing.assert_allclose(out, [[0.6, 0.8]], rtol=1e-6)


def test_zero_prefix_stays_zero_without_nan() -> None:
    out = truncate([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]], 2)
    np.testing.assert_array_equal(out[0], [0.0, 0.0])
    assert np.isfinite(out).all()


def test_input_is_not_modified_and_output_is_a_copy() -> None:
    x = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    out = truncate(x, 3, normalize=False)
    out[0, 0] = 99.0
    assert x[0, 0] == 3.0
    truncate(x, 2)
    np.testing.assert_array_equal(x, [[3.0, 4.0, 12.0]])


@pytest.mark.parametrize("dim", [0, -1, 5])
def test_dim_out_of_range_names_value_and_limit(dim: int) -> None:
    with pytest.raises(ValueError, match=rf"dim={dim} is out of range.*dimension 4"):
        truncate(np.ones((2, 4)), dim)


@pytest.mark.parametrize("dim", [2.0, "2", True, None])
def test_dim_must_be_an_int(dim: object) -> None:
    with pytest.raises(ValueError, match=r"dim must be an int between 1 and .* dimension 4"):
        truncate(np.ones((2, 4)), dim)


def test_numpy_integer_dim_is_accepted() -> None:
    assert truncate(np.ones((1, 4)), np.int64(2)).shape == (1, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_the_row(bad: float) -> None:
    x = np.ones((4, 3))
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"row 2 contains"):
        truncate(x, 2)


def test_non_finite_value_beyond_the_prefix_is_still_rejected() -> None:
    x = np.ones((2, 3))
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"row 1 contains NaN"):
        truncate(x, 1)


def test_three_dimensional_input_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"1-D vector or a 2-D batch"):
        truncate(np.ones((2, 2, 2)), 1)


def test_non_numeric_input_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"real numbers"):
        truncate([["a", "b"]], 1)


def test_empty_batch_keeps_its_width() -> None:
    out = truncate(np.empty((0, 8)), 4)
    assert out.shape == (0, 4)


def test_prefix_scores_rank_like_renormalised_prefix_dot_products() -> None:
    rng = np.random.default_rng(1)
    docs, query = rng.normal(size=(50, 16)), rng.normal(size=16)
    scores = truncate(docs, 4) @ truncate(query, 4)
    prefix = docs[:, :4] @ query[:4] / np.linalg.norm(docs[:, :4], axis=1)
    np.testing.assert_array_equal(np.argsort(-scores), np.argsort(-prefix))


@pytest.mark.parametrize(("rows", "dim"), [(1, 384), (2000, 8), (2000, 64), (2000, 384)])
def test_normalising_a_normalised_row_again_keeps_every_bit(rows: int, dim: int) -> None:
    from matryoshka_retrieval.truncation import prefix

    x = np.random.default_rng(2).normal(size=(rows, dim)) * np.exp(-np.arange(dim) / 12)
    once = prefix(x, dim)
    assert prefix(once, dim).tobytes() == once.tobytes()  # a stored vector added again


def test_a_row_just_off_unit_length_is_left_as_it_is_and_others_are_scaled() -> None:
    from matryoshka_retrieval.truncation import prefix

    x = np.zeros((2, 4), dtype=np.float32)
    x[0, 0], x[1, 0] = 1.0 + 2.0**-23, 1.0 + 2.0**-20
    np.testing.assert_array_equal(prefix(x, 4)[:, 0], [1.0 + 2.0**-23, 1.0])


@pytest.mark.parametrize("rows", [1, 3])
def test_unit_rows_matches_prefix_and_keeps_input(rows: int) -> None:
    from matryoshka_retrieval.truncation import prefix, unit_rows

    x = np.random.default_rng(1).normal(size=(rows, 16)).astype(np.float32)
    x[-1] = 0.0  # a zero row stays zero
    before = x.copy()
    out = unit_rows(x, 16, name="query_vectors")
    np.testing.assert_allclose(out, prefix(x, 16), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(x, before)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    ("value", "message"), [(np.nan, "row 1 contains NaN"), (np.inf, "row 1 contains infinity")]
)
@pytest.mark.parametrize("rows", [2, 4])
def test_unit_rows_names_the_bad_row(value: float, message: str, rows: int) -> None:
    from matryoshka_retrieval.truncation import unit_rows

    x = np.ones((rows, 8))
    x[1, 3] = value
    with pytest.raises(ValueError, match=f"query_vectors {message}"):
        unit_rows(x, 8, name="query_vectors")
    with pytest.raises(ValueError, match="queries have 8 dims but this index stores 9-dim"):
        unit_rows(x, 9, name="query_vectors")


@pytest.mark.parametrize("rows", [1, 2])
def test_unit_rows_normalises_rows_whose_float32_square_would_overflow(rows: int) -> None:
    from matryoshka_retrieval.truncation import unit_rows

    x = np.full((rows, 4), 3e20, dtype=np.float32)  # finite, but x * x is inf in float32
    np.testing.assert_allclose(unit_rows(x, 4, name="q"), np.full((rows, 4), 0.5), rtol=1e-6)


def test_unit_rows_refuses_float64_values_float32_cannot_hold() -> None:
    from matryoshka_retrieval.truncation import unit_rows

    x = np.ones((3, 4))
    x[2, 1] = 1e300
    with pytest.raises(ValueError, match=r"query_vectors row 2 holds values beyond float32"):
        unit_rows(x, 4, name="query_vectors")
