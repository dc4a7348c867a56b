from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from matryoshka_retrieval import (
    Calibration,
    bytes_per_vector,
    calibrate,
    dequantize,
    int8_scores,
    quantize,
    truncate,
)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return truncate(np.random.default_rng(0).normal(size=(500, 32)), 32)


def test_int8_codes_span_the_calibrated_range(sample: np.ndarray) -> None:
    codes = quantize(sample, "int8", calibration=calibrate(sample))
    assert codes.dtype == np.int8
    assert codes.shape == sample.shape
    assert codes.min() == -128
    assert codes.max() == 127


def test_uint8_is_int8_shifted(sample: np.ndarray) -> None:
    cal = calibrate(sample)
    i8 = quantize(sample, "int8", calibration=cal).astype(np.int16)
    u8 = quantize(sample, "uint8", calibration=cal).astype(np.int16)
    assert u8.min() == 0 and u8.max() == 255
    np.testing.assert_array_equal(u8 - 128, i8)


def test_calibration_survives_a_json_round_trip(sample: np.ndarray) -> None:
    cal = calibrate(sample)
    restored = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert restored == cal
    np.testing.assert_array_equal(
        quantize(sample[:10], "int8", calibration=restored),
        quantize(sample[:10], "int8", calibration=cal),
    )


def test_calibration_dict_form_is_accepted_by_quantize(sample: np.ndarray) -> None:
    cal = calibrate(sample)
    np.testing.assert_array_equal(
        quantize(sample, "uint8", calibration=cal.to_dict()),
        quantize(sample, "uint8", calibration=cal),
    )


def test_reused_calibration_gives_stable_codes_for_later_batches(sample: np.ndarray) -> None:
    cal = calibrate(sample)
    one_by_one = np.stack([quantize(row, "int8", calibration=cal) for row in sample[:5]])
    np.testing.assert_array_equal(one_by_one, quantize(sample[:5], "int8", calibration=cal))


def test_values_outside_the_range_are_clipped(sample: np.ndarray) -> None:
    cal = calibrate(sample)
    out = quantize(np.full((1, 32), 10.0), "int8", calibration=cal)
    assert (out == 127).all()


def test_dequantize_is_within_half_a_step(sample: np.ndarray) -> None:
    cal = calibrate(sample)
    approx = dequantize(quantize(sample, "int8", calibration=cal), "int8", calibration=cal)
    assert np.abs(approx - sample).max() <= cal.step.max() / 2 + 1e-6


def test_symmetric_calibration_maps_zero_near_code_zero(sample: np.ndarray) -> None:
    cal = calibrate(sample, symmetric=True)
    assert np.all(cal.lower == -cal.upper) and len(set(cal.upper.tolist())) == 1
    assert abs(int(quantize(np.zeros(32), "int8", calibration=cal)[0])) <= 1


def test_quantile_calibration_is_tighter(sample: np.ndarray) -> None:
    full, tight = calibrate(sample), calibrate(sample, quantile=0.99)
    assert (tight.upper <= full.upper).all() and (tight.lower >= full.lower).all()
    assert (tight.upper - tight.lower).sum() < (full.upper - full.lower).sum()


def test_binary_packs_sign_bits() -> None:
    x = np.array([[0.5, -0.1, 0.2, -0.7, 0.1, 0.3, -0.2, 0.9, 0.4]])
    ubin = quantize(x, "ubinary")
    assert ubin.dtype == np.uint8
    np.testing.assert_array_equal(ubin, [[0b10101101, 0b10000000]])
    np.testing.assert_array_equal(
        quantize(x, "binary").astype(np.int16), ubin.astype(np.int16) - 128
    )


