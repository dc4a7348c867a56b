"""Reports of an evaluation: the markdown and JSON report, the comparison table and the plots.

The numbers come from :func:`~matryoshka_retrieval.eval.evaluate_dims`; this module only lays
them out. Plots need matplotlib (the ``eval`` extra).

Example:
    >>> from matryoshka_retrieval.report import write_report
    >>> written = write_report("out", results, recommend(results), title="MiniLM")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._optional import require
from .eval import EvalResults, EvalRow, Recommendation

__all__ = ["compare_table", "plot_curves", "plot_results", "single_stage_rows", "write_report"]


def single_stage_rows(results: EvalResults) -> list[EvalRow]:
    """The float32 rows without a rerank, by dim, the full-dim reference last."""
    rows = [r for r in results.rows[1:] if r.precision == "float32" and not r.rerank]
    return [*sorted(rows, key=lambda r: r.dim), results.reference]


def compare_table(curves: Mapping[str, EvalResults], metric: str) -> str:
    """One row per dim, one column per curve (the first is the baseline, ``raw``): the metric
    and its share of the baseline's full dim."""
    baseline = next(iter(curves.values()))
    full = baseline.reference.value(metric)
    names = list(curves)
    lines = ["| dim | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    by_name = {n: {r.dim: r.value(metric) for r in single_stage_rows(c)} for n, c in curves.items()}
    for dim in sorted(by_name[names[0]]):
        cells = [f"{by_name[n][dim]:.4f} ({by_name[n][dim] / full:.0%})" for n in names]
        lines.append(f"| {dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(axes: Any, reference: float, metric: str) -> None:
    for axis in axes:
        axis.axhline(reference, color="black", linewidth=1, label=f"full dim ({reference:.3f})")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.set_xscale("log", base=2)


def _save(fig: Any, plt: Any, path: str | Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(
    curves: Mapping[str, EvalResults], path: str | Path, *, metric: str, title: str
) -> None:
    """Single-stage quality by prefix dim, one line per curve (raw truncation, projections)."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    for name, results in curves.items():
        rows = single_stage_rows(results)
        axis.plot([r.dim for r in rows], [r.value(metric) for r in rows], "-o", label=name)
    _finish([axis], next(iter(curves.values())).reference.value(metric), metric)
    axis.set_xlabel("prefix dims")
    axis.legend(fontsize=8)
    axis.set_title(f"{title}: raw truncation vs projections")
    _save(fig, plt, path)


def plot_results(
    results: EvalResults, chosen: EvalRow, path: str | Path, *, metric: str, title: str
) -> None:
    """Quality against dims and against bytes per vector, full-dim line, recommended point."""
    plt = _pyplot()
    fig, (by_dim, by_bytes) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[EvalRow]] = {}
    for row in results.rows[1:]:
        label = f"{row.precision}{' + full-dim rerank' if row.rerank else ''}"
        series.setdefault(label, []).append(row)
    for label, rows in sorted(series.items()):
        rows.sort(key=lambda r: r.dim)
        style = "-o" if "rerank" in label else "--s"
        values = [r.value(metric) for r in rows]
        by_dim.plot([r.dim for r in rows], values, style, label=label)
        by_bytes.plot([r.bytes_per_vector for r in rows], values, style, label=label)
    _finish([by_dim, by_bytes], results.reference.value(metric), metric)
    by_dim.plot([chosen.dim], [chosen.value(metric)], "r*", markersize=16, label="recommended")
    by_bytes.plot([chosen.bytes_per_vector], [chosen.value(metric)], "r*", markersize=16)
    by_dim.set_xlabel("prefix dims")
    by_bytes.set_xlabel("bytes per vector in the coarse index")
    by_dim.legend(fontsize=8)
    fig.suptitle(f"{title}: {metric} by prefix length and precision")
    _save(fig, plt, path)


def write_report(
    out: str | Path,
    results: EvalResults,
    choice: Recommendation,
    *,
    title: str,
    metric: str = "ndcg@10",
    curves: Mapping[str, EvalResults] | None = None,
    info: Mapping[str, Any] | None = None,
    heading: str | None = None,
) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``curve.png`` to ``out`` (made if missing), and
    with two or more ``curves`` (raw truncation first, then projections) their comparison table
    and ``projections.png``.

    Args:
        out: The folder.
        results: The evaluation.
        choice: Its recommendation.
        title: Title of the plots (the model).
        metric: Metric of the plots and the comparison.
        curves: Name -> results of the same data, the first one the baseline ``results``.
        info: More fields for ``report.json`` (the model, the data...).
        heading: Heading of ``report.md`` (default: ``title``).

    Returns:
        The files written.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        **(info or {}),
        "rows": results.to_list(),
        "recommendation": {"name": choice.row.name, "reason": choice.reason},
    }
    text = f"# {heading or title}\n\n{results.to_markdown()}\n\n**Recommended:** {choice.reason}\n"
    written = [folder / "report.json", folder / "report.md", folder / "curve.png"]
    if curves is not None and len(curves) > 1:
        names = list(curves)
        report["projections"] = {name: curves[name].to_list() for name in names[1:]}
        text += (
            "\n## Raw truncation and projections (fitted on the documents only)\n\n"
            f"{compare_table(curves, metric)}\n"
        )
        plot_curves(curves, folder / "projections.png", metric=metric, title=title)
        written.append(folder / "projections.png")
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "report.md").write_text(text)
    plot_results(results, choice.row, folder / "curve.png", metric=metric, title=title)
    return written
