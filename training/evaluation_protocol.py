"""Evaluation of ranked recommendation lists: per-turn metrics, protocol switches, bootstrap CIs, report.

The protocol follows the zero-shot CRS evaluation of He et al. (CIKM 2023):

- ``exclude_mentioned``: targets already mentioned earlier in the dialogue are removed from the
  ground truth (recommending a film the user just named is trivial); turns left with no target drop out.
- ``in_corpus_only``: targets outside the evaluated item set are removed (a system cannot be blamed
  for films it cannot propose); turns left with no target drop out.

Metrics per turn (binary relevance, ``T`` = the turn's targets, ranked list ``R``):
``Recall@k = |R[:k] & T| / |T|``, ``NDCG@k = DCG@k / IDCG@k``, ``MRR = 1 / rank of the first hit``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

DEFAULT_KS = (1, 5, 10, 20, 50)


@dataclass(frozen=True)
class Protocol:
    exclude_mentioned: bool = True
    in_corpus_only: bool = True


def effective_targets(
    targets: Sequence[str], mentioned_before: Sequence[bool] | None, item_set: set[str] | None,
    protocol: Protocol,
) -> list[str]:
    """The targets a turn is scored against under ``protocol`` (order kept, duplicates dropped)."""
    kept: list[str] = []
    flags = mentioned_before if mentioned_before is not None else [False] * len(targets)
    for target, mentioned in zip(targets, flags, strict=True):
        if protocol.exclude_mentioned and mentioned:
            continue
        if protocol.in_corpus_only and item_set is not None and target not in item_set:
            continue
        if target not in kept:
            kept.append(target)
    return kept


def turn_metrics(ranking: Sequence[str], targets: Iterable[str], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """NDCG@k, Recall@k for each k, and MRR of one ranked list against its targets."""
    target_set = set(targets)
    hit_ranks = [rank for rank, item in enumerate(ranking) if item in target_set]
    metrics: dict[str, float] = {}
    for k in ks:
        hits_at_k = [r for r in hit_ranks if r < k]
        ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(target_set), k)))
        dcg = sum(1.0 / math.log2(r + 2) for r in hits_at_k)
        metrics[f"ndcg@{k}"] = dcg / ideal if ideal else 0.0
        metrics[f"recall@{k}"] = len(hits_at_k) / len(target_set) if target_set else 0.0
    metrics["mrr"] = 1.0 / (hit_ranks[0] + 1) if hit_ranks else 0.0
    return metrics


def per_turn_results(
    turns: pl.DataFrame, rankings: Sequence[Sequence[str]], system: str, *,
    item_set: set[str] | None = None, protocol: Protocol = Protocol(), ks: Sequence[int] = DEFAULT_KS,
) -> pl.DataFrame:
    """One row per evaluated turn of ``turns`` (CONVERSATION_TURNS_SCHEMA) with its metrics.

    ``rankings[i]`` is the system's ranked list for ``turns[i]``. Turns with no target left under the
    protocol are not evaluated.
    """
    if len(rankings) != turns.height:
        raise ValueError(f"{system}: {len(rankings)} rankings for {turns.height} turns")
    rows = []
    mentioned_col = turns["target_mentioned_before"] if "target_mentioned_before" in turns.columns else None
    for i, (turn, ranking) in enumerate(zip(turns.iter_rows(named=True), rankings)):
        mentioned = mentioned_col[i] if mentioned_col is not None else None
        targets = effective_targets(turn["target_movie_ids"], mentioned, item_set, protocol)
        if not targets:
            continue
        rows.append({
            "system": system, "dataset": turn["dataset"], "split": turn["split"],
            "dialog_id": turn["dialog_id"], "turn_index": turn["turn_index"], "n_targets": len(targets),
            "top10": list(ranking[:10]), **turn_metrics(ranking, targets, ks),
        })
    return pl.DataFrame(rows)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarise(per_turn: pl.DataFrame, metrics: Sequence[str], n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Mean and 95% bootstrap CI of each metric per (dataset, system), with the number of turns."""
    out = []
    for (dataset, system), group in per_turn.group_by(["dataset", "system"], maintain_order=True):
        row = {"dataset": dataset, "system": system, "turns": group.height}
        for metric in metrics:
            values = group[metric].to_numpy()
            low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            row[metric] = float(values.mean())
            row[f"{metric}_lo"], row[f"{metric}_hi"] = low, high
        out.append(row)
    return pl.DataFrame(out)


