"""The settings of a training run: one frozen dataclass, its defaults and its checks.

:class:`TrainSettings` is what :func:`~matryoshka_retrieval.train.train_matryoshka` reads (its
keywords build one), what the distillation loop reads, and what ``matryoshka train`` builds its
options from: each field carries its CLI help and, for numbers, the :class:`Limit` it is
checked against, so a default or a range is written down once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args

import numpy as np

from ._validation import int_in_range, number_in_range

logger = logging.getLogger(__name__)

Loss = Literal["mnrl", "distill"]
Schedule = Literal["joint", "sequential"]


@dataclass(frozen=True)
class Limit:
    """The range a numeric setting must lie in (an item's range, for a list of them).

    Example:
        >>> Limit(int, 2).check("batch_size", 8)
        8
    """

    kind: type[int] | type[float]
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def check(self, name: str, value: Any) -> int | float:
        """``value`` if it lies in the range; else a ValueError naming ``name`` and the range."""
        if self.kind is int:
            high = None if self.high is None else int(self.high)
            return int_in_range(name, value, int(self.low), high, why=self.why)
        return number_in_range(
            name, value, self.low, self.high, low_open=self.low_open, high_open=self.high_open
        )


POSITIVE = Limit(float, 0, low_open=True)
SEED = Limit(int, 0, 2**32 - 1)  # NumPy's legacy seed range, which the trainer seeds too


def _about(
    help: str,
    *,
    limit: Limit | None = None,
    choices: tuple[str, ...] = (),
    items: Limit | None = None,
    kind: type | None = None,
) -> dict[str, Any]:
    """The metadata of a field of :class:`TrainSettings`: its CLI help and its check (a range,
    choices, a range of each item of a list, or the type of anything else)."""
    return {"help": help, "limit": limit, "choices": choices, "items": items, "kind": kind}


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of one training run, checked when it is made.

    Attributes:
        loss: ``mnrl`` (``MatryoshkaLoss(MultipleNegativesRankingLoss)`` on pairs) or
            ``distill`` (self-distillation: the model before training is the teacher).
        dims: Prefix dims to train, the full dim among them; default: the full dim and the
            powers of two from 32 below it. Checked against the model's dim when training starts.
        weights: One loss weight per dim; default 1 each.
        epochs: Passes over the pairs (``mnrl``), or over the corpus texts as batch anchors
            (``distill``; over the pairs if that takes more steps).
        batch_size: Texts per step (``distill``), or pairs per step (``mnrl``; each query has
            ``batch_size - 1`` in-batch negatives).
        learning_rate: Peak AdamW learning rate (linear warm-up, then linear decay).
        warmup_ratio: Share of the steps spent warming up.
        max_seq_length: Truncate inputs to this many tokens while training and evaluating.
        schedule: ``joint`` or ``sequential`` (``distill`` only): ``sequential`` cuts the run into
            one stage per prefix dim, largest first, each adding the next smaller dim.
        temperature: Softmax temperature of the ``distill`` terms.
        pair_weight: Weight of the pair term of ``distill``.
        full_weight: Weight of the terms that hold the full dim on the teacher (``distill``).
        eval_dims: Dims to evaluate; default: ``dims``.
        device: ``"cpu"``, ``"cuda"``, ...; default: a GPU when torch sees one, else the CPU.
        seed: Random seed for the order of batches and the initialisation.
        overwrite: Replace the output folder once training has succeeded; otherwise a non-empty
            folder is refused before anything is trained.
        show_progress_bar: Show progress bars for training and evaluation.

    Raises:
        ValueError: For a setting out of its range or a choice not offered; the message names
            the setting, its limit and the value.
        TypeError: For a flag that is not a bool, a device that is not a str, or a list
            setting that is a string.

    Example:
        >>> settings = TrainSettings(dims=[384, 64], epochs=2)
        >>> settings.dims, settings.batch_size
        ((384, 64), 32)
        >>> TrainSettings(seed=-1)
        Traceback (most recent call last):
        ...
        ValueError: seed must be an int between 0 and 4294967295, got -1
    """

    loss: Loss = field(default="mnrl", metadata=_about("training loss", choices=get_args(Loss)))
    dims: Sequence[int] | None = field(
        default=None,
        metadata=_about(
            "dims to train, in the order of --weights (default: full, 512, ..., 32)",
            items=Limit(int, 1),
        ),
    )
    weights: Sequence[float] | None = field(
        default=None, metadata=_about("one loss weight per dim", items=POSITIVE)
    )
    epochs: float = field(default=1, metadata=_about("passes over the data", limit=POSITIVE))
    batch_size: int = field(
        default=32,
        metadata=_about(
            "pairs per step (texts per step with --loss distill)",
            limit=Limit(int, 2, why=" (in-batch negatives)"),
        ),
    )
    learning_rate: float = field(
        default=2e-5, metadata=_about("peak learning rate", limit=POSITIVE)
    )
    warmup_ratio: float = field(
        default=0.1,
        metadata=_about(
            "share of the steps spent warming up", limit=Limit(float, 0, 1, high_open=True)
        ),
    )
    max_seq_length: int | None = field(
        default=None, metadata=_about("tokens per text", limit=Limit(int, 1))
    )
    schedule: Schedule = field(
        default="joint",
        metadata=_about(
            "distill every dim from the start, or largest first", choices=get_args(Schedule)
        ),
    )
    temperature: float = field(
        default=0.05, metadata=_about("softmax temperature of distill", limit=POSITIVE)
    )
    pair_weight: float = field(
        default=1.0, metadata=_about("weight of the pair term of distill", limit=POSITIVE)
    )
    full_weight: float = field(
        default=10.0,
        metadata=_about("weight of the terms holding the full dim (distill)", limit=POSITIVE),
    )
    eval_dims: Sequence[int] | None = field(
        default=None,
        metadata=_about("dims to evaluate (default: the trained dims)", items=Limit(int, 1)),
    )
    device: str | None = field(
        default=None, metadata=_about("cpu, cuda, ... (default: GPU if present)", kind=str)
    )
    seed: int = field(default=0, metadata=_about("random seed (and holdout split)", limit=SEED))
    overwrite: bool = field(
        default=False, metadata=_about("replace the --out folder once training succeeds", kind=bool)
    )
    show_progress_bar: bool = field(default=True, metadata=_about("show progress bars", kind=bool))

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None and spec.default is None:
                continue
            _check_field(spec.name, value, spec.metadata)
            if spec.metadata["items"] is not None:
                object.__setattr__(self, spec.name, _items(spec.name, value))
        if self.loss == "mnrl" and self.schedule != "joint":
            raise ValueError(f"schedule={self.schedule!r} is used by loss='distill' only")
        if self.dims is not None:
            if not self.dims:
                raise ValueError("dims must name at least one dim")
            if len(set(self.dims)) != len(self.dims):
                raise ValueError(f"dims {list(self.dims)} repeats a dim")
        if self.weights is not None:
            _check_weights(self.weights, self.dims)

    def for_model(self, full_dim: int) -> TrainSettings:
        """These settings with ``dims`` (largest first), ``weights`` and ``eval_dims`` filled in
        and checked against a model of ``full_dim`` dims.

        Raises:
            ValueError: For a dim above ``full_dim``, or a weight count that does not match.

        Example:
            >>> TrainSettings(dims=[64, 384], weights=[3, 1]).for_model(384).weights
            (1.0, 3.0)
        """
        dims = self.dims
        if dims is None:
            dims = [full_dim] + [2**i for i in range(11, 4, -1) if 2**i < full_dim]
        _check_dims("dims", dims, full_dim)
        if full_dim not in dims:
            logger.warning(
                "dims %s leave out the full dim %d: it will not be trained", dims, full_dim
            )
        weights = [1.0] * len(dims) if self.weights is None else [float(w) for w in self.weights]
        _check_weights(weights, dims)
        _check_dims("eval_dims", self.eval_dims or (), full_dim)
        order = sorted(range(len(dims)), key=lambda i: -dims[i])
        return replace(
            self,
            dims=tuple(dims[i] for i in order),
            weights=tuple(weights[i] for i in order),
            eval_dims=tuple(sorted(set(self.eval_dims or dims))),
        )


def _check_field(name: str, value: Any, metadata: Any) -> None:
    """Check one field's value by what its metadata and default say it is."""
    limit: Limit | None = metadata["limit"]
    kind: type | None = metadata["kind"]
    if metadata["choices"] and value not in metadata["choices"]:
        offered = " or ".join(map(repr, metadata["choices"]))
        raise ValueError(f"{name}={value!r} is not supported; choose {offered}")
    if limit is not None:
        limit.check(name, value)
    elif kind is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}: {value!r}")


