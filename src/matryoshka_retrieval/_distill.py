"""Self-distilled Matryoshka training: the frozen model's full-dim similarities are the teacher.

Used by :func:`~matryoshka_retrieval.train.train_matryoshka` with ``loss="distill"``. Each step
embeds a batch of texts (random corpus texts, each with one of its ten nearest full-dim
neighbours, and any pairs), and at every prefix dim trains the student's in-batch similarity
distribution (each row a softmax over the batch) to match the teacher's full-dim one (KL
divergence); a full-dim term keeps the student's full vectors on the teacher's (the same KL at
the full dim, plus ``full_weight`` times the sum of one minus the cosine of each text's student
and teacher vector and the mean squared difference of their in-batch similarities). Optional
pairs add an in-batch ranking loss at each prefix dim. The teacher's vectors are computed once,
before training, with the model as it is then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._optional import require
from ._train_settings import Run
from .projection import _mine_neighbours
from .truncation import prefix_tensor

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@dataclass
class _Pool:
    """Every text of the run, its teacher vector, and its nearest corpus neighbours."""

    texts: list[str]
    teacher: Any  # torch tensor [n, full_dim], unit rows
    corpus_rows: np.ndarray  # rows of the pool that are corpus texts
    neighbours: np.ndarray  # [len(corpus_rows), k] pool rows of each corpus text's neighbours
    pair_rows: np.ndarray  # [m, 2] pool rows of each (query, positive)


def _build_pool(
    model: SentenceTransformer,
    corpus: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    batch_size: int,
    show_progress_bar: bool,
) -> _Pool:
    torch = require("torch", "train")
    texts = list(dict.fromkeys([*corpus, *(q for q, _ in pairs), *(p for _, p in pairs)]))
    row = {text: i for i, text in enumerate(texts)}
    teacher = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=show_progress_bar,
    ).astype(np.float32)
    corpus_rows = np.array(sorted({row[t] for t in corpus}), dtype=np.int64)
    if len(corpus_rows) > 1:
        neighbours = corpus_rows[_mine_neighbours(teacher[corpus_rows], 10)]
    else:
        neighbours = np.zeros((len(corpus_rows), 0), dtype=np.int64)
    pair_rows = np.array([(row[q], row[p]) for q, p in pairs], dtype=np.int64).reshape(-1, 2)
    return _Pool(texts, torch.from_numpy(teacher), corpus_rows, neighbours, pair_rows)


def _batches(pool: _Pool, run: Run, rng: np.random.Generator) -> list[Any]:
    """One epoch: (pool rows of the batch, positions of its pairs' queries and positives)."""
    batch_size = run.settings.batch_size
    with_pairs = len(pool.pair_rows) > 0
    with_corpus = len(pool.corpus_rows) > 1
    pair_count = batch_size // (4 if with_corpus else 2) if with_pairs else 0
    anchor_count = (batch_size - 2 * pair_count) // 2 if with_corpus else 0
    per_epoch = max(
        math.ceil(len(pool.corpus_rows) / anchor_count) if anchor_count else 0,
        math.ceil(len(pool.pair_rows) / pair_count) if pair_count else 0,
    )
    corpus_order = rng.permutation(len(pool.corpus_rows))
    pair_order = rng.permutation(len(pool.pair_rows))
    batches = []
    for step in range(per_epoch):
        parts = []
        if anchor_count:
            chosen = np.take(
                corpus_order, range(step * anchor_count, (step + 1) * anchor_count), mode="wrap"
            )
            picks = pool.neighbours[chosen, rng.integers(0, pool.neighbours.shape[1], len(chosen))]
            parts += [pool.corpus_rows[chosen], picks]
        pairs = np.zeros((0, 2), dtype=np.int64)
        if pair_count:
            taken = np.take(
                pair_order, range(step * pair_count, (step + 1) * pair_count), mode="wrap"
            )
            pairs = pool.pair_rows[np.unique(taken)]
            parts += [pairs[:, 0], pairs[:, 1]]
        rows, inverse = np.unique(np.concatenate(parts), return_inverse=True)
        start = len(inverse) - 2 * len(pairs)
        query_at = inverse[start : start + len(pairs)]
        positive_at = inverse[start + len(pairs) :]
        batches.append((rows, query_at, positive_at))
    return batches


def _active_dims(run: Run, progress: float) -> list[int]:
    """The prefix dims trained at this point of the run (all of them when ``joint``)."""
    prefixes = [d for d in run.dims if d < run.full_dim]  # largest first
    if run.settings.schedule == "joint" or not prefixes:
        return prefixes
    stage = min(len(prefixes) - 1, int(progress * len(prefixes)))
    return prefixes[: stage + 1]


def _step_loss(
    torch: Any,
    student: Any,
    teacher: Any,
    batch: tuple[np.ndarray, np.ndarray, np.ndarray],
    dims: list[int],
    run: Run,
) -> Any:
    functional = torch.nn.functional
    settings = run.settings
    tau = settings.temperature
    _, query_at, positive_at = batch
    eye = torch.eye(len(student), dtype=torch.bool, device=student.device)
    target = (teacher @ teacher.T / tau).masked_fill(eye, -1e4)
    target = torch.softmax(target, dim=1)
    weight = dict(zip(run.dims, run.weights, strict=True))

    def kl(vectors: Any) -> Any:
        unit = functional.normalize(vectors, dim=1)
        logits = (unit @ unit.T / tau).masked_fill(eye, -1e4)
        return functional.kl_div(torch.log_softmax(logits, dim=1), target, reduction="batchmean")

    loss: Any = 0.0
    if run.full_dim in weight:
        keep = 1 - functional.cosine_similarity(student, teacher, dim=1).mean()
        unit = functional.normalize(student, dim=1)
        structure = ((unit @ unit.T - teacher @ teacher.T) ** 2).mean()
        loss = weight[run.full_dim] * (kl(student) + settings.full_weight * (keep + structure))
    queries = torch.from_numpy(query_at).to(student.device)
    positives = torch.from_numpy(positive_at).to(student.device)
    for d in dims:
        loss = loss + weight[d] * kl(prefix_tensor(student, d))
        if len(query_at):
            unit = prefix_tensor(student, d)
            logits = unit[queries] @ unit[positives].T / tau
            labels = torch.arange(len(query_at), device=student.device)
            loss = loss + settings.pair_weight * functional.cross_entropy(logits, labels)
    return loss


def _schedule(torch: Any, optimizer: Any, total: int, warmup_ratio: float) -> Any:
    warmup = math.ceil(total * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def distill(
    model: SentenceTransformer,
    corpus: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    run: Run,
) -> tuple[int, float]:
    """Train ``model`` in place on ``run.device``; returns the number of steps and the mean
    loss."""
    torch = require("torch", "train")
    tqdm = require("tqdm.auto", "train").tqdm
    settings, device = run.settings, run.device
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    pool = _build_pool(model, corpus, pairs, settings.batch_size, settings.show_progress_bar)
    teacher = pool.teacher.to(device)
    epoch = _batches(pool, run, rng)
    total = max(1, math.ceil(len(epoch) * settings.epochs))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    scheduler = _schedule(torch, optimizer, total, settings.warmup_ratio)
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in v6
    model.train()
    losses = []
    with tqdm(total=total, disable=not settings.show_progress_bar, desc="distilling") as bar:
        for step in range(total):
            if step and step % len(epoch) == 0:
                epoch = _batches(pool, run, rng)
            batch = epoch[step % len(epoch)]
            features = tokenize([pool.texts[i] for i in batch[0]])
            features = {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}
            student = model(features)["sentence_embedding"]
            dims = _active_dims(run, step / total)
            loss = _step_loss(torch, student, teacher[torch.from_numpy(batch[0])], batch, dims, run)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
    model.eval()
    return total, float(np.mean(losses))
