"""TrainSettings: one frozen dataclass holds every training setting, its default and its check;
train_matryoshka's keywords and ``matryoshka train``'s options are built from it."""

from __future__ import annotations

import inspect
import math
from dataclasses import FrozenInstanceError, fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval._validation import int_in_range, number_in_range
from matryoshka_retrieval.cli import build_parser, main
from matryoshka_retrieval.cli.train import settings_from
from matryoshka_retrieval.eval import BeirData
from matryoshka_retrieval.train import TrainSettings, split_beir, train_matryoshka

PAIRS = [("list files", "ls lists files"), ("copy files", "cp copies files")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": -1}, r"seed must be an int between 0 and 4294967295, got -1"),
        ({"seed": 2**32}, r"seed must be an int between 0 and 4294967295, got 4294967296"),
        ({"seed": 1.5}, r"seed must be an int between 0 and 4294967295, got 1.5"),
        ({"batch_size": 1}, r"batch_size must be an int of at least 2 \(in-batch negatives\)"),
        ({"batch_size": True}, r"batch_size must be an int of at least 2.*, got True"),
        ({"epochs": 0}, r"epochs must be a positive number, got 0"),
        ({"learning_rate": math.inf}, r"learning_rate must be a positive number, got inf"),
        ({"learning_rate": "fast"}, r"learning_rate must be a positive number, got 'fast'"),
        (
            {"warmup_ratio": 1},
            r"warmup_ratio must be a finite number at least 0 and below 1, got 1",
        ),
        ({"warmup_ratio": -0.1}, r"warmup_ratio must be a finite number at least 0"),
        ({"max_seq_length": 0}, r"max_seq_length must be a positive int, got 0"),
        ({"temperature": -1}, r"temperature must be a positive number, got -1"),
        ({"pair_weight": math.nan}, r"pair_weight must be a positive number, got nan"),
        ({"full_weight": 0}, r"full_weight must be a positive number, got 0"),
        ({"loss": "kl"}, r"loss='kl' is not supported; choose 'mnrl' or 'distill'"),
        ({"schedule": "random"}, r"schedule='random' is not supported; choose 'joint' or"),
        ({"schedule": "sequential"}, r"schedule='sequential' is used by loss='distill' only"),
        ({"dims": []}, r"dims must name at least one dim"),
        ({"dims": [384, 64, 64]}, r"dims \[384, 64, 64\] repeats a dim"),
        ({"weights": [1, -2]}, r"weights holds -2.0; each weight must be a positive number"),
        ({"dims": [384, 64], "weights": [1.0]}, r"got 1 weights for 2 dims; give one per dim"),
    ],
)
def test_a_bad_setting_is_named_with_its_limit(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainSettings(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overwrite": "yes"}, r"overwrite must be a bool, got str: 'yes'"),
        ({"show_progress_bar": 1}, r"show_progress_bar must be a bool, got int: 1"),
        ({"device": 0}, r"device must be a str, got int: 0"),
        ({"dims": "384"}, r"dims must be a list, got str: '384'"),
    ],
)
def test_a_setting_of_the_wrong_type_is_a_type_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        TrainSettings(**options)


def test_settings_are_frozen_and_hold_lists_as_tuples() -> None:
    settings = TrainSettings(dims=np.array([384, 64]), weights=[1, 2], eval_dims=range(32, 65, 32))
    assert settings.dims == (384, 64) and type(settings.dims[0]) is int
    assert settings.weights == (1, 2) and settings.eval_dims == (32, 64)
    with pytest.raises(FrozenInstanceError):
        settings.epochs = 3  # type: ignore[misc]
    assert settings == TrainSettings(dims=[384, 64], weights=(1, 2), eval_dims=[32, 64])


def test_for_model_fills_in_and_checks_the_dims_against_the_models_dim() -> None:
    filled = TrainSettings().for_model(384)
    assert filled.dims == (384, 256, 128, 64, 32) and filled.weights == (1.0,) * 5
    assert filled.eval_dims == (32, 64, 128, 256, 384)
    ordered = TrainSettings(dims=[64, 384], weights=[3, 1], eval_dims=[384, 64, 384])
    chosen = ordered.for_model(384)
    assert chosen.dims == (384, 64) and chosen.weights == (1.0, 3.0)
    assert chosen.eval_dims == (64, 384)
    with pytest.raises(ValueError, match=r"dims holds 512; each dim must be an int between 1"):
        TrainSettings(dims=[512]).for_model(384)
    with pytest.raises(ValueError, match=r"eval_dims holds 0; each dim must be an int between"):
        TrainSettings(eval_dims=[0]).for_model(384)
    with pytest.raises(ValueError, match=r"got 2 weights for 5 dims"):
        TrainSettings(weights=[1, 2]).for_model(384)