def markdown_table(summary: pl.DataFrame, metrics: Sequence[str], with_ci: Sequence[str] | None = None) -> str:
    """A markdown table: one row per dataset x system, each metric as ``mean [lo, hi]`` (only the metrics of
    ``with_ci`` when given, the others as the mean: a narrower table)."""
    with_ci = metrics if with_ci is None else with_ci
    header = "| dataset | system | turns | " + " | ".join(f"{m} [95% CI]" if m in with_ci else m for m in metrics) + " |"
    lines = [header, "|" + "---|" * (3 + len(metrics))]
    for row in summary.iter_rows(named=True):
        cells = [f"{row[m]:.4f} [{row[m + '_lo']:.3f}, {row[m + '_hi']:.3f}]" if m in with_ci else f"{row[m]:.4f}"
                 for m in metrics]
        lines.append(f"| {row['dataset']} | {row['system']} | {row['turns']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Dagster's metadata dialog is at most 80% of the window wide, with 20 px padding each side: a 960 px chart
# shows whole from a 1,280 px wide window up.
CHART_WIDTH_PX = 960
CHART_COLUMNS = 2
CHART_COLOURS = 32  # a palette PNG: ~5x smaller than RGBA, and the chart has a handful of colours
CHART_DPI = 100
CHART_BAR_COLOUR = "#4C72B0"


def chart_figure(summary: pl.DataFrame, metric: str, rounds: Mapping[str, float] | None = None,
                 width_px: int = CHART_WIDTH_PX):
    """A matplotlib ``Figure``: ``metric`` per system with its CI (one panel per dataset, in the summary's order,
    the first system on top), then the gate's ``metric`` across alignment rounds; panels on a grid of
    CHART_COLUMNS columns, ``width_px`` wide at CHART_DPI, each row tall enough for its bars."""
    from matplotlib.figure import Figure  # not pyplot: no global figure registry, no backend to choose

    datasets = summary["dataset"].unique(maintain_order=True).to_list()
    panels = len(datasets) + (1 if rounds else 0)
    columns = min(CHART_COLUMNS, panels)
    rows = math.ceil(panels / columns)
    systems = summary.group_by("dataset").len()["len"].max() if summary.height else 1
    panel_height = max(1.6, 0.55 + 0.22 * systems)  # inches: a bar per system, title and axis
    fig = Figure(figsize=(width_px / CHART_DPI, rows * panel_height), dpi=CHART_DPI)
    flat = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax, dataset in zip(flat, datasets):
        part = summary.filter(pl.col("dataset") == dataset)
        means = part[metric].to_numpy()
        err = np.vstack([means - part[f"{metric}_lo"].to_numpy(), part[f"{metric}_hi"].to_numpy() - means])
        ax.barh(part["system"].to_list(), means, xerr=np.clip(err, 0, None), color=CHART_BAR_COLOUR, capsize=3)
        ax.set_title(f"{dataset}: {metric} (95% CI)", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.invert_yaxis()
    if rounds:
        ax = flat[len(datasets)]
        ax.plot([name.removeprefix("round-") for name in rounds], list(rounds.values()), marker="o")
        ax.set_title(f"gate {metric} across alignment rounds", fontsize=10)
        ax.tick_params(axis="x", rotation=20, labelsize=7)
        ax.tick_params(axis="y", labelsize=8)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def chart_png(summary: pl.DataFrame, metric: str, rounds: Mapping[str, float] | None = None,
              width_px: int = CHART_WIDTH_PX) -> bytes:
    """:func:`chart_figure` as a PNG cropped to what is drawn, at most ``width_px`` wide, with a palette of at
    most CHART_COLOURS colours (small enough to embed in every materialisation's metadata)."""
    from PIL import Image

    buffer = io.BytesIO()
    chart_figure(summary, metric, rounds, width_px).savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.05)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if image.width > width_px:  # bbox_inches="tight" can widen a figure whose labels stick out
        image = image.resize((width_px, round(image.height * width_px / image.width)), Image.LANCZOS)
    small = io.BytesIO()
    image.quantize(colors=CHART_COLOURS).save(small, format="PNG", optimize=True)
    return small.getvalue()