def _items(name: str, value: Any) -> tuple[Any, ...]:
    """A list setting as a tuple (NumPy scalars as Python numbers); a string is refused."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}: {value!r:.60}")
    return tuple(item.item() if isinstance(item, np.generic) else item for item in value)


def _check_weights(weights: Sequence[Any], dims: Sequence[int] | None) -> None:
    for weight in weights:
        is_number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not (is_number and weight > 0 and math.isfinite(weight)):
            shown = float(weight) if is_number else repr(weight)
            raise ValueError(f"weights holds {shown}; each weight must be a positive number")
    if dims is not None and len(weights) != len(dims):
        raise ValueError(f"got {len(weights)} weights for {len(dims)} dims; give one per dim")


def _check_dims(name: str, dims: Sequence[int], full_dim: int) -> None:
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= full_dim:
            raise ValueError(
                f"{name} holds {d!r}; each dim must be an int between 1 and {full_dim}"
            )


def setting_names() -> tuple[str, ...]:
    """The names of every field of :class:`TrainSettings`, in order."""
    return tuple(spec.name for spec in fields(TrainSettings))


def merge(settings: TrainSettings | None, keywords: dict[str, Any]) -> TrainSettings:
    """``settings``, or one made of ``keywords``; both at once only where the keywords hold
    their defaults.

    Raises:
        TypeError: If ``settings`` is not a :class:`TrainSettings`, or a keyword differs from
            its default while ``settings`` is given (naming the keyword).
    """
    if settings is None:
        return TrainSettings(**keywords)
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    defaults = {spec.name: spec.default for spec in fields(TrainSettings)}
    given = sorted(name for name, value in keywords.items() if not _same(value, defaults[name]))
    if given:
        raise TypeError(
            f"give the settings as settings=TrainSettings(...) or as keywords, not both; "
            f"got settings and {', '.join(given)}"
        )
    return settings


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # an array compared element by element
        return False


@dataclass(frozen=True)
class Run:
    """One run as the fitting loops see it: settings filled in for the model (by
    :meth:`TrainSettings.for_model`, with the device picked), and the model's full dim."""

    settings: TrainSettings
    full_dim: int

    @property
    def dims(self) -> list[int]:
        """The dims trained, largest first."""
        return list(self.settings.dims or ())

    @property
    def weights(self) -> list[float]:
        """The loss weight of each of :attr:`dims`."""
        return [float(w) for w in self.settings.weights or ()]

    @property
    def device(self) -> str:
        """The device trained on (the CPU if none was filled in)."""
        return self.settings.device or "cpu"