def test_train_matryoshka_takes_its_keyword_defaults_from_the_settings() -> None:
    parameters = inspect.signature(train_matryoshka).parameters
    for spec in fields(TrainSettings):
        assert parameters[spec.name].default == spec.default, spec.name
        assert parameters[spec.name].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["settings"].default is None


def test_a_negative_seed_is_refused_before_anything_is_loaded_or_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"seed must be an int between 0 and 4294967295, got -1"):
        train_matryoshka(PAIRS, tmp_path / "m", seed=-1)
    assert not (tmp_path / "m").exists()
    data = BeirData(
        corpus={f"d{i}": f"text {i}" for i in range(4)},
        queries={f"q{i}": f"query {i}" for i in range(4)},
        qrels={f"q{i}": {f"d{i}": 1} for i in range(4)},
    )
    with pytest.raises(ValueError, match=r"seed must be an int between 0 and 4294967295, got -1"):
        split_beir(data, seed=-1)


def test_train_matryoshka_reads_the_settings_given_as_one_object(tmp_path: Path) -> None:
    # loss="distill" from the settings: the error is distill's, not the default mnrl's
    with pytest.raises(ValueError, match=r"loss='distill' needs at least 2 corpus texts"):
        train_matryoshka([], tmp_path / "m", settings=TrainSettings(loss="distill"))
    with pytest.raises(ValueError, match=r"training needs at least 2 pairs, got 0"):
        train_matryoshka([], tmp_path / "m", settings=TrainSettings())


def test_settings_and_a_keyword_off_its_default_are_refused_together(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"not both; got settings and epochs, seed"):
        train_matryoshka(PAIRS, tmp_path / "m", settings=TrainSettings(), epochs=2, seed=3)
    with pytest.raises(TypeError, match=r"settings must be a TrainSettings, got dict"):
        train_matryoshka(PAIRS, tmp_path / "m", settings={"epochs": 2})  # type: ignore[arg-type]
    assert not (tmp_path / "m").exists()


def test_the_cli_defaults_are_the_settings_defaults() -> None:
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    assert settings_from(args) == TrainSettings()
    for spec in fields(TrainSettings):
        if spec.name != "show_progress_bar":
            assert getattr(args, spec.name) == spec.default, spec.name
    quiet = build_parser().parse_args(["train", "--data", "d", "--out", "o", "-q"])
    assert settings_from(quiet).show_progress_bar is False


def test_the_cli_has_an_option_for_every_setting_parsed_into_the_settings() -> None:
    argv = ["train", "--data", "d", "--out", "o", "--loss", "distill", "--dims", "384,64"]
    argv += ["--weights", "1,2", "--epochs", "2.5", "--batch-size", "8", "--learning-rate", "1e-4"]
    argv += ["--warmup-ratio", "0", "--max-seq-length", "64", "--schedule", "sequential"]
    argv += ["--temperature", "0.1", "--pair-weight", "2", "--full-weight", "5"]
    argv += ["--eval-dims", "64", "--device", "cpu", "--seed", "7", "--overwrite"]
    settings = settings_from(build_parser().parse_args(argv))
    assert settings == TrainSettings(
        loss="distill", dims=[384, 64], weights=[1, 2], epochs=2.5, batch_size=8,
        learning_rate=1e-4, warmup_ratio=0, max_seq_length=64, schedule="sequential",
        temperature=0.1, pair_weight=2, full_weight=5, eval_dims=[64], device="cpu", seed=7,
        overwrite=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--seed 4294967296", "--seed: 4294967296 is out of range: it must be at least 0 and"),
        ("--warmup-ratio 1", "--warmup-ratio: 1 is out of range: it must be a finite number"),
        ("--temperature 0", "--temperature: 0 is out of range: it must be a finite number above"),
        ("--loss kl", "--loss: invalid choice: 'kl'"),
    ],
)
def test_the_cli_refuses_what_the_settings_refuse(
    option: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "d", "--out", "o", *option.split()])
    assert exc.value.code == 2
    assert f"matryoshka train: error: argument {message}" in capsys.readouterr().err


def test_the_shared_range_checks_name_the_value_and_the_limit() -> None:
    assert int_in_range("k", np.int64(3), 1) == 3
    assert number_in_range("share", 1, 0, 1, low_open=False) == 1.0
    with pytest.raises(ValueError, match=r"^k must be a positive int, got 0$"):
        int_in_range("k", 0, 1)
    with pytest.raises(ValueError, match=r"^n must be an int between 2 and 4, got 5$"):
        int_in_range("n", 5, 2, 4)
    with pytest.raises(ValueError, match=r"^x must be a finite number above 0.5 and at most 2"):
        number_in_range("x", 0.5, 0.5, 2)
    with pytest.raises(ValueError, match=r"^x must be a positive number, got None$"):
        number_in_range("x", None)