def test_binary_hamming_distance_counts_sign_flips() -> None:
    a = np.array([1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    b = a.copy()
    b[[1, 4]] *= -1
    flips = np.unpackbits(quantize(a, "ubinary") ^ quantize(b, "ubinary")).sum()
    assert flips == 2


def test_float32_precision_is_a_copy() -> None:
    x = np.ones((2, 3), dtype=np.float64)
    out = quantize(x, "float32")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_unknown_precision_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"precision='int4' is not supported.*int8"):
        quantize(np.ones((1, 4)), "int4")


def test_calibration_of_another_dim_is_rejected(sample: np.ndarray) -> None:
    with pytest.raises(
        ValueError, match=r"calibration covers 32 dimensions but the vectors have 8"
    ):
        quantize(sample[:, :8], "int8", calibration=calibrate(sample))


def test_non_finite_input_names_the_row() -> None:
    x = np.ones((3, 4))
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"row 1 contains NaN"):
        quantize(x, "binary")


def test_inverted_calibration_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"upper bound .* below lower bound .* dimension 1"):
        Calibration(lower=np.array([0.0, 1.0]), upper=np.array([1.0, 0.0]))


def test_bad_quantile_is_rejected(sample: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"quantile=0.2 is out of range"):
        calibrate(sample, quantile=0.2)


def test_bytes_per_vector() -> None:
    assert bytes_per_vector(768, "float32") == 3072
    assert bytes_per_vector(768, "int8") == 768
    assert bytes_per_vector(64, "binary") == 8
    assert bytes_per_vector(65, "ubinary") == 9


# -- on real embeddings ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(minilm_encoder, stdlib_texts):
    docs = minilm_encoder.encode_documents(stdlib_texts[:600])
    queries = minilm_encoder.encode_queries(stdlib_texts[600:640])
    return docs, queries


def _mean_spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)]))


def _top10_overlap(a: np.ndarray, b: np.ndarray) -> float:
    top_a = np.argsort(-a, axis=1)[:, :10]
    top_b = np.argsort(-b, axis=1)[:, :10]
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(top_a, top_b, strict=True)]))


def test_int8_code_scores_rank_like_float_scores_on_real_embeddings(real) -> None:
    docs, queries = real
    float_scores = queries @ docs.T
    cal = calibrate(docs)
    codes = quantize(docs, "int8", calibration=cal)
    scores = int8_scores(queries, codes, calibration=cal)
    assert _mean_spearman(float_scores, scores) > 0.999
    assert _top10_overlap(float_scores, scores) > 0.97
    np.testing.assert_allclose(scores, float_scores, atol=0.02)


def test_int8_scores_equal_dequantized_dot_products(real) -> None:
    docs, queries = real
    cal = calibrate(docs)
    for precision in ("int8", "uint8"):
        codes = quantize(docs, precision, calibration=cal)
        np.testing.assert_allclose(
            int8_scores(queries, codes, precision, calibration=cal),
            queries @ dequantize(codes, precision, calibration=cal).T,
            atol=1e-4,
        )


def test_symmetric_int8_integer_dot_products_rank_like_float_scores(real) -> None:
    docs, queries = real
    float_scores = queries @ docs.T
    cal = calibrate(docs, symmetric=True)
    doc_codes = quantize(docs, "int8", calibration=cal).astype(np.int32)
    query_codes = quantize(queries, "int8", calibration=cal).astype(np.int32)
    code_scores = (query_codes @ doc_codes.T).astype(np.float64)
    assert _mean_spearman(float_scores, code_scores) > 0.999
    assert _top10_overlap(float_scores, code_scores) > 0.97


def test_int8_prefix_codes_rank_like_float_prefix_scores(real) -> None:
    docs, queries = real
    d64, q64 = truncate(docs, 64), truncate(queries, 64)
    cal = calibrate(d64)
    codes = quantize(d64, "int8", calibration=cal)
    scores = int8_scores(q64, codes, calibration=cal)
    assert _mean_spearman(q64 @ d64.T, scores) > 0.999


def test_binary_hamming_ranks_like_float_scores_on_real_embeddings(real) -> None:
    docs, queries = real
    doc_bits = np.unpackbits(quantize(docs, "ubinary"), axis=1).astype(np.int32)
    query_bits = np.unpackbits(quantize(queries, "ubinary"), axis=1).astype(np.int32)
    # similarity = dims - hamming distance
    agree = query_bits @ doc_bits.T + (1 - query_bits) @ (1 - doc_bits).T
    assert _mean_spearman(queries @ docs.T, agree.astype(np.float64)) > 0.8
