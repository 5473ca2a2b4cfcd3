"""The report's chart: what a reader sees in it, read back from the matplotlib figure and from the PNG.

Summary fixture (ndcg@10 mean [lo, hi] per system), values chosen by hand:
redial/test: popularity 0.10 [0.05, 0.20], sft 0.30 [0.20, 0.45], sft+embedding 0.40 [0.42, 0.50] (a CI
above its mean: the error bar starts at the mean instead of drawing a negative error);
inspired/validation: sft 0.25 [0.10, 0.40]; ml-1m/test: popularity 0.05 [0.00, 0.10].
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image

from training.evaluation_protocol import CHART_COLOURS, CHART_DPI, CHART_WIDTH_PX, chart_figure, chart_png

METRIC = "ndcg@10"
ROWS = [  # dataset, system, mean, lo, hi
    ("redial/test", "popularity", 0.10, 0.05, 0.20),
    ("redial/test", "sft", 0.30, 0.20, 0.45),
    ("redial/test", "sft+embedding", 0.40, 0.42, 0.50),
    ("inspired/validation", "sft", 0.25, 0.10, 0.40),
    ("ml-1m/test", "popularity", 0.05, 0.00, 0.10),
]
ROUNDS = {"round-1": 0.21, "round-2": 0.24, "round-3": 0.23}


def _summary(rows=ROWS) -> pl.DataFrame:
    return pl.DataFrame(
        [{"dataset": d, "system": s, "turns": 10, METRIC: m, f"{METRIC}_lo": lo, f"{METRIC}_hi": hi}
         for d, s, m, lo, hi in rows])


def _bars(ax) -> list[tuple[str, float, float, float]]:
    """(system, bar length, error bar start, error bar end) top to bottom, read from what the panel draws."""
    (bars,) = [c for c in ax.containers if hasattr(c, "patches")]
    (segments,) = [c for c in ax.containers if hasattr(c, "has_xerr")]  # the ErrorbarContainer
    lines = segments.lines[2][0].get_segments()  # one [start, end] segment per bar, in bar order
    labels = [t.get_text() for t in ax.get_yticklabels()]
    return [(label, patch.get_width(), line[0][0], line[1][0]) for label, patch, line in zip(labels, bars.patches, lines)]


def _approx(rows):
    return [(name, *(pytest.approx(v) for v in values)) for name, *values in rows]


def test_one_panel_per_dataset_in_summary_order_then_the_rounds_curve():
    fig = chart_figure(_summary(), METRIC, ROUNDS)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [
        "redial/test: ndcg@10 (95% CI)", "inspired/validation: ndcg@10 (95% CI)", "ml-1m/test: ndcg@10 (95% CI)",
        "gate ndcg@10 across alignment rounds"]
    assert len(fig.axes) == 4  # two columns, two rows: every cell used


def test_each_bar_is_the_systems_mean_with_its_ci_first_system_on_top():
    fig = chart_figure(_summary(), METRIC, ROUNDS)
    redial, inspired, movielens = fig.axes[:3]
    assert _bars(redial) == _approx([
        ("popularity", 0.10, 0.05, 0.20), ("sft", 0.30, 0.20, 0.45),
        ("sft+embedding", 0.40, 0.40, 0.50)])  # lo above the mean: the bar's error starts at the mean
    assert _bars(inspired) == _approx([("sft", 0.25, 0.10, 0.40)])
    assert _bars(movielens) == _approx([("popularity", 0.05, 0.00, 0.10)])
    # the summary's first system (least trained) reads first, at the top of its panel
    assert [t.get_text() for t in redial.get_yticklabels()] == ["popularity", "sft", "sft+embedding"]
    assert redial.yaxis_inverted() and not fig.axes[3].yaxis_inverted()


def test_rounds_curve_plots_the_gate_metric_per_round_labelled_without_the_prefix():
    fig = chart_figure(_summary(), METRIC, ROUNDS)
    (line,) = fig.axes[3].get_lines()
    assert list(line.get_xdata()) == ["1", "2", "3"]
    assert list(line.get_ydata()) == [0.21, 0.24, 0.23]
    assert line.get_marker() == "o"  # a round is a point: three rounds, three dots


def test_without_rounds_the_spare_grid_cell_is_hidden():
    fig = chart_figure(_summary(), METRIC, rounds=None)
    assert [ax.get_visible() for ax in fig.axes] == [True, True, True, False]
    assert not fig.axes[3].get_lines() and not fig.axes[3].get_title()
    two = chart_figure(_summary(ROWS[:3]), METRIC, {})  # one dataset, an empty rounds curve: one panel
    assert len(two.axes) == 1 and two.axes[0].get_title().startswith("redial/test")


@pytest.mark.parametrize(("rows", "rounds", "height_px"), [
    (ROWS, ROUNDS, 2 * 160),  # 3 systems at most: two rows of the minimum 1.6 in
    (ROWS[3:4], None, 160),  # one panel: one row
    ([("d", f"system-{i}", 0.1, 0.0, 0.2) for i in range(10)], {"round-1": 0.1}, 275),  # 0.55 + 10 x 0.22 in
])
def test_figure_is_the_dialog_width_and_each_row_tall_enough_for_its_bars(rows, rounds, height_px):
    fig = chart_figure(_summary(rows), METRIC, rounds)
    width, height = fig.get_size_inches() * CHART_DPI
    assert width == pytest.approx(CHART_WIDTH_PX) and height == pytest.approx(height_px)
    assert chart_figure(_summary(rows), METRIC, rounds, width_px=640).get_size_inches()[0] * CHART_DPI == pytest.approx(640)


def _decode(png: bytes) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(png))


def test_png_is_a_small_palette_image_cropped_to_what_is_drawn():
    image = _decode(chart_png(_summary(), METRIC, ROUNDS))
    assert image.mode == "P" and len(image.getcolors()) <= CHART_COLOURS
    assert 800 < image.width <= CHART_WIDTH_PX and 280 < image.height <= 320  # the 320 px figure, cropped
    pixels = np.asarray(image.convert("RGB")).astype(int)
    drawn = np.argwhere((pixels < 235).any(axis=2))  # anything darker than the white background
    top, left = drawn.min(axis=0)
    bottom, right = drawn.max(axis=0)
    margins = (top, left, image.height - 1 - bottom, image.width - 1 - right)
    assert max(margins) <= 10, margins  # a few pixels of padding, no empty band


def test_png_shows_the_bars_in_the_bar_colour():
    image = _decode(chart_png(_summary(), METRIC)).convert("RGB")
    pixels = np.asarray(image).astype(int)
    blue = (np.abs(pixels - (0x4C, 0x72, 0xB0)).sum(axis=2) < 30)  # CHART_BAR_COLOUR
    # five bars, each 80% of its band high and at least 2.5% of the panel wide: thousands of pixels
    assert blue.sum() > 2_000


@pytest.mark.filterwarnings("ignore:Tight layout not applied")
def test_png_narrower_than_a_label_that_sticks_out_is_scaled_down_to_the_width():
    long_name = "sft+" + "a-generator-with-a-very-long-name-" * 4
    summary = _summary([("redial/test", long_name, 0.3, 0.2, 0.4), ("redial/test", "sft", 0.2, 0.1, 0.3)])
    fig = chart_figure(summary, METRIC, width_px=400)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.05)
    wide = Image.open(buffer)
    assert wide.width > 400  # the label widens the tight crop beyond the figure
    image = _decode(chart_png(summary, METRIC, width_px=400))
    assert image.width == 400
    assert image.height == pytest.approx(wide.height * 400 / wide.width, abs=1)  # scaled, not squashed
